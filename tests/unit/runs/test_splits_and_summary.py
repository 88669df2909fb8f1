"""A run's recorded rows (splits.json) and its typed, strict-JSON summary."""

from __future__ import annotations

import json

import numpy as np
import pytest

from facelab.errors import FacelabError, StoreError
from facelab.runs.splits import load_run_splits, recorded_store_hash, save_run_splits
from facelab.runs.summary import ClassifierSummary, GenerativeSummary, read_summary, write_summary
from tests.helpers import make_store


def test_splits_round_trip_with_how_and_refuse_another_store(tmp_path):
    st = make_store(tmp_path / "s", n=20)
    other = make_store(tmp_path / "o", n=20, seed=1)
    run = tmp_path / "run"
    run.mkdir()
    assert load_run_splits(run, st) is None and recorded_store_hash(run) is None  # older runs record none
    save_run_splits(run, {"train": np.array([5, 1, 3]), "val": np.array([7]), "test": np.zeros(0, int)}, st,
                    how="official partitions")
    got = load_run_splits(run, st)
    assert got.how == "official partitions" and got.rows("train").tolist() == [1, 3, 5]  # sorted int64
    assert got.rows("val").tolist() == [7] and got.rows("test").size == 0 and got.rows("holdout").size == 0
    assert recorded_store_hash(run) == st.content_hash
    with pytest.raises(StoreError, match="content hash"):
        load_run_splits(run, other)
    (run / "splits.json").write_text("{")
    with pytest.raises(FacelabError, match="damaged"):
        recorded_store_hash(run)


def _summary(**over) -> ClassifierSummary:
    fields = dict(run_dir="r", model="vgg_scratch", labels=["Male"], params=10, train_rows=8, val_rows=2,
                  device="cpu", epochs=1, steps=1, best=0.5, monitor="val_mean_accuracy", stop_reason="completed",
                  seconds=1.0, train_seconds=1.0, fit_seconds=1.0)
    return ClassifierSummary(**{**fields, **over})


def test_summary_is_strict_json_and_reads_back_typed(tmp_path):
    s = _summary(best=float("nan"), final={"val_auroc": float("inf"), "val_mean_accuracy": 0.75,
                                           "nested": {"x": float("nan")}})
    path = write_summary(tmp_path, s)
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    data = json.loads(text)
    assert data["best"] is None and data["final"] == {"val_auroc": None, "val_mean_accuracy": 0.75, "nested": {"x": None}}
    back = read_summary(tmp_path)
    assert isinstance(back, ClassifierSummary) and back.labels == ["Male"] and back.best is None


def test_read_summary_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(FacelabError, match="no summary.json"):
        read_summary(tmp_path)
    (tmp_path / "summary.json").write_text("[1, 2")
    with pytest.raises(FacelabError, match="not readable as JSON"):
        read_summary(tmp_path)
    (tmp_path / "summary.json").write_text(json.dumps({"kind": "mystery", "run_dir": "r"}))
    with pytest.raises(FacelabError, match="unknown run kind 'mystery'.*classifier"):
        read_summary(tmp_path)
    (tmp_path / "summary.json").write_text(json.dumps({"kind": "generative", "run_dir": "r"}))
    with pytest.raises(FacelabError, match="not a valid generative summary"):
        read_summary(tmp_path)


def test_older_summaries_with_a_report_path_still_read(tmp_path):
    data = {**_summary().to_dict(), "report": "r/report.html"}
    (tmp_path / "summary.json").write_text(json.dumps(data))
    assert read_summary(tmp_path).model == "vgg_scratch"
    assert GenerativeSummary.model_fields["kind"].default == "generative"
