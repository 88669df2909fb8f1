"""The report of ``facelab demo``: the synthetic store, the classifier's figures and the study's results table,
with links to the classifier's and the study's own reports."""

from __future__ import annotations

from pathlib import Path

from facelab.errors import FacelabError
from facelab.report.html import esc, fmt, image, section, table
from facelab.report.imbalance_study import INTERVAL_TEXT, results_html
from facelab.report.kinds import RUN_KINDS, RunKind
from facelab.runs.summary import DemoSummary, ImbalanceStudySummary, read_summary

CLASSIFIER_FIGURES = (("best_val_mean_accuracy", "best val mean accuracy"), ("test_mean_accuracy", "test mean accuracy"),
                      ("test_majority_accuracy", "test majority baseline"),
                      ("test_mean_balanced_accuracy", "test mean balanced accuracy"))


def demo_sections(run_dir: Path, summary: DemoSummary) -> list[str]:
    store = table(["store", "images", "seconds"],
                  [[summary.store, summary.stats["splits"]["all"]["count"], fmt(summary.build.get("seconds"), 3)]])
    plots = "<div class='row'>" + "".join(image(p, Path(p).stem) for p in summary.plots) + "</div>"
    c = summary.classifier
    classifier = table([name for _, name in CLASSIFIER_FIGURES], [[fmt(c.get(k)) for k, _ in CLASSIFIER_FIGURES]])
    steps = table(["step", "seconds"], [[k.replace("_", " "), fmt(v, 3)] for k, v in summary.timings_s.items()])
    return [section("Synthetic store", store, plots),
            section("Classifier", _link(run_dir, c["run_dir"]), classifier),
            section("Class-imbalance study", _link(run_dir, summary.study["run_dir"]), _study_results(run_dir, summary)),
            section("Time", steps, f"<p>{fmt(summary.seconds, 3)} s in total.</p>")]


def _link(run_dir: Path, part_dir: str) -> str:
    recorded = Path(part_dir)
    folder = run_dir / recorded.name if not recorded.is_dir() and (run_dir / recorded.name).is_dir() else recorded
    link = folder / "report.html"  # where the part ran, or beside a demo folder that was moved since
    href = link.relative_to(run_dir) if link.is_relative_to(run_dir) else link
    return f"<p>Its own report: <a href='{esc(href)}'>{esc(link)}</a></p>"


def _study_results(run_dir: Path, summary: DemoSummary) -> str:
    """The study's results table at the demo's p, from the study's summary.json (intervals, tests); the demo's
    own means when that folder is gone."""
    st = summary.study
    head = f"<p>{esc(st['target'])} at p = {esc(st['p'])}: {esc(INTERVAL_TEXT)}.</p>"
    study = _read_study(run_dir, Path(st["run_dir"]))
    at_p = study.aggregate.get(f"{st['p']:g}") if study is not None else None
    if at_p:
        return head + results_html(at_p)
    rows = [[m, fmt(v), fmt(st.get("minority_recall", {}).get(m))] for m, v in st["balanced_accuracy"].items()]
    return (f"<p>{esc(st['target'])} at p = {esc(st['p'])}: means over seeds (the study's folder is not readable, "
            "so no intervals).</p>" + table(["method", "balanced_accuracy", "minority_recall"], rows))


def _read_study(run_dir: Path, recorded: Path) -> ImbalanceStudySummary | None:
    for folder in (recorded, run_dir / recorded.name):  # where it ran, or beside a demo folder that was moved
        try:
            study = read_summary(folder)
        except FacelabError:
            continue
        if isinstance(study, ImbalanceStudySummary):
            return study
    return None


RUN_KINDS.register("demo")(RunKind(
    sections=demo_sections,
    key_metric=lambda s: ("test mean accuracy (classifier)", s.classifier.get("test_mean_accuracy"))))
