"""The FastAPI app of ``facelab serve``: one trained classifier, any photo, a page to try it.

Endpoints: ``POST /v1/predict`` (multipart field ``file``) -> every face with its box, landmarks, score,
attribute probabilities and predictions; ``GET /v1/model``; ``GET /healthz``; the page at ``/``; OpenAPI at
``/docs`` (Swagger UI served from the installed ``fastapi-offline``, no CDN).

Hostile input never reaches the model as a 500: oversized or slow bodies are refused by
:class:`~facelab.serve.guard.BodyGuard` (413/408); an empty body or a missing field is 400; the content is
sniffed from its bytes (not its name or Content-Type), so anything that does not decode as an image is 415
and a truncated or corrupt one is 422; an image whose header announces more than ``max_pixels`` is 413
before it is decoded; at most ``max_faces`` faces are predicted; when ``max_concurrent`` predictions are
running and ``max_queue`` requests wait, the next one gets 503 with Retry-After instead of queueing without bound. Uploads are parsed in
memory, however large the part (the body is already bounded): nothing is written to disk. Every refusal, from
whichever layer (the server's protocol, the guard, the routes, FastAPI's validation, an unexpected error), is
JSON ``{"detail": ...}`` and is declared in the OpenAPI schema (:func:`declare_errors`).
"""

from __future__ import annotations

import asyncio
import time
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.formparsers import MultiPartParser

import facelab

from facelab.data.decode import decode_bytes, looks_like_an_image
from facelab.errors import ImageDecodeError
from facelab.eval.photos import PhotoPredictor
from facelab.serve.config import ServeConfig
from facelab.serve.guard import BodyGuard
from facelab.serve.review import ReviewSession, review_router
from facelab.serve.schemas import FaceResult, ModelInfo, PredictResponse

STATIC = Path(str(resources.files("facelab.serve") / "static"))


def _swagger_dir() -> Path:
    """Swagger UI's files as fastapi-offline ships them (Swagger UI 5, which reads the OpenAPI 3.1 that FastAPI
    writes), served from this app: the API page needs no network."""
    return Path(str(resources.files("fastapi_offline") / "static"))


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
               review: ReviewSession | None = None, notes: list[str] | None = None) -> Any:
    """The app for ``predictor`` under ``config``'s limits (an ASGI app: the FastAPI app inside a BodyGuard),
    with the review page's routes when ``review`` is given (``facelab label review``; then ``predictor`` may
    be None). ``notes``: what ``GET /v1/model`` should say about the model (e.g. a checkpoint fallback).

    The FastAPI app itself is ``returned.app`` (for ``TestClient`` and ``app.state``).
    """
    config = config or ServeConfig()
    app = FastAPI(title="facelab", version=facelab.__version__, docs_url=None, redoc_url=None,
                  description="facelab: attribute predictions for the faces in photos, and the label review page.")
    app.add_exception_handler(Exception, _internal_error)
    if review is not None:
        app.include_router(review_router(review), responses=REVIEW_ERRORS)
    slots = Slots(config.max_concurrent, config.max_queue)
    app.state.slots, app.state.config = slots, config
    _docs_and_static(app)
    if predictor is not None:
        _predict_routes(app, predictor, config, slots, notes or [])
    elif review is not None:
        @app.get("/", include_in_schema=False)
        def to_review() -> RedirectResponse:
            return RedirectResponse("/review")
    declare_errors(app)
    return BodyGuard(app, max_bytes=config.max_upload_bytes, timeout_s=config.read_timeout_s,
                     budget_bytes=upload_budget(config))


def upload_budget(config: ServeConfig) -> int:
    """Bytes of request bodies held at once: every prediction slot and queue place with an upload of the largest
    size, and as much again for bodies on their way in (beyond it: 503 + Retry-After)."""
    return 2 * (config.max_concurrent + config.max_queue) * config.max_upload_bytes


def _docs_and_static(app: FastAPI) -> None:
    app.mount("/swagger", StaticFiles(directory=_swagger_dir()), name="swagger")
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="facelab API",
                                   swagger_js_url="/swagger/swagger-ui-bundle.js",
                                   swagger_css_url="/swagger/swagger-ui.css", swagger_favicon_url="/swagger/favicon.png")


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    """A bug, not the client's fault: JSON like every other answer (uvicorn logs the traceback)."""
    return JSONResponse({"detail": "internal error of the server (its log has the details)"}, status_code=500)


#: the review routes' own refusals (an unknown task, face or image; undo with nothing to undo)
REVIEW_ERRORS: dict[int | str, dict[str, Any]] = {404: {"description": "no such task, face or image"},
                                                   409: {"description": "nothing to undo"}}
#: what the HTTP layer may answer to any operation, beside what each route declares: the connection cap
#: (server.py) or the prediction slots (Slots) full
ANY_OPERATION: dict[int, str] = {503: "busy: retry after Retry-After seconds"}
#: what the body guard (guard.py) answers to a request with a body, before the route sees it
WITH_BODY: dict[int, str] = {400: "not a readable request (a bad Content-Length, not a multipart form)",
                             408: "the body did not arrive within the read timeout",
                             413: "the body is above the upload limit"}
ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error", "type": "object", "required": ["detail"],
    "properties": {"detail": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}],
                              "description": "what was wrong and what to do; FastAPI's validation errors are a list"}}}


def declare_errors(app: FastAPI) -> None:
    """Make the OpenAPI schema declare every refusal an operation can get, each with the JSON body it has
    (``{"detail": ...}``) and a 503's Retry-After header, so clients (and the fuzz test) can rely on it."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        schema.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
        error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
        for operations in schema.get("paths", {}).values():
            for method, op in operations.items():
                responses = op.setdefault("responses", {})
                extra = {**ANY_OPERATION, **(WITH_BODY if method in ("post", "put", "patch") else {})}
                for code, description in extra.items():
                    responses.setdefault(str(code), {"description": description})
                for code, response in responses.items():
                    if code[0] in "45":
                        response["content"] = error
                if "503" in responses:
                    responses["503"]["headers"] = {"Retry-After": {
                        "description": "seconds to wait before retrying", "required": True,
                        "schema": {"type": "integer", "minimum": 1}}}
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


#: the request body of POST /v1/predict (the route reads it itself, so FastAPI cannot infer it)
UPLOAD_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"],
    "properties": {"file": {"type": "string", "format": "binary", "description": "the photo (any image format "
                                                                                    "the decoder reads)"}}}}}}}


def _predict_routes(app: FastAPI, predictor: PhotoPredictor, config: ServeConfig, slots: Slots,
                    notes: list[str]) -> None:
    info = predictor.describe()
    app.state.model_info = info

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "busy": slots.busy, "waiting": slots.waiting, "max_concurrent": config.max_concurrent,
                "max_queue": config.max_queue}

    @app.get("/v1/model", response_model=ModelInfo)
    def model() -> dict[str, Any]:
        return {**info, "limits": config.model_dump(exclude={"host", "port"}), "notes": notes}

    @app.post("/v1/predict", response_model=PredictResponse, openapi_extra=UPLOAD_BODY,
              responses={400: {"description": "no file"}, 408: {"description": "body too slow"},
                         413: {"description": "too large"}, 415: {"description": "not an image"},
                         422: {"description": "a damaged image"}, 503: {"description": "busy: retry"}})
    async def predict(request: Request) -> dict[str, Any]:
        data, name = await _upload(request, config.max_upload_bytes)
        if not await slots.acquire():
            raise HTTPException(503, f"busy: {config.max_concurrent} predictions running and {config.max_queue} "
                                "waiting; retry shortly", headers={"Retry-After": str(config.retry_after_s)})
        try:
            t0 = time.perf_counter()
            result = await run_in_threadpool(_predict, predictor, data, name, config)
        finally:
            slots.release()
        return {**result, "seconds": round(time.perf_counter() - t0, 4), "model": info["model"]}


async def _upload(request: Request, max_bytes: int) -> tuple[bytes, str]:
    """The bytes of the multipart field ``file``, parsed in memory: the BodyGuard has already bounded the
    body to ``max_bytes``, so no part is spooled to a temporary file (starlette's default above 1 MB)."""
    if not (request.headers.get("content-type") or "").startswith("multipart/form-data"):
        raise HTTPException(400, "send the photo as multipart/form-data in a field named 'file'")
    parser = MultiPartParser(request.headers, request.stream(), max_files=1, max_fields=8)
    parser.spool_max_size = max_bytes + 1  # a part can never exceed the body: it stays in memory
    try:
        form = await parser.parse()
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


def _predict(predictor: PhotoPredictor, data: bytes, name: str, config: ServeConfig) -> dict[str, Any]:
    """Decode (format sniffed from the bytes, pixel count checked from the header) and predict every face."""
    try:
        image = decode_bytes(data, name=name, max_pixels=config.max_pixels)
    except ImageDecodeError as e:
        status = 413 if "too large" in e.reason else (422 if looks_like_an_image(data) else 415)
        raise HTTPException(status, e.reason) from None
    result = predictor.predict_image(image, max_faces=config.max_faces)
    faces = [FaceResult.from_prediction(f).model_dump() for f in result.faces]
    out: dict[str, Any] = {"faces": faces, "faces_found": result.faces_found,
                           "image": {"width": int(image.shape[1]), "height": int(image.shape[0])}}
    if result.faces_found > len(faces):
        out["note"] = f"{result.faces_found} faces found; the {len(faces)} best-scored are predicted (max_faces)"
    elif not faces:
        out["note"] = result.note or "no face found"
    return out
