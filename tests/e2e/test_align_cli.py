"""``facelab align`` end to end (and ``facelab data prepare --align``): synthetic faces pasted into photos at
known poses, a photo with two faces, a blank photo and files that are not images."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facelab.data.align_folder import CSV_COLUMNS, face_path
from facelab.data.store import Store
from facelab.errors import ConfigError
from facelab.faces import AlignSpec
from tests.e2e.conftest import cli, cli_error, cli_json
from tests.fixtures.bad_images import png_bytes
from tests.fixtures.faces import FACE_SEEDS, blank, paste_face, two_faces

NO_FACE = "no face found (mtcnn, min score 0.9)"


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    """A folder of photos, and the true landmarks of the single-face ones by key."""
    root = tmp_path_factory.mktemp("photos")
    (root / "sub").mkdir()
    tilted = paste_face(FACE_SEEDS[0], angle=-15.0, scale=1.1)
    grey = paste_face(FACE_SEEDS[1], angle=10.0, scale=1.3, grey=True)
    Image.fromarray(tilted.image).save(root / "tilted.png")
    Image.fromarray(grey.image).save(root / "sub" / "grey.jpg", quality=95)
    Image.fromarray(two_faces()).save(root / "two.png")
    Image.fromarray(blank()).save(root / "blank.png")
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "huge.png").write_bytes(png_bytes(20_000, 20_000))
    (root / "notes.txt").write_text("not a photo")
    return root, {"tilted.png": tilted.landmarks, "sub/grey.jpg": grey.landmarks}


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
        return list(reader)


def test_every_face_is_written_aligned_and_listed(photos, tmp_path):
    root, truth = photos
    out = tmp_path / "aligned"
    result = cli("align", root, "--out", out, "--json")
    report = json.loads(result.stdout)
    assert (report["photos"], report["read"], report["faces"]) == (6, 4, 4)  # the blank one is read
    reasons = {s["file"]: s["reason"] for s in report["skipped"]}
    assert reasons["blank.png"] == NO_FACE
    assert reasons["corrupt.jpg"].startswith("cannot decode image")
    assert "image too large" in reasons["huge.png"] and reasons["notes.txt"] == "not an image file (by extension)"
    assert len(reasons) == 4 and f"skipped blank.png: {NO_FACE}" in result.stderr  # also told on stderr
    assert report["align"] == AlignSpec().model_dump(mode="json")
    rows = _csv(out / "faces.csv")
    assert [(r["file"], r["face"]) for r in rows] == [("sub/grey.jpg", "0"), ("tilted.png", "0"), ("two.png", "0"),
                                                       ("two.png", "1")]
    assert float(rows[2]["score"]) >= float(rows[3]["score"]) >= 0.9
    for row in rows:
        img = np.asarray(Image.open(out / f"{row['file']}.face{row['face']}.png"))
        assert img.shape == (218, 178, 3)
        if row["file"] in truth:
            points = np.array([[float(row[f"{p}_x"]), float(row[f"{p}_y"])] for p in ("le", "re", "n", "ml", "mr")])
            eyes = np.linalg.norm(truth[row["file"]][1] - truth[row["file"]][0])
            assert np.linalg.norm(points - truth[row["file"]], axis=1).mean() < 0.25 * eyes
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["faces.csv", "sub/grey.jpg.face0.png", "tilted.png.face0.png", "two.png.face0.png",
                       "two.png.face1.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aligned"]  # nothing beside --out


def test_one_photo_with_the_fast_detector(photos, tmp_path):
    root, _ = photos
    report = cli_json("align", root / "two.png", "--out", tmp_path / "out", "--detector", "retinaface")
    assert report["faces"] == 2 and report["align"]["detector"] == "retinaface"
    assert [r["face"] for r in _csv(tmp_path / "out" / "faces.csv")] == ["0", "1"]


def test_out_inside_the_photos_folder_is_never_read_back(photos, tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    (root / "face.png").write_bytes((photos[0] / "tilted.png").read_bytes())
    first = cli_json("align", root, "--out", root / "aligned")
    again = cli_json("align", root, "--out", root / "aligned")
    assert first["photos"] == again["photos"] == 1 and again["faces"] == 1


@pytest.mark.parametrize("key", ["../escape.jpg", "/etc/passwd", "a/../../b.jpg", ".."])
def test_keys_cannot_lead_outside_out(tmp_path, key):
    assert face_path(tmp_path, key, 0) is None
    assert face_path(tmp_path, "sub/ok.jpg", 1) == tmp_path / "sub" / "ok.jpg.face1.png"


def test_bad_input_is_a_clear_error(photos, tmp_path):
    root, _ = photos
    assert "notes.txt: not an image file" in str(cli_error("align", root / "notes.txt", "--out", tmp_path / "o"))
    assert "does not exist" in str(cli_error("align", tmp_path / "missing", "--out", tmp_path / "o"))
    (tmp_path / "file").write_text("x")
    assert "is a file; --out names the folder" in str(cli_error("align", root, "--out", tmp_path / "file"))
    err = cli_error("align", root, "--out", tmp_path / "o", "--detector", "haar")
    assert isinstance(err, ConfigError) and "known: mtcnn, retinaface" in str(err)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "x.jpg").write_bytes(b"")
    assert "none of its 1 image files could be read" in str(cli_error("align", broken, "--out", tmp_path / "o"))
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_prepare_align_stores_aligned_faces_and_skips_the_blank(photos, tmp_path):
    root = tmp_path / "folder"
    (root / "people").mkdir(parents=True)
    for name in ("tilted.png", "two.png", "blank.png", "corrupt.jpg"):
        (root / "people" / name).write_bytes((photos[0] / name).read_bytes())
    report = cli_json("data", "prepare", "folder", root, "--out", tmp_path / "store", "--size", 32, "--align",
                      "--workers", 1)
    assert (report["count"], report["aligned"], report["no_face"]) == (2, 2, 1)
    stages = {s["key"]: (s["stage"], s["reason"]) for s in report["skipped"]}
    assert stages["people/blank.png"] == ("align", NO_FACE) and stages["people/corrupt.jpg"][0] == "decode"
    store = Store.open(tmp_path / "store")
    assert store.manifest.align == AlignSpec().model_dump(mode="json") and store.landmarks.shape == (2, 10)
    err = cli_error("data", "prepare", "folder", root, "--out", tmp_path / "store", "--size", 32)
    assert "already holds a different store" in str(err) and "align" in str(err)  # unaligned is another store


def test_detector_options_need_align(tmp_path):
    result = cli("data", "prepare", "synthetic", "--out", tmp_path / "s", "--detector", "mtcnn", ok=False)
    assert result.exit_code == 2 and "add --align" in result.output


def test_help_lists_the_command():
    assert "align" in cli("--help").stdout
