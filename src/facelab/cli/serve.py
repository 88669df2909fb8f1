"""``facelab serve``: a classifier behind a REST API and a web page."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from facelab.cli.common import CHECKPOINT_OPT, DETECTOR_OPT, FACES_OPT, _checkpoint_choice, console
from facelab.config import resolve_config


def serve(
    run: list[Path] = typer.Argument(..., help="A classifier run folder (or checkpoint, or .onnx export); several "
                                     "are one ensemble."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (127.0.0.1: this computer only)."),
    port: int = typer.Option(8000, min=0, max=65535, help="TCP port (0: any free one, said when serving starts)."),
    engine: Optional[str] = typer.Option(None, "--engine", help="torch (default) | onnx"),
    checkpoint: str = CHECKPOINT_OPT,
    faces: str = FACES_OPT,
    detector: Optional[str] = DETECTOR_OPT,
    threshold: float = typer.Option(0.5, help="Decision threshold for binary labels."),
    max_upload_mb: float = typer.Option(20.0, min=0.01, help="Largest accepted upload (413 above)."),
    max_pixels: Optional[int] = typer.Option(None, min=1, help="Largest accepted image, in pixels, checked from its "
                                             "header before decoding (413 above; default 89.5 Mpx)."),
    max_concurrent: int = typer.Option(2, min=1, help="Predictions at once (per worker process)."),
    max_queue: int = typer.Option(8, min=0, help="Requests waiting for a prediction (per worker process); one "
                                  "more gets 503 + Retry-After."),
    max_faces: int = typer.Option(32, min=1, help="Faces predicted per photo (the best-scored)."),
    read_timeout: float = typer.Option(30.0, min=0.1, help="Seconds a client has to send its upload (408 after)."),
    header_timeout: float = typer.Option(10.0, min=0.1, help="Seconds a client has to send its request line and "
                                         "headers (408 after; idle connections are closed)."),
    max_connections: int = typer.Option(1000, min=2, help="Open connections per worker process; past it the "
                                        "longest-idle ones are closed."),
    workers: int = typer.Option(1, min=1, max=256, help="Processes serving the same port, each with its own copy of "
                                "the model and its own limits."),
    forwarded_allow_ips: str = typer.Option("127.0.0.1", help="Proxies whose X-Forwarded-For/-Proto headers are "
                                            "believed (comma-separated; '*' for any)."),
) -> None:
    """A REST API (POST /v1/predict, GET /v1/model, /healthz, /docs) and a web page at / for any photo."""
    from facelab.serve.config import ServeConfig
    from facelab.serve.server import HttpConfig, listen
    from facelab.serve.server import serve as run_server
    from facelab.serve.spec import SPEC_ENV, ServeSpec

    limits = resolve_config(ServeConfig, flags={
        "host": host, "port": port, "max_upload_bytes": int(max_upload_mb * 1024 * 1024), "max_pixels": max_pixels,
        "max_concurrent": max_concurrent, "max_queue": max_queue, "max_faces": max_faces, "read_timeout_s": read_timeout},
        where="serve options")
    http = resolve_config(HttpConfig, flags={
        "host": host, "port": port, "workers": workers, "header_timeout_s": header_timeout,
        "read_timeout_s": read_timeout, "max_connections": max_connections, "forwarded_allow_ips": forwarded_allow_ips},
        where="serve options")
    spec = resolve_config(ServeSpec, flags={
        "runs": run, "engine": engine, "checkpoint": _checkpoint_choice(checkpoint), "faces": faces,
        "detector": detector, "threshold": threshold, "limits": limits.model_dump(),
        "threads": max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None}, where="serve options")
    with listen(http) as listener:  # a busy port is said before the model is loaded, and nothing is announced
        app = spec.build()  # in this process: a bad run is one clear line before any worker starts
        info = app.app.state.model_info
        for note in spec.notes():
            console.print(f"note: {note}")
        procs = f", {workers} worker processes" if workers > 1 else ""
        console.print(f"serving {info['model']} ({info['engine']}, faces: {info['faces']}{procs}) on {listener.url} "
                      "- API docs at /docs; Ctrl-C stops")
        if workers == 1:
            run_server(app, listener, http)
            return
        del app  # each worker loads its own copy
        os.environ[SPEC_ENV] = spec.model_dump_json()
        run_server("facelab.serve.spec:worker_app", listener, http, factory=True)
