"""FacePipeline: faces found in a photo come out in CelebA's frame, close to the upright render aligned directly."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from facelab.faces import AlignSpec, FacePipeline, similarity_transform, transform_points, warp_face
from tests.fixtures.faces import FACE_SEEDS, blank, paste_face, two_faces

FACE_REGION = (slice(80, 180), slice(40, 138))  # rows, columns of the face in the 178 x 218 frame
# Where the photo's true landmarks land in the crop, mean distance from the template in frame pixels (the
# template's eyes are 39 px apart): 1.5-6 px on these drawn faces; a crop off by a tenth of a face is >= 8.
CROP_TOLERANCE = 8.0


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised cross-correlation of the grey levels of two (H, W, 3) images."""
    a, b = a.astype(np.float64).mean(axis=2).ravel(), b.astype(np.float64).mean(axis=2).ravel()
    a, b = a - a.mean(), b - b.mean()
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


@pytest.fixture(scope="module", params=["mtcnn", "retinaface"])
def pipeline(request):
    return FacePipeline(AlignSpec(detector=request.param))


@pytest.mark.parametrize("seed, angle, scale", [(FACE_SEEDS[0], -20.0, 1.0), (FACE_SEEDS[2], 15.0, 1.4)])
def test_the_aligned_crop_is_the_upright_face_in_celebas_frame(pipeline, seed, angle, scale):
    pasted = paste_face(seed, angle=angle, scale=scale, center=(170.0, 110.0))
    found = pipeline.find(pasted.image)
    assert len(found) == 1
    aligned = found[0]
    assert aligned.image.shape == (218, 178, 3) and aligned.image.dtype == np.uint8
    assert aligned.matrix.shape == (2, 3)
    template = pipeline.spec.template_points
    crop_error = np.linalg.norm(transform_points(pasted.landmarks, aligned.matrix) - template, axis=1).mean()
    assert crop_error < CROP_TOLERANCE
    assert np.linalg.norm(aligned.landmarks - template, axis=1).mean() < CROP_TOLERANCE  # the fit's residual
    upright = warp_face(pasted.render, similarity_transform(pasted.render_landmarks, template))
    same = _ncc(aligned.image[FACE_REGION], upright[FACE_REGION])  # 0.7-0.98 here
    assert same > 0.6 and same > _ncc(aligned.image[FACE_REGION], upright[FACE_REGION][::-1]) + 0.15


def test_every_face_is_aligned_and_a_blank_photo_gives_none(pipeline):
    found = pipeline.find(two_faces())
    assert len(found) == 2 and found[0].face.score >= found[1].face.score
    for aligned in found:
        assert np.linalg.norm(aligned.landmarks - pipeline.spec.template_points, axis=1).mean() < CROP_TOLERANCE
    assert pipeline.find(blank()) == []


def test_greyscale_input_gives_a_three_channel_crop(pipeline):
    pasted = paste_face(FACE_SEEDS[1], scale=1.2, grey=True)
    found = pipeline.find(pasted.image[:, :, 0])
    assert len(found) == 1 and found[0].image.shape == (218, 178, 3)
    assert np.array_equal(found[0].image[..., 0], found[0].image[..., 2])


def test_the_spec_decides_the_frame_and_crosses_processes_as_json(pipeline):
    spec = AlignSpec.from_dict({**pipeline.spec.model_dump(mode="json"), "frame": [89, 109], "template": None})
    small = FacePipeline(spec.model_dump(mode="json"))  # a dict, as a manifest or checkpoint holds it
    found = small.find(paste_face(FACE_SEEDS[0], scale=1.2).image)
    assert found[0].image.shape == (109, 89, 3)
    clone = pickle.loads(pickle.dumps(small))
    assert clone.spec == small.spec and small.detector.models_loaded == 1 and clone.detector.models_loaded == 0
    assert "no face found" in clone.no_face_reason and spec.detector in clone.no_face_reason
