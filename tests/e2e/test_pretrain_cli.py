"""``facelab pretrain`` and transfer end to end: self-supervised pretraining on several stores and supervised
pretraining on a UTKFace-like store, each fine-tuned by ``facelab train --pretrained``; the leakage rule; and
checkpoints that do not fit the run (architecture, image size, alignment) refused before a run folder exists."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from facelab.data.schema import LabelKind, LabelSpec, Partition
from facelab.data.store import Store
from facelab.faces import AlignSpec
from facelab.models.classifiers import create_classifier
from facelab.runs.splits import PRETRAIN_SPLITS
from tests.e2e.conftest import STORE_SIZE, TINY_CLASSIFIER, TINY_SSL, cli, cli_error, cli_json
from tests.helpers import make_store, set_alignment

UTK_LABELS = (LabelSpec("gender", LabelKind.BINARY, ("male", "female")),
              LabelSpec("race", LabelKind.CATEGORICAL, ("white", "black", "asian", "indian", "others")),
              LabelSpec("age_group", LabelKind.CATEGORICAL, ("0-19", "20-39", "40-59", "60+")))
CELEBA_LABELS = (LabelSpec("Male", LabelKind.BINARY), LabelSpec("Smiling", LabelKind.BINARY))


def _no_run_folder(out: Path) -> None:
    assert not out.exists() or not any(out.iterdir()), f"a run folder was left behind: {list(out.iterdir())}"


@pytest.fixture(scope="module")
def more_faces(tmp_path_factory) -> Path:
    """A second unlabelled-for-our-purpose store of the same size, without official partitions."""
    return make_store(tmp_path_factory.mktemp("more") / "more", n=96, size=STORE_SIZE, seed=5).path


@pytest.fixture(scope="module")
def ssl_run(store, more_faces, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("ssl-runs")
    summary = cli_json("pretrain", store, more_faces, "--epochs", 2, *TINY_SSL, "--out", out, "--name", "ssl")
    return Path(summary["run_dir"]), summary


def test_ssl_pretraining_on_two_stores_is_an_ordinary_run_folder(ssl_run, store, more_faces):
    run, summary = ssl_run
    assert summary["kind"] == "pretrain" and summary["objective"] == "simclr" and summary["epochs"] == 2
    assert summary["monitor"] == "val_positive_top1" and summary["best"] is not None
    assert {"val_loss", "val_positive_top1", "train_loss"} <= set(summary["final"])
    assert summary["images_per_s"] > 0
    for f in ("config.yaml", "env.json", "metrics.jsonl", "curves.png", "report.html", "summary.json",
              PRETRAIN_SPLITS, "checkpoints/best/model.safetensors", "checkpoints/last/training.pt"):
        assert (run / f).exists(), f
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["objective"] == "simclr" and config["objective_kwargs"] == {"proj_hidden": 32, "proj_dim": 16}
    assert config["stores"] == [str(store), str(more_faces)]
    assert "pretrain" in cli("runs", run.parent).output


def test_ssl_pretraining_never_sees_official_val_or_test_rows(ssl_run, store):
    run, summary = ssl_run
    doc = json.loads((run / PRETRAIN_SPLITS).read_text())
    partitions = Store.open(store).partitions
    seen = np.array(doc["stores"][0]["splits"]["train"] + doc["stores"][0]["splits"]["val"])
    assert (partitions == Partition.VAL).any() and not np.isin(partitions[seen], [Partition.VAL, Partition.TEST]).any()
    assert summary["excluded_rows"][str(store)] == int(np.isin(partitions, [Partition.VAL, Partition.TEST]).sum())
    assert "never enter pretraining" in summary["splits"]


def test_ssl_run_fine_tunes_into_a_classifier(ssl_run, store, tmp_path):
    summary = cli_json("train", store, "--labels", "Male", "--pretrained", ssl_run[0], "--epochs", 1,
                       *TINY_CLASSIFIER, "--out", tmp_path, "--name", "ft")
    assert summary["pretrained"].startswith("loaded") and "facelab checkpoint of vgg_scratch" in summary["pretrained"]
    assert "mismatched" not in summary["pretrained"] and "unexpected" not in summary["pretrained"]


def test_an_unlabelled_objective_in_train_points_to_pretrain(store, tmp_path):
    err = cli_error("train", store, "-o", "objective=simclr", *TINY_CLASSIFIER, "--out", tmp_path)
    assert "facelab pretrain" in str(err)
    _no_run_folder(tmp_path)


@pytest.fixture(scope="module")
def utk_and_celeba(tmp_path_factory) -> tuple[Path, Path]:
    """A UTKFace-like store (gender, race, age_group; aligned with MTCNN; no partitions) and a CelebA-like one
    (CelebA's own aligned images, official partitions)."""
    root = tmp_path_factory.mktemp("transfer")
    utk = set_alignment(make_store(root / "utk", n=96, size=STORE_SIZE, label_specs=UTK_LABELS, source="utkface"),
                        AlignSpec())
    celeba = make_store(root / "celeba", n=96, size=STORE_SIZE, label_specs=CELEBA_LABELS, source="celeba",
                        partitions=[Partition.TRAIN, Partition.TRAIN, Partition.VAL] * 32, seed=1)
    return utk.path, celeba.path


def test_supervised_pretraining_on_utkface_transfers_to_celeba(utk_and_celeba, tmp_path):
    utk, celeba = utk_and_celeba
    base = cli_json("train", utk, "--labels", "gender,age_group,race", "--epochs", 1, *TINY_CLASSIFIER,
                    "--out", tmp_path, "--name", "utk")
    assert base["labels"] == ["gender", "age_group", "race"]
    ft = cli_json("train", celeba, "--labels", "Male,Smiling", "--pretrained", base["run_dir"], "--epochs", 1,
                  *TINY_CLASSIFIER, "--out", tmp_path, "--name", "celeba")
    assert "skipped head (2): fc.bias, fc.weight" in ft["pretrained"]  # 1 + 4 + 5 logits -> 2: head reset


def test_ssl_pretraining_on_aligned_stores_transfers_across_them(utk_and_celeba, tmp_path):
    utk, celeba = utk_and_celeba
    ssl = cli_json("pretrain", utk, celeba, "--epochs", 1, *TINY_SSL, "--out", tmp_path, "--name", "ssl")
    ft = cli_json("train", celeba, "--labels", "Male", "--pretrained", ssl["run_dir"], "--epochs", 1,
                  *TINY_CLASSIFIER, "--out", tmp_path, "--name", "ft")
    assert ft["pretrained"].startswith("loaded")


# ---- checkpoints that do not fit the run ------------------------------------------------------------
def _refused(*args, out: Path) -> str:
    err = str(cli_error("train", *args, "--epochs", 1, "--out", out))
    _no_run_folder(out)
    assert "cannot fine-tune from" in err and "Fix:" in err
    return err


def test_another_architecture_or_options_are_refused_naming_both(store, clf_run, tmp_path):
    err = _refused(store, "--pretrained", clf_run[0], "--model", "resnet18", "--batch-size", 32, out=tmp_path / "a")
    assert "architecture: the checkpoint is vgg_scratch, this run builds resnet18" in err
    err = _refused(store, "--pretrained", clf_run[0], "--batch-size", 32, "-o", "model_kwargs={channels: [8, 16, 32]}",
                   out=tmp_path / "b")
    assert "channels: checkpoint [8, 16, 16], this run [8, 16, 32]" in err


def test_another_image_size_is_refused_naming_both(ssl_run, tmp_path):
    small = make_store(tmp_path / "small", n=64, size=16, label_specs=CELEBA_LABELS)
    err = _refused(small.path, "--labels", "Male", "--pretrained", ssl_run[0], *TINY_CLASSIFIER, out=tmp_path / "r")
    assert f"trained on {STORE_SIZE}px images, this run's store holds 16px" in err


def test_another_alignment_is_refused_naming_both(utk_and_celeba, clf_run, tmp_path):
    _, celeba = utk_and_celeba  # CelebA's aligned faces; clf_run trained on synthetic faces that were not aligned
    err = _refused(celeba, "--labels", "Male", "--pretrained", clf_run[0], *TINY_CLASSIFIER, out=tmp_path / "a")
    assert "alignment: the checkpoint was trained on faces not aligned, this run's store is aligned into a 178x218" in err
    lower = [[x, y + 12] for x, y in AlignSpec().template_points.tolist()]  # faces 12 px lower in the frame
    moved = set_alignment(make_store(tmp_path / "moved", n=64, size=STORE_SIZE, label_specs=CELEBA_LABELS),
                          AlignSpec(detector="retinaface", template=lower))
    utk_run = cli_json("train", utk_and_celeba[0], "--labels", "gender", "--epochs", 1, *TINY_CLASSIFIER,
                       "--out", tmp_path / "runs")["run_dir"]
    err = _refused(moved.path, "--labels", "Male", "--pretrained", utk_run, *TINY_CLASSIFIER, out=tmp_path / "b")
    assert "mtcnn template" in err and "retinaface template" in err


def test_plain_weights_files_keep_loading_without_metadata(store, tmp_path):
    model = create_classifier("vgg_scratch", num_outputs=5, image_size=STORE_SIZE, channels=[8, 16, 16])
    torch.save(model.state_dict(), tmp_path / "plain.pth")
    summary = cli_json("train", store, "--labels", "Male", "--pretrained", tmp_path / "plain.pth", "--epochs", 1,
                       *TINY_CLASSIFIER, "--out", tmp_path, "--name", "plain")
    assert "skipped head (2)" in summary["pretrained"]


# ---- distillation: a trained classifier teaches a fresh backbone on unlabelled faces -----------------
def test_distillation_from_a_classifier_is_a_pretraining_run_that_fine_tunes(store, more_faces, clf_run, tmp_path):
    summary = cli_json("pretrain", store, more_faces, "--objective", "distill", "--epochs", 2, *TINY_CLASSIFIER,
                       "-o", f"objective_kwargs.teacher={clf_run[0]}", "--out", tmp_path, "--name", "kd")
    assert summary["objective"] == "distill" and summary["monitor"] == "val_agreement"
    assert 0.5 < summary["best"] <= 1 and {"val_loss", "val_agreement", "train_agreement"} <= set(summary["final"])
    assert summary["objective_kwargs"]["teacher"] == [str(clf_run[0])]
    assert summary["excluded_rows"][str(store)] > 0  # the leakage rule holds for distillation too
    ft = cli_json("train", store, "--labels", "Male", "--pretrained", summary["run_dir"], "--epochs", 1,
                  *TINY_CLASSIFIER, "--out", tmp_path, "--name", "ft")
    assert ft["pretrained"].startswith("loaded") and "mismatched" not in ft["pretrained"]


def test_a_teacher_that_cannot_label_the_stores_is_refused_before_a_run_folder(store, clf_run, tmp_path):
    small = make_store(tmp_path / "small", n=64, size=16)
    out = tmp_path / "runs"
    err = str(cli_error("pretrain", small.path, "--objective", "distill", *TINY_CLASSIFIER,
                        "-o", f"objective_kwargs.teacher={clf_run[0]}", "--out", out))
    assert f"the teacher takes {STORE_SIZE}px images, the stores hold 16px" in err
    _no_run_folder(out)
    err = str(cli_error("pretrain", store, "--objective", "distill", *TINY_CLASSIFIER,
                        "-o", f"objective_kwargs.teacher={tmp_path / 'nowhere'}", "--out", out))
    assert "objective_kwargs.teacher" in err and "nowhere" in err
    _no_run_folder(out)
