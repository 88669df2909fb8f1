"""``facelab predict`` on photos: every face found and aligned like the training images, one CSV row each."""

from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest

from facelab.deploy import load_engine
from facelab.eval.photos import PhotoPredictor
from facelab.errors import ConfigError
from tests.e2e.conftest import cli_error, cli_json
from tests.fixtures.faces import blank, paste_face, two_faces


def _write(path, image):
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    _write(folder / "two.png", two_faces())
    _write(folder / "tilted.jpg", paste_face(13, angle=25, scale=1.2, canvas=(300, 400)).image)
    _write(folder / "nobody.png", blank())
    return folder


def _read(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def test_detect_writes_one_row_per_face_and_skips_photos_without_one(clf_run, photos, tmp_path):
    report = cli_json("predict", clf_run[0], photos, "--faces", "detect", "--out", tmp_path / "p.csv")
    header, rows = _read(tmp_path / "p.csv")
    assert header[:7] == ["file", "face", "box_x", "box_y", "box_w", "box_h", "score"]
    assert [r[:2] for r in rows] == [["tilted.jpg", "0"], ["two.png", "0"], ["two.png", "1"]]
    assert report["count"] == 3 and report["skipped"] == [{"key": "nobody.png", "reason": report["skipped"][0]["reason"]}]
    assert "no face found" in report["skipped"][0]["reason"]
    tilted = paste_face(13, angle=25, scale=1.2, canvas=(300, 400))
    x, y, w, h = (float(v) for v in rows[0][2:6])
    cx, cy = tilted.landmarks.mean(0)
    assert x < cx < x + w and y < cy < y + h  # the box is around the true face
    predictor = PhotoPredictor(load_engine(clf_run[0]), faces="detect")  # the same path as facelab serve
    want = predictor.predict_image(two_faces()).faces
    for row, face in zip(rows[1:], want):
        got = dict(zip(header, row))
        for name, p in face.probs.items():
            if isinstance(p, float):
                assert float(got[f"p_{name}"]) == pytest.approx(p, abs=1e-5)
            else:
                for cls, q in p.items():
                    assert float(got[f"p_{name}={cls}"]) == pytest.approx(q, abs=1e-5)


def test_aligned_takes_each_photo_as_one_face_as_before(clf_run, photos, tmp_path):
    report = cli_json("predict", clf_run[0], photos, "--faces", "aligned", "--out", tmp_path / "a.csv")
    header, rows = _read(tmp_path / "a.csv")
    assert header[0] == "key" and [r[0] for r in rows] == ["nobody.png", "tilted.jpg", "two.png"]
    assert report["skipped"] == []


def test_auto_detects_only_for_checkpoints_trained_on_aligned_faces(clf_run, photos, tmp_path):
    engine = load_engine(clf_run[0])  # a synthetic store, not aligned
    assert engine.preprocessing.align is None and PhotoPredictor(engine).mode == "aligned"
    aligned = engine.preprocessing.model_copy(update={"align": PhotoPredictor(engine, faces="detect").pipeline.spec})
    engine.meta.preprocessing = aligned  # as a checkpoint of a --align store (or CelebA) says
    assert PhotoPredictor(engine).mode == "detect"
    assert PhotoPredictor(engine, detector="retinaface").pipeline.spec.detector == "retinaface"


def test_a_bad_faces_mode_is_a_config_error(clf_run, photos, tmp_path):
    err = cli_error("predict", clf_run[0], photos, "--faces", "some", "--out", tmp_path / "x.csv")
    assert isinstance(err, ConfigError) and "auto, detect, aligned" in str(err)
    assert not (tmp_path / "x.csv").exists()
