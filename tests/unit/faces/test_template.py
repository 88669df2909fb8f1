"""The detectors' templates in CelebA's frame, and AlignSpec: defaults resolved, JSON round trip, bad values."""

from __future__ import annotations

import json

import numpy as np
import pytest

from facelab.errors import ConfigError
from facelab.faces import CELEBA_FRAME, DETECTORS, TEMPLATES, AlignSpec, default_template


@pytest.mark.parametrize("detector", DETECTORS.names())
def test_every_detector_has_a_template_inside_the_frame(detector):
    t = default_template(detector)
    w, h = CELEBA_FRAME
    assert t.shape == (5, 2)
    assert ((t[:, 0] > 0) & (t[:, 0] < w - 1) & (t[:, 1] > 0) & (t[:, 1] < h - 1)).all()


@pytest.mark.parametrize("detector", DETECTORS.names())
def test_template_eyes_are_level_and_left_of_right_in_image_coordinates(detector):
    (lx, ly), (rx, ry), (nx, ny), (mlx, mly), (mrx, mry) = default_template(detector)
    assert lx < rx and mlx < mrx  # image left first
    assert abs(ly - ry) < 1.0 and abs(mly - mry) < 1.0  # level: CelebA's faces are aligned upright
    assert max(ly, ry) < ny < min(mly, mry)  # eyes above the nose above the mouth
    assert lx < nx < rx and 30 < rx - lx < 50  # the nose between the eyes; eyes about 39 px apart


def test_the_default_spec_records_the_resolved_template_and_min_score():
    spec = AlignSpec()
    assert spec.detector == "mtcnn" and spec.frame == CELEBA_FRAME
    assert np.array_equal(spec.template_points, np.asarray(TEMPLATES["mtcnn"]))
    assert spec.min_score == DETECTORS.get("mtcnn").default_min_score
    dumped = json.loads(json.dumps(spec.model_dump(mode="json")))  # what a manifest or checkpoint holds
    assert dumped["template"] == [list(p) for p in TEMPLATES["mtcnn"]]
    assert AlignSpec.from_dict(dumped) == spec


def test_another_frame_scales_the_template():
    small = AlignSpec(frame=(89, 109)).template_points
    assert np.allclose((small + 0.5) * 2, np.asarray(TEMPLATES["mtcnn"]) + 0.5)


@pytest.mark.parametrize("bad, message", [
    ({"detector": "haar"}, "unknown face detector 'haar'; known: mtcnn, retinaface"),
    ({"template": [[10, 10]] * 4}, "template"),
    ({"template": [[300, 10], [320, 10], [310, 20], [300, 30], [320, 30]]}, "inside the 178x218 frame"),
    ({"template": [[120, 100], [60, 100], [90, 130], [70, 150], [110, 150]]}, "left of the right"),
    ({"min_score": 1.5}, "min_score"),
    ({"frame": [8, 8]}, "frame"),
    ({"max_faces": 0}, "max_faces"),
    ({"colour": "red"}, "colour"),
])
def test_bad_specs_are_config_errors_naming_the_value(bad, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        AlignSpec.from_dict(bad, where="align spec")


def test_a_detector_without_a_template_says_how_to_get_one():
    with pytest.raises(ConfigError, match="benchmarks/face_template.py"):
        default_template("dlib")
