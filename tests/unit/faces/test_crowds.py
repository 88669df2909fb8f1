"""A crowd with more faces than ``max_faces``: the best-scored are kept and the answer says how many were found.

A 6 x 6 grid of faces holds 36, more than the default cap of 32; detection used to return 32 faces and no word
of the others.
"""

from __future__ import annotations

import pytest

from facelab.errors import ConfigError
from facelab.faces import DETECTORS, AlignSpec, FacePipeline, create_detector
from facelab.faces.detectors.base import DEFAULT_MAX_FACES
from tests.fixtures.faces import face_grid, two_faces

CROWD = 36


@pytest.fixture(scope="module")
def crowd():
    return face_grid(6, 6)


@pytest.mark.parametrize("name", DETECTORS.names())
def test_a_crowd_above_the_default_cap_is_counted(name, crowd):
    found = create_detector(name).detections(crowd)
    assert len(found.faces) == DEFAULT_MAX_FACES == found.max_faces and found.capped
    # MTCNN examines a number of candidates scaled by max_faces, and may miss a face or two of a dense crowd
    assert DEFAULT_MAX_FACES < found.found <= CROWD
    assert found.note == f"{found.found} faces found; the 32 best-scored are kept (max_faces 32)"
    scores = [f.score for f in found.faces]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("name", DETECTORS.names())
def test_a_call_may_ask_for_more_faces_than_the_detectors_default(name, crowd):
    found = create_detector(name).detections(crowd, max_faces=64)
    assert len(found.faces) == found.found == CROWD and found.note is None


def test_the_pipeline_counts_what_it_did_not_align():
    pipeline = FacePipeline(AlignSpec(detector="retinaface", max_faces=1))
    counted = pipeline.find_counted(two_faces())
    assert len(counted.aligned) == 1 and counted.found == 2
    assert counted.note == "2 faces found; the 1 best-scored are kept (max_faces 1)"
    assert pipeline.find_counted(two_faces(), max_faces=2).note is None
    with pytest.raises(ConfigError, match="max_faces"):
        pipeline.find(two_faces(), max_faces=0)
