"""From a photo to per-face predictions, with the preprocessing the checkpoint was trained with.

The one path every photo takes, in ``facelab predict`` and in ``facelab serve`` alike:

1. faces: a checkpoint trained on aligned faces (its preprocessing records an :class:`AlignSpec`: a store built
   with ``--align``, or CelebA's own aligned images) gets every face of the photo detected and aligned into
   CelebA's frame (:class:`~facelab.faces.FacePipeline`); otherwise, or with ``faces="aligned"``, the whole
   photo is taken as one face that is already aligned (what ``predict`` always did);
2. the training store's crop and resize (:func:`facelab.data.decode.crop_resize`);
3. the normalisation of training (:meth:`Preprocessing.to_input`) and the model (any
   :class:`~facelab.deploy.Engine`: PyTorch or onnxruntime).

Photos come in through :meth:`PhotoPredictor.decode_photo` (bytes) or :meth:`PhotoPredictor.read_photo` (a
file), which decode a large JPEG reduced by libjpeg's DCT scaling to what the path needs (:data:`DECODE_MARGIN`
times the detector's working size, or the crop's size for a photo taken as one face), so a 50-megapixel photo
never exists in memory at full size; boxes and landmarks are still given in the photo's own pixels.

The faces of a photo are capped at ``max_faces`` (the best-scored); :class:`PhotoPrediction` says how many
the detector found (``faces_found``) and ``note`` says when the cap left faces out.

One predictor may run in several threads at once (``facelab serve`` does): the detector lends each call its
own model where its runtime needs it, and the engines' runs are thread-safe (checked by tests that compare
parallel answers with serial ones).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

import facelab
from facelab.data.decode import MAX_PIXELS, crop_resize, dct_reduction, decode_bytes, decode_min_side, jpeg_size
from facelab.data.schema import CropSpec, LabelKind
from facelab.deploy import Engine
from facelab.errors import ConfigError, ImageDecodeError
from facelab.faces import AlignSpec, FacePipeline

FacesMode = Literal["auto", "detect", "aligned"]
FACES_MODES = ("auto", "detect", "aligned")
#: a JPEG is decoded reduced only while its longer side stays >= this many times the detector's ``max_side``:
#: detection runs at ``max_side``, and each face is warped into the frame from twice that resolution (a 12 Mpx
#: phone photo, 4032 px long, is decoded whole; a 48 Mpx one at half size)
DECODE_MARGIN = 2


@dataclass(frozen=True, eq=False)
class Photo:
    """A decoded photo.

    Attributes:
        image: (h, w, 3) RGB uint8: the photo, or a large JPEG decoded reduced by ``reduction``.
        width, height: the photo's own size as shown (EXIF orientation applied): what boxes are given in.
        reduction: 1, or the DCT scale (2, 4, 8) the JPEG was decoded at: ``image`` is about
            ``(height / reduction, width / reduction)``.
    """

    image: np.ndarray
    width: int
    height: int
    reduction: int = 1

    @classmethod
    def of(cls, image: np.ndarray) -> Photo:
        """An image decoded full size."""
        return cls(image, width=int(image.shape[1]), height=int(image.shape[0]))

    def to_photo_pixels(self, points: np.ndarray) -> np.ndarray:
        """(..., 2) (x, y) in ``image`` pixels -> in the photo's own pixels (pixel centres map to centres)."""
        f = self.reduction
        return np.asarray(points, np.float64) if f == 1 else (np.asarray(points, np.float64) + 0.5) * f - 0.5


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
class PhotoFaces:
    """The network-ready crops of a photo's faces, best first, at most ``max_faces``.

    Attributes:
        crops: the kept faces.
        found: faces the detector found before the cap.
        note: the detector's reason when there is no face, or how many faces the cap left out; else None.
    """

    crops: list[FaceCrop]
    found: int
    note: str | None = None

    @property
    def capped(self) -> bool:
        return self.found > len(self.crops)


@dataclass
class PhotoPrediction:
    """Every kept face of one photo with the model's answer; ``faces_found`` counts the faces before the
    ``max_faces`` cap, ``note`` says why there is no face or that the cap left faces out; ``width`` and
    ``height`` are the photo's own size (what boxes are given in)."""

    faces: list[FacePrediction]
    faces_found: int  # before any cap
    note: str | None = None
    width: int | None = None
    height: int | None = None
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
                spec = AlignSpec(detector=detector, frame=spec.frame, max_faces=spec.max_faces, max_side=spec.max_side)
            self.pipeline = FacePipeline(spec, threads=threads)
        self.specs = {s.name: s for s in engine.labels}

    @property
    def no_face_reason(self) -> str:
        return self.pipeline.no_face_reason if self.pipeline is not None else "no face"

    def decode_photo(self, data: bytes, *, name: str = "<bytes>", max_pixels: int = MAX_PIXELS) -> Photo:
        """Decode image bytes for this predictor: a large JPEG reduced by the DCT to what the path needs (its
        longer side kept >= :data:`DECODE_MARGIN` x the detector's ``max_side``; for a photo taken as one face,
        its sides >= what the crop needs), anything else full size.

        Raises:
            ImageDecodeError: not an image, a damaged one, or more than ``max_pixels`` pixels in its header.
        """
        if self.pipeline is not None:
            hint = {"min_long_side": DECODE_MARGIN * self.pipeline.spec.max_side}
        else:
            hint = {"min_side": decode_min_side(self.crop, self.size)}
        image = decode_bytes(data, name=name, max_pixels=max_pixels, **hint)
        full = jpeg_size(data)
        reduction = 1 if full is None else dct_reduction(full, image.shape[:2])
        if reduction == 1:  # decoded whole (any format, or a JPEG libjpeg could not read and Pillow did)
            return Photo.of(image)
        return Photo(image, width=full[1], height=full[0], reduction=reduction)

    def read_photo(self, path: str | Path, *, max_pixels: int = MAX_PIXELS) -> Photo:
        """:meth:`decode_photo` of a file.

        Raises:
            ImageDecodeError: the file cannot be read or decoded.
        """
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            raise ImageDecodeError(f"cannot read file ({e.strerror})", name=str(path)) from None
        return self.decode_photo(data, name=str(path), max_pixels=max_pixels)

    def face_crops(self, photo: Photo | np.ndarray, *, max_faces: int | None = None) -> PhotoFaces:
        """The network-ready crops of the faces in ``photo`` (a :class:`Photo`, or an (H, W, 3) RGB uint8 image),
        best first, at most ``max_faces`` (default: the alignment's), with boxes and landmarks in the photo's own
        pixels; and how many faces the detector found before the cap."""
        photo = photo if isinstance(photo, Photo) else Photo.of(photo)
        if self.pipeline is None:
            return PhotoFaces([FaceCrop(crop_resize(photo.image, self.crop, self.size))], 1)
        found = self.pipeline.find_counted(photo.image, max_faces=max_faces)
        crops = []
        for f in found.aligned:
            x, y, w, h = f.face.box
            (x, y), = photo.to_photo_pixels(np.array([[x, y]]))
            crops.append(FaceCrop(crop_resize(f.image, self.crop, self.size),
                                  box=[float(x), float(y), float(w * photo.reduction), float(h * photo.reduction)],
                                  landmarks=photo.to_photo_pixels(f.face.landmarks).round(2).tolist(),
                                  score=float(f.face.score)))
        note = found.note or (None if crops else self.no_face_reason)
        return PhotoFaces(crops, found.found, note)

    def predict_crops(self, crops: list[FaceCrop]) -> list[FacePrediction]:
        """The model's answer for each crop (one batch)."""
        if not crops:
            return []
        x = self.engine.preprocessing.to_input(np.stack([c.image for c in crops]))  # (B, 3, S, S)
        probs = self.engine.probabilities(x)
        return [FacePrediction(c.box, c.landmarks, c.score, *self._answer(probs, i)) for i, c in enumerate(crops)]

    def predict_image(self, photo: Photo | np.ndarray, *, max_faces: int | None = None) -> PhotoPrediction:
        """Every face of one photo (a :class:`Photo`, or an (H, W, 3) RGB uint8 image), with its prediction."""
        photo = photo if isinstance(photo, Photo) else Photo.of(photo)
        faces = self.face_crops(photo, max_faces=max_faces)
        return PhotoPrediction(self.predict_crops(faces.crops), faces.found, faces.note, width=photo.width,
                               height=photo.height)

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
