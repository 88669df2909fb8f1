"""The report of the batch-schedule study (lr decay vs batch-size increase) and its results table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from facelab.report.html import esc, image, section, table
from facelab.report.kinds import RUN_KINDS, RunKind
from facelab.runs.summary import BatchScheduleSummary
from facelab.utils.figures import figure


def mean_std(r: dict[str, Any], key: str) -> str:
    """``r[key]`` ± ``r[key_std]`` (the mean alone for one seed), as the tables and the report show it: a spread
    of the seeds (sample standard deviation), not an interval, so it is not clipped to the metric's range."""
    std = r.get(f"{key}_std")
    return figure(r[key]) + (f" ± {figure(std, 2)}" if std is not None else "")


def results_table(results: dict[str, Any]) -> str:
    """Markdown table of the variants (mean ± sample standard deviation over the seeds)."""
    lines = ["| variant | test mean acc | test balanced acc | parameter updates | final batch | training s |",
             "|---|---|---|---|---|---|"]
    for v, r in results.items():
        lines.append(f"| {v} | {mean_std(r, 'test_mean_accuracy')} | {mean_std(r, 'test_mean_balanced_accuracy')} | "
                     f"{r['parameter_updates']} | {r['final_batch_size']} | {figure(r['train_seconds'], 3)} |")
    return "\n".join(lines) + "\n"


def batch_schedule_sections(run_dir: Path, summary: BatchScheduleSummary) -> list[str]:
    rows = [[v, mean_std(r, "test_mean_accuracy"), mean_std(r, "test_mean_balanced_accuracy"), r["parameter_updates"],
             r["final_batch_size"], figure(r["train_seconds"], 3)] for v, r in summary.results.items()]
    seeds, splits = summary.seeds or [0], summary.splits
    note = esc(f"{len(seeds)} seed(s) {', '.join(map(str, seeds))}; mean ± sample standard deviation. Rows: "
               f"train {splits.get('train', '?')}, val {splits.get('val', '?')}, test {splits.get('test', '?')} "
               f"({summary.splits_how}).")
    return [section("Results", f"<p>{note}</p>" + table(["variant", "test mean acc", "test balanced acc",
                                                          "parameter updates", "final batch", "training s"], rows)),
            section("Curves", image(run_dir / "curves.png"))]


def batch_schedule_key_metric(summary: BatchScheduleSummary) -> tuple[str, float | None]:
    best = max(summary.results.items(), key=lambda kv: kv[1]["test_mean_accuracy"], default=None)
    return (f"test acc ({best[0]})", best[1]["test_mean_accuracy"]) if best else ("-", None)


RUN_KINDS.register("batch_schedule")(RunKind(sections=batch_schedule_sections, key_metric=batch_schedule_key_metric))
