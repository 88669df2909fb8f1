"""The celeba source: native layouts, label mapping, partial downloads and every annotation fault."""

from __future__ import annotations

import pickle
import shutil
import time

import numpy as np
import pytest

from facelab.data.schema import LabelKind, Partition
from facelab.data.sources import create_source
from facelab.errors import ConfigError, DataError
from tests.fixtures.layouts import CELEBA_ATTRIBUTES, edit_line, make_celeba, read_line, real_dataset, write_image

ATTR = "list_attr_celeba.txt"


@pytest.fixture
def celeba(tmp_path):
    """10 annotation rows, images for the first 6."""
    return make_celeba(tmp_path, 6, n_rows=10)


def _index(root, **options):
    return create_source("celeba", root, **options).index()


def test_labels_identities_partitions_match_the_files(celeba):
    idx = _index(celeba.root)
    assert [s.name for s in idx.labels] == CELEBA_ATTRIBUTES
    assert all(s.kind is LabelKind.BINARY for s in idx.labels)
    assert [r.key for r in idx.records] == celeba.image_names
    for i, rec in enumerate(idx.records):
        assert rec.labels == tuple(int(v > 0) for v in celeba.values[i])
        assert rec.identity == celeba.identities[i]
        assert rec.partition == celeba.partitions[i]
        assert rec.landmarks is None
    assert idx.records[2].labels[CELEBA_ATTRIBUTES.index("Smiling")] == celeba.label("000003.jpg", "Smiling")
    assert idx.has_identities and idx.has_partitions and not idx.has_landmarks


def test_partial_download_is_indexed_with_a_note(celeba):
    idx = _index(celeba.root)
    assert len(idx.records) == 6
    assert any("10 annotation rows, 4 without an image file" in n and "partial download" in n for n in idx.notes)


def test_complete_download_has_no_partial_note(tmp_path):
    idx = _index(make_celeba(tmp_path, 4).root)
    assert len(idx.records) == 4 and not any("partial" in n for n in idx.notes)


@pytest.mark.parametrize("crlf", [True, False])
def test_crlf_and_lf_files_read_the_same(tmp_path, crlf):
    fx = make_celeba(tmp_path, 5, crlf=crlf)
    assert (b"\r\n" in fx.files["attributes"].read_bytes()) is crlf
    idx = _index(fx.root)
    assert [r.labels for r in idx.records] == [tuple(int(v > 0) for v in row) for row in fx.values]


def test_plus_one_and_runs_of_spaces_and_tabs_are_accepted(celeba):
    row = celeba.values[0]
    text = "000001.jpg\t" + "   ".join("+1" if v > 0 else "-1" for v in row)
    edit_line(celeba.files["attributes"], 3, text)
    assert _index(celeba.root).records[0].labels == tuple(int(v > 0) for v in row)


def test_load_returns_the_rgb_image(celeba):
    src = create_source("celeba", celeba.root)
    img = src.load(src.index().records[0])
    assert img.shape == (22, 18, 3) and img.dtype == np.uint8


def test_source_and_records_pickle(celeba):
    src = create_source("celeba", celeba.root, attributes=["Male"])
    clone = pickle.loads(pickle.dumps(src))
    assert clone.index().records == src.index().records


def test_default_crop_is_the_centred_square():
    from facelab.data.sources.celeba import CelebASource

    assert CelebASource.default_crop.mode == "center"


# ---- layouts ----------------------------------------------------------------------------------
def test_root_may_contain_a_celeba_subfolder(tmp_path):
    make_celeba(tmp_path / "celeba", 3)
    assert len(_index(tmp_path).records) == 3


def test_official_anno_eval_img_subfolders(tmp_path):
    fx = make_celeba(tmp_path, 3)
    (tmp_path / "Anno").mkdir()
    (tmp_path / "Eval").mkdir()
    (tmp_path / "Img").mkdir()
    for key, sub in (("attributes", "Anno"), ("identities", "Anno"), ("partitions", "Eval")):
        shutil.move(fx.files[key], tmp_path / sub / fx.files[key].name)
    shutil.move(tmp_path / "img_align_celeba", tmp_path / "Img" / "img_align_celeba")
    idx = _index(tmp_path)
    assert len(idx.records) == 3 and idx.has_partitions and idx.has_identities


def test_doubly_nested_image_folder_from_the_kaggle_zip(tmp_path):
    make_celeba(tmp_path, 3)
    inner = tmp_path / "img_align_celeba" / "img_align_celeba"
    inner.mkdir()
    for f in (tmp_path / "img_align_celeba").glob("*.jpg"):
        shutil.move(f, inner / f.name)
    assert [r.ref for r in _index(tmp_path).records][0].startswith(str(inner))


def test_kaggle_csv_annotations(tmp_path):
    fx = make_celeba(tmp_path, 4, with_identities=False)
    vals = fx.values.tolist()
    (tmp_path / "list_attr_celeba.csv").write_text(
        "image_id," + ",".join(CELEBA_ATTRIBUTES) + "\n"
        + "".join(f"{n}," + ",".join(map(str, v)) + "\n" for n, v in zip(fx.names, vals))
    )  # fmt: skip
    (tmp_path / "list_eval_partition.csv").write_text(
        "image_id,partition\n" + "".join(f"{n},{p}\n" for n, p in zip(fx.names, fx.partitions))
    )
    fx.files["attributes"].unlink()
    fx.files["partitions"].unlink()
    idx = _index(tmp_path)
    assert [r.labels for r in idx.records] == [tuple(int(v > 0) for v in row) for row in vals]
    assert [r.partition for r in idx.records] == fx.partitions.tolist()


# ---- optional files ---------------------------------------------------------------------------
def test_missing_partition_and_identity_files_are_noted(tmp_path):
    fx = make_celeba(tmp_path, 3, with_partitions=False, with_identities=False)
    idx = _index(fx.root)
    assert not idx.has_partitions and not idx.has_identities
    assert {r.partition for r in idx.records} == {-1} and {r.identity for r in idx.records} == {-1}
    notes = " ".join(idx.notes)
    assert "list_eval_partition" in notes and "identity_CelebA" in notes


def test_images_without_a_partition_row_are_noted(celeba):
    edit_line(celeba.files["partitions"], 2, None)  # 000002.jpg
    idx = _index(celeba.root)
    assert idx.records[1].partition == -1 and idx.records[0].partition == 0
    assert any("1 images have no row in list_eval_partition.txt" in n for n in idx.notes)


def test_landmarks_are_stored_in_source_pixels(tmp_path):
    fx = make_celeba(tmp_path, 4, n_rows=6, with_landmarks=True)
    idx = _index(fx.root)
    assert idx.has_landmarks
    assert idx.records[3].landmarks == tuple(float(x) for x in fx.landmarks[3])
    assert not _index(fx.root, landmarks=False).has_landmarks


def test_landmarks_missing_a_row_are_dropped_with_a_note(tmp_path):
    fx = make_celeba(tmp_path, 4, with_landmarks=True)
    edit_line(fx.files["landmarks"], 1, "3")
    edit_line(fx.files["landmarks"], 4, None)  # 000002.jpg
    idx = _index(fx.root)
    assert not idx.has_landmarks and all(r.landmarks is None for r in idx.records)
    assert any("landmarks are not used" in n for n in idx.notes)


# ---- files that are not records ---------------------------------------------------------------
def test_images_without_annotation_rows_and_other_files_are_skipped(celeba):
    write_image(celeba.root / "img_align_celeba" / "999999.jpg")
    (celeba.root / "img_align_celeba" / "notes.txt").write_text("hi")
    skipped = {s.key: s.reason for s in _index(celeba.root).skipped}
    assert skipped["999999.jpg"] == f"image has no row in {ATTR}"
    assert "not an image file" in skipped["notes.txt"]


# ---- options ----------------------------------------------------------------------------------
def test_attribute_subset_keeps_the_requested_order(celeba):
    idx = _index(celeba.root, attributes=["Smiling", "Male"])
    assert [s.name for s in idx.labels] == ["Smiling", "Male"]
    assert idx.records[4].labels == (celeba.label("000005.jpg", "Smiling"), celeba.label("000005.jpg", "Male"))


def test_unknown_attribute_lists_the_valid_names(celeba):
    with pytest.raises(ConfigError, match=r"unknown attribute\(s\) Smiley.*valid names.*Smiling"):
        _index(celeba.root, attributes=["Smiley"])


@pytest.mark.parametrize("options", [{"attributes": ["Male", "Male"]}, {"attributes": []}, {"colour": True}])
def test_bad_options_are_config_errors(celeba, options):
    with pytest.raises(ConfigError):
        create_source("celeba", celeba.root, **options)


# ---- faults: each names the file and the line -------------------------------------------------
def _row(fx, i):
    return read_line(fx.files["attributes"], i + 3)


ATTR_FAULTS = {
    "missing column": (lambda fx: edit_line(fx.files["attributes"], 5, _row(fx, 2).rsplit(" ", 1)[0]),
                       rf"{ATTR}:5: 40 columns, expected 41"),
    "extra column": (lambda fx: edit_line(fx.files["attributes"], 6, _row(fx, 3) + " 1"), rf"{ATTR}:6: 42 columns"),
    "value 0": (lambda fx: edit_line(fx.files["attributes"], 4, _row(fx, 1)[:-2] + " 0"),
                rf"{ATTR}:4: value '0' of attribute 'Young' for 000002.jpg is not 1 or -1"),
    "value 2": (lambda fx: edit_line(fx.files["attributes"], 3, "000001.jpg  2" + _row(fx, 0)[13:]),
                rf"{ATTR}:3: value '2' of attribute '5_o_Clock_Shadow'"),
    "glued values": (lambda fx: edit_line(fx.files["attributes"], 7, _row(fx, 4)[:-3] + " -1-1"),
                     rf"{ATTR}:7: value '-1-1' of attribute 'Young'"),
    "duplicate name": (lambda fx: edit_line(fx.files["attributes"], 8, "000004.jpg" + _row(fx, 5)[10:]),
                       rf"{ATTR}:8: image 000004.jpg appears again \(first on line 6\)"),
    "count too high": (lambda fx: edit_line(fx.files["attributes"], 1, "11"),
                       rf"{ATTR}:1: the count line says 11 images but the file has 10 rows"),
    "count missing row": (lambda fx: edit_line(fx.files["attributes"], 12, None), rf"{ATTR}:1: .* 9 rows"),
    "count not a number": (lambda fx: edit_line(fx.files["attributes"], 1, "ten"), rf"{ATTR}:1: expected the number"),
    "short header": (lambda fx: edit_line(fx.files["attributes"], 2, " ".join(CELEBA_ATTRIBUTES[:-1])),
                     rf"{ATTR}:2: expected 40 attribute names, found 39"),
    "header repeats": (lambda fx: edit_line(fx.files["attributes"], 2, " ".join(CELEBA_ATTRIBUTES[1:] + ["Male"])),
                       rf"{ATTR}:2: attribute name\(s\) Male appear more than once"),
    "blank line": (lambda fx: edit_line(fx.files["attributes"], 9, ""), rf"{ATTR}:9: empty line inside the table"),
    "partition 3": (lambda fx: edit_line(fx.files["partitions"], 4, "000004.jpg 3"),
                    r"list_eval_partition.txt:4: partition 3 of 000004.jpg is not 0 \(train\), 1 \(val\) or 2"),
    "partition columns": (lambda fx: edit_line(fx.files["partitions"], 2, "000002.jpg 0 1"),
                          r"list_eval_partition.txt:2: 3 columns, expected 2"),
    "partition text": (lambda fx: edit_line(fx.files["partitions"], 7, "000007.jpg train"),
                       r"list_eval_partition.txt:7: partition value 'train' is not an integer"),
    "identity missing": (lambda fx: edit_line(fx.files["identities"], 3, "000003.jpg"),
                         r"identity_CelebA.txt:3: 1 columns, expected 2"),
    "identity negative": (lambda fx: edit_line(fx.files["identities"], 5, "000005.jpg -4"),
                          r"identity_CelebA.txt:5: identity -4 of 000005.jpg is negative"),
    "landmark columns": (lambda fx: edit_line(fx.files["landmarks"], 6, "000004.jpg 1 2 3"),
                         r"list_landmarks_align_celeba.txt:6: 4 columns, expected 11"),
    "landmark header": (lambda fx: edit_line(fx.files["landmarks"], 2, "lefteye_x"),
                        r"list_landmarks_align_celeba.txt:2: expected 10 landmark column names, found 1"),
    "landmark count": (lambda fx: edit_line(fx.files["landmarks"], 1, "12"),
                       r"list_landmarks_align_celeba.txt:1: the count line says 12"),
}  # fmt: skip


@pytest.mark.parametrize("fault", list(ATTR_FAULTS))
def test_annotation_faults_name_file_and_line(tmp_path, fault):
    fx = make_celeba(tmp_path, 6, n_rows=10, with_landmarks=True)
    corrupt, message = ATTR_FAULTS[fault]
    corrupt(fx)
    with pytest.raises(DataError, match=message):
        _index(fx.root)


def test_fault_in_a_row_without_an_image_is_still_reported(celeba):
    edit_line(celeba.files["attributes"], 12, "000010.jpg oops")  # image 10 was never downloaded
    with pytest.raises(DataError, match=rf"{ATTR}:12: 2 columns, expected 41"):
        _index(celeba.root)


def test_missing_attribute_file_says_what_to_download(celeba):
    celeba.files["attributes"].unlink()
    with pytest.raises(DataError, match=r"no list_attr_celeba.txt .*download Anno/list_attr_celeba.txt"):
        _index(celeba.root)


def test_missing_image_folder_says_what_to_download(celeba):
    shutil.rmtree(celeba.root / "img_align_celeba")
    with pytest.raises(DataError, match=r"no img_align_celeba/ image folder; download img_align_celeba.zip"):
        _index(celeba.root)
    (celeba.root / "img_align_celeba.zip").write_bytes(b"PK")
    with pytest.raises(DataError, match=r"unzip .*img_align_celeba.zip"):
        _index(celeba.root)


def test_empty_image_folder_and_empty_root_are_errors(tmp_path, celeba):
    for f in (celeba.root / "img_align_celeba").iterdir():
        f.unlink()
    with pytest.raises(DataError, match=r"none of its 0 files has a row"):
        _index(celeba.root)
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(DataError, match=r"no CelebA files; expected .*img_align_celeba/"):
        _index(tmp_path / "elsewhere")


@pytest.mark.slow
def test_indexing_202599_annotation_rows_is_fast(tmp_path):
    fx = make_celeba(tmp_path, 20, n_rows=202_599)  # attributes, partitions, identities: the real file set
    src = create_source("celeba", fx.root)
    start = time.process_time()
    idx = src.index()
    elapsed = time.process_time() - start
    assert len(idx.records) == 20 and "202,599 annotation rows, 202,579 without an image file" in idx.notes[0]
    assert elapsed < 2.0, f"indexing took {elapsed:.2f} s of CPU"


@pytest.mark.realdata
def test_real_celeba():
    idx = _index(real_dataset("celeba"))
    assert len(idx.records) == 5_340
    parts = np.array([r.partition for r in idx.records])
    assert (parts == Partition.TRAIN).sum() == 4_560 and (parts == Partition.VAL).sum() == 780
    assert idx.has_identities and idx.has_partitions and not idx.skipped
    assert "202,599 annotation rows, 197,259 without an image file" in idx.notes[0]
    assert len(idx.labels) == 40 and all(set(r.labels) <= {0, 1} for r in idx.records[:100])


def test_rows_the_fast_parser_declines_are_still_read(celeba):
    row = celeba.values[1]
    edit_line(celeba.files["attributes"], 4, "  000002.jpg\f" + " ".join(map(str, row)))  # leading space, form feed
    assert _index(celeba.root).records[1].labels == tuple(int(v > 0) for v in row)
