"""``facelab serve``: a classifier behind a REST API and a web page."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from facelab.cli.common import CHECKPOINT_OPT, DETECTOR_OPT, FACES_OPT, _checkpoint_choice, _one_or_many, console
from facelab.config import resolve_config


def serve(
    run: list[Path] = typer.Argument(..., help="A classifier run folder (or checkpoint, or .onnx export); several "
                                     "are one ensemble."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (127.0.0.1: this computer only)."),
    port: int = typer.Option(8000, min=0, max=65535),
    engine: Optional[str] = typer.Option(None, "--engine", help="torch (default) | onnx"),
    checkpoint: str = CHECKPOINT_OPT,
    faces: str = FACES_OPT,
    detector: Optional[str] = DETECTOR_OPT,
    threshold: float = typer.Option(0.5, help="Decision threshold for binary labels."),
    max_upload_mb: float = typer.Option(20.0, min=0.01, help="Largest accepted upload (413 above)."),
    max_pixels: Optional[int] = typer.Option(None, min=1, help="Largest accepted image, in pixels, checked from its "
                                             "header before decoding (413 above; default 52 Mpx, at most 89.5 Mpx)."),
    max_concurrent: int = typer.Option(2, min=1, help="Predictions at once."),
    max_queue: int = typer.Option(8, min=0, help="Requests waiting for a prediction; one more gets 503 + Retry-After."),
    max_faces: int = typer.Option(32, min=1, help="Faces predicted per photo (the best-scored)."),
    read_timeout: float = typer.Option(30.0, min=0.1, help="Seconds a client has to send its upload (408 after)."),
) -> None:
    """A REST API (POST /v1/predict, GET /v1/model, /healthz, /docs) and a web page at / for any photo."""
    import uvicorn

    from facelab.deploy import load_engine
    from facelab.eval.photos import PhotoPredictor
    from facelab.serve.app import create_app
    from facelab.serve.config import ServeConfig

    config = resolve_config(ServeConfig, flags={
        "host": host, "port": port, "max_upload_bytes": int(max_upload_mb * 1024 * 1024), "max_pixels": max_pixels,
        "max_concurrent": max_concurrent, "max_queue": max_queue, "max_faces": max_faces, "read_timeout_s": read_timeout},
        where="serve options")
    predictor = PhotoPredictor(load_engine(_one_or_many(run), engine=engine, which=_checkpoint_choice(checkpoint)),
                               faces=faces, detector=detector, threshold=threshold)  # type: ignore[arg-type]
    app = create_app(predictor, config)
    info = predictor.describe()
    console.print(f"serving {info['model']} ({info['engine']}, faces: {info['faces']}) on http://{host}:{port}/ "
                  f"- API docs at /docs; Ctrl-C stops")
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning", timeout_keep_alive=5,
                limit_concurrency=config.connection_limit)
