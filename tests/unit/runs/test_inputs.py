"""runs/inputs.py: what a run records of its inputs, where, and what a check says of a changed one."""

from __future__ import annotations

import json

import numpy as np
import pytest

from facelab.errors import FacelabError, StoreError
from facelab.runs.inputs import (ACCEPT_FLAG, INPUTS, ChangedInputError, check_inputs, check_own_data, file_input,
                                 is_own_store, record_inputs, recorded_inputs, run_dir_of, store_input)
from facelab.runs.splits import load_run_splits, save_pretrain_splits, save_run_splits
from facelab.runs.summary import SUMMARY
from tests.helpers import make_store


@pytest.fixture
def run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("store: s\n")
    return run


def _check(run, current, **kw):
    return check_inputs(run, current, doing="resume", command="train --resume", adopt=kw.pop("adopt", True), **kw)


def test_a_store_is_recorded_with_its_rows_and_every_other_input_in_inputs_json(run, tmp_path):
    store = make_store(tmp_path / "store", n=20)
    labels = tmp_path / "labels.csv"
    labels.write_text("key,orientation\n")
    save_run_splits(run, {"train": np.arange(10), "val": np.arange(10, 20)}, store, how="test")
    _check(run, [store_input(store), file_input("labels_file", "labels file", labels)])
    doc = json.loads((run / INPUTS).read_text())
    assert [d["key"] for d in doc["inputs"]] == ["labels_file"]  # the store's record is splits.json
    rec = recorded_inputs(run)
    assert rec["store"].digest == store.content_hash and rec["labels_file"].path == str(labels.resolve())


def test_an_unchanged_run_passes_and_a_changed_input_is_one_line_naming_everything(run, tmp_path):
    config = tmp_path / "base.yaml"
    config.write_text("epochs: 1\n")
    record_inputs(run, [file_input("config:0", "config file", config)])
    assert _check(run, []) == []
    before = file_input("config:0", "config file", config).digest
    config.write_text("epochs: 2\n")
    with pytest.raises(ChangedInputError) as info:
        _check(run, [])
    text = str(info.value)
    assert "\n" not in text and str(config.resolve()) in text and before[:12] in text
    assert file_input("config:0", "config file", config).digest[:12] in text and ACCEPT_FLAG in text
    assert [c.current.key for c in info.value.changes] == ["config:0"]


def test_accepting_on_resume_adopts_the_change_and_records_who_accepted_it(run, tmp_path):
    config = tmp_path / "base.yaml"
    config.write_text("a: 1\n")
    record_inputs(run, [file_input("config:0", "config file", config)])
    config.write_text("a: 2\n")
    changes = _check(run, [], accept=True)
    assert len(changes) == 1
    doc = json.loads((run / INPUTS).read_text())
    assert doc["accepted"][0]["command"] == "train --resume" and doc["accepted"][0]["input"] == "config:0"
    assert _check(run, []) == []  # adopted: the next resume passes


def test_accepting_on_eval_records_it_and_changes_nothing_else(run, tmp_path):
    config = tmp_path / "base.yaml"
    config.write_text("a: 1\n")
    record_inputs(run, [file_input("config:0", "config file", config)])
    config.write_text("a: 2\n")
    check_inputs(run, [], accept=True, doing="evaluate", command="eval", adopt=False)
    with pytest.raises(ChangedInputError):
        check_inputs(run, [], doing="evaluate", command="eval", adopt=False)
    assert json.loads((run / INPUTS).read_text())["accepted"][0]["command"] == "eval"


def test_a_missing_input_is_named_as_missing(run, tmp_path):
    teacher = tmp_path / "teacher.safetensors"
    teacher.write_bytes(b"weights")
    record_inputs(run, [file_input("teacher:0", "teacher", teacher)])
    teacher.unlink()
    with pytest.raises(ChangedInputError, match=rf"the teacher {teacher.resolve()} is missing \(recorded sha256 "):
        _check(run, [])


def test_a_changed_store_accepted_on_resume_keeps_the_run_s_rows_if_they_exist(run, tmp_path):
    store = make_store(tmp_path / "a", n=20, seed=0)
    save_run_splits(run, {"train": np.arange(12), "val": np.arange(12, 20)}, store, how="test")
    other = make_store(tmp_path / "b", n=20, seed=1)
    with pytest.raises(ChangedInputError, match="the store"):
        _check(run, [store_input(other)])
    _check(run, [store_input(other)], accept=True)
    assert load_run_splits(run, other).rows("train").tolist() == list(range(12))
    small = make_store(tmp_path / "c", n=5, seed=2)
    with pytest.raises(StoreError, match="cannot be read from the changed store"):
        _check(run, [store_input(small)], accept=True)


def test_pretraining_stores_are_recorded_in_pretrain_splits(run, tmp_path):
    a, b = make_store(tmp_path / "a", n=10, seed=0), make_store(tmp_path / "b", n=10, seed=1)
    save_pretrain_splits(run, [a, b], [{"train": np.arange(8), "val": np.arange(8, 10)}] * 2, how="test")
    rec = recorded_inputs(run)
    assert (rec["store:0"].digest, rec["store:1"].digest) == (a.content_hash, b.content_hash)
    c = make_store(tmp_path / "c", n=10, seed=3)
    _check(run, [store_input(a, "store:0"), store_input(c, "store:1")], accept=True)
    assert json.loads((run / "pretrain_splits.json").read_text())["stores"][1]["content_hash"] == c.content_hash


def test_a_run_made_before_inputs_json_is_checked_against_its_summary(run, tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("key,orientation\n")
    (run / SUMMARY).write_text(json.dumps({"kind": "classifier", "labels_file": {
        "labels_file": str(labels), "sha256": file_input("x", "x", labels).digest}}))
    assert recorded_inputs(run)["labels_file"].path == str(labels)
    labels.write_text("key,orientation\nimg0,left\n")
    with pytest.raises(ChangedInputError, match="the labels file"):
        _check(run, [file_input("labels_file", "labels file", labels)])


def test_a_damaged_record_is_a_clear_error(run):
    (run / INPUTS).write_text("{not json")
    with pytest.raises(FacelabError, match="inputs.json: damaged"):
        recorded_inputs(run)


def test_own_store_by_content_or_by_path_and_the_labels_file_only_when_it_is_the_run_s(run, tmp_path):
    store = make_store(tmp_path / "store", n=10, seed=0)
    save_run_splits(run, {"train": np.arange(10)}, store, how="test")
    labels = tmp_path / "labels.csv"
    labels.write_text("v1\n")
    record_inputs(run, [file_input("labels_file", "labels file", labels)])
    other = make_store(tmp_path / "other", n=10, seed=1)
    assert is_own_store(run, store) and not is_own_store(run, other)
    labels.write_text("v2\n")
    elsewhere = tmp_path / "elsewhere.csv"
    elsewhere.write_text("v3\n")
    check_own_data(run, other, labels=file_input("labels_file", "labels file", elsewhere), doing="evaluate",
                   command="eval")  # neither the run's store nor its labels file
    with pytest.raises(ChangedInputError, match="the labels file"):
        check_own_data(run, other, labels=file_input("labels_file", "labels file", labels), doing="evaluate",
                       command="eval")


def test_run_dir_of_finds_the_run_of_a_checkpoint_or_export(run):
    (run / "splits.json").write_text("{}")
    (run / "checkpoints" / "best").mkdir(parents=True)
    assert run_dir_of(run) == run and run_dir_of(run / "checkpoints" / "best") == run
    assert run_dir_of(run / "checkpoints" / "best" / "model.safetensors") == run
    assert run_dir_of(run / "export" / "model.onnx") == run
    assert run_dir_of(run.parent / "nowhere.onnx") is None
