"""The utkface source: labels parsed from file names, malformed names skipped with a precise reason."""

from __future__ import annotations

import pytest

from facelab.data.schema import LabelKind
from facelab.data.sources import create_source
from facelab.data.sources.utkface import parse_name
from facelab.errors import ConfigError, DataError
from tests.fixtures.layouts import UTKFACE_MALFORMED, make_utkface, real_dataset, utkface_name


@pytest.mark.parametrize(
    ("name", "labels"),
    [
        ("25_1_3_20170104231539445.jpg.chip.jpg", (25, 1, 3)),
        ("1_0_0_20161219140623097.jpg.chip.jpg", (1, 0, 0)),
        ("116_1_4_20170120134921760.jpg.chip.jpg", (116, 1, 4)),
        ("9_1_2_20161219204347420.jpg", (9, 1, 2)),  # crop_part1 / in-the-wild naming
        ("0_0_0_20170101000000000.JPG", (0, 0, 0)),
    ],
)
def test_well_formed_names(name, labels):
    assert parse_name(name) == (labels, None)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("24_0_1_20170116220224657 .jpg.chip.jpg", "datetime field '20170116220224657 ' contains a space"),
        ("39_1_20170116174525125.jpg.chip.jpg", "3 fields (39_1_20170116174525125), expected 4"),
        ("55_0_0_20170116232725357jpg.chip.jpg", "no '.' before 'jpg.chip.jpg'"),
        ("20_2_0_20170116174525125.jpg.chip.jpg", "gender code 2 is not 0 (male) or 1 (female)"),
        ("20_1_5_20170116174525125.jpg.chip.jpg", "race code 5 is not 0-4"),
        ("121_1_0_20170116174525125.jpg.chip.jpg", "age 121 is outside 0-120"),
        ("x_1_0_20170116174525125.jpg.chip.jpg", "age field 'x' is not a non-negative integer"),
        ("-3_1_0_20170116174525125.jpg.chip.jpg", "age field '-3' is not a non-negative integer"),
        ("20__0_20170116174525125.jpg.chip.jpg", "gender field is empty"),
        ("20_1_0_2017_0116.jpg.chip.jpg", "5 fields"),
        ("20_1_0_20170116174525125.png", "expected the suffix '.jpg.chip.jpg' or '.jpg'"),
    ],
)
def test_malformed_names_are_never_guessed(name, reason):
    labels, why = parse_name(name)
    assert labels is None and reason in why


def test_index_labels_and_specs(tmp_path):
    names = [utkface_name(25, 1, 3), utkface_name(70, 0, 0, 20170101), utkface_name(3, 1, 4, 20170102)]
    make_utkface(tmp_path, names)
    idx = create_source("utkface", tmp_path).index()
    assert [(s.name, s.kind) for s in idx.labels] == [
        ("age", LabelKind.NUMERIC), ("gender", LabelKind.BINARY), ("race", LabelKind.CATEGORICAL)
    ]  # fmt: skip
    assert idx.labels[1].classes == ("male", "female")
    assert idx.labels[2].classes == ("White", "Black", "Asian", "Indian", "Others")
    by_key = {r.key: r.labels for r in idx.records}
    assert by_key == {names[0]: (25, 1, 3), names[1]: (70, 0, 0), names[2]: (3, 1, 4)}
    assert not idx.has_identities and not idx.has_partitions
    assert {r.partition for r in idx.records} == {-1} and {r.identity for r in idx.records} == {-1}


def test_malformed_and_non_image_files_are_skipped_with_reasons(tmp_path):
    good = [utkface_name(30, 0, 1)]
    make_utkface(tmp_path / "UTKFace", good + list(UTKFACE_MALFORMED) + ["readme.txt", "._30_0_1_1.jpg.chip.jpg"])
    idx = create_source("utkface", tmp_path).index()
    assert [r.key for r in idx.records] == good
    reasons = {s.key: s.reason for s in idx.skipped}
    assert set(reasons) == set(UTKFACE_MALFORMED) | {"readme.txt", "._30_0_1_1.jpg.chip.jpg"}
    assert "contains a space" in reasons[UTKFACE_MALFORMED[0]]
    assert "not an image file" in reasons["readme.txt"]
    assert "hidden file" in reasons["._30_0_1_1.jpg.chip.jpg"]
    assert len(idx.records) + len(idx.skipped) == len(list((tmp_path / "UTKFace").iterdir()))
    assert any("7 files skipped" in n for n in idx.notes)


def test_in_the_wild_parts_are_all_indexed(tmp_path):
    make_utkface(tmp_path / "part1", [utkface_name(20, 0, 0, chip=False)])
    make_utkface(tmp_path / "part2", [utkface_name(40, 1, 2, chip=False)])
    idx = create_source("utkface", tmp_path).index()
    assert sorted((r.key, r.labels) for r in idx.records) == [
        ("part1/20_0_0_20170109150557335.jpg", (20, 0, 0)), ("part2/40_1_2_20170109150557335.jpg", (40, 1, 2))
    ]  # fmt: skip


def test_crop_part1_folder_is_found(tmp_path):
    make_utkface(tmp_path / "crop_part1", [utkface_name(20, 0, 0, chip=False)])
    assert len(create_source("utkface", tmp_path).index().records) == 1


def test_load_decodes_the_image(tmp_path):
    make_utkface(tmp_path, [utkface_name(20, 0, 0)], size=(20, 20))
    src = create_source("utkface", tmp_path)
    assert src.load(src.index().records[0]).shape == (20, 20, 3)


def test_folder_without_utkface_images_is_an_error(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"no UTKFace images; expected files named <age>_<gender>_<race>"):
        create_source("utkface", tmp_path).index()
    make_utkface(tmp_path / "UTKFace", list(UTKFACE_MALFORMED))
    with pytest.raises(DataError, match=r"no file follows the UTKFace naming scheme"):
        create_source("utkface", tmp_path).index()


@pytest.mark.realdata
def test_real_utkface():
    root = real_dataset("UTKFace")
    idx = create_source("utkface", root).index()
    n_files = sum(1 for p in root.iterdir() if p.is_file())
    assert len(idx.records) + len(idx.skipped) == n_files == 19_935
    assert {s.key for s in idx.skipped} == set(UTKFACE_MALFORMED)
    assert all(0 <= r.labels[0] <= 120 and r.labels[1] in (0, 1) and 0 <= r.labels[2] <= 4 for r in idx.records)


def test_age_bins_add_a_categorical_age_group(tmp_path):
    names = [utkface_name(age, 0, 0, 20170101 + i) for i, age in enumerate((0, 19, 20, 39, 40, 59, 60, 116))]
    make_utkface(tmp_path, names)
    idx = create_source("utkface", tmp_path, age_bins="20, 40, 60").index()  # as -o age_bins=20,40,60 arrives
    assert [s.name for s in idx.labels] == ["age", "gender", "race", "age_group"]
    assert idx.labels[3].kind == LabelKind.CATEGORICAL
    assert idx.labels[3].classes == ("0-19", "20-39", "40-59", "60+")
    groups = {r.labels[0]: r.labels[3] for r in idx.records}
    assert groups == {0: 0, 19: 0, 20: 1, 39: 1, 40: 2, 59: 2, 60: 3, 116: 3}


@pytest.mark.parametrize("bins", ["40,20", "20,20", "0,20", "20,200", "x"])
def test_bad_age_bins_are_a_clear_error(tmp_path, bins):
    make_utkface(tmp_path, [utkface_name(25, 1, 3)])
    with pytest.raises(ConfigError, match="age_bins"):
        create_source("utkface", tmp_path, age_bins=bins)
