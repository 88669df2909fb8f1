"""The report of a hyperparameter sweep: the best trial and its config, every trial, Optuna's plots.

Everything comes from the sweep folder (summary.json, plots/), never from the study database, so
``facelab report`` re-renders it anywhere; ``facelab sweep report`` refreshes both from the study.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from facelab.report.html import esc, fmt, image, section, table
from facelab.report.kinds import RUN_KINDS, RunKind
from facelab.runs.summary import SweepSummary

PLOT_CAPTIONS = {
    "optimization_history": "Optimisation history: each COMPLETE trial's value and the best so far",
    "intermediate_values": "The metric after every epoch of every trial (pruned trials stop early)",
    "param_importances": "Parameter importances (fANOVA over the COMPLETE trials)",
    "parallel_coordinate": "Parallel coordinates: each COMPLETE trial's parameters and value",
}


def _value(v: Any) -> str:
    return fmt(v, 4) if isinstance(v, float) else json.dumps(v) if isinstance(v, (list, dict)) else str(v)


def _folder(run_dir: Path, path: str | None) -> str:
    if not path:
        return "-"
    p = Path(path)
    return p.name if p.parent.resolve() == run_dir.resolve() else str(p)


def sweep_sections(run_dir: Path, summary: SweepSummary) -> list[str]:
    states = ", ".join(f"{n} {s.lower()}" for s, n in sorted(summary.states.items()))
    head = table(["command", "study", "metric", "trials", "states", "CPU s (all trials)"],
                 [[summary.command, summary.study_name, f"{summary.metric} ({summary.direction})",
                   f"target {summary.n_trials}", states, fmt(summary.cpu_seconds, 0)]])
    parts = [section("Sweep", head, f"<p class='muted'>storage {esc(summary.storage)}</p>")]
    if summary.best_trial is not None:
        params = table(["parameter", "value", "importance"],
                       [[k, _value(v), fmt(summary.importances.get(k), 3)] for k, v in summary.best_params.items()])
        best = (f"<p>Trial {summary.best_trial}: {esc(summary.metric)} = <b>{fmt(summary.best_value)}</b>; run folder "
                f"{esc(_folder(run_dir, summary.best_run_dir))}. Its config: <code>best.yaml</code> "
                f"(<code>facelab {esc(summary.command)} --config best.yaml</code>).</p>")
        parts.append(section("Best trial", best, params))
    names = list(summary.trials[0].params) if summary.trials else []
    rows = [[t.number, t.state, fmt(t.value), *(_value(t.params.get(n, "")) for n in names),
             "-" if t.epochs is None else t.epochs, fmt(t.cpu_seconds, 1), _folder(run_dir, t.run_dir), t.note or ""]
            for t in summary.trials]
    parts.append(section("Trials", table(["trial", "state", summary.metric, *names, "epochs", "CPU s", "run folder",
                                          "note"], rows)))
    figs = "".join(image(p, PLOT_CAPTIONS.get(name, name)) for name, p in summary.plots.items())
    notes = "".join(f"<p class='muted'>{esc(n)}</p>" for n in summary.notes)
    parts.append(section("Plots", figs or "<p>No plots yet.</p>", notes))
    return parts


def sweep_key_metric(summary: SweepSummary) -> tuple[str, float | None]:
    return f"best {summary.metric}", summary.best_value


RUN_KINDS.register("sweep")(RunKind(sections=sweep_sections, key_metric=sweep_key_metric))
