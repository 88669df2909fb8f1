"""``facelab predict`` on a folder of hostile files: every image is predicted or reported as a skip, the CSV
is written as UTF-8 text, and nothing fails after the inference (where it would throw the work away)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facelab.data.store import Store
from tests.e2e.conftest import cli_error, cli_json
from tests.fixtures.bad_images import png_bytes


def _rows(path: Path) -> dict[str, list[str]]:
    with open(path, newline="", encoding="utf-8") as f:  # strict UTF-8: a surrogate would not have been written
        header, *rows = list(csv.reader(f))
    return {r[0]: r[1:] for r in rows}


@pytest.fixture
def faces(store: Path, tmp_path: Path) -> Path:
    """Two store images saved losslessly as PNGs."""
    folder = tmp_path / "faces"
    folder.mkdir()
    st = Store.open(store)
    for i in range(2):
        Image.fromarray(np.asarray(st.images[i])).save(folder / f"face{i}.png")
    return folder


def test_file_name_that_is_not_utf8_is_predicted_under_an_escaped_key(clf_run, faces, tmp_path):
    latin1 = faces / os.fsdecode(b"caf\xe9.png")
    try:
        os.replace(faces / "face1.png", latin1)
    except OSError as e:
        pytest.skip(f"the file system refuses names that are not UTF-8 ({e.strerror})")
    out = tmp_path / "pred.csv"
    report = cli_json("predict", clf_run[0], faces, "--out", out)
    assert report["count"] == 2 and report["skipped_count"] == 0
    rows = _rows(out)
    assert sorted(rows) == ["caf\\xe9.png", "face0.png"]


def test_decompression_bomb_is_a_reported_skip(clf_run, faces, tmp_path):
    (faces / "bomb.png").write_bytes(png_bytes(30_000, 30_000))
    out = tmp_path / "pred.csv"
    report = cli_json("predict", clf_run[0], faces, "--out", out)
    assert report["count"] == 2 and [s["key"] for s in report["skipped"]] == ["bomb.png"]
    assert "image too large: 900,000,000 pixels" in report["skipped"][0]["reason"]
    assert sorted(_rows(out)) == ["face0.png", "face1.png"]


def test_symlink_loops_and_linked_folders_are_reported_skips(clf_run, faces, tmp_path):
    (faces / "loop.png").symlink_to("loop.png")
    (faces / "up").symlink_to(".")
    (faces / "gone.png").symlink_to("missing.png")
    out = tmp_path / "pred.csv"
    report = cli_json("predict", clf_run[0], faces, "--out", out)
    assert report["count"] == 2 and sorted(_rows(out)) == ["face0.png", "face1.png"]
    reasons = {s["key"]: s["reason"] for s in report["skipped"]}
    assert set(reasons) == {"gone.png", "loop.png", "up"}
    assert "Too many levels of symbolic links" in reasons["loop.png"] and "not followed" in reasons["up"]


def test_16bit_png_is_predicted_like_the_same_8bit_image(clf_run, store, tmp_path):
    folder = tmp_path / "grey"
    folder.mkdir()
    grey = np.asarray(Image.fromarray(np.asarray(Store.open(store).images[0])).convert("L"))  # (S, S) uint8
    Image.fromarray(grey).save(folder / "grey8.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(folder / "grey16.png")  # v * 257 decodes back to v
    assert Image.open(folder / "grey16.png").mode == "I;16"
    out = tmp_path / "pred.csv"
    cli_json("predict", clf_run[0], folder, "--out", out)
    with open(out, newline="", encoding="utf-8") as f:
        header, *rows = list(csv.reader(f))
    got, want = ({c: float(v) for c, v in zip(header, r) if c.startswith("p_")} for r in sorted(rows))
    assert got.keys() == want.keys() and all(got[c] == pytest.approx(want[c], abs=2e-5) for c in got)


def test_out_that_cannot_be_written_fails_before_inference(clf_run, faces, tmp_path):
    (tmp_path / "taken").mkdir()
    err = cli_error("predict", clf_run[0], faces, "--out", tmp_path / "taken")
    assert "is a folder; --out names the CSV file to write" in str(err)


def test_root_that_is_a_symlink_loop_is_a_clear_error(clf_run, tmp_path):
    (tmp_path / "loop").symlink_to("loop")
    err = cli_error("predict", clf_run[0], tmp_path / "loop", "--out", tmp_path / "x.csv")
    assert "is a symbolic link loop" in str(err)


def test_escaped_name_that_collides_with_a_real_name_is_an_error_before_inference(clf_run, faces, tmp_path):
    try:
        os.replace(faces / "face1.png", faces / os.fsdecode(b"caf\xe9.png"))
    except OSError as e:
        pytest.skip(f"the file system refuses names that are not UTF-8 ({e.strerror})")
    os.replace(faces / "face0.png", faces / "caf\\xe9.png")  # literally named like the escaped key
    err = cli_error("predict", clf_run[0], faces, "--out", tmp_path / "x.csv")
    assert "two files would both be listed as caf\\xe9.png" in str(err)
    assert not (tmp_path / "x.csv").exists()
