"""Detectors and pipelines called from several threads at once give every photo the answer it gets alone.

MTCNN runs on cv2.dnn, whose networks keep their buffers inside the network object: one network run by two
threads gave other photos' faces, exceptions, then a crashed process. Each concurrent call now borrows its
own model (:class:`~facelab.faces.model_pool.ModelPool`); RetinaFace's onnxruntime session is shared.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from facelab.faces import DETECTORS, AlignSpec, FacePipeline, create_detector
from facelab.faces.model_pool import ModelPool
from tests.fixtures.faces import FACE_SEEDS, blank, paste_face, two_faces

THREADS, ROUNDS = 4, 3


def _photos() -> list[np.ndarray]:
    """Six different photos: one face at several poses, two faces, none."""
    return [paste_face(FACE_SEEDS[0], angle=-15.0, center=(150.0, 130.0)).image,
            paste_face(FACE_SEEDS[1], scale=0.8, center=(210.0, 100.0)).image,
            paste_face(FACE_SEEDS[2], angle=20.0, scale=1.4).image,
            two_faces(), two_faces(FACE_SEEDS[1:]), blank()]


def _answer(faces) -> bytes:
    """Every bit of a detection: boxes, landmarks and scores."""
    return b"".join(np.asarray([*f.box, f.score], np.float64).tobytes() + f.landmarks.tobytes() for f in faces)


def _aligned_answer(found) -> bytes:
    return b"".join(f.image.tobytes() + f.matrix.tobytes() for f in found)


@pytest.mark.parametrize("name", DETECTORS.names())
def test_threads_get_the_answers_each_photo_gets_alone(name):
    photos = _photos()
    detector = create_detector(name)
    alone = [_answer(detector.detect(p)) for p in photos]
    jobs = [(k, i) for k in range(THREADS * ROUNDS) for i in np.random.default_rng(k).permutation(len(photos))]
    with ThreadPoolExecutor(THREADS) as pool:
        got = list(pool.map(lambda job: _answer(detector.detect(photos[job[1]])), jobs))
    wrong = [i for (_, i), g in zip(jobs, got) if g != alone[i]]
    assert wrong == [], f"{len(wrong)} of {len(jobs)} answers differ from the photo's answer alone"
    # a model per call running at once (never more than the threads), or one shared session
    assert 1 <= detector.models_loaded <= (1 if detector.shares_model else THREADS)


@pytest.mark.parametrize("name", DETECTORS.names())
def test_a_pipeline_shared_by_threads_aligns_every_photo_as_alone(name):
    photos = _photos()
    pipeline = FacePipeline(AlignSpec(detector=name))
    alone = [_aligned_answer(pipeline.find(p)) for p in photos]
    order = [i for k in range(THREADS) for i in np.random.default_rng(k).permutation(len(photos))]
    with ThreadPoolExecutor(THREADS) as pool:
        got = list(pool.map(lambda i: _aligned_answer(pipeline.find(photos[i])), order))
    assert [i for i, g in zip(order, got) if g != alone[i]] == []


def test_one_thread_loads_one_model():
    detector = create_detector("mtcnn")
    for photo in _photos()[:3]:
        detector.detect(photo)
    assert detector.models_loaded == 1


class _Exclusive:
    """A model that records when two threads run it at once."""

    def __init__(self) -> None:
        self.running, self.overlaps = 0, 0

    def run(self) -> None:
        self.running += 1
        if self.running > 1:
            self.overlaps += 1
        time.sleep(0.005)
        self.running -= 1


def test_the_pool_never_lends_a_model_to_two_threads_and_loads_no_more_than_it_must():
    models: list[_Exclusive] = []
    pool = ModelPool(lambda: models.append(_Exclusive()) or models[-1])
    start = threading.Barrier(THREADS)

    def work(_: int) -> None:
        start.wait()  # every thread asks at once: the pool must load one model each
        for _ in range(10):
            with pool.borrow() as model:
                model.run()

    with ThreadPoolExecutor(THREADS) as ex:
        list(ex.map(work, range(THREADS)))
    assert pool.loaded == len(models) == THREADS and sum(m.overlaps for m in models) == 0
    with pool.borrow() as a:  # alone again: an idle model is reused
        pass
    assert pool.loaded == THREADS and a in models


def test_a_shared_pool_loads_once_whatever_the_race():
    loads: list[int] = []
    pool = ModelPool(lambda: loads.append(1) or object(), shared=True)
    start = threading.Barrier(THREADS)

    def work(_: int) -> object:
        start.wait()
        with pool.borrow() as model:
            return model

    with ThreadPoolExecutor(THREADS) as ex:
        lent = set(map(id, ex.map(work, range(THREADS))))
    assert len(loads) == pool.loaded == 1 and len(lent) == 1
