"""The FastAPI app of ``facelab serve``: one trained classifier, any photo, a page to try it.

Endpoints: ``POST /v1/predict`` (multipart field ``file``) -> every face with its box, landmarks, score,
attribute probabilities and predictions; ``GET /v1/model``; ``GET /healthz``; the page at ``/``; OpenAPI at
``/docs`` (Swagger UI served from the installed ``swagger-ui-bundle``, no CDN).

Hostile input never reaches the model as a 500: oversized or slow bodies are refused by
:class:`~facelab.serve.guard.BodyGuard` (413/408); an empty body or a missing field is 400; the content is
sniffed from its bytes (not its name or Content-Type), so anything that does not decode as an image is 415
and a truncated or corrupt one is 422; an image whose header announces more than ``max_pixels`` is 413
before it is decoded; at most ``max_faces`` faces are predicted; when ``max_concurrent`` predictions are
running and ``max_queue`` requests wait, the next one gets 503 with Retry-After instead of queueing without bound. Uploads are parsed in
memory (the body is already bounded): nothing is written to disk.
"""

from __future__ import annotations

import asyncio
import time
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

import facelab

from facelab.errors import ImageDecodeError
from facelab.eval.photos import PhotoPredictor
from facelab.serve.config import ServeConfig
from facelab.serve.guard import BodyGuard
from facelab.serve.review import ReviewSession, review_router
from facelab.serve.schemas import FaceResult, ModelInfo, PredictResponse

STATIC = Path(str(resources.files("facelab.serve") / "static"))


def _swagger_dir() -> Path | None:
    try:
        import swagger_ui_bundle
    except ImportError:  # pragma: no cover - a declared dependency
        return None
    return Path(swagger_ui_bundle.swagger_ui_path)


class Slots:
    """At most ``n`` predictions at once and at most ``queue`` requests waiting for one; :meth:`acquire` says
    False at once when the queue is full too (the caller answers 503), so memory stays bounded."""

    def __init__(self, n: int, queue: int) -> None:
        self.n, self.queue = n, queue
        self.busy = self.waiting = 0
        self._sem: asyncio.Semaphore | None = None

    async def acquire(self) -> bool:
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.n)  # made in the server's event loop
        if self.busy + self.waiting >= self.n + self.queue:
            return False
        self.waiting += 1
        try:
            await self._sem.acquire()
        finally:
            self.waiting -= 1
        self.busy += 1
        return True

    def release(self) -> None:
        self.busy -= 1
        assert self._sem is not None
        self._sem.release()


def create_app(predictor: PhotoPredictor | None, config: ServeConfig | None = None, *,
               review: ReviewSession | None = None) -> Any:
    """The app for ``predictor`` under ``config``'s limits (an ASGI app: the FastAPI app inside a BodyGuard),
    with the review page's routes when ``review`` is given (``facelab label review``; then ``predictor`` may
    be None).

    The FastAPI app itself is ``returned.app`` (for ``TestClient`` and ``app.state``).
    """
    config = config or ServeConfig()
    app = FastAPI(title="facelab", version=facelab.__version__, docs_url=None, redoc_url=None,
                  description="facelab: attribute predictions for the faces in photos, and the label review page.")
    if review is not None:
        app.include_router(review_router(review))
    slots = Slots(config.max_concurrent, config.max_queue)
    app.state.slots, app.state.config = slots, config
    _docs_and_static(app)
    if predictor is not None:
        _predict_routes(app, predictor, config, slots)
    elif review is not None:
        @app.get("/", include_in_schema=False)
        def to_review() -> RedirectResponse:
            return RedirectResponse("/review")
    return BodyGuard(app, max_bytes=config.max_upload_bytes, timeout_s=config.read_timeout_s)


def _docs_and_static(app: FastAPI) -> None:
    swagger = _swagger_dir()
    if swagger is not None:
        app.mount("/swagger", StaticFiles(directory=swagger), name="swagger")
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="facelab API",
                                   swagger_js_url="/swagger/swagger-ui-bundle.js",
                                   swagger_css_url="/swagger/swagger-ui.css", swagger_favicon_url="/swagger/favicon-32x32.png")


def _predict_routes(app: FastAPI, predictor: PhotoPredictor, config: ServeConfig, slots: Slots) -> None:
    info = predictor.describe()

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "busy": slots.busy, "waiting": slots.waiting, "max_concurrent": config.max_concurrent,
                "max_queue": config.max_queue}

    @app.get("/v1/model", response_model=ModelInfo)
    def model() -> dict[str, Any]:
        return {**info, "limits": config.model_dump(exclude={"host", "port"})}

    @app.post("/v1/predict", response_model=PredictResponse,
              responses={400: {"description": "no file"}, 408: {"description": "body too slow"},
                         413: {"description": "too large"}, 415: {"description": "not an image"},
                         422: {"description": "a damaged image"}, 503: {"description": "busy: retry"}})
    async def predict(request: Request) -> dict[str, Any]:
        data, name = await _upload(request)
        if not await slots.acquire():
            raise HTTPException(503, f"busy: {config.max_concurrent} predictions running and {config.max_queue} "
                                "waiting; retry shortly", headers={"Retry-After": str(config.retry_after_s)})
        try:
            t0 = time.perf_counter()
            result = await run_in_threadpool(_predict, predictor, data, name, config)
        finally:
            slots.release()
        return {**result, "seconds": round(time.perf_counter() - t0, 4), "model": info["model"]}


async def _upload(request: Request) -> tuple[bytes, str]:
    """The bytes of the multipart field ``file`` (the body is already bounded by the BodyGuard)."""
    if not (request.headers.get("content-type") or "").startswith("multipart/form-data"):
        raise HTTPException(400, "send the photo as multipart/form-data in a field named 'file'")
    try:
        form = await request.form(max_files=1, max_fields=8)
    except Exception as e:  # starlette raises its own MultiPartException / HTTPException on a malformed form
        raise HTTPException(400, f"not a readable multipart form ({getattr(e, 'detail', e)})") from None
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise HTTPException(400, "no file: send the photo in a multipart field named 'file'")
    data = await upload.read()
    await form.close()
    if not data:
        raise HTTPException(400, "the uploaded file is empty (0 bytes)")
    return data, upload.filename or "upload"


#: the first bytes of the image formats the decoder reads
IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")


def looks_like_an_image(data: bytes) -> bool:
    """Whether ``data`` starts like an image file (a damaged image is 422, anything else 415)."""
    return data.startswith(IMAGE_MAGIC) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


def _predict(predictor: PhotoPredictor, data: bytes, name: str, config: ServeConfig) -> dict[str, Any]:
    """Decode (format sniffed from the bytes, pixel count checked from the header, a large JPEG reduced to what
    the face pipeline needs) and predict every face, at most ``max_faces``. Runs in a worker thread, several at
    once: the predictor is thread-safe (its detector lends each call its own model where it must)."""
    try:
        photo = predictor.decode_photo(data, name=name, max_pixels=config.max_pixels)
    except ImageDecodeError as e:
        status = 413 if "too large" in e.reason else (422 if looks_like_an_image(data) else 415)
        raise HTTPException(status, e.reason) from None
    result = predictor.predict_image(photo, max_faces=config.max_faces)
    faces = [FaceResult.from_prediction(f).model_dump() for f in result.faces]
    out: dict[str, Any] = {"faces": faces, "faces_found": result.faces_found,
                           "image": {"width": photo.width, "height": photo.height}}
    if result.note is not None:
        out["note"] = result.note
    return out
