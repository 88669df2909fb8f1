"""A run's inputs (store, labels file, --config files, --pretrained checkpoint, teachers) are recorded by hash
and checked by every command that reads the run again: ``--resume`` of train, train-gen, pretrain and the
experiments, ``eval`` and ``predict`` on the run's own data. A changed input is an error naming it, both hashes
and ``--accept-changed-inputs``; with the flag the command goes on and the run records the acceptance."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from facelab.data.labels_file import LabelsFile, columns
from facelab.data.store import Store
from facelab.runs.inputs import ACCEPT_FLAG, ChangedInputError, recorded_inputs
from facelab.runs.splits import load_run_splits
from facelab.utils.io import sha256_file
from tests.e2e.conftest import TINY_CLASSIFIER, TINY_GEN, TINY_SSL, cli, cli_error, cli_json
from tests.helpers import make_store

N = 96


def _labels_csv(store: Path, path: Path, classes: list[str]) -> Path:
    """A labels file of the orientation task giving image i the class ``classes[i % len(classes)]``."""
    keys = [str(k) for k in Store.open(store).keys]
    blank = dict.fromkeys(columns(["orientation"]), "")
    rows = [{**blank, "key": k, "orientation": classes[i % len(classes)], "orientation_yaw": "0",
             "orientation_confidence": "1", "orientation_reviewed": "0"} for i, k in enumerate(keys)]
    LabelsFile(path, ["orientation"], rows).save()
    return path


def _turn_center_right(path: Path) -> None:
    f = LabelsFile.read(path)
    for r in f.rows:
        if r["orientation"] == "center":
            r["orientation"] = "right"
    f.save()


def _rebuild(store: Path, seed: int) -> None:
    """The store at ``store`` made again with other images and labels (the same rows and keys)."""
    shutil.rmtree(store)
    make_store(store, n=N, size=32, seed=seed)


def _check_message(error: Exception, what: str, path: Path, recorded: str, current: str) -> None:
    text = str(error)
    assert isinstance(error, ChangedInputError), text
    assert f"the {what} {path}" in text and recorded[:12] in text and current[:12] in text, text
    assert ACCEPT_FLAG in text and "\n" not in text


@pytest.fixture
def data(tmp_path):
    store = tmp_path / "store"
    make_store(store, n=N, size=32, seed=0)
    return store


def _train(*args) -> Path:
    return Path(cli_json("train", *args, *TINY_CLASSIFIER)["run_dir"])


# ---- train --resume -------------------------------------------------------------------------------------
def test_resume_refuses_a_labels_file_changed_since_and_goes_on_only_when_told(data, tmp_path):
    labels = _labels_csv(data, tmp_path / "labels.csv", ["left", "center", "right", "center"])
    run = _train(data, "--labels-file", labels, "--labels", "orientation", "--epochs", 1, "--out", tmp_path / "runs")
    before = sha256_file(labels)
    assert recorded_inputs(run)["labels_file"].digest == before
    _turn_center_right(labels)  # every center turned right: the run would validate against other classes
    after = sha256_file(labels)
    error = cli_error("train", "--resume", run, "--epochs", 2)
    _check_message(error, "labels file", labels.resolve(), before, after)
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1]

    summary = cli_json("train", "--resume", run, "--epochs", 2, ACCEPT_FLAG)
    assert summary["epochs"] == 2 and summary["labels_file"]["sha256"] == after
    record = json.loads((run / "inputs.json").read_text())
    (accepted,) = record["accepted"]
    assert accepted["command"] == "train --resume" and (accepted["recorded"], accepted["current"]) == (before, after)
    assert recorded_inputs(run)["labels_file"].digest == after  # the run now trains on it
    cli_json("train", "--resume", run, "--epochs", 3)  # so the next resume needs no flag


def test_resume_refuses_a_store_that_changed_and_keeps_the_rows_when_told(data, tmp_path):
    run = _train(data, "--labels", "Male", "--epochs", 1, "--out", tmp_path / "runs")
    before = Store.open(data).content_hash
    _rebuild(data, seed=5)
    after = Store.open(data).content_hash
    _check_message(cli_error("train", "--resume", run, "--epochs", 2), "store", data, before, after)
    rows = json.loads((run / "splits.json").read_text())["splits"]

    cli_json("train", "--resume", run, "--epochs", 2, ACCEPT_FLAG)
    recorded = load_run_splits(run, Store.open(data))  # re-recorded for the store it now trains on
    assert {k: v.tolist() for k, v in recorded.splits.items()} == rows and "accepted" in recorded.how
    assert json.loads((run / "inputs.json").read_text())["accepted"][0]["input"] == "store"


def test_resume_refuses_a_changed_or_missing_config_file(data, tmp_path):
    config = tmp_path / "base.yaml"
    config.write_text(yaml.safe_dump({"labels": ["Male"], "trainer": {"epochs": 1}}))
    run = _train(data, "--config", config, "--out", tmp_path / "runs")
    before = sha256_file(config)
    assert recorded_inputs(run)["config:0"].digest == before
    config.write_text(yaml.safe_dump({"labels": ["Smiling"], "trainer": {"epochs": 1}}))
    _check_message(cli_error("train", "--resume", run, "--epochs", 2), "config file", config.resolve(), before,
                   sha256_file(config))
    config.unlink()
    assert f"the config file {config.resolve()} is missing" in str(cli_error("train", "--resume", run, "--epochs", 2))
    cli_json("train", "--resume", run, "--epochs", 2, ACCEPT_FLAG)


def test_resume_refuses_a_changed_pretrained_checkpoint(data, tmp_path):
    source = _train(data, "--labels", "Male", "--epochs", 1, "--out", tmp_path / "runs", "--name", "source")
    run = _train(data, "--labels", "Smiling", "--epochs", 1, "--pretrained", source, "--out", tmp_path / "runs")
    weights = source / "checkpoints" / "best" / "model.safetensors"
    before = sha256_file(weights)
    cli_json("train", "--resume", source, "--epochs", 2)  # the source run trains on: a new best checkpoint
    _check_message(cli_error("train", "--resume", run, "--epochs", 2), "pretrained checkpoint", weights, before,
                   sha256_file(weights))


def test_the_flag_is_refused_without_resume(data, tmp_path):
    result = cli("train", data, "--labels", "Male", ACCEPT_FLAG, "--out", tmp_path, ok=False)
    assert result.exit_code == 2 and "--accept-changed-inputs goes with --resume" in result.output
    assert not (tmp_path / "runs").exists()


# ---- eval and predict ---------------------------------------------------------------------------------
@pytest.fixture
def labelled_run(data, tmp_path):
    labels = _labels_csv(data, tmp_path / "labels.csv", ["left", "center", "right", "center"])
    config = tmp_path / "base.yaml"
    config.write_text(yaml.safe_dump({"labels": ["orientation"], "trainer": {"epochs": 1}}))
    run = _train(data, "--labels-file", labels, "--config", config, "--out", tmp_path / "runs")
    return run, data, labels, config


def test_eval_of_the_run_refuses_its_changed_labels_file_and_scores_when_told(labelled_run):
    run, data, labels, _ = labelled_run
    before = sha256_file(labels)
    cli_json("eval", run, "--data", data, "--split", "all")
    _turn_center_right(labels)
    _check_message(cli_error("eval", run, "--data", data, "--split", "all"), "labels file", labels.resolve(), before,
                   sha256_file(labels))
    report = cli_json("eval", run, "--data", data, "--split", "all", ACCEPT_FLAG)
    assert report["labels_file"]["changed_since_training"] is True
    assert any("labels file" in w and ACCEPT_FLAG in w for w in report["warnings"])
    record = json.loads((run / "inputs.json").read_text())
    assert record["accepted"][-1]["command"] == "eval"
    assert recorded_inputs(run)["labels_file"].digest == before  # evaluating does not change what the run trained on


def test_eval_and_predict_of_the_run_on_its_changed_store_are_refused(labelled_run, tmp_path):
    run, data, labels, _ = labelled_run
    before = Store.open(data).content_hash
    _rebuild(data, seed=9)
    after = Store.open(data).content_hash
    _check_message(cli_error("eval", run, "--data", data, "--split", "all"), "store", data, before, after)
    _check_message(cli_error("predict", run, data, "--out", tmp_path / "p.csv"), "store", data, before, after)
    assert not (tmp_path / "p.csv").exists()
    report = cli_json("predict", run, data, "--out", tmp_path / "p.csv", ACCEPT_FLAG)
    assert report["count"] == N and any("store" in w for w in report["warnings"])


def test_eval_and_predict_on_the_run_s_own_store_refuse_a_changed_config_file(labelled_run, tmp_path):
    run, data, labels, config = labelled_run
    before = sha256_file(config)
    config.write_text(yaml.safe_dump({"labels": ["orientation"], "trainer": {"epochs": 7}}))
    _check_message(cli_error("eval", run, "--data", data, "--split", "all"), "config file", config.resolve(), before,
                   sha256_file(config))
    _check_message(cli_error("predict", run, data, "--out", tmp_path / "p.csv"), "config file", config.resolve(),
                   before, sha256_file(config))
    cli_json("predict", run, data, "--out", tmp_path / "p.csv", ACCEPT_FLAG)


def test_eval_on_another_store_checks_only_the_labels_file_it_reads(labelled_run, tmp_path):
    run, data, labels, config = labelled_run
    other = tmp_path / "other"
    make_store(other, n=N, size=32, seed=3)
    config.write_text("labels: [orientation]\n")  # changed, but an external store is not the run's own data
    report = cli_json("eval", run, "--data", other, "--split", "all", "--labels-file",
                      _labels_csv(other, tmp_path / "other.csv", ["left", "right"]))
    assert report["count"] == N


# ---- train-gen, pretrain, experiments ---------------------------------------------------------------
def test_train_gen_resume_refuses_a_changed_store_or_config_file(data, tmp_path):
    config = tmp_path / "gen.yaml"
    config.write_text(yaml.safe_dump({"model": "vae", "trainer": {"epochs": 1}}))
    run = Path(cli_json("train-gen", data, "--config", config, *TINY_GEN, "--out", tmp_path / "runs")["run_dir"])
    before = Store.open(data).content_hash
    _rebuild(data, seed=4)
    _check_message(cli_error("train-gen", "--resume", run, "--epochs", 2), "store", data, before,
                   Store.open(data).content_hash)
    config.write_text("model: vae\n")
    error = cli_error("train-gen", "--resume", run, "--epochs", 2)
    assert "the store" in str(error) and "the config file" in str(error)  # every change, in one message
    assert cli_json("train-gen", "--resume", run, "--epochs", 2, ACCEPT_FLAG)["epochs"] == 2


def test_pretrain_resume_refuses_a_changed_store_or_teacher(data, tmp_path):
    teacher = _train(data, "--labels", "Male", "--epochs", 1, "--out", tmp_path / "runs", "--name", "teacher")
    run = Path(cli_json("pretrain", data, "--objective", "distill", "--epochs", 1, *TINY_SSL[:4],
                        "-o", f"objective_kwargs={{teacher: [{teacher}]}}", "--out", tmp_path / "runs")["run_dir"])
    weights = teacher / "checkpoints" / "last" / "model.safetensors"
    assert recorded_inputs(run)["teacher:0"].digest == sha256_file(weights)
    before = sha256_file(weights)
    cli_json("train", "--resume", teacher, "--epochs", 2)  # the teacher trained on since
    _check_message(cli_error("pretrain", "--resume", run, "--epochs", 2), "teacher", weights, before,
                   sha256_file(weights))
    store_before = Store.open(data).content_hash
    _rebuild(data, seed=6)
    error = cli_error("pretrain", "--resume", run, "--epochs", 2)
    assert store_before[:12] in str(error) and "teacher" in str(error)
    cli_json("pretrain", "--resume", run, "--epochs", 2, ACCEPT_FLAG)
    assert json.loads((run / "pretrain_splits.json").read_text())["stores"][0]["content_hash"] == \
        Store.open(data).content_hash


def test_batch_schedule_resume_refuses_a_changed_store(data, tmp_path):
    config = tmp_path / "bs.yaml"
    config.write_text(yaml.safe_dump({"labels": ["Male"], "variants": ["lr_decay"], "epochs": 2, "batch_size": 8,
                                      "factor": 2, "milestones": [0.5], "model_kwargs": {"channels": [8, 16, 16]}}))
    run = Path(cli_json("experiment", "batch-schedule", data, "--config", config, "--out", tmp_path / "runs")["run_dir"])
    assert recorded_inputs(run)["config:0"].digest == sha256_file(config)
    before = Store.open(data).content_hash
    _rebuild(data, seed=8)
    _check_message(cli_error("experiment", "batch-schedule", "--resume", run), "store", data, before,
                   Store.open(data).content_hash)


def test_the_processes_of_an_nproc_run_record_the_user_s_config_files(tmp_path, monkeypatch):
    from facelab.cli.common import CONFIG_FILES_ENV, _config_files

    assert _config_files([tmp_path / "a.yaml", None]) == [tmp_path / "a.yaml", None]
    monkeypatch.setenv(CONFIG_FILES_ENV, json.dumps([str(tmp_path / "user.yaml")]))
    assert _config_files([tmp_path / "facelab-config-tmp.yaml"]) == [tmp_path / "user.yaml"]


def test_accept_without_resume_is_refused_by_every_training_command(data, tmp_path):
    for args in (("train-gen", data, *TINY_GEN), ("pretrain", data, *TINY_SSL)):
        result = cli(*args, ACCEPT_FLAG, "--out", tmp_path, ok=False)
        assert result.exit_code == 2 and "goes with --resume" in result.output, result.output
