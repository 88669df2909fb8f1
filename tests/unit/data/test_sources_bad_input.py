"""Sources and store builds on hostile folders: file names that are not UTF-8, symbolic-link loops, dangling
links, 16-bit and oversized images. Each is stored correctly or reported as a skip, never a traceback."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facelab.data.build import prepare_store
from facelab.data.decode import crop_resize, decode_file, decode_min_side
from facelab.data.schema import CropSpec
from facelab.data.sources import create_source
from facelab.data.store import Store
from facelab.errors import DataError
from tests.fixtures.layouts import make_class_folders, make_utkface, write_image
from tests.fixtures.bad_images import png_bytes

LATIN1_NAME = os.fsdecode(b"caf\xe9.jpg")  # "café.jpg" written in Latin-1: not UTF-8
UTK_NAMES = ["25_1_3_20170104231539445.jpg.chip.jpg", "40_0_0_20170104231539446.jpg.chip.jpg"]


def _non_utf8(path: Path) -> Path:
    """``path``, after checking that this file system accepts names that are not UTF-8 (else skip the test)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        path.unlink()
    except OSError as e:
        pytest.skip(f"the file system refuses names that are not UTF-8 ({e.strerror})")
    return path


def _prepare(source, out: Path, **kw):
    return prepare_store(source, out, size=8, workers=1, progress=False, **kw)


def _manifest_text(out: Path) -> str:
    text = (out / "manifest.json").read_bytes().decode("utf-8")  # strict: valid UTF-8
    assert "\\udc" not in text  # no surrogate escapes smuggled in as JSON \u escapes
    return text


# ---- file names that are not UTF-8 --------------------------------------------------------------
def test_text_key_escapes_only_undecodable_bytes():
    from facelab.data.sources.base import text_key

    assert text_key(LATIN1_NAME) == "caf\\xe9.jpg"
    assert text_key("left/café.jpg") == "left/café.jpg"  # valid UTF-8 is untouched
    assert text_key(os.fsdecode(b"a\xff/b\xfe.png")) == "a\\xff/b\\xfe.png"


def test_folder_store_with_names_that_are_not_utf8(tmp_path):
    root = tmp_path / "faces"
    make_class_folders(root, {"left": 1, "right": 1})
    latin1 = write_image(_non_utf8(root / "left" / LATIN1_NAME), seed=5)
    write_image(root / os.fsdecode(b"r\xf6t") / "0000.jpg")  # a class folder named in Latin-1
    (root / "right" / os.fsdecode(b"notes\xff.txt")).write_text("not an image")
    out = tmp_path / "store"
    report = _prepare(create_source("folder", root), out)
    store = Store.open(out)
    assert report.count == len(store) == 4 and report.status == "built"
    assert sorted(store.keys.tolist()) == ["left/0000.jpg", "left/caf\\xe9.jpg", "r\\xf6t/0000.jpg", "right/0000.jpg"]
    assert store.spec("label").classes == ("left", "r\\xf6t", "right")
    assert [s["key"] for s in report.skipped] == ["right/notes\\xff.txt"]
    manifest = json.loads(_manifest_text(out))
    assert manifest["skipped"][0]["key"] == "right/notes\\xff.txt"
    crop = create_source("folder", root).default_crop
    want = crop_resize(decode_file(latin1, min_side=decode_min_side(crop, 8)), crop, 8)
    assert np.array_equal(store.images[store.keys.tolist().index("left/caf\\xe9.jpg")], want)
    again = _prepare(create_source("folder", root), out)
    assert again.status == "already complete"


def test_utkface_names_that_are_not_utf8_are_reported_as_text(tmp_path):
    root = tmp_path / "utk"
    make_utkface(root, UTK_NAMES)
    write_image(_non_utf8(root / os.fsdecode(b"30_1_2_2017\xe9.jpg.chip.jpg")))
    index = create_source("utkface", root).index()
    assert len(index.records) == 2
    [skip] = index.skipped
    assert skip.key == "30_1_2_2017\\xe9.jpg.chip.jpg" and "datetime field" in skip.reason
    skip.reason.encode("utf-8")  # the reason quotes the name: it must be text too


def test_celeba_image_without_a_row_and_a_latin1_name_is_a_text_skip(tmp_path):
    from tests.fixtures.layouts import make_celeba

    fx = make_celeba(tmp_path / "celeba", 3)
    images = fx.root / "img_align_celeba"
    write_image(_non_utf8(images / LATIN1_NAME))
    index = create_source("celeba", fx.root).index()
    assert len(index.records) == 3 and [s.key for s in index.skipped] == ["caf\\xe9.jpg"]


# ---- symbolic-link loops ------------------------------------------------------------------------
def test_folder_source_reports_symlink_loops_at_the_top(tmp_path):
    root = tmp_path / "faces"
    make_class_folders(root, {"left": 2, "right": 1})
    (root / "loop").symlink_to("loop")  # ELOOP
    (root / "up").symlink_to(".")  # leads back to root: would list every class again as class "up"
    (root / "gone").symlink_to("missing")
    index = create_source("folder", root).index()
    assert index.labels[0].classes == ("left", "right") and len(index.records) == 3
    reasons = {s.key: s.reason for s in index.skipped}
    assert set(reasons) == {"gone", "loop", "up"}
    assert "Too many levels of symbolic links" in reasons["loop"] and "leads back" in reasons["up"]
    assert "dangling" in reasons["gone"]


def test_folder_source_reports_symlink_loops_in_split_folders(tmp_path):
    root = tmp_path / "faces"
    make_class_folders(root / "train", {"left": 1, "right": 1})
    make_class_folders(root / "test", {"left": 1})
    (root / "train" / "loop").symlink_to("loop")
    (root / "test" / "back").symlink_to("..")
    index = create_source("folder", root).index()
    assert len(index.records) == 3 and index.has_partitions
    assert {s.key for s in index.skipped} == {"train/loop", "test/back"}


def test_root_that_is_a_symlink_loop_is_a_clear_error(tmp_path):
    (tmp_path / "data").symlink_to("data")
    for name in ("folder", "utkface"):
        with pytest.raises(DataError, match=r"data: is a symbolic link loop .*point '(folder|utkface)' at"):
            create_source(name, tmp_path / "data")


def test_utkface_subfolder_link_back_to_root_is_skipped_not_recursed(tmp_path):
    root = tmp_path / "utk"
    make_utkface(root / "part1", UTK_NAMES)
    (root / "UTKFace").symlink_to(".")  # was: RecursionError
    index = create_source("utkface", root).index()
    assert [r.key for r in index.records] == UTK_NAMES and all("/part1/" in r.ref for r in index.records)
    assert [(s.key, "leads back" in s.reason) for s in index.skipped] == [("UTKFace", True)]


def test_utkface_symlink_loop_among_the_images_is_a_skip(tmp_path):
    root = tmp_path / "utk"
    make_utkface(root, UTK_NAMES)
    (root / "50_0_1_20170104231539447.jpg.chip.jpg").symlink_to("50_0_1_20170104231539447.jpg.chip.jpg")
    index = create_source("utkface", root).index()
    assert len(index.records) == 2
    [skip] = index.skipped
    assert skip.key.startswith("50_0_1") and "Too many levels of symbolic links" in skip.reason


def test_utkface_only_a_loop_where_images_should_be_is_a_clear_error(tmp_path):
    root = tmp_path / "utk"
    root.mkdir()
    (root / "UTKFace").symlink_to(".")
    with pytest.raises(DataError, match=r"no UTKFace images.*ignored UTKFace \(symbolic link loop"):
        create_source("utkface", root).index()


# ---- image content ------------------------------------------------------------------------------
def test_16bit_png_is_stored_scaled_not_white(tmp_path):
    root = tmp_path / "faces"
    make_class_folders(root, {"a": 1})
    grey16 = np.full((12, 12), 32896, dtype=np.uint16)  # 32896 / 257 = 128
    Image.fromarray(grey16).save(root / "a" / "deep.png")
    report = _prepare(create_source("folder", root), tmp_path / "store", crop=CropSpec(mode="none"))
    store = Store.open(tmp_path / "store")
    assert report.count == 2
    assert (store.images[store.keys.tolist().index("a/deep.png")] == 128).all()


def test_decompression_bomb_is_one_skip_and_the_build_completes(tmp_path):
    root = tmp_path / "faces"
    make_class_folders(root, {"a": 2})
    (root / "a" / "bomb.png").write_bytes(png_bytes(30_000, 30_000))
    out = tmp_path / "store"
    report = _prepare(create_source("folder", root), out)
    assert report.count == 2 and [s["key"] for s in report.skipped] == ["a/bomb.png"]
    assert "image too large: 900,000,000 pixels, above the limit of 89,478,485" in report.skipped[0]["reason"]
    assert _prepare(create_source("folder", root), out).status == "already complete"


def test_escaped_name_equal_to_a_real_name_is_a_clear_error(tmp_path):
    root = tmp_path / "faces"
    make_class_folders(root, {"left": 1})
    write_image(_non_utf8(root / "left" / LATIN1_NAME))
    write_image(root / "left" / "caf\\xe9.jpg")  # literally named like the escaped key
    key = re.escape(repr("left/caf\\xe9.jpg"))
    with pytest.raises(DataError, match=rf"record key {key} appears twice.*backslash escapes"):
        _prepare(create_source("folder", root), tmp_path / "store")
