"""Training on a labels file: ``facelab train STORE --labels-file labels.csv --labels orientation``, from scratch
and by transfer with frozen batch norm; evaluation against the file (reviewed rows only, flip consistency);
predictions for every image; every bad labels file refused before a run folder exists."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from facelab.data.labels_file import LabelsFile, open_store
from facelab.data.store import Store
from facelab.errors import ConfigError, DataError
from facelab.models.checkpoint import read_meta, read_weights
from facelab.runs.splits import load_run_splits
from facelab.serve.review import Decision, ReviewSession
from tests.e2e.conftest import TINY_CLASSIFIER, cli, cli_error, cli_json

N = 160


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    """A store of synthetic faces with their landmarks (identities shared by several photos), and its labels."""
    root = tmp_path_factory.mktemp("labtrain")
    store = root / "store"
    cli_json("data", "prepare", "synthetic", "--out", store, "--size", 32, "--workers", 1, "-o", f"n={N}",
             "-o", "landmarks=true")
    labels = root / "labels.csv"
    cli_json("label", "auto", store, "--out", labels, "-o", "orientation.threshold=15")
    return store, labels


@pytest.fixture(scope="module")
def scratch(faces, tmp_path_factory):
    store, labels = faces
    out = tmp_path_factory.mktemp("runs")
    summary = cli_json("train", store, "--labels-file", labels, "--labels", "orientation", "--epochs", 2,
                       *TINY_CLASSIFIER, "--out", out, "--name", "scratch")
    return Path(summary["run_dir"]), summary


def test_a_run_trains_on_the_file_s_classes_with_identity_disjoint_splits(faces, scratch):
    store, labels = faces
    run, summary = scratch
    assert summary["labels"] == ["orientation"]
    assert summary["labels_file"]["labels_file"] == str(labels.resolve())
    assert summary["labels_file"]["known"] == {"orientation": N}
    st = Store.open(store)
    splits = load_run_splits(run, st)
    people = {k: set(st.identities[splits.rows(k)].tolist()) for k in ("train", "val", "test")}
    assert not (people["train"] & people["val"]) and not (people["train"] & people["test"])
    assert not (people["val"] & people["test"])
    meta = read_meta(run / "checkpoints" / "best")
    assert meta.labels == [{"name": "orientation", "kind": "categorical", "classes": ["left", "center", "right"]}]
    assert meta.config["labels_file"] == str(labels) and len(meta.config["labels_file_sha256"]) == 64


def test_eval_uses_the_run_s_labels_file_and_reports_flip_consistency(faces, scratch):
    store, labels = faces
    run, _ = scratch
    report = cli_json("eval", run, "--data", store, "--split", "all")
    assert report["count"] == N and set(report["per_label"]) == {"orientation"}
    assert report["labels_file"]["labels_file"] == str(labels.resolve())
    assert 0.0 <= report["flip_consistency"]["orientation"] <= 1.0
    # flip TTA with the mirror's classes swapped back is flip-consistent by construction
    tta = cli_json("eval", run, "--data", store, "--split", "all", "--tta-flip")
    assert tta["flip_consistency"]["orientation"] == 1.0


def test_a_run_validated_with_flip_tta_predicts_with_it_unless_told_not_to(faces, scratch, tmp_path):
    from facelab.deploy import load_engine

    store, labels = faces
    assert cli_json("eval", scratch[0], "--data", store, "--split", "all")["tta_flip"] is False
    summary = cli_json("train", store, "--labels-file", labels, "--labels", "orientation", "--epochs", 1,
                       *TINY_CLASSIFIER, "-o", "tta_flip=true", "--out", tmp_path, "--name", "tta")
    run = Path(summary["run_dir"])
    default = cli_json("eval", run, "--data", store, "--split", "all")
    assert default["tta_flip"] is True and default["flip_consistency"]["orientation"] == 1.0
    assert cli_json("eval", run, "--data", store, "--split", "all", "--no-tta-flip")["tta_flip"] is False
    assert load_engine(run).tta_flip and not load_engine(run, tta_flip=False).tta_flip
    assert not load_engine([run, scratch[0]]).tta_flip  # an ensemble averages mirrors only when every member did
    cli_json("predict", run, store, "--out", tmp_path / "default.csv")
    cli_json("predict", run, store, "--out", tmp_path / "tta.csv", "--tta-flip")
    assert (tmp_path / "default.csv").read_text() == (tmp_path / "tta.csv").read_text()


def test_evaluations_with_other_options_keep_their_own_folders(faces, scratch):
    store, _ = faces
    run, _ = scratch
    folders = {Path(cli_json("eval", run, "--data", store, "--split", "all", *flags)["plots"]["per_label"]).parent.name
               for flags in ([], ["--checkpoint", "last"], ["--tta-flip"], ["--checkpoint", "last", "--tta-flip"])}
    assert folders == {"store-all", "store-all-last", "store-all-tta", "store-all-last-tta"}
    assert folders <= {p.parent.name for p in (run / "eval").glob("*/report.json")}


def test_reviewed_only_scores_the_reviewed_rows_against_the_person_s_classes(faces, scratch, tmp_path):
    store, labels = faces
    run, _ = scratch
    copy = tmp_path / "labels.csv"
    copy.write_bytes(labels.read_bytes())
    assert "no reviewed image" in str(cli_error("eval", run, "--data", store, "--split", "all", "--labels-file", copy,
                                               "--reviewed-only"))
    st = Store.open(store)
    session = ReviewSession(st, LabelsFile.read(copy, store=st))
    keys = [str(k) for k in st.keys[:10]]
    for k in keys:
        session.decide(Decision(key=k, task="orientation", cls="left"))
    report = cli_json("eval", run, "--data", store, "--split", "all", "--labels-file", copy, "--reviewed-only")
    assert report["count"] == 10 and "reviewed" in report["rows"]
    preds = report["confusion"]["orientation"]  # every truth is 'left': only the first row can hold counts
    assert sum(preds[0]) == 10 and sum(map(sum, preds[1:])) == 0


def test_unlabelled_images_are_left_out_of_every_split(faces, tmp_path):
    store, labels = faces
    rows = list(csv.DictReader(labels.open()))
    for r in rows[:30]:
        r["orientation"] = ""
    part = tmp_path / "part.csv"
    with part.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    summary = cli_json("train", store, "--labels-file", part, "--epochs", 1, *TINY_CLASSIFIER, "--out", tmp_path,
                       "-o", "labels=[orientation]")
    assert summary["train_rows"] + summary["val_rows"] + summary["test_rows"] == N - 30
    assert "left out" in summary["splits"]


def test_transfer_from_a_multilabel_checkpoint_keeps_batch_norm_statistics_frozen(faces, tmp_path):
    store, labels = faces
    base = cli_json("train", store, "--labels", "Male,Smiling,Eyeglasses", "--epochs", 1, "--model", "resnet18",
                    "--batch-size", 32, "-o", "trainer.progress=false", "--out", tmp_path, "--name", "base")
    summary = cli_json("train", store, "--labels-file", labels, "--labels", "orientation", "--epochs", 1,
                       "--model", "resnet18", "--batch-size", 32, "-o", "trainer.progress=false",
                       "--pretrained", base["run_dir"], "--freeze", "--out", tmp_path, "--name", "transfer")
    assert summary["pretrained"]

    def backbone(run):
        return {k: v for k, v in read_weights(Path(run) / "checkpoints" / "last").items() if not k.startswith("fc.")}

    before, after = backbone(base["run_dir"]), backbone(summary["run_dir"])
    stats = [k for k in before if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(before[k], after[k]) for k in before)


def test_predict_writes_every_image_of_the_store(faces, scratch, tmp_path):
    store, _ = faces
    run, _ = scratch
    out = tmp_path / "pred.csv"
    cli_json("predict", run, store, "--out", out)
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == N and {r["pred_orientation"] for r in rows} <= {"left", "center", "right"}
    assert abs(sum(float(rows[0][f"p_orientation={c}"]) for c in ("left", "center", "right")) - 1) < 1e-4


def _write(path, rows):
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


@pytest.mark.parametrize("damage, message", [
    (lambda rows: rows.append(dict(rows[0])), "appears twice"),
    (lambda rows: rows[3].update(orientation="up"), "not a class of orientation"),
    (lambda rows: rows[5].update(key="nope.png"), "not images of"),
])
def test_a_bad_labels_file_is_refused_before_any_run_folder(faces, tmp_path, damage, message):
    store, labels = faces
    rows = list(csv.DictReader(labels.open()))
    damage(rows)
    bad = tmp_path / "bad.csv"
    _write(bad, rows)
    before = bad.read_bytes()
    assert message in str(cli_error("train", store, "--labels-file", bad, "--labels", "orientation",
                                    *TINY_CLASSIFIER, "--out", tmp_path / "runs"))
    assert not (tmp_path / "runs").exists() and bad.read_bytes() == before


def test_a_task_the_file_does_not_hold_or_the_store_already_has_is_refused(faces, tmp_path):
    store, labels = faces
    rows = [{k: v for k, v in r.items() if not k.startswith("light")} for r in csv.DictReader(labels.open())]
    only = tmp_path / "orientation.csv"
    _write(only, rows)
    with pytest.raises(ConfigError, match="no task light"):
        open_store(store, only, tasks=["light"])
    # the synthetic store has a label 'light' of its own: the file's light task cannot replace it
    with pytest.raises(DataError, match="already has a label light"):
        open_store(store, labels)
    assert "already has a label light" in str(cli_error("train", store, "--labels-file", labels, *TINY_CLASSIFIER,
                                                        "--out", tmp_path / "runs"))
    st = open_store(store, labels, tasks=["orientation"])
    assert st.label_names[-1] == "orientation" and np.all(st.column("orientation") >= 0)
    assert not (tmp_path / "runs").exists()


def _partial(labels: Path, out: Path, *, covered: int, unmeasured: int) -> Path:
    """The labels file with only its first ``covered`` rows, of which the first ``unmeasured`` have the empty
    class (and note) that `facelab label auto` writes for a face it cannot measure."""
    rows = list(csv.DictReader(labels.open()))[:covered]
    for r in rows[:unmeasured]:
        r.update(orientation="", orientation_yaw="", orientation_confidence="", note="orientation: the face could not be measured")
    _write(out, rows)
    return out


def test_rows_without_a_class_are_left_out_of_a_seeded_split_with_a_count(faces, tmp_path):
    store, labels = faces
    part = _partial(labels, tmp_path / "part.csv", covered=100, unmeasured=20)
    args = ("train", store, "--labels-file", part, "--labels", "orientation", *TINY_CLASSIFIER, "-o", "split=random",
            "--out", tmp_path / "runs")
    cli(*args, "--dry-run")  # made its splits without a crash
    summary = cli_json(*args, "--epochs", 1)
    assert summary["train_rows"] + summary["val_rows"] + summary["test_rows"] == 80
    assert "left out (train" in summary["splits"]
    st = open_store(store, part, tasks=["orientation"])
    splits = load_run_splits(Path(summary["run_dir"]), st)
    for k in ("train", "val", "test"):
        assert np.all(st.column("orientation")[splits.rows(k)] >= 0)  # no image without a class in any split


def test_splits_and_balanced_subsets_treat_an_unknown_class_as_no_class(faces, tmp_path):
    from facelab.data.views import balanced_subset, split

    store, labels = faces
    st = open_store(store, _partial(labels, tmp_path / "part.csv", covered=N, unmeasured=40), tasks=["orientation"])
    unknown = np.flatnonzero(st.column("orientation") < 0)
    assert unknown.size == 40
    parts = split(st, stratify="orientation", seed=0)
    assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(N))  # every row dealt, none lost
    picked = balanced_subset(st, np.arange(N), targets=["orientation"], seed=0)
    assert not np.isin(picked, unknown).any()


def test_a_labels_file_without_any_class_of_the_task_is_a_clear_error(faces, tmp_path):
    store, labels = faces
    empty = _partial(labels, tmp_path / "empty.csv", covered=N, unmeasured=N)
    err = cli_error("train", store, "--labels-file", empty, "--labels", "orientation", *TINY_CLASSIFIER,
                    "-o", "split=random", "--out", tmp_path / "runs")
    assert "has a class of orientation" in str(err) and not (tmp_path / "runs").exists()
