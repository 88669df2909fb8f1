"""``facelab report`` and ``facelab runs`` on the session's run folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from facelab.data.store import Store
from tests.e2e.conftest import cli, cli_error, cli_json


def rerender(run: Path) -> str:
    (run / "report.html").unlink()
    result = cli("report", run)
    assert str(run / "report.html") in result.stderr.replace("\n", "")  # progress and paths go to stderr
    return (run / "report.html").read_text()


def test_report_rerenders_a_classifier_run_with_its_evaluations(clf_run, store):
    run, summary = clf_run
    cli("eval", run, "--data", store)
    html = rerender(run)
    assert html.startswith("<!doctype html>") and f"facelab classifier: {run.name}" in html
    assert "Training curves" in html and "Metrics per epoch" in html
    assert f"Evaluation: {Store.open(store).path.name}-test (the run&#x27;s own test split)" in html
    assert html.count("data:image/png;base64,") >= 5  # curves, per-label bars, 3 confusion matrices
    assert "src=\"http" not in html  # self-contained
    assert "store:" in html and "torch" in html  # config and environment
    assert f"{summary['params']:,}" in html


def test_report_rerenders_a_generative_run(cvae_run):
    html = rerender(cvae_run)
    assert "facelab generative" in html and "Samples" in html and "Losses per epoch" in html
    assert "Male" in html and html.count("data:image/png;base64,") >= 2


def test_report_needs_a_finished_run(tmp_path):
    err = cli_error("report", tmp_path)
    assert "no summary.json" in str(err)
    (tmp_path / "summary.json").write_text(json.dumps({"kind": "mystery"}))
    err = cli_error("report", tmp_path)
    assert "mystery" in str(err) and "classifier" in str(err)


def test_runs_lists_kind_and_key_metric(clf_run, cvae_run, dcgan_run, runs_root, request):
    unfinished = runs_root / "train-unfinished"
    unfinished.mkdir(exist_ok=True)
    request.addfinalizer(lambda: shutil.rmtree(unfinished))  # the session's shared runs folder stays as built
    (unfinished / "config.yaml").write_text("store: nowhere\n")
    rows = {Path(r["run"]).name: r for r in cli_json("runs", runs_root)}
    run, summary = clf_run
    assert rows[run.name]["kind"] == "classifier"
    assert rows[run.name]["metric"] == "val_mean_accuracy" and rows[run.name]["value"] == pytest.approx(summary["best"])
    assert Path(rows[run.name]["report"]).is_file()
    cvae_final = json.loads((cvae_run / "summary.json").read_text())["final"]
    assert (rows[cvae_run.name]["kind"], rows[cvae_run.name]["metric"]) == ("generative", "val_loss")
    assert rows[cvae_run.name]["value"] == pytest.approx(cvae_final["val_loss"])
    gan = rows[dcgan_run.name]
    assert gan["kind"] == "generative" and gan["metric"].endswith("loss") and gan["value"] is not None
    assert rows["train-unfinished"]["kind"] == "unfinished" and rows["train-unfinished"]["value"] is None
    table = cli("runs", runs_root).stdout  # a rich table
    assert "classifier" in table and "generative" in table and "unfinished" in table


def test_runs_and_sources_print_whole_rows_when_not_on_a_terminal(tmp_path, monkeypatch):
    """Piped into grep or a file, a listing keeps every row whole: no 80-column cut, no ellipsis."""
    monkeypatch.setenv("COLUMNS", "80")
    long_name = "train-" + "a-very-long-experiment-name-" * 6 + "[bold]x"  # and no rich markup read in it
    (tmp_path / long_name).mkdir()
    (tmp_path / long_name / "config.yaml").write_text("store: nowhere\n")
    table = cli("runs", tmp_path).stdout
    row = next(line for line in table.splitlines() if long_name in line)
    assert str(tmp_path / long_name) in row and "unfinished" in row and "…" not in table
    sources = cli("data", "sources").stdout.splitlines()
    assert "utkface: UTKFace faces labelled by file name: ``age`` (numeric, years), ``gender`` (binary: 0 male, " \
           "1 female) and ``race`` (categorical, 5 classes), plus ``age_group`` (categorical) with the ``age_bins`` " \
           "option. No identities, no official partitions." in sources
    synthetic = next(line for line in sources if line.startswith("   options: n=2000"))
    assert synthetic.endswith("landmarks=false")  # every option on its line
