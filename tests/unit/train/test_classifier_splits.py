"""Classifier splits: official partitions without a validation set get one carved from train, never from test."""

from __future__ import annotations

import numpy as np

from facelab.data.schema import LabelKind, LabelSpec, Partition
from facelab.data.write import write_store_arrays
from facelab.models.classifiers.heads import Task
from facelab.train.classifier import ClassifierConfig, make_splits


def _store(tmp_path, parts):
    n = len(parts)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    labels = (np.arange(n) % 3)[:, None]
    spec = LabelSpec("label", LabelKind.CATEGORICAL, classes=("a", "b", "c"))
    return write_store_arrays(tmp_path / "s", images, labels, [spec], np.asarray(parts), source="cifar10")


def test_train_test_partitions_get_a_stratified_val_from_train(tmp_path):
    parts = [int(Partition.TRAIN)] * 300 + [int(Partition.TEST)] * 60
    store = _store(tmp_path, parts)
    cfg = ClassifierConfig(store=str(store.path))
    splits, how = make_splits(cfg, store, Task.multiclass("label", 3))
    assert how.startswith("official partitions") and "val is 18% of train" in how
    assert np.array_equal(splits["test"], np.arange(300, 360))  # the test partition is untouched
    assert 40 <= splits["val"].size <= 60 and splits["val"].max() < 300
    assert not set(splits["val"]) & set(splits["train"]) and splits["train"].size + splits["val"].size == 300
    counts = np.bincount(store.column("label")[splits["val"]], minlength=3)
    assert counts.max() - counts.min() <= 1  # stratified
    again, _ = make_splits(cfg, store, Task.multiclass("label", 3))
    assert all(np.array_equal(again[k], splits[k]) for k in splits)  # seeded


def test_a_store_with_val_keeps_its_official_val(tmp_path):
    parts = [int(Partition.TRAIN)] * 100 + [int(Partition.VAL)] * 20 + [int(Partition.TEST)] * 20
    store = _store(tmp_path, parts)
    splits, how = make_splits(ClassifierConfig(store=str(store.path)), store, Task.multiclass("label", 3))
    assert how == "official partitions"
    assert np.array_equal(splits["val"], np.arange(100, 120)) and splits["train"].size == 100
