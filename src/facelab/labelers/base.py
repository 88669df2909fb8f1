"""The interface of a labeler and its registry."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from facelab.data.labels_file import DIRECTIONS
from facelab.errors import DataError
from facelab.registry import Registry

@dataclass(frozen=True)
class AutoLabel:
    """One face's label: ``cls`` (a class name, None when the face cannot be labelled), the continuous
    ``value`` it was derived from, a ``confidence`` in [0, 1], and what else the labeler measured."""

    cls: str | None
    value: float
    confidence: float
    extra: dict[str, float] = field(default_factory=dict)


def three_way(value: float, threshold: float, scale: float) -> tuple[str, float]:
    """``left`` below -threshold, ``right`` above +threshold, else ``center``; the confidence grows with the
    distance from the nearest class boundary: ``1 - exp(-distance / scale)`` (0 on a boundary)."""
    if value < -threshold:
        cls = "left"
    elif value > threshold:
        cls = "right"
    else:
        cls = "center"
    distance = abs(abs(value) - threshold)
    return cls, float(1.0 - math.exp(-distance / scale))


def flip_landmarks(points: np.ndarray, width: int) -> np.ndarray:
    """(5, 2) landmarks of the horizontally flipped image of ``width`` pixels: x mirrored, and the left and
    right points swapped so that the image-left eye stays first (facelab's landmark convention)."""
    p = np.asarray(points, dtype=np.float64).reshape(5, 2).copy()
    p[:, 0] = (width - 1) - p[:, 0]
    return p[[1, 0, 2, 4, 3]]


class Labeler(ABC):
    """Labels one face from its image and its 5 landmarks (facelab's order, in the image's pixels)."""

    name: ClassVar[str]
    classes: ClassVar[tuple[str, ...]] = DIRECTIONS
    unit: ClassVar[str] = ""

    @abstractmethod
    def label(self, image: np.ndarray, landmarks: np.ndarray) -> AutoLabel:
        """``image`` (H, W, 3) RGB uint8, ``landmarks`` (5, 2) in its pixels -> the face's label."""

    def describe(self) -> dict[str, Any]:
        return {"labeler": self.name, "classes": list(self.classes), "unit": self.unit, "options": dict(vars(self))}


LABELERS: Registry[Labeler] = Registry("labeler")


def create_labeler(name: str, **options: Any) -> Labeler:
    """The registered labeler ``name`` (orientation, light)."""
    return LABELERS.create(name, **options)


def check_landmarks(landmarks: np.ndarray) -> np.ndarray:
    p = np.asarray(landmarks, dtype=np.float64).reshape(-1)
    if p.size != 10 or not np.isfinite(p).all():
        raise DataError("a face needs 5 finite (x, y) landmarks to be labelled")
    return p.reshape(5, 2)
