"""``facelab demo`` (the main job) end to end, shrunk: store, classifier, study, report, JSON summary."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from facelab.data.schema import Partition
from facelab.data.store import Store
from tests.e2e.conftest import cli, cli_error

SMALL = ("--n", "300", "--seeds", "1", "-o", "classifier_epochs=1", "-o", "study_epochs=1", "-o", "generator_epochs=1",
         "-o", "p=0.5", "-o", "target_prevalence=0.5", "-o", "methods=[none, oversample, cvae]")


def test_demo_runs_every_step_and_ends_with_its_report(tmp_path):
    result = cli("demo", "--out", tmp_path, *SMALL, "--json")
    summary = json.loads(result.stdout)
    run = Path(summary["run_dir"])
    assert run.parent == tmp_path and summary["kind"] == "demo"
    assert summary["build"]["count"] == 300 and summary["build"]["skipped_count"] == 0
    assert all(Path(p).is_file() for p in summary["plots"])
    c = summary["classifier"]
    # one epoch cannot be relied on to beat the majority baseline; the figures are those of the test rows
    st = Store.open(summary["store"])
    test = st.partition_indices(Partition.TEST)
    shares = [np.bincount(st.column(n)[test]).max() / len(test) for n in st.label_names]
    assert c["test_majority_accuracy"] == pytest.approx(np.mean(shares))
    evaluated = json.loads((Path(c["run_dir"]) / "eval" / f"{st.path.name}-test" / "report.json").read_text())
    assert evaluated["count"] == len(test) and c["test_mean_accuracy"] == evaluated["summary"]["mean_accuracy"]
    assert (Path(c["run_dir"]) / "report.html").is_file()
    study = summary["study"]
    assert set(study["balanced_accuracy"]) == {"none", "oversample", "cvae"} and study["p"] == 0.5
    assert Path(study["report"]).is_file()
    results = [json.loads(x) for x in (Path(study["run_dir"]) / "results.jsonl").read_text().splitlines()]
    assert sorted(r["method"] for r in results) == ["cvae", "none", "oversample"]
    fidelity = next(r for r in results if r["method"] == "cvae")["notes"]["synthetic_fidelity"]
    assert 0.0 <= fidelity <= 1.0 and fidelity * 500 == pytest.approx(round(fidelity * 500))  # of 500 samples
    assert set(summary["timings_s"]) == {"store_and_stats", "classifier", "imbalance_study"}
    assert json.loads((run / "summary.json").read_text())["study"] == study
    html = Path(summary["report"]).read_text()
    assert Path(summary["report"]) == run / "report.html" and "data:image/png;base64," in html
    # the study's own table, rounded for people, not a JSON block of paths and unrounded figures
    assert "<td>oversample</td>" in html and "n=1 seed: interval not shown" in html
    assert '"run_dir"' not in html and repr(study["balanced_accuracy"]["cvae"]) not in html

    # off a terminal (a log file) every step, epoch and study cell is a line on stderr, as it happens
    log = result.stderr.splitlines()
    steps = [line for line in log if line.startswith("demo ")]
    assert [s[:9] for s in steps] == ["demo 1/4:", "demo 2/4:", "demo 3/4:", "demo 4/4:"]
    assert "decoding: 300/300 in " in result.stderr
    assert any(line.startswith("epoch 1/1 (") and "val_mean_accuracy=" in line for line in log)
    cells = [line for line in log if line.startswith("study ") and "/3: p=0.5 seed=0 " in line]
    assert [c.split(": ", 1)[1] for c in cells] == ["p=0.5 seed=0 none", "p=0.5 seed=0 oversample", "p=0.5 seed=0 cvae"]
    done = [line for line in log if line.startswith("p=0.5 seed=0 ") and "balanced_accuracy " in line]
    assert len(done) == 3 and log.index(cells[0]) < log.index(done[0]) < log.index(cells[1])
    inner = [line for line in log if line.startswith("p=0.5 seed=0 cvae: epoch 1/1 (")]  # generator, classifier
    assert len(inner) == 2 and log.index(cells[2]) < log.index(inner[0]) < log.index(inner[1]) < log.index(done[2])
    assert log.index(steps[2]) < log.index(cells[0]) and log.index(done[-1]) < log.index(steps[3])

    plain = ("--n", "200", "--seeds", "1", "-o", "classifier_epochs=1", "-o", "study_epochs=1", "-o", "methods=[none]")
    printed = cli("demo", "--out", tmp_path / "plain", *plain).stdout.strip().splitlines()
    assert printed[-1].endswith("report.html") and Path(printed[-1]).is_file()  # the last line is the report


def test_demo_rejects_bad_options_before_building_anything(tmp_path):
    err = cli_error("demo", "--out", tmp_path, "-o", "p=1.5")
    assert "p: Input should be less than or equal to 1" in str(err)
    err = cli_error("demo", "--out", tmp_path, "-o", "target=Beard")
    assert "Beard" in str(err)
    err = cli_error("demo", "--out", tmp_path, "-o", "methods=[none, magic]")
    assert "magic" in str(err)
    assert not any(tmp_path.iterdir())
