"""The interface of a labeler and its registry."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from pydantic import ValidationError

from facelab.config import StrictConfig
from facelab.data.labels_file import DIRECTIONS
from facelab.errors import ConfigError, DataError
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
    """Labels one face from its image and its 5 landmarks (facelab's order, in the image's pixels).

    A labeler's options are its typed ``Config`` (a :class:`~facelab.config.StrictConfig` with bounds), beside
    it in its file: ``create_labeler("orientation", threshold=20)``, ``-o orientation.threshold=20``.
    """

    name: ClassVar[str]
    classes: ClassVar[tuple[str, ...]] = DIRECTIONS
    unit: ClassVar[str] = ""
    Config: ClassVar[type[StrictConfig]] = StrictConfig

    def __init__(self, **options: Any) -> None:
        self.config = labeler_config(type(self), options)

    @abstractmethod
    def label(self, image: np.ndarray, landmarks: np.ndarray) -> AutoLabel:
        """``image`` (H, W, 3) RGB uint8, ``landmarks`` (5, 2) in its pixels -> the face's label."""

    def describe(self) -> dict[str, Any]:
        return {"labeler": self.name, "classes": list(self.classes), "unit": self.unit,
                "options": self.config.model_dump(mode="json")}


def labeler_config(cls: type[Labeler], options: Any) -> StrictConfig:
    """``options`` validated by ``cls.Config``.

    Raises:
        ConfigError: not a mapping, an option the labeler does not take, or a value of the wrong type or out of
            bounds; one line naming ``-o NAME.OPTION=VALUE`` and what is allowed.
    """
    if not isinstance(options, dict):
        raise ConfigError(f"-o {cls.name}={options!r}: give the {cls.name} labeler's options by name, e.g. "
                          f"-o {cls.name}.threshold=...")
    try:
        return cls.Config.model_validate(options)
    except ValidationError as e:
        err = e.errors()[0]
        option = ".".join(str(p) for p in err["loc"])
        fields = cls.Config.model_fields
        if err["type"] == "extra_forbidden":
            raise ConfigError(f"-o {cls.name}.{option}: the {cls.name} labeler has no option {option!r} (its "
                              f"options: {', '.join(fields) or 'none'})") from None
        about = fields[option].description if option in fields else None
        raise ConfigError(f"-o {cls.name}.{option}={options.get(option)!r}: {err['msg'].lower()}"
                          + (f" ({option}: {about})" if about else "")) from None


LABELERS: Registry[Labeler] = Registry("labeler")


def create_labeler(name: str, **options: Any) -> Labeler:
    """The registered labeler ``name`` (orientation, light)."""
    return LABELERS.create(name, **options)


def check_landmarks(landmarks: np.ndarray) -> np.ndarray:
    p = np.asarray(landmarks, dtype=np.float64).reshape(-1)
    if p.size != 10 or not np.isfinite(p).all():
        raise DataError("a face needs 5 finite (x, y) landmarks to be labelled")
    return p.reshape(5, 2)
