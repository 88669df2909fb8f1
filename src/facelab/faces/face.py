"""A detected face: its box, five landmarks and the detector's score, in source-image pixels.

Landmark convention (every detector is converted to it): five (x, y) points, in this order,

    0 left eye        1 right eye        2 nose tip        3 left mouth corner        4 right mouth corner

where *left* and *right* are the IMAGE's left and right as the face appears upright, not the subject's:
the "left eye" is the eye nearer the image's left edge in an upright photo (the subject's own right eye),
as in CelebA's ``list_landmarks_align_celeba.txt``. The order follows the face, not the x coordinate, so it
holds for tilted faces too (a face rolled by 60 degrees keeps its left eye first). Coordinates are in
pixels of the image given to the detector, pixel centres at integer coordinates ((0, 0) is the centre of
the top-left pixel), x to the right, y down.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

LANDMARK_NAMES: tuple[str, ...] = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
Box = tuple[float, float, float, float]


@dataclass(frozen=True, eq=False)
class Face:
    """One face found in an image.

    Attributes:
        box: (x, y, w, h) of the face's bounding box in source pixels (x, y: top-left corner).
        landmarks: (5, 2) float32 read-only array of (x, y) points in source pixels, in the order of
            :data:`LANDMARK_NAMES` (see the module docstring for what left and right mean).
        score: the detector's confidence in [0, 1].
    """

    box: Box
    landmarks: np.ndarray
    score: float

    def __post_init__(self) -> None:
        points = np.array(self.landmarks, dtype=np.float32).reshape(-1, 2)  # a copy: callers keep theirs
        if points.shape != (5, 2):
            raise ValueError(f"a Face needs 5 landmarks (x, y), got an array of shape {np.shape(self.landmarks)}")
        points.setflags(write=False)
        object.__setattr__(self, "landmarks", points)
        object.__setattr__(self, "box", tuple(float(v) for v in self.box))
        object.__setattr__(self, "score", float(self.score))
        if len(self.box) != 4:
            raise ValueError(f"a Face box is (x, y, w, h), got {self.box}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form: ``{"box": [x, y, w, h], "landmarks": [[x, y] * 5], "score": s}``."""
        return {"box": list(self.box), "landmarks": self.landmarks.tolist(), "score": self.score}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Face:
        """Inverse of :meth:`to_dict`."""
        return cls(box=tuple(data["box"]), landmarks=np.asarray(data["landmarks"]), score=data["score"])

    def __repr__(self) -> str:
        x, y, w, h = self.box
        return f"Face(box=({x:.1f}, {y:.1f}, {w:.1f}, {h:.1f}), score={self.score:.3f})"
