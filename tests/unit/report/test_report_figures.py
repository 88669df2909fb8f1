"""Every kind of report shows figures for people: rounded to 4 significant digits, intervals only where they mean
something and inside the metric's range; summary.json and ``--json`` keep full precision."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from facelab.experiments.imbalance_study import aggregate
from facelab.report import render_report
from facelab.report.imbalance_study import results_markdown
from facelab.runs.summary import (BatchScheduleSummary, ClassifierSummary, DemoSummary, GenerativeSummary,
                                  ImbalanceStudySummary, PretrainSummary, SweepSummary, write_summary)
from facelab.utils.io import append_jsonl

RAW = 0.9305555555555554  # a mean of 72 shares, as the new user saw it
SECONDS = 12.345678912
TRAINING = dict(model="vgg_scratch", params=1234, train_rows=100, val_rows=20, device="cpu", epochs=2, steps=8,
                best=RAW, monitor="val_mean_accuracy", stop_reason="epochs", seconds=SECONDS, train_seconds=SECONDS,
                fit_seconds=SECONDS)


def _visible(html: str) -> str:
    """The report without its embedded images and the config block (which shows the YAML as written)."""
    html = re.sub(r"data:image/png;base64,[^\"']+", "", html)
    return html.split("<h2>Configuration and environment</h2>")[0]


def _records(seeds: list[int], values: dict[str, list[float]]) -> list[dict]:
    """Study cells: a record per (method, seed) with every metric set to the method's value of that seed."""
    metrics = ("accuracy", "balanced_accuracy", "minority_recall", "f1_macro", "auroc")
    return [{"p": 0.1, "seed": s, "method": m, "test": {k: v[i] for k in metrics},
             "notes": {"synthetic_fidelity": v[i] / 4} if m == "cvae" else {}}
            for m, v in values.items() for i, s in enumerate(seeds)]


def _study(run: Path, seeds: list[int], values: dict[str, list[float]]) -> ImbalanceStudySummary:
    run.mkdir(parents=True, exist_ok=True)
    summary = ImbalanceStudySummary(run_dir=str(run), store="s", target="Male", minority=0,
                                    splits={"train": 10, "val": 5, "test": 5}, aggregate=aggregate(_records(seeds, values)),
                                    seconds=SECONDS)
    write_summary(run, summary)
    return summary


def test_two_seeds_show_means_and_say_why_there_is_no_interval(tmp_path):
    # the new user's case: 2 seeds whose Student-t interval (t = 12.7) ran past [0, 1]: 0.21 +- 2.54
    summary = _study(tmp_path / "study", [0, 1], {"none": [0.9, 0.95], "cvae": [0.01, 0.41]})
    html = _visible(render_report(tmp_path / "study").read_text())
    assert "n=2 seeds: interval not shown" in html and "±" not in html
    assert "0.2100" in html and "2.54" not in html  # cvae's mean; its unclipped half-width is gone
    md = results_markdown(summary.aggregate)
    assert "n=2 seeds: interval not shown" in md and "±" not in md and "| cvae | 0.210 | 0.210 |" in md
    assert md.count("interval not shown") == 2  # the results table and the generated samples' table
    stat = summary.aggregate["0.1"]["cvae"]["balanced_accuracy"]
    assert stat["ci95"] == pytest.approx(2.5412, abs=1e-3) and stat["low"] is None  # summary.json: full record


def test_three_seeds_show_intervals_clipped_to_the_metric_range(tmp_path):
    summary = _study(tmp_path / "study", [0, 1, 2], {"none": [0.98, 1.0, 0.99], "cvae": [0.02, 0.0, 0.01]})
    html = _visible(render_report(tmp_path / "study").read_text())
    assert "0.9900 [0.9652, 1.000]" in html  # 0.99 ± 0.0248 reaches past 1
    assert "0.01000 [0.000, 0.03484]" in html  # 0.01 ± 0.0248 reaches below 0
    assert "interval not shown" not in html
    stat = summary.aggregate["0.1"]["none"]["balanced_accuracy"]
    assert stat["high"] == 1.0 and stat["low"] == pytest.approx(0.99 - stat["ci95"])  # --json: not rounded
    assert "0.990 [0.965, 1.00]" in results_markdown(summary.aggregate)


def _demo(run: Path) -> Path:
    """A demo folder whose study (2 seeds) and classifier folders are inside it."""
    study = _study(run / "study", [0, 1], {"none": [RAW, 0.95], "oversample": [0.8, 0.9]})
    (run / "classifier").mkdir()
    write_summary(run, DemoSummary(
        run_dir=str(run), store=str(run / "store"), build={"seconds": SECONDS}, stats={"splits": {"all": {"count": 300}}},
        plots=[], classifier={"run_dir": str(run / "classifier"), "best_val_mean_accuracy": RAW,
                              "test_mean_accuracy": RAW, "test_majority_accuracy": 0.5, "test_mean_balanced_accuracy": RAW},
        study={"run_dir": str(run / "study"), "target": "Male", "p": 0.1, "report": str(run / "study" / "report.html"),
               "balanced_accuracy": {m: e["balanced_accuracy"]["mean"] for m, e in study.aggregate["0.1"].items()},
               "minority_recall": {m: e["minority_recall"]["mean"] for m, e in study.aggregate["0.1"].items()}},
        timings_s={"store_and_stats": SECONDS}, seconds=SECONDS))
    return run


def test_the_demo_report_shows_the_study_table_not_a_json_block(tmp_path):
    run = _demo(tmp_path / "demo")
    html = _visible(render_report(run).read_text())
    assert "<pre>" not in html and '"run_dir"' not in html  # no JSON block
    assert "<th>balanced_accuracy</th>" in html and "<td>oversample</td>" in html and "0.8500" in html
    assert "n=2 seeds: interval not shown" in html
    assert str(RAW) not in html and "0.9306" in html and "12.3" in html
    assert json.loads((run / "summary.json").read_text())["classifier"]["test_mean_accuracy"] == RAW  # JSON: full


def _training_run(run: Path, summary) -> Path:
    run.mkdir(parents=True)
    write_summary(run, summary)
    for epoch in (1, 2):
        append_jsonl(run / "metrics.jsonl", {"epoch": epoch, "train_loss": RAW / epoch, "val_mean_accuracy": RAW,
                                             "lr": 0.000312345})
    return run


@pytest.mark.parametrize("kind", ["classifier", "generative", "pretrain", "batch_schedule", "sweep"])
def test_every_report_kind_rounds_for_people(tmp_path, kind):
    run = tmp_path / kind
    if kind == "classifier":
        _training_run(run, ClassifierSummary(run_dir=str(run), labels=["Male"], **TRAINING))
    elif kind == "generative":
        _training_run(run, GenerativeSummary(run_dir=str(run), grid="g.png", **TRAINING))
    elif kind == "pretrain":
        _training_run(run, PretrainSummary(run_dir=str(run), stores=["s"], objective="simclr",
                                           images_per_s=123.456789, **TRAINING))
    elif kind == "batch_schedule":
        run.mkdir()
        result = {"test_mean_accuracy": RAW, "test_mean_accuracy_std": 0.0123456, "test_mean_balanced_accuracy": RAW,
                  "test_mean_balanced_accuracy_std": None, "parameter_updates": 10, "final_batch_size": 64,
                  "train_seconds": SECONDS}
        write_summary(run, BatchScheduleSummary(run_dir=str(run), store="s", labels=["Male"], seeds=[0, 1],
                                                splits={"train": 1}, splits_how="x", results={"lr_decay": result},
                                                seconds=SECONDS))
    else:
        run.mkdir()
        write_summary(run, SweepSummary(run_dir=str(run), command="train", study_name="s", storage="sqlite://",
                                        metric="val_mean_accuracy", direction="maximize", n_trials=1,
                                        states={"COMPLETE": 1}, best_trial=0, best_value=RAW, cpu_seconds=SECONDS,
                                        trials=[{"number": 0, "state": "COMPLETE", "value": RAW,
                                                 "cpu_seconds": SECONDS}]))
    html = _visible(render_report(run).read_text())
    assert str(RAW) not in html and str(SECONDS) not in html
    assert "0.9306" in html
    if kind in ("classifier", "generative", "pretrain"):
        assert "0.0003123" in html and "0.4653" in html  # the lr and the second epoch's loss, per epoch
        assert "<td>12.3</td>" in html  # seconds


def test_a_moved_demo_folder_still_shows_and_links_its_study(tmp_path):
    run = _demo(tmp_path / "demo")
    moved = tmp_path / "elsewhere" / "demo"
    moved.parent.mkdir()
    run.rename(moved)
    html = _visible(render_report(moved).read_text())
    assert "<td>oversample</td>" in html and "href='study/report.html'" in html
