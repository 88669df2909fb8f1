"""The report of a pretraining run: stores and rows, the objective, curves and metrics per epoch."""

from __future__ import annotations

from pathlib import Path

from facelab.report.html import esc, fmt, image, metrics_table, section, table
from facelab.report.kinds import RUN_KINDS, RunKind
from facelab.runs.summary import PretrainSummary


def pretrain_sections(run_dir: Path, summary: PretrainSummary) -> list[str]:
    speed = fmt(summary.images_per_s, 3)
    head = table(["model", "objective", "params", "train rows", "val rows", f"best {summary.monitor}", "images/s",
                  "seconds"],
                 [[summary.model, summary.objective, f"{summary.params:,}", summary.train_rows, summary.val_rows,
                   fmt(summary.best), speed, fmt(summary.fit_seconds, 3)]])
    notes = [f"stores: {', '.join(summary.stores)}", f"objective options: {summary.objective_kwargs}"]
    notes += [f"rows: {summary.splits}"] if summary.splits else []
    notes += [f"warning: {w}" for w in summary.warnings]
    html_notes = "".join(f"<p class='muted'>{esc(t)}</p>" for t in notes)
    return [section("Summary", head, html_notes), section("Training curves", image(run_dir / "curves.png")),
            section("Metrics per epoch", metrics_table(run_dir))]


RUN_KINDS.register("pretrain")(RunKind(sections=pretrain_sections, key_metric=lambda s: (s.monitor, s.best)))
