"""The report of a classifier run: summary, curves, metrics per epoch and every ``facelab eval`` of it."""

from __future__ import annotations

import json
from pathlib import Path

from facelab.report.html import esc, fmt, image, metrics_table, section, table
from facelab.report.kinds import RUN_KINDS, RunKind
from facelab.runs.summary import ClassifierSummary

METRIC_KEYS = ("accuracy", "majority_accuracy", "balanced_accuracy", "f1_macro", "auroc")


def classifier_sections(run_dir: Path, summary: ClassifierSummary) -> list[str]:
    labels = ", ".join(summary.labels[:6]) + (" ..." if len(summary.labels) > 6 else "")
    head = table(["model", "labels", "params", "train rows", "val rows", f"best {summary.monitor}", "seconds"],
                 [[summary.model, labels, f"{summary.params:,}", summary.train_rows, summary.val_rows,
                   fmt(summary.best), fmt(summary.fit_seconds, 3)]])
    notes = "".join(f"<p class='muted'>{esc(t)}</p>" for t in
                    ([f"rows: {summary.splits}"] if summary.splits else []) + [f"warning: {w}" for w in summary.warnings])
    parts = [section("Summary", head, notes), section("Training curves", image(run_dir / "curves.png")),
             section("Metrics per epoch", metrics_table(run_dir))]
    for ev in sorted((run_dir / "eval").glob("*/report.json")) if (run_dir / "eval").is_dir() else []:
        parts.append(eval_section(ev))
    return parts


def eval_section(path: Path) -> str:
    """One ``facelab eval`` report: per-label table with its mean, what was scored, its plots."""
    rep = json.loads(path.read_text())
    rows = [[n, *(fmt(m[k]) for k in METRIC_KEYS)] for n, m in rep["per_label"].items()]
    rows.append(["MEAN", *(fmt(rep["summary"].get(f"mean_{k}", "")) for k in METRIC_KEYS)])
    what = [f"{rep.get('model', '')} on {rep.get('store', '')}, {rep.get('count', '?')} images, "
            f"{rep.get('checkpoint', 'best')} checkpoint"]
    if rep.get("members"):
        what.append(f"members (probabilities averaged): {', '.join(rep['members'])}")
    if rep.get("label_shift"):
        before = rep["label_shift"]["unadapted_summary"]["mean_accuracy"]
        what.append(f"priors adapted to these images (EM): mean accuracy {before:.4f} before adaptation")
    for note in [rep["note"]] if rep.get("note") else []:
        what.append(f"note: {note}")
    what += [f"warning: {w}" for w in rep.get("warnings", [])]
    notes = "".join(f"<p class='muted'>{esc(w)}</p>" for w in what)
    imgs = "".join(image(p) for p in rep.get("plots", {}).values())
    return section(f"Evaluation: {path.parent.name} ({rep['rows']})", notes,
                   table(["label", "accuracy", "majority", "balanced acc", "macro-F1", "AUROC"], rows), imgs)


RUN_KINDS.register("classifier")(RunKind(sections=classifier_sections,
                                         key_metric=lambda s: (s.monitor, s.best)))
