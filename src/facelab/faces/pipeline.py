"""From any photo to faces in CelebA's aligned frame: detect, fit the template, warp.

:class:`AlignSpec` says how (detector, template, frame, thresholds); it is a JSON-able config recorded
wherever the alignment matters (a store's manifest, a checkpoint's preprocessing), so the same alignment
can be redone at inference time. :class:`FacePipeline` runs it.

    >>> pipeline = FacePipeline(AlignSpec(detector="mtcnn"))
    >>> for found in pipeline.find(image):        # image: (H, W, 3) RGB uint8
    ...     found.image                            # (218, 178, 3) uint8: the face in CelebA's frame
    ...     found.face.score, found.matrix         # the detection and the (2, 3) photo -> frame transform
    >>> counted = pipeline.find_counted(image)     # .aligned, .found (before max_faces), .note when capped

A pipeline may run in several threads at once (its detector lends each call its own model when it must).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import ConfigDict, Field, field_validator, model_validator

from facelab.config import StrictConfig
from facelab.faces.align import CELEBA_FRAME, similarity_transform, transform_points, warp_face
from facelab.errors import DataError
from facelab.faces.detectors.base import (DEFAULT_MAX_FACES, DEFAULT_MAX_SIDE, Detections, Detector, as_rgb,
                                           create_detector, detector_class)
from facelab.faces.face import LANDMARK_NAMES, Face
from facelab.faces.template import default_template

Point = tuple[float, float]
Template = tuple[Point, Point, Point, Point, Point]


class AlignSpec(StrictConfig):
    """How faces are found and aligned. Defaults are resolved when the spec is made, so its dump is complete.

    Attributes:
        detector: a registered detector (``facelab.faces.DETECTORS``): ``mtcnn`` (default) or ``retinaface``.
        template: where the five landmarks (:data:`~facelab.faces.face.LANDMARK_NAMES` order) go in the frame,
            (x, y) in frame pixels; default: the detector's template derived from CelebA
            (:mod:`facelab.faces.template`), scaled to ``frame``.
        frame: (width, height) of the aligned image; CelebA's img_align_celeba frame by default.
        min_score: detections scored below this are not faces; default: the detector's own default.
        max_faces: at most this many faces per image (the best-scored ones).
        max_side: images with a longer side are downscaled for detection (faces come back in full-size pixels).
    """

    model_config = ConfigDict(frozen=True)

    detector: str = "mtcnn"
    template: Template | None = None
    frame: tuple[int, int] = CELEBA_FRAME
    min_score: float | None = Field(None, ge=0.0, le=1.0)
    max_faces: int = Field(DEFAULT_MAX_FACES, ge=1, le=1024)
    max_side: int = Field(DEFAULT_MAX_SIDE, ge=32, le=16384)

    @field_validator("detector")
    @classmethod
    def _known_detector(cls, name: str) -> str:
        from facelab.faces.detectors import DETECTORS

        if name not in DETECTORS:
            raise ValueError(f"unknown face detector {name!r}; known: {', '.join(DETECTORS.names())}")
        return name

    @field_validator("frame")
    @classmethod
    def _frame_size(cls, frame: tuple[int, int]) -> tuple[int, int]:
        if not all(16 <= v <= 4096 for v in frame):
            raise ValueError(f"frame {frame} must be (width, height), each 16 to 4096 pixels")
        return frame

    @model_validator(mode="after")
    def _resolve_defaults(self) -> AlignSpec:
        if self.template is None:
            points = default_template(self.detector, self.frame)
            object.__setattr__(self, "template", tuple((float(x), float(y)) for x, y in points))
        if self.min_score is None:
            object.__setattr__(self, "min_score", detector_class(self.detector).default_min_score)
        _check_template(np.asarray(self.template), self.frame)
        return self

    @property
    def template_points(self) -> np.ndarray:
        """(5, 2) float64 template in frame pixels."""
        return np.asarray(self.template, dtype=np.float64)

    def check_installed(self) -> None:
        """ConfigError naming the install command when the detector's package is missing (a detector checks
        this when it is made; commands call it before they create anything)."""
        detector_class(self.detector).check_installed()

    def describe(self) -> str:
        """One line for reports: ``mtcnn, min score 0.9``."""
        return f"{self.detector}, min score {self.min_score:g}"


def _check_template(points: np.ndarray, frame: tuple[int, int]) -> None:
    width, height = frame
    if not ((points[:, 0] >= 0) & (points[:, 0] < width) & (points[:, 1] >= 0) & (points[:, 1] < height)).all():
        raise ValueError(f"template points {points.tolist()} must lie inside the {width}x{height} frame")
    if points[0, 0] >= points[1, 0] or points[3, 0] >= points[4, 0]:
        raise ValueError("template: the left eye and mouth corner must lie left of the right ones (image left, "
                         f"order {', '.join(LANDMARK_NAMES)})")


@dataclass(frozen=True, eq=False)
class AlignedFace:
    """A face found in a photo and warped into the frame.

    Attributes:
        face: the detection, in photo pixels.
        image: (frame height, frame width, 3) uint8 RGB: the aligned crop ((218, 178, 3) for CelebA's frame).
        matrix: (2, 3) float64 transform from photo pixels to frame pixels.
    """

    face: Face
    image: np.ndarray
    matrix: np.ndarray

    @property
    def landmarks(self) -> np.ndarray:
        """(5, 2) the face's landmarks in frame pixels (near the template; the residual is the fit's error)."""
        return transform_points(self.face.landmarks, self.matrix)


@dataclass(frozen=True, eq=False)
class FoundFaces:
    """The faces of one photo, aligned, best first, and what the detector found before its cap.

    Attributes:
        aligned: the kept faces (at most ``max_faces``) aligned into the frame.
        detections: the detector's answer: ``faces``, ``found`` (before the cap), ``max_faces``.
    """

    aligned: list[AlignedFace]
    detections: Detections

    @property
    def found(self) -> int:
        """Faces the detector found before the ``max_faces`` cap."""
        return self.detections.found

    @property
    def note(self) -> str | None:
        """``49 faces found; the 32 best-scored are kept (max_faces 32)`` for a capped photo, else None."""
        return self.detections.note


def _spread(points: np.ndarray) -> float:
    """How far the points lie from their mean (0: they coincide and no transform can be fitted)."""
    return float(np.abs(points - points.mean(axis=0)).max())


class FacePipeline:
    """Detects faces with the spec's detector and warps each into the spec's frame.

    The detector's model loads on first use; a pipeline pickles without it (worker processes load their own).

    Args:
        spec: the alignment (default :class:`AlignSpec` ()), or its dict (a manifest's or checkpoint's record).
        threads: CPU threads the detector's model may use.
    """

    def __init__(self, spec: AlignSpec | dict[str, Any] | None = None, *, threads: int = 1) -> None:
        if spec is None:
            spec = AlignSpec()
        elif not isinstance(spec, AlignSpec):
            spec = AlignSpec.from_dict(spec, where="align spec")
        self.spec = spec
        self.detector: Detector = create_detector(spec.detector, min_score=spec.min_score, max_faces=spec.max_faces,
                                                  max_side=spec.max_side, threads=threads)

    @property
    def no_face_reason(self) -> str:
        """What a report says about an image without a face: ``no face found (mtcnn, min score 0.9)``."""
        return f"no face found ({self.spec.describe()})"

    def detect(self, image: np.ndarray, *, max_faces: int | None = None) -> list[Face]:
        """Faces in ``image`` ((H, W, 3) RGB uint8, or greyscale), best first, at most ``max_faces`` (default:
        the spec's); [] when there is none."""
        return self.detector.detect(image, max_faces=max_faces)

    def align(self, image: np.ndarray, face: Face) -> AlignedFace:
        """Warp ``face`` (found in ``image``) into the frame: the template fitted to its landmarks.

        Raises:
            DataError: the face's landmarks all coincide (no transform fits them).
        """
        try:
            matrix = similarity_transform(face.landmarks, self.spec.template_points)
        except ValueError as e:
            raise DataError(f"cannot align {face!r}: {e}") from None
        return AlignedFace(face=face, image=warp_face(as_rgb(image), matrix, self.spec.frame), matrix=matrix)

    def find(self, image: np.ndarray, *, max_faces: int | None = None) -> list[AlignedFace]:
        """Every face of ``image`` (at most ``max_faces``, default the spec's), best first, aligned into the frame;
        [] when there is none. :meth:`find_counted` also says how many the cap left out.

        Raises:
            DataError: ``image`` is not a uint8 (H, W[, 1 or 3]) array.
        """
        return self.find_counted(image, max_faces=max_faces).aligned

    def find_counted(self, image: np.ndarray, *, max_faces: int | None = None) -> FoundFaces:
        """:meth:`find`, with how many faces the detector found before the ``max_faces`` cap."""
        image = as_rgb(image)
        detections = self.detector.detections(image, max_faces=max_faces)
        aligned = [self.align(image, face) for face in detections.faces if _spread(face.landmarks) > 0]
        return FoundFaces(aligned=aligned, detections=detections)

    def __repr__(self) -> str:
        return f"FacePipeline({self.spec.describe()}, frame {self.spec.frame[0]}x{self.spec.frame[1]})"
