"""Pretraining on several stores: the leakage rule, one image size and alignment, rows recorded, exact resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from facelab.data.schema import Partition
from facelab.data.store import Store
from facelab.data.union import StoreUnion
from facelab.errors import ConfigError
from facelab.faces import AlignSpec
from facelab.models.checkpoint import read_training_state, read_weights
from facelab.runs.splits import PRETRAIN_SPLITS
from facelab.train.pretrain import PretrainConfig, check_pretrain_config, make_loaders, pretrain, pretrain_rows
from tests.helpers import Killed, KillAtStep, make_store, set_alignment

TINY = {"batch_size": 8, "model_kwargs": {"channels": [8, 16, 16]},
        "objective_kwargs": {"proj_hidden": 16, "proj_dim": 8}, "device": "cpu",
        "trainer": {"epochs": 2, "progress": False}}


def _partitioned(path: Path, n: int = 60, size: int = 16, seed: int = 0) -> Store:
    parts = np.array([Partition.TRAIN, Partition.VAL, Partition.TEST] * (n // 3))
    return make_store(path, n=n, size=size, partitions=parts, identities=np.arange(n) // 2, seed=seed)


def test_official_val_and_test_rows_never_enter_pretraining(tmp_path):
    a = _partitioned(tmp_path / "a")
    b = make_store(tmp_path / "b", n=40, size=16, seed=1)  # no partitions: every row may be used
    cfg = PretrainConfig(stores=[str(a.path), str(b.path)], **TINY)
    rows, how = pretrain_rows(cfg, [a, b])
    seen_a = np.concatenate([rows[0]["train"], rows[0]["val"]])
    assert set(seen_a) == set(np.flatnonzero(a.partitions == Partition.TRAIN))  # all of train, nothing else
    assert np.isin(a.partitions[seen_a], [Partition.VAL, Partition.TEST]).sum() == 0
    assert set(np.concatenate([rows[1]["train"], rows[1]["val"]])) == set(range(40))
    assert "left out" in how and "never enter pretraining" in how
    union = StoreUnion([a, b])
    train, val = make_loaders(cfg, union, rows, torch.device("cpu"))
    for loader in (train, val):  # what the loaders serve, mapped back to each store's rows
        in_a = union.per_store(loader.indices)[0]
        assert not np.isin(a.partitions[in_a], [Partition.VAL, Partition.TEST]).any()
    assert not set(train.indices) & set(val.indices)


def test_held_out_rows_keep_people_apart_and_train_limit_caps_training(tmp_path):
    a = _partitioned(tmp_path / "a", n=90)
    cfg = PretrainConfig(stores=[str(a.path)], val_fraction=0.2, train_limit=10, **TINY)
    rows, how = pretrain_rows(cfg, [a])
    assert rows[0]["train"].size == 10 and "10 random rows" in how
    assert not set(a.identities[rows[0]["train"]]) & set(a.identities[rows[0]["val"]])


def test_union_reads_each_store_at_its_own_rows(tmp_path):
    a, b = make_store(tmp_path / "a", n=5, size=8), make_store(tmp_path / "b", n=7, size=8, seed=3)
    u = StoreUnion([a, b])
    rows = np.array([11, 0, 5, 4, 6])
    np.testing.assert_array_equal(u.images[rows], np.concatenate([b.images[[6]], a.images[[0]], b.images[[0]],
                                                                  a.images[[4]], b.images[[1]]]))
    assert len(u) == 12 and u.labels.shape == (12, 0)


def test_stores_of_another_size_or_alignment_or_the_same_store_twice_are_refused(tmp_path):
    a = make_store(tmp_path / "a", n=40, size=16)
    small = make_store(tmp_path / "small", n=40, size=8, seed=1)
    with pytest.raises(ConfigError, match=r"8px images.*16px.*--size 16"):
        check_pretrain_config(PretrainConfig(stores=[str(a.path), str(small.path)], **TINY))
    aligned = set_alignment(make_store(tmp_path / "aligned", n=40, size=16, seed=2), AlignSpec())
    with pytest.raises(ConfigError, match=r"a is not aligned but .*aligned is aligned into a 178x218 frame"):
        check_pretrain_config(PretrainConfig(stores=[str(aligned.path), str(a.path)], **TINY))
    # the detectors' CelebA templates put faces within 1.5 px of each other: the same alignment
    retina = set_alignment(make_store(tmp_path / "retina", n=40, size=16, seed=3), AlignSpec(detector="retinaface"))
    check_pretrain_config(PretrainConfig(stores=[str(aligned.path), str(retina.path)], **TINY))
    lower = [[x, y + 12] for x, y in AlignSpec().template_points.tolist()]  # faces 12 px lower in the frame
    moved = set_alignment(make_store(tmp_path / "moved", n=40, size=16, seed=4), AlignSpec(template=lower))
    with pytest.raises(ConfigError, match="mtcnn template"):
        check_pretrain_config(PretrainConfig(stores=[str(aligned.path), str(moved.path)], **TINY))
    with pytest.raises(ConfigError, match="pass each store once"):
        check_pretrain_config(PretrainConfig(stores=[str(a.path), str(a.path)], **TINY))


def test_a_labelled_objective_or_too_few_rows_are_refused(tmp_path):
    a = make_store(tmp_path / "a", n=40, size=16)
    with pytest.raises(ConfigError, match="facelab train"):
        check_pretrain_config(PretrainConfig(stores=[str(a.path)], objective="supervised", **TINY))
    with pytest.raises(ConfigError, match="fewer than one batch"):
        check_pretrain_config(PretrainConfig(stores=[str(a.path)], **{**TINY, "batch_size": 64}))


def test_resume_restores_the_projector_and_its_optimizer_state_exactly(tmp_path):
    a = make_store(tmp_path / "a", n=48, size=16)
    every_batch = {**TINY["trainer"], "checkpoint_every_minutes": 1e-9}
    cfg = PretrainConfig(stores=[str(a.path)], **{**TINY, "trainer": every_batch})
    ref = pretrain(cfg, run_dir=tmp_path / "ref")
    with pytest.raises(Killed):
        pretrain(cfg, run_dir=tmp_path / "killed", callbacks=[KillAtStep(7)])  # in the second epoch
    state = read_training_state(tmp_path / "killed" / "checkpoints" / "last")
    weights = read_weights(tmp_path / "killed" / "checkpoints" / "last")
    n_params = sum(1 for k in weights if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert any(k.startswith("projector.") for k in weights)
    assert len(state["optimizers"]["model"]["state"]) == n_params  # the projector's moments are saved too
    resumed = pretrain(cfg, run_dir=tmp_path / "killed", resume=True)
    assert resumed["steps"] == ref["steps"] and (tmp_path / "killed" / PRETRAIN_SPLITS).is_file()
    wa, wb = read_weights(tmp_path / "ref" / "checkpoints" / "last"), read_weights(tmp_path / "killed" / "checkpoints" / "last")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=1e-5, msg=lambda m, k=k: f"{k}: {m}")
