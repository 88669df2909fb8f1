"""``facelab sweep report``: every trial's state, params, value, CPU time and run folder; the best trial's config as
best.yaml (ready for ``facelab train --config best.yaml``); Optuna's plots (optimisation history, per-epoch
values, fANOVA parameter importances, parallel coordinates) in the sweep's self-contained report.html."""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from facelab.report import render_report
from facelab.runs.summary import SweepSummary, SweepTrial, write_summary
from facelab.sweeps.failures import NOTE, fail_stale_trials
from facelab.sweeps.folder import open_sweep
from facelab.sweeps.space import config_values, trial_config
from facelab.sweeps.spec import SweepSpec
from facelab.sweeps.storage import open_storage, strip_password, without_password
from facelab.utils.io import atomic_write_bytes, atomic_write_text
from facelab.utils.secrets import mask_secrets

if TYPE_CHECKING:
    import optuna

BEST = "best.yaml"
PLOTS = "plots"
IMPORTANCE_SEED = 0


def dashboard_command(url: str) -> str:
    """The command that opens Optuna's dashboard on the study database (its password left out: libpq takes it
    from PGPASSWORD or ~/.pgpass)."""
    return mask_secrets(f"optuna-dashboard {strip_password(url)}")


def trial_note(t: optuna.trial.FrozenTrial) -> str | None:
    """Why a trial was pruned or failed (facelab.sweeps.failures), as the report shows it."""
    if t.state.name in ("COMPLETE", "RUNNING", "WAITING"):
        return None
    note = t.user_attrs.get(NOTE)
    if note is None and t.state.name == "FAIL":
        note = "no reason recorded (its worker lost the database, or an older facelab ran it)"
    return mask_secrets(note) if note else None


def trial_row(spec: SweepSpec, t: optuna.trial.FrozenTrial) -> SweepTrial:
    a = t.user_attrs
    value = t.value if t.state.name == "COMPLETE" else None
    return SweepTrial(number=t.number, state=t.state.name, value=value, params=config_values(spec, t.params),
                      cpu_seconds=a.get("cpu_seconds"), wall_seconds=a.get("wall_seconds"), epochs=a.get("epochs"),
                      run_dir=a.get("run_dir"), worker=a.get("worker"), note=trial_note(t))


def sweep_report(sweep_dir: str | Path, *, storage: str | None = None) -> dict[str, Any]:
    """Write best.yaml, plots/, summary.json and report.html of a sweep from its study; returns the figures.

    Raises:
        ConfigError: not a sweep folder. StorageError: its database cannot be reached.
    """
    import optuna

    sweep = open_sweep(sweep_dir, storage=storage)
    sweep_dir, spec = sweep.dir, sweep.spec
    storage = open_storage(sweep.url, heartbeat_interval=spec.heartbeat_interval, grace_period=spec.grace_seconds)
    study = optuna.load_study(study_name=sweep.study_name, storage=storage, sampler=optuna.samplers.RandomSampler())
    fail_stale_trials(study, storage, grace_s=spec.grace_seconds)  # a dead worker's trial: FAILED, noted
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state.name == "COMPLETE" and t.value is not None and math.isfinite(t.value)]
    best = (max if spec.direction == "maximize" else min)(complete, key=lambda t: t.value) if complete else None
    notes: list[str] = []
    best_config = _write_best(sweep_dir, spec, best) if best is not None else None
    importances = _importances(study, complete, notes)
    plots = _plots(study, sweep_dir / PLOTS, complete, notes)
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    summary = SweepSummary(
        run_dir=str(sweep_dir), command=spec.command, study_name=sweep.study_name, storage=without_password(sweep.url),
        metric=spec.metric or "", direction=spec.direction or "maximize", n_trials=spec.n_trials, states=states,
        best_trial=best.number if best else None, best_value=best.value if best else None,
        best_params=config_values(spec, best.params) if best else {},
        best_run_dir=best.user_attrs.get("run_dir") if best else None,
        best_config=str(best_config) if best_config else None,
        cpu_seconds=round(sum(t.user_attrs.get("cpu_seconds") or 0.0 for t in trials), 3),
        importances=importances, plots={k: str(v) for k, v in plots.items()}, notes=notes,
        trials=[trial_row(spec, t) for t in trials])
    write_summary(sweep_dir, summary)
    report = render_report(sweep_dir)
    return {**summary.to_dict(), "report": str(report), "dashboard": dashboard_command(sweep.url)}


def _write_best(sweep_dir: Path, spec: SweepSpec, best: optuna.trial.FrozenTrial) -> Path:
    """The best trial's config (rebuilt from the base and its params: identical to its run's config.yaml, and
    available when the trial ran on another machine)."""
    cfg = trial_config(spec, config_values(spec, best.params), where=f"trial {best.number}")
    header = (f"# best trial {best.number} of study {spec.study_name}: {spec.metric} = {best.value:.6g}\n"
              f"# re-train it with: facelab {spec.command} --config {BEST}\n")
    path = sweep_dir / BEST
    atomic_write_text(path, header + cfg.to_yaml())
    return path


def _importances(study: optuna.Study, complete: list, notes: list[str]) -> dict[str, float]:
    import optuna

    if len(complete) < 2:
        notes.append("parameter importances need 2 or more COMPLETE trials")
        return {}
    try:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=IMPORTANCE_SEED)
        return {k: float(v) for k, v in optuna.importance.get_param_importances(study, evaluator=evaluator).items()}
    except (ValueError, RuntimeError) as e:
        notes.append(f"parameter importances: {e}")
        return {}


def _plots(study: optuna.Study, folder: Path, complete: list, notes: list[str]) -> dict[str, Path]:
    """Optuna's matplotlib plots as PNGs; a plot that needs more trials than there are is left out (noted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as vis

    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=IMPORTANCE_SEED)
    makers = {"optimization_history": (1, lambda: vis.plot_optimization_history(study)),
              "intermediate_values": (1, lambda: vis.plot_intermediate_values(study)),
              "param_importances": (2, lambda: vis.plot_param_importances(study, evaluator=evaluator)),
              "parallel_coordinate": (2, lambda: vis.plot_parallel_coordinate(study))}
    out: dict[str, Path] = {}
    for name, (need, make) in makers.items():
        if len(complete) < need:
            notes.append(f"{name.replace('_', ' ')}: needs {need} or more COMPLETE trials")
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = make()
            fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
            fig.set_size_inches(9, 5)
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
            plt.close(fig)
        except (ValueError, RuntimeError) as e:
            notes.append(f"{name.replace('_', ' ')}: {e}")
            continue
        out[name] = folder / f"{name}.png"
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out[name], buf.getvalue())
    return out
