"""write_store_arrays: arrays in memory -> a store that reads back the same, or a clear error."""

import numpy as np
import pytest

from facelab.data.build import content_hash
from facelab.data.schema import LabelKind, LabelSpec, Partition
from facelab.data.store import Store
from facelab.data.write import write_store_arrays
from facelab.errors import FacelabError

SPECS = (
    LabelSpec("Male", LabelKind.BINARY),
    LabelSpec("Smiling", LabelKind.BINARY),
    LabelSpec("hair_color", LabelKind.CATEGORICAL, ("black", "blond", "brown", "gray")),
)


def arrays(n: int = 6, size: int = 8):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    labels = np.array([[i % 2, 1, i % 4] for i in range(n)])
    parts = np.array([0] * (n - 2) + [1, 1])
    return images, labels, parts


def test_round_trip(tmp_path):
    images, labels, parts = arrays()
    store = write_store_arrays(tmp_path / "s", images, labels, SPECS, parts, source="generated-cvae",
                               crop={"mode": "center"})
    again = Store.open(tmp_path / "s")
    np.testing.assert_array_equal(again.images, images)
    np.testing.assert_array_equal(again.labels, labels)
    assert again.label_names == ["Male", "Smiling", "hair_color"]
    assert again.spec("hair_color").classes == ("black", "blond", "brown", "gray")
    assert again.source == "generated-cvae" and again.has_partitions and not again.has_identities
    assert again.image_size == 8 and len(again) == 6
    assert list(again.partition_indices(Partition.VAL)) == [4, 5]
    assert store.content_hash == content_hash(images, labels.astype(np.int32), store.keys)
    assert not (tmp_path / "s.partial").exists()


def test_refuses_an_existing_folder(tmp_path):
    images, labels, parts = arrays()
    write_store_arrays(tmp_path / "s", images, labels, SPECS, parts, source="x")
    with pytest.raises(FacelabError, match="already exists"):
        write_store_arrays(tmp_path / "s", images, labels, SPECS, parts, source="x")


def test_one_label_column_may_be_a_vector(tmp_path):
    images, labels, parts = arrays()
    store = write_store_arrays(tmp_path / "s", images, labels[:, 0], SPECS[:1], parts, source="x")
    np.testing.assert_array_equal(store.column("Male"), labels[:, 0])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda im, lab, p: (im[..., :1], lab, p), r"images must be \(N, S, S, 3\) uint8"),
        (lambda im, lab, p: (im.astype(np.float32), lab, p), "uint8"),
        (lambda im, lab, p: (im[:, :, :4], lab, p), r"\(N, S, S, 3\)"),
        (lambda im, lab, p: (im, lab[:-1], p), r"labels must be \(N, labels\) = \(6, 3\); got \(5, 3\)"),
        (lambda im, lab, p: (im, lab[:, :2], p), r"got \(6, 2\)"),
        (lambda im, lab, p: (im, lab + 0.5, p), "whole numbers"),
        (lambda im, lab, p: (im, np.where(np.arange(3) == 2, 4, lab), p), r"'hair_color': row 0 has value 4, outside 0..3"),
        (lambda im, lab, p: (im, np.where(np.arange(3) == 0, 2, lab), p), r"'Male': row 0 has value 2, outside 0..1"),
        (lambda im, lab, p: (im, lab, p[:-1]), r"partitions must be \(6,\)"),
        (lambda im, lab, p: (im, lab, p + 5), r"unknown partition codes \[5, 6\]"),
    ],
)
def test_bad_arrays_get_a_clear_error_and_leave_nothing(tmp_path, change, message):
    images, labels, parts = change(*arrays())
    with pytest.raises(FacelabError, match=message):
        write_store_arrays(tmp_path / "s", images, labels, SPECS, parts, source="x")
    assert not (tmp_path / "s").exists() and not (tmp_path / "s.partial").exists()


def test_unknown_values_and_rows_without_partition_are_kept(tmp_path):
    images, labels, parts = arrays()
    labels[0] = -1
    parts[1] = -1
    store = write_store_arrays(tmp_path / "s", images, labels, SPECS, parts, source="x")
    assert store.labels[0].tolist() == [-1, -1, -1]
    assert store.partitions[1] == -1
