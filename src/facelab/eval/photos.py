"""From a photo to per-face predictions, with the preprocessing the checkpoint was trained with.

The one path every photo takes, in ``facelab predict`` and in ``facelab serve`` alike:

1. faces: a checkpoint trained on aligned faces (its preprocessing records an :class:`AlignSpec`: a store built
   with ``--align``, or CelebA's own aligned images) gets every face of the photo detected and aligned into
   CelebA's frame (:class:`~facelab.faces.FacePipeline`); otherwise, or with ``faces="aligned"``, the whole
   photo is taken as one face that is already aligned (what ``predict`` always did);
2. the training store's crop and resize (:func:`facelab.data.decode.crop_resize`);
3. the normalisation of training (:meth:`Preprocessing.to_input`) and the model (any
   :class:`~facelab.deploy.Engine`: PyTorch or onnxruntime).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

import facelab
from facelab.data.decode import crop_resize
from facelab.data.schema import CropSpec, LabelKind
from facelab.deploy import Engine
from facelab.errors import ConfigError
from facelab.faces import AlignSpec, FacePipeline

FacesMode = Literal["auto", "detect", "aligned"]
FACES_MODES = ("auto", "detect", "aligned")


@dataclass
class FaceCrop:
    """One face of a photo, cropped as the network takes it: (S, S, 3) uint8, and where it was found (box
    (x, y, w, h), five landmarks and the detector's score; all None for a photo taken as one aligned face)."""

    image: np.ndarray
    box: list[float] | None = None
    landmarks: list[list[float]] | None = None
    score: float | None = None


@dataclass
class FacePrediction:
    """A face's place in the photo and the model's answer: ``probs`` holds P(1) of each binary label and the
    class probabilities of each categorical one (by class name); ``predicted`` the decisions."""

    box: list[float] | None
    landmarks: list[list[float]] | None
    score: float | None
    probs: dict[str, float | dict[str, float]]
    predicted: dict[str, int | str]


@dataclass
class PhotoPrediction:
    faces: list[FacePrediction]
    faces_found: int  # before any cap
    note: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class PhotoPredictor:
    """Per-face predictions of ``engine`` on photos (see the module docstring for the path they take).

    Args:
        engine: the model (:func:`facelab.deploy.load_engine`).
        faces: ``auto`` (detect when the checkpoint was trained on aligned faces), ``detect`` or ``aligned``.
        detector: another registered detector than the checkpoint's (e.g. ``retinaface``, the fast one).
        threshold: decision threshold of binary labels.
        threads: detector threads.
    """

    def __init__(self, engine: Engine, *, faces: FacesMode = "auto", detector: str | None = None,
                 threshold: float = 0.5, threads: int = 1) -> None:
        if faces not in FACES_MODES:
            raise ConfigError(f"--faces {faces!r}: choose {', '.join(FACES_MODES)}")
        self.engine, self.threshold = engine, threshold
        pre = engine.preprocessing
        self.mode = faces if faces != "auto" else ("detect" if pre.align is not None else "aligned")
        self.crop, self.size = pre.crop or CropSpec(), pre.image_size
        self.pipeline: FacePipeline | None = None
        if self.mode == "detect":
            spec = pre.align if pre.align is not None else AlignSpec()
            if detector is not None and detector != spec.detector:
                spec = AlignSpec(detector=detector, frame=spec.frame, max_faces=spec.max_faces)
            self.pipeline = FacePipeline(spec, threads=threads)
        self.specs = {s.name: s for s in engine.labels}

    @property
    def no_face_reason(self) -> str:
        return self.pipeline.no_face_reason if self.pipeline is not None else "no face"

    def face_crops(self, image: np.ndarray, *, max_faces: int | None = None) -> tuple[list[FaceCrop], int]:
        """The network-ready crops of the faces in ``image`` (H, W, 3) RGB uint8, best first, at most
        ``max_faces``; and how many faces were found."""
        if self.pipeline is None:
            return [FaceCrop(crop_resize(image, self.crop, self.size))], 1
        found = self.pipeline.find(image)
        crops = [FaceCrop(crop_resize(f.image, self.crop, self.size), box=[float(v) for v in f.face.box],
                          landmarks=np.asarray(f.face.landmarks, float).round(2).tolist(), score=float(f.face.score))
                 for f in found[:max_faces]]
        return crops, len(found)

    def predict_crops(self, crops: list[FaceCrop]) -> list[FacePrediction]:
        """The model's answer for each crop (one batch)."""
        if not crops:
            return []
        x = self.engine.preprocessing.to_input(np.stack([c.image for c in crops]))  # (B, 3, S, S)
        probs = self.engine.probabilities(x)
        return [FacePrediction(c.box, c.landmarks, c.score, *self._answer(probs, i)) for i, c in enumerate(crops)]

    def predict_image(self, image: np.ndarray, *, max_faces: int | None = None) -> PhotoPrediction:
        """Every face of one photo (H, W, 3) RGB uint8, with its prediction."""
        crops, found = self.face_crops(image, max_faces=max_faces)
        return PhotoPrediction(self.predict_crops(crops), found, None if crops else self.no_face_reason)

    def _answer(self, probs: dict[str, np.ndarray], i: int) -> tuple[dict[str, Any], dict[str, Any]]:
        p_out: dict[str, Any] = {}
        pred: dict[str, Any] = {}
        for o in self.engine.task.outputs:
            p = probs[o.name][i]
            if o.kind is LabelKind.BINARY:
                p_out[o.name] = round(float(p), 6)
                pred[o.name] = int(p >= self.threshold)
            else:
                classes = list(self.specs[o.name].classes)
                p_out[o.name] = {c: round(float(v), 6) for c, v in zip(classes, p)}
                pred[o.name] = classes[int(np.argmax(p))]
        return p_out, pred

    def describe(self) -> dict[str, Any]:
        """What the service says about its model (``GET /v1/model``)."""
        pre = self.engine.preprocessing
        return {**self.engine.describe(), "labels": [s.name for s in self.engine.labels],
                "classes": {n: list(s.classes or ()) for n, s in self.specs.items()},
                "faces": self.mode, "detector": self.pipeline.spec.detector if self.pipeline else None,
                "preprocessing": pre.model_dump(mode="json"), "facelab_version": facelab.__version__}
