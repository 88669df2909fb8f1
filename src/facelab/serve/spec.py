"""What ``facelab serve`` serves, as one typed value: the model (runs, engine, checkpoint, faces, detector,
threshold) and the service's limits. Each worker process of ``facelab serve --workers N`` builds the same app
from it (:func:`worker_app`, handed the spec in the environment variable :data:`SPEC_ENV`).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from facelab.config import StrictConfig
from facelab.errors import FacelabError
from facelab.serve.config import ServeConfig

#: the environment variable that hands a :class:`ServeSpec` (JSON) to worker processes
SPEC_ENV = "FACELAB_SERVE_SPEC"

log = logging.getLogger("facelab.serve")


class ServeSpec(StrictConfig):
    """The model behind the service and its limits.

    Attributes:
        runs: run folders, checkpoints or one ``.onnx`` export (several runs: one ensemble).
        engine: torch | onnx (None: onnx for a .onnx file, torch otherwise).
        checkpoint: which checkpoint of each run folder (best falls back to last, with a note).
        faces, detector, threshold: as :class:`~facelab.eval.photos.PhotoPredictor` takes them.
        threads: intra-op threads of the model in each process (None: the library's default, every core).
        limits: the service's limits.
    """

    runs: list[Path] = Field(min_length=1)
    engine: str | None = None
    checkpoint: Literal["best", "last"] = "best"
    faces: Literal["auto", "detect", "aligned"] = "auto"
    detector: str | None = None
    threshold: float = 0.5
    threads: int | None = Field(None, ge=1)
    limits: ServeConfig = Field(default_factory=ServeConfig)

    def notes(self) -> list[str]:
        """What the service should say about its model: a run served from checkpoints/last, say."""
        from facelab.deploy.engines import is_onnx_file
        from facelab.models.checkpoint import fallback_note

        found = (fallback_note(p, self.checkpoint) for p in self.runs if not is_onnx_file(p))
        return [n for n in found if n]

    def build(self) -> Any:
        """The ASGI app (:func:`facelab.serve.app.create_app`) on the loaded model.

        Raises:
            FacelabError: the model cannot be loaded (a missing run, a damaged checkpoint, a bad option).
        """
        from facelab.deploy import load_engine
        from facelab.deploy.engines import is_onnx_file
        from facelab.eval.photos import PhotoPredictor
        from facelab.serve.app import create_app

        onnx = self.engine == "onnx" or any(is_onnx_file(p) for p in self.runs)
        if self.threads is not None and not onnx:
            import torch

            torch.set_num_threads(self.threads)
        engine = load_engine(self.runs if len(self.runs) > 1 else self.runs[0], engine=self.engine,
                             which=self.checkpoint, threads=self.threads if onnx else None)
        predictor = PhotoPredictor(engine, faces=self.faces, detector=self.detector, threshold=self.threshold)
        return create_app(predictor, self.limits, notes=self.notes())


def worker_app() -> Any:
    """The app of one worker process, built from the spec in :data:`SPEC_ENV` (a uvicorn app factory).

    A model that stopped loading since the parent checked it ends the worker with uvicorn's startup-failure
    code, which stops the whole server instead of restarting the worker forever.
    """
    from uvicorn.config import STARTUP_FAILURE

    try:
        return ServeSpec.model_validate_json(os.environ[SPEC_ENV]).build()
    except (FacelabError, KeyError, ValueError) as e:
        log.error("worker %d cannot build the app: %s", os.getpid(), e)
        sys.exit(STARTUP_FAILURE)
