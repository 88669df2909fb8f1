"""``facelab serve`` under parallel traffic: N clients posting M different photos at once get, for every photo,
byte for byte the answer that photo gets served alone; for both detectors and every engine (torch, onnx, an
ensemble).

MTCNN's cv2.dnn networks are not thread-safe: one network shared by the prediction slots answered other photos'
faces with status 200, then 500s, then crashed the process. Each slot now borrows its own network.
"""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from facelab.deploy import export_onnx, load_engine
from facelab.eval.photos import PhotoPredictor
from facelab.serve.app import create_app
from facelab.serve.config import ServeConfig
from tests.fixtures.faces import FACE_SEEDS, blank, face_grid, paste_face, two_faces

CLIENTS, SLOTS = 4, 4


def _png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))[1].tobytes()


def _jpeg(image: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


PHOTOS = [_png(paste_face(FACE_SEEDS[0], angle=-15.0, center=(150.0, 130.0)).image),
          _jpeg(paste_face(FACE_SEEDS[1], scale=0.8, center=(210.0, 100.0)).image),
          _png(paste_face(FACE_SEEDS[2], angle=20.0, scale=1.4).image),
          _png(two_faces()), _jpeg(two_faces(FACE_SEEDS[1:])), _png(blank())]


@pytest.fixture(scope="module")
def engines(clf_run, tmp_path_factory):
    """The session's tiny classifier on each engine: PyTorch, onnxruntime (exported here, the shared run folder
    is left alone), and an ensemble of it and a copy of it."""
    folder = tmp_path_factory.mktemp("engines")
    onnx_file, twin = folder / "model.onnx", folder / "twin"
    export_onnx(clf_run[0], onnx_file, exporter="torchscript")
    shutil.copytree(clf_run[0], twin)
    return {"torch": lambda: load_engine(clf_run[0]), "onnx": lambda: load_engine(onnx_file),
            "ensemble": lambda: load_engine([clf_run[0], twin])}


def _answer(response) -> str:
    assert response.status_code == 200, response.text
    body = response.json()
    body.pop("seconds")  # the only field that may differ
    return json.dumps(body, sort_keys=True)


def _post(client: TestClient, data: bytes):
    return client.post("/v1/predict", files={"file": ("photo", data, "application/octet-stream")})


@pytest.mark.parametrize("engine", ["torch", "onnx", "ensemble"])
@pytest.mark.parametrize("detector", ["mtcnn", "retinaface"])
def test_parallel_clients_get_each_photo_s_answer_alone(engines, engine, detector):
    predictor = PhotoPredictor(engines[engine](), faces="detect", detector=detector)
    config = ServeConfig(max_concurrent=SLOTS, max_queue=CLIENTS * len(PHOTOS))
    with TestClient(create_app(predictor, config)) as client:
        alone = [_answer(_post(client, p)) for p in PHOTOS]
        assert sum('"box"' in a for a in alone) == 5  # every photo but the blank one has faces
        jobs = [i for k in range(CLIENTS) for i in np.random.default_rng(k).permutation(len(PHOTOS))]
        with ThreadPoolExecutor(CLIENTS) as pool:
            got = list(pool.map(lambda i: _answer(_post(client, PHOTOS[i])), jobs))
    wrong = [i for i, g in zip(jobs, got) if g != alone[i]]
    assert wrong == [], f"{len(wrong)} of {len(jobs)} answers differ from the photo's answer alone"
    assert predictor.pipeline is not None and predictor.pipeline.detector.models_loaded <= SLOTS


def test_a_crowd_above_the_detectors_default_cap_is_counted_and_said(engines):
    """A 6 x 6 grid: 36 faces, above the default cap of 32, which used to cut them silently."""
    predictor = PhotoPredictor(engines["torch"](), faces="detect", detector="retinaface")
    crowd = _png(face_grid(6, 6))
    with TestClient(create_app(predictor, ServeConfig())) as client:  # max_faces 32
        body = _post(client, crowd).json()
        assert len(body["faces"]) == 32 and body["faces_found"] == 36
        assert body["note"] == "36 faces found; the 32 best-scored are kept (max_faces 32)"
    with TestClient(create_app(predictor, ServeConfig(max_faces=40))) as client:
        body = _post(client, crowd).json()
        assert len(body["faces"]) == body["faces_found"] == 36 and body.get("note") is None
