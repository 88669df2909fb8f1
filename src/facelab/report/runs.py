"""Reporters for training runs, generative runs, the batch-schedule study and the demo."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from facelab.report.html import REPORTERS, esc, fmt, image, section, table
from facelab.runs import read_metrics


def _metrics_table(run_dir: Path) -> str:
    hist = read_metrics(run_dir)
    if not hist:
        return "<p>No metrics recorded.</p>"
    keys = [k for k in hist[-1] if k not in ("epoch",) and isinstance(hist[-1][k], (int, float))][:8]
    return table(["epoch", *keys], [[h["epoch"], *(fmt(h.get(k, "")) for k in keys)] for h in hist])


@REPORTERS.register("classifier")
def classifier_report(run_dir: Path, summary: dict[str, Any]) -> list[str]:
    head = table(["model", "labels", "params", "train rows", "val rows", "best " + str(summary.get("monitor")), "seconds"],
                 [[summary["model"], ", ".join(summary["labels"][:6]) + (" ..." if len(summary["labels"]) > 6 else ""),
                   f"{summary['params']:,}", summary["train_rows"], summary["val_rows"], fmt(summary.get("best") or float("nan")),
                   summary.get("fit_seconds")]])
    parts = [section("Summary", head), section("Training curves", image(run_dir / "curves.png")),
             section("Metrics per epoch", _metrics_table(run_dir))]
    for ev in sorted((run_dir / "eval").glob("*/report.json")) if (run_dir / "eval").is_dir() else []:
        parts.append(_eval_section(ev))
    return parts


METRIC_KEYS = ("accuracy", "majority_accuracy", "balanced_accuracy", "f1_macro", "auroc")


def _eval_section(path: Path) -> str:
    """One ``facelab eval`` report: per-label table with its mean, what was scored, its plots."""
    import json

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
    if rep.get("note"):
        what.append(f"note: {rep['note']}")
    notes = "".join(f"<p class='muted'>{esc(w)}</p>" for w in what)
    imgs = "".join(image(p) for p in rep.get("plots", {}).values())
    return section(f"Evaluation: {path.parent.name} ({rep['rows']})", notes,
                   table(["label", "accuracy", "majority", "balanced acc", "macro-F1", "AUROC"], rows), imgs)


@REPORTERS.register("generative")
def generative_report(run_dir: Path, summary: dict[str, Any]) -> list[str]:
    grids = sorted((run_dir / "samples").glob("epoch_*.png"))
    shown = [grids[0], grids[len(grids) // 2], grids[-1]] if len(grids) >= 3 else grids
    return [section("Summary", table(["model", "conditions", "params", "train rows", "epochs", "seconds"],
                                     [[summary["model"], ", ".join(summary.get("conditions") or []) or "-",
                                       f"{summary['params']:,}", summary["train_rows"], summary["epochs"],
                                       summary.get("fit_seconds")]])),
            section("Samples", "<div class='row'>" + "".join(image(g, g.stem.replace("_", " ")) for g in dict.fromkeys(shown)) + "</div>"),
            section("Training curves", image(run_dir / "curves.png")),
            section("Losses per epoch", _metrics_table(run_dir))]


@REPORTERS.register("batch_schedule")
def batch_schedule_report(run_dir: Path, summary: dict[str, Any]) -> list[str]:
    from facelab.experiments.batch_schedule import mean_std

    res = summary["results"]
    rows = [[v, mean_std(r, "test_mean_accuracy"), mean_std(r, "test_mean_balanced_accuracy"), r["parameter_updates"],
             r["final_batch_size"], f"{r['train_seconds']:.1f}"] for v, r in res.items()]
    seeds = summary.get("seeds") or [0]
    splits = summary.get("splits", {})
    note = esc(f"{len(seeds)} seed(s) {', '.join(map(str, seeds))}; mean ± sample standard deviation. Rows: "
               f"train {splits.get('train', '?')}, val {splits.get('val', '?')}, test {splits.get('test', '?')} "
               f"({summary.get('splits_how', '')}).")
    note = f"<p>{note}</p>"
    return [section("Results", note + table(["variant", "test mean acc", "test balanced acc", "parameter updates",
                                             "final batch", "training s"], rows)),
            section("Curves", image(run_dir / "curves.png"))]


@REPORTERS.register("demo")
def demo_report(run_dir: Path, summary: dict[str, Any]) -> list[str]:
    parts = [section("Synthetic store", table(["store", "images", "seconds"],
                                               [[summary["store"], summary["stats"]["splits"]["all"]["count"], summary["build"]["seconds"]]]),
                     "<div class='row'>" + "".join(image(p, Path(p).stem) for p in summary.get("plots", [])) + "</div>")]
    for key, title in (("classifier", "Classifier"), ("generative", "Conditional generator"), ("study", "Augmentation study")):
        if key in summary:
            link = Path(summary[key]["run_dir"]) / "report.html"
            parts.append(section(title, f"<p><a href='{link.relative_to(run_dir) if link.is_relative_to(run_dir) else link}'>"
                                        f"{link}</a></p>", "<pre>" + fmt(_short(summary[key])) + "</pre>"))
    return parts


def _short(d: dict[str, Any]) -> str:
    import json

    return json.dumps({k: v for k, v in d.items() if not isinstance(v, (dict, list))}, indent=1)


import facelab.experiments.study_report  # noqa: E402,F401  (registers the augment_study reporter)
