"""The folder source: class folders, optional split folders, fixed class orders and odd files."""

from __future__ import annotations

import numpy as np
import pytest

from facelab.data.schema import LabelKind, Partition
from facelab.data.sources import create_source
from facelab.errors import ConfigError, DataError, ImageDecodeError
from tests.fixtures.layouts import (
    DECODABLE_KINDS,
    UNDECODABLE_KINDS,
    make_class_folders,
    write_broken_images,
    write_image,
)


def _index(root, **options):
    return create_source("folder", root, **options).index()


def test_classes_are_sorted_folder_names(tmp_path):
    make_class_folders(tmp_path, {"right": 2, "left": 3, "center": 1})
    idx = _index(tmp_path)
    spec = idx.labels[0]
    assert (spec.name, spec.kind, spec.classes) == ("label", LabelKind.CATEGORICAL, ("center", "left", "right"))
    got = {r.key: r.labels for r in idx.records}
    assert got["center/0000.jpg"] == (0,) and got["left/0002.jpg"] == (1,) and got["right/0001.jpg"] == (2,)
    assert len(idx.records) == 6 and not idx.has_partitions and {r.partition for r in idx.records} == {-1}


def test_label_name_and_fixed_class_order(tmp_path):
    make_class_folders(tmp_path, {"right": 1, "left": 1, "center": 1})
    idx = _index(tmp_path, label_name="gaze", classes=["left", "center", "right", "up"])
    assert idx.labels[0].name == "gaze" and idx.labels[0].classes == ("left", "center", "right", "up")
    assert {r.key: r.labels[0] for r in idx.records} == {"left/0000.jpg": 0, "center/0000.jpg": 1, "right/0000.jpg": 2}
    assert "class 'up' has no folder (no images)" in idx.notes


def test_folder_missing_from_the_class_list_is_an_error(tmp_path):
    make_class_folders(tmp_path, {"left": 1, "down": 1})
    with pytest.raises(DataError, match=r"class folder\(s\) down not among the expected classes \(left, right\)"):
        _index(tmp_path, classes=["left", "right"])


def test_split_folders_give_partitions(tmp_path):
    make_class_folders(tmp_path / "train", {"left": 2, "right": 1})
    make_class_folders(tmp_path / "val", {"left": 1})
    make_class_folders(tmp_path / "test", {"right": 1, "center": 1})
    idx = _index(tmp_path)
    assert idx.has_partitions and idx.labels[0].classes == ("center", "left", "right")
    got = {r.key: (r.labels[0], r.partition) for r in idx.records}
    assert got["train/left/0001.jpg"] == (1, Partition.TRAIN)
    assert got["val/left/0000.jpg"] == (1, Partition.VAL)
    assert got["test/center/0000.jpg"] == (0, Partition.TEST)
    assert len(got) == 6


def test_mixed_split_and_class_folders_is_an_error_unless_layout_says(tmp_path):
    make_class_folders(tmp_path, {"train": 1, "left": 1})
    with pytest.raises(DataError, match=r"mixes split folders \(train\) with other folders \(left\)"):
        _index(tmp_path)
    assert _index(tmp_path, layout="classes").labels[0].classes == ("left", "train")


def test_odd_files_are_skipped_with_reasons_and_empty_classes_noted(tmp_path):
    make_class_folders(tmp_path, {"left": 1, "right": 0})
    (tmp_path / "left" / "labels.csv").write_text("x")
    (tmp_path / "left" / ".DS_Store").write_bytes(b"\0")
    (tmp_path / "README.md").write_text("about")
    (tmp_path / ".ipynb_checkpoints").mkdir()
    write_image(tmp_path / "left" / "more" / "nested.PNG")
    idx = _index(tmp_path)
    assert [r.key for r in idx.records] == ["left/0000.jpg", "left/more/nested.PNG"]
    assert idx.labels[0].classes == ("left", "right")
    reasons = {s.key: s.reason for s in idx.skipped}
    assert "not an image file ('.csv'" in reasons["left/labels.csv"]
    assert "hidden file" in reasons["left/.DS_Store"]
    assert reasons["README.md"] == "not inside a class folder"
    assert "class folder right holds no images" in idx.notes
    assert "ignored hidden folder .ipynb_checkpoints" in idx.notes


def test_root_without_class_folders_explains_the_layout(tmp_path):
    write_image(tmp_path / "a.jpg")
    with pytest.raises(DataError, match=r"no class folders found; .* must be laid out as .*/<class>/<image>"):
        _index(tmp_path)


def test_class_folders_without_images_is_an_error(tmp_path):
    make_class_folders(tmp_path, {"left": 0, "right": 0})
    with pytest.raises(DataError, match=r"the class folders hold no image files"):
        _index(tmp_path)


def test_broken_images_are_indexed_and_fail_or_decode_at_load(tmp_path):
    kinds = write_broken_images(tmp_path / "odd", size=(10, 12))
    src = create_source("folder", tmp_path)
    records = {r.key.split("/")[1]: r for r in src.index().records}
    assert set(records) == set(kinds)
    for name, kind in kinds.items():
        if kind in DECODABLE_KINDS:
            img = src.load(records[name])
            assert img.shape == (12, 10, 3) and img.dtype == np.uint8
        else:
            assert kind in UNDECODABLE_KINDS
            with pytest.raises(ImageDecodeError, match=name):
                src.load(records[name])


@pytest.mark.parametrize(
    "options",
    [{"label_name": ""}, {"label_name": "my label"}, {"classes": []}, {"classes": ["a", "a"]}, {"layout": "flat"},
     {"colour": 1}],
)  # fmt: skip
def test_bad_options_are_config_errors(tmp_path, options):
    with pytest.raises(ConfigError):
        create_source("folder", tmp_path, **options)


def test_missing_root_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="folder does not exist"):
        create_source("folder", tmp_path / "nope")
