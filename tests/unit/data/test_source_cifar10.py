"""The cifar10 source: official python batches (safe unpickling, cached loads) and class folders."""

from __future__ import annotations

import os
import pickle
from collections import Counter

import numpy as np
import pytest

from facelab.data.schema import LabelKind, Partition
from facelab.data.sources import cifar10, create_source
from facelab.errors import ConfigError, DataError
from tests.fixtures.layouts import CIFAR10_CLASSES, make_cifar_batches, make_class_folders, real_dataset


@pytest.fixture
def batches(tmp_path):
    cifar10.clear_batch_cache()
    yield make_cifar_batches(tmp_path, 4)
    cifar10.clear_batch_cache()


def _pixels(data: np.ndarray, row: int) -> np.ndarray:
    return data[row].reshape(3, 32, 32).transpose(1, 2, 0)  # (32, 32, 3)


def test_batches_records_labels_and_partitions(tmp_path, batches):
    idx = create_source("cifar10", tmp_path).index()
    assert idx.labels[0].name == "label" and idx.labels[0].kind is LabelKind.CATEGORICAL
    assert idx.labels[0].classes == CIFAR10_CLASSES
    assert len(idx.records) == 24 and idx.has_partitions
    by_key = {r.key: r for r in idx.records}
    assert by_key["data_batch_3/00001"].labels == (batches["data_batch_3"][1][1],)
    assert by_key["data_batch_3/00001"].partition == Partition.TRAIN
    assert by_key["test_batch/00002"].partition == Partition.TEST
    assert Counter(r.partition for r in idx.records) == {Partition.TRAIN: 20, Partition.TEST: 4}


def test_load_returns_the_rgb_pixels_and_caches_per_process(tmp_path, batches):
    src = create_source("cifar10", tmp_path)
    rec = next(r for r in src.index().records if r.key == "test_batch/00003")
    img = src.load(rec)
    assert img.shape == (32, 32, 3) and img.dtype == np.uint8 and img.flags.c_contiguous
    np.testing.assert_array_equal(img, _pixels(batches["test_batch"][0], 3))
    assert rec.ref[0] in cifar10._BATCH_CACHE
    assert len(pickle.dumps(src)) < 2_000  # the cache lives in the module, not on the instance
    assert pickle.loads(pickle.dumps(rec)) == rec


def test_root_may_be_the_batch_folder_itself(tmp_path, batches):
    assert len(create_source("cifar10", tmp_path / "cifar-10-batches-py").index().records) == 24


def test_missing_batches_are_noted(tmp_path):
    make_cifar_batches(tmp_path, 2, batches=("data_batch_1", "test_batch"))
    idx = create_source("cifar10", tmp_path).index()
    assert len(idx.records) == 4
    assert sum("is missing (partial download?)" in n for n in idx.notes) == 4


def test_label_names_in_meta_must_be_the_official_ones(tmp_path, batches):
    meta = tmp_path / "cifar-10-batches-py" / "batches.meta"
    meta.write_bytes(pickle.dumps({b"label_names": [b"cat", b"dog"]}, protocol=2))
    with pytest.raises(DataError, match=r"batches.meta: label names \['cat', 'dog'\] differ"):
        create_source("cifar10", tmp_path).index()


def test_foreign_pickles_cannot_run_code(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": Evil()}, protocol=2))
    with pytest.raises(DataError, match=r"data_batch_1: not a CIFAR-10 python batch .*refusing global"):
        create_source("cifar10", tmp_path).index()
    assert not marker.exists()


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ([1, 2], "holds a list, not a dict"),
        ({b"labels": [0]}, r"no b'data' array"),
        ({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, r"uint8 \(2, 100\), expected uint8 \(N, 3072\)"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "1 labels for 2 images"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, "row 1 has label 10, expected 0-9"),
    ],
)
def test_malformed_batches_name_the_file(tmp_path, obj, message):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(pickle.dumps(obj, protocol=2))
    with pytest.raises(DataError, match=rf"test_batch: .*{message}"):
        create_source("cifar10", tmp_path).index()


def test_truncated_batch_is_a_data_error(tmp_path, batches):
    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DataError, match=r"data_batch_2: not a CIFAR-10 python batch .*download it again"):
        create_source("cifar10", tmp_path).index()


# ---- class-folder layout ----------------------------------------------------------------------
def test_class_folders_use_the_official_class_order(tmp_path):
    make_class_folders(tmp_path / "cifar10" / "train", {"truck": 2, "airplane": 1, "cat": 1}, size=(32, 32))
    make_class_folders(tmp_path / "cifar10" / "test", {"ship": 1}, size=(32, 32), ext=".png")
    src = create_source("cifar10", tmp_path)
    idx = src.index()
    got = {r.key: (r.labels[0], r.partition) for r in idx.records}
    assert got == {
        "train/airplane/0000.jpg": (0, Partition.TRAIN),
        "train/cat/0000.jpg": (3, Partition.TRAIN),
        "train/truck/0000.jpg": (9, Partition.TRAIN),
        "train/truck/0001.jpg": (9, Partition.TRAIN),
        "test/ship/0000.png": (8, Partition.TEST),
    }
    assert idx.labels[0].classes == CIFAR10_CLASSES and idx.has_partitions
    assert src.load(idx.records[0]).shape == (32, 32, 3)
    assert create_source("cifar10", tmp_path).default_crop.mode == "none"


def test_unknown_class_folder_lists_the_expected_names(tmp_path):
    make_class_folders(tmp_path / "train", {"cat": 1, "kitten": 1})
    with pytest.raises(DataError, match=r"train/kitten not among the expected classes \(airplane, automobile, .*\)"):
        create_source("cifar10", tmp_path).index()


def test_layout_option_picks_one_of_two_present_layouts(tmp_path, batches):
    make_class_folders(tmp_path / "train", {"cat": 2})
    assert len(create_source("cifar10", tmp_path).index().records) == 24  # auto: batches first
    assert len(create_source("cifar10", tmp_path, layout="folders").index().records) == 2


def test_missing_data_explains_both_layouts(tmp_path):
    with pytest.raises(DataError, match=r"expected .*cifar-10-batches-py/.* or .*cifar10/\{train,test\}/<class>/"):
        create_source("cifar10", tmp_path).index()
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b")
    with pytest.raises(DataError, match=r"extract .*cifar-10-python.tar.gz first"):
        create_source("cifar10", tmp_path).index()


@pytest.mark.realdata
def test_real_cifar10_class_folders():
    root = real_dataset("cifar10")
    idx = create_source("cifar10", root.parent).index()
    expected = Counter()
    for split, part in (("train", Partition.TRAIN), ("test", Partition.TEST)):
        for k, cls in enumerate(CIFAR10_CLASSES):
            expected[(part, k)] = len(os.listdir(root / split / cls))
    assert Counter((r.partition, r.labels[0]) for r in idx.records) == expected
    assert len(idx.records) == 32_000 and not idx.skipped


# ---- a subset of the classes --------------------------------------------------------------------
def test_classes_option_keeps_a_subset_relabelled_in_the_given_order(tmp_path, batches):
    full = create_source("cifar10", tmp_path).index()
    idx = create_source("cifar10", tmp_path, classes="horse, bird").index()  # how `-o classes=horse,bird` arrives
    assert idx.labels[0].classes == ("horse", "bird")
    expected = {r.key: (0 if r.labels[0] == 7 else 1) for r in full.records if r.labels[0] in (2, 7)}
    assert {r.key: r.labels[0] for r in idx.records} == expected
    assert any(f"kept the classes horse, bird (labels 0-1): {len(expected)} of 24 images" in n for n in idx.notes)


def test_classes_option_on_class_folders(tmp_path):
    make_class_folders(tmp_path / "cifar10" / "train", {"bird": 2, "cat": 1, "horse": 1}, size=(32, 32))
    idx = create_source("cifar10", tmp_path, classes=["bird", "horse"]).index()
    assert {r.key: r.labels[0] for r in idx.records} == {
        "train/bird/0000.jpg": 0, "train/bird/0001.jpg": 0, "train/horse/0000.jpg": 1}


@pytest.mark.parametrize("classes, message", [
    ("bird,pegasus", "unknown class\\(es\\) pegasus; classes must be some of airplane"),
    ("bird,bird", "bird listed more than once"),
    ("", "no class listed"),
])
def test_bad_classes_option_is_a_clear_error(tmp_path, classes, message):
    with pytest.raises(ConfigError, match=message):
        create_source("cifar10", tmp_path, classes=classes)
