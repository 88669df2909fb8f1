"""``facelab serve``'s own pixel limit and the reduced decoding of large JPEGs: a photo above the service's limit is
413 from its header, a large JPEG is decoded reduced and answered in its own pixels."""

from __future__ import annotations

import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from facelab.data.decode import MAX_PIXELS
from facelab.deploy import load_engine
from facelab.eval.photos import PhotoPredictor
from facelab.serve.app import create_app
from facelab.serve.config import SERVE_MAX_PIXELS, ServeConfig
from tests.fixtures.bad_images import jpeg_claiming, png_bytes
from tests.fixtures.faces import FACE_SEEDS, paste_face


@pytest.fixture(scope="module")
def client(clf_run):
    predictor = PhotoPredictor(load_engine(clf_run[0]), faces="detect", detector="retinaface")
    with TestClient(create_app(predictor, ServeConfig())) as c:  # the defaults
        yield c


def _post(client, data: bytes):
    return client.post("/v1/predict", files={"file": ("photo", data, "image/jpeg")})


def test_the_default_limit_lies_between_phone_photos_and_the_decoders_limit():
    assert 8192 * 6144 < SERVE_MAX_PIXELS == ServeConfig().max_pixels < 0.6 * MAX_PIXELS


@pytest.mark.parametrize("data", [png_bytes(8000, 7000), jpeg_claiming(9000, 6500)], ids=["png", "jpeg"])
def test_a_photo_above_the_services_limit_is_413_from_its_header(client, data):
    r = _post(client, data)  # 56 and 58.5 Mpx: under the decoder's 89.5 Mpx, above the service's 52 Mpx
    assert r.status_code == 413 and "above the limit of 52,000,000 pixels" in r.json()["detail"]


def test_a_large_jpeg_is_answered_in_its_own_pixels(client):
    pasted = paste_face(FACE_SEEDS[0], canvas=(3000, 5600), scale=8.0, center=(1800.0, 1400.0))
    buf = io.BytesIO()
    Image.fromarray(pasted.image).save(buf, "JPEG", quality=90)
    body = _post(client, buf.getvalue()).json()
    assert body["image"] == {"width": 5600, "height": 3000} and body["faces_found"] == 1  # decoded at 2800 x 1500
    x, y, w, h = body["faces"][0]["box"]
    points = np.array(body["faces"][0]["landmarks"])
    assert x < pasted.landmarks[:, 0].min() and pasted.landmarks[:, 0].max() < x + w
    assert np.linalg.norm(points - pasted.landmarks, axis=1).mean() < 0.25 * pasted.eye_distance
