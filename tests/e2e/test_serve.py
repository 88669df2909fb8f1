"""``facelab serve``: the API and its page on a real (tiny) trained model, and every hostile upload as a 4xx."""

from __future__ import annotations

import asyncio
import io
import re
import zlib

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from facelab.deploy import load_engine
from facelab.eval.photos import PhotoPredictor
from facelab.serve.app import create_app
from facelab.serve.config import ServeConfig
from facelab.serve.guard import BodyGuard
from tests.fixtures.bad_images import png_bytes
from tests.fixtures.faces import blank, paste_face, two_faces


def png(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


def jpeg(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


@pytest.fixture(scope="module")
def predictor(clf_run) -> PhotoPredictor:
    """The session's tiny classifier, finding and aligning faces in photos (its synthetic training store was
    not aligned, so detection is asked for explicitly)."""
    return PhotoPredictor(load_engine(clf_run[0]), faces="detect")


@pytest.fixture(scope="module")
def client(predictor) -> TestClient:
    config = ServeConfig(max_upload_bytes=3 * 1024 * 1024, max_pixels=4_000_000, max_faces=3, max_concurrent=2)
    return TestClient(create_app(predictor, config))


def post(client: TestClient, data: bytes, name: str = "photo.png", content_type: str = "image/png"):
    return client.post("/v1/predict", files={"file": (name, data, content_type)})


# ---- the API ----------------------------------------------------------------------------------------
def test_model_health_page_and_docs_work_offline(client, clf_run):
    info = client.get("/v1/model").json()
    assert info["labels"] == clf_run[1]["labels"] and info["faces"] == "detect" and info["engine"] == "torch"
    assert info["limits"]["max_faces"] == 3 and info["preprocessing"]["image_size"] == 32
    assert client.get("/healthz").json() == {"status": "ok", "busy": 0, "waiting": 0, "max_concurrent": 2,
                                             "max_queue": 8}
    page, docs = client.get("/").text, client.get("/docs").text
    assert 'id="file"' in page and "/static/app.js" in page
    for html in (page, docs):  # every resource comes from this server: no CDN, works offline
        refs = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html) + re.findall(r"""url: *["']([^"']+)["']""", html)
        assert refs and all(r.startswith("/") for r in refs), refs
        for ref in refs:
            assert client.get(ref).status_code == 200, ref
    assert "http" not in client.get("/static/app.js").text
    assert client.get("/openapi.json").json()["paths"]["/v1/predict"]["post"]


def test_predict_gives_every_face_with_the_same_answer_as_the_library(client, predictor):
    photo = two_faces()
    r = post(client, png(photo))
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["faces"]) == body["faces_found"] == 2 and body["image"] == {"width": 256, "height": 128}
    lib = predictor.predict_image(photo)
    for got, want in zip(body["faces"], lib.faces):
        assert got["box"] == pytest.approx(want.box) and len(got["landmarks"]) == 5
        assert set(got["attributes"]) == set(predictor.specs) and got["predicted"] == want.predicted
        for name, p in want.probs.items():
            assert got["attributes"][name] == pytest.approx(p, abs=1e-6)
    xs = sorted(f["box"][0] for f in body["faces"])
    assert xs[0] < 128 <= xs[1]  # one face in each half


def test_a_photo_without_a_face_is_an_empty_list_with_the_reason(client):
    body = post(client, png(blank())).json()
    assert body["faces"] == [] and body["faces_found"] == 0 and "no face found" in body["note"]


def test_many_faces_are_capped_and_said_so(client):
    mosaic = np.concatenate([two_faces((1, 13)), two_faces((15, 1))], axis=0)  # 4 faces
    body = post(client, png(mosaic)).json()
    assert len(body["faces"]) == 3 and body["faces_found"] == 4 and "max_faces" in body["note"]


def test_content_is_sniffed_not_taken_from_the_name(client):
    photo = paste_face(1).image
    r = post(client, jpeg(photo), name="face.png", content_type="text/plain")  # a JPEG called .png, sent as text
    assert r.status_code == 200 and r.json()["faces_found"] == 1


# ---- hostile input -------------------------------------------------------------------------------------
def _zip_bomb_png(side: int) -> bytes:
    """A valid PNG of side x side black pixels whose compressed data is tiny (a decompression bomb)."""
    raw = zlib.compress(b"\x00" * (side + 1) * side, 9)  # one filter byte + side grey pixels per row
    head = png_bytes(side, side)  # the signature and IHDR of a grey 8-bit image of that size
    ihdr_end = 8 + 25
    chunk = len(raw).to_bytes(4, "big") + b"IDAT" + raw + zlib.crc32(b"IDAT" + raw).to_bytes(4, "big")
    end = (0).to_bytes(4, "big") + b"IEND" + zlib.crc32(b"IEND").to_bytes(4, "big")
    return head[:ihdr_end] + chunk + end


@pytest.mark.parametrize("make, status, words", [
    (lambda: b"", 400, "empty"),
    (lambda: b"hello, I am a text file pretending to be a photo", 415, "not a known image format"),
    (lambda: jpeg(paste_face(1).image)[:400], 422, "cannot decode"),
    (lambda: png_bytes(30000, 30000), 413, "too large"),
    (lambda: _zip_bomb_png(5000), 413, "too large"),
    (lambda: b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, 422, "cannot decode"),
    (lambda: b"%PDF-1.4\n" + png(blank((8, 8))), 415, "not a known image format"),
], ids=["empty", "text", "truncated-jpeg", "huge-header", "zip-bomb-png", "png-signature-only", "pdf-png-polyglot"])
def test_hostile_uploads_are_clear_4xx(client, make, status, words):
    r = post(client, make())
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]


def test_a_polyglot_that_decodes_is_treated_as_the_image_it_is(client):
    r = post(client, png(blank((64, 64))) + b"<html><script>alert(1)</script></html>PK\x03\x04")
    assert r.status_code == 200 and r.json()["faces"] == []


def test_requests_that_are_not_an_upload_are_400(client):
    assert client.post("/v1/predict", json={"file": "x"}).status_code == 400
    assert client.post("/v1/predict", files={"photo": ("a.png", png(blank()), "image/png")}).status_code == 400
    r = client.post("/v1/predict", content=b"--x\r\nnot a form", headers={"content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 400


def test_an_upload_above_the_size_limit_is_refused_before_it_is_parsed(client):
    r = post(client, b"\xff\xd8\xff" + b"\x00" * (3 * 1024 * 1024))
    assert r.status_code == 413 and "above the limit" in r.json()["detail"]


def test_a_full_service_answers_503_with_retry_after(client):
    slots = client.app.app.state.slots
    busy = slots.busy
    slots.busy = slots.n + slots.queue  # every slot running, the queue full
    try:
        r = post(client, png(blank()))
    finally:
        slots.busy = busy
    assert r.status_code == 503 and r.headers["retry-after"] == "1" and "busy" in r.json()["detail"]
    assert post(client, png(blank())).status_code == 200  # free again


def test_slots_run_n_queue_the_next_and_refuse_beyond():
    from facelab.serve.app import Slots

    async def scenario():
        slots, order = Slots(2, 1), []
        assert await slots.acquire() and await slots.acquire()  # both running
        waiter = asyncio.create_task(slots.acquire())  # queued
        await asyncio.sleep(0)
        assert slots.waiting == 1 and not await slots.acquire()  # the queue is full: refused at once
        slots.release()
        assert await waiter and slots.busy == 2 and slots.waiting == 0
        slots.release(), slots.release()
        order.append(slots.busy)
        return order

    assert asyncio.run(scenario()) == [0]


def test_slow_and_lying_clients_get_408_and_413():
    async def app(scope, receive, send):  # the guarded app: must never be reached
        raise AssertionError("the body guard let a bad request through")

    sent = []

    async def send(message):
        sent.append(message)

    async def never():
        await asyncio.sleep(10)

    async def slow_then_more():
        return {"type": "http.request", "body": b"x" * 10, "more_body": True}

    scope = {"type": "http", "method": "POST", "headers": [(b"content-length", b"100")]}
    asyncio.run(BodyGuard(app, max_bytes=1000, timeout_s=0.1)(scope, never, send))
    assert sent[0]["status"] == 408
    sent.clear()
    asyncio.run(BodyGuard(app, max_bytes=50, timeout_s=5)({**scope, "headers": []}, slow_then_more, send))
    assert sent[0]["status"] == 413  # no Content-Length, more bytes than allowed: stopped while reading
    sent.clear()
    asyncio.run(BodyGuard(app, max_bytes=50, timeout_s=5)(
        {**scope, "headers": [(b"content-length", b"10000")]}, never, send))
    assert sent[0]["status"] == 413  # a declared length above the limit: refused before reading


def test_uploads_leave_no_file_behind(client, tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where uploads above 1 MB are spooled
    noisy = np.random.default_rng(0).integers(0, 256, (900, 900, 3), dtype=np.uint8)
    data = png(noisy)
    assert 1 << 20 < len(data) < 3 << 20  # spooled to disk, under the limit
    assert post(client, data).status_code == 200
    assert list(tmp_path.iterdir()) == []
