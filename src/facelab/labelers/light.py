"""Light direction from the shading of the face's skin: mirrored cheek and forehead patches compared.

The patches are placed in the face's own frame, built from its landmarks (the eye-to-mouth axis and the axis
across it), so they follow the face whatever its pose, stay on skin (between the eyes and the mouth corners,
above the brows, never on the background or the eyes and mouth), and mirror exactly under a horizontal flip.
Each patch's brightness is its median luma; the contrast ``(right - left) / (right + left)`` over the pairs
does not depend on how light or dark the skin is, only on where the light comes from, and on how the head is
turned: a turned head shows its patches at other places of its surface, which shifts the contrast by about
:data:`YAW_SLOPE` per degree of yaw under frontal light (measured on synthetic faces of known light and yaw),
so the yaw from the landmarks (:func:`facelab.labelers.orientation.head_pose`) is taken out.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from facelab.labelers.base import LABELERS, AutoLabel, Labeler, check_landmarks, three_way
from facelab.labelers.orientation import head_pose

#: Patch centres in the face's frame: (across, down) in units of the eye-to-mouth distance from the eyes'
#: midpoint, image-left patch of each pair first; the image-right ones are mirrored.
PATCHES = ((-0.42, 0.55), (-0.30, -0.40))  # cheek, forehead (of five layouts tried, the best on synthetic faces)
PATCH_RADIUS = 0.10
#: contrast per degree of yaw under frontal light (least squares on 600 synthetic faces, benchmarks/labels.py)
YAW_SLOPE = -0.00225
#: |contrast| above this is ``left``/``right`` (the best three-way split of those synthetic faces)
CONTRAST_THRESHOLD = 0.08
CONFIDENCE_SCALE = 0.04


def face_frame(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(origin, across, down, scale): the eyes' midpoint, the unit axes of the face and its eye-to-mouth size."""
    eyes, mouth = points[:2].mean(0), points[3:].mean(0)
    down = mouth - eyes
    scale = float(np.linalg.norm(down))
    down = down / max(scale, 1e-9)
    across = np.array([-down[1], down[0]])  # down rotated by -90 degrees: towards the image's right
    if across @ (points[1] - points[0]) < 0:
        across = -across
    return eyes, across, down, scale


def patch_luma(luma: np.ndarray, centre: np.ndarray, radius: float) -> float:
    """Median luma of the disc at ``centre`` (NaN when it falls outside the image)."""
    h, w = luma.shape
    x, y, r = float(centre[0]), float(centre[1]), max(1.0, radius)
    if not (r <= x <= w - 1 - r and r <= y <= h - 1 - r):
        return math.nan
    ys, xs = np.ogrid[:h, :w]
    mask = (xs - x) ** 2 + (ys - y) ** 2 <= r * r
    return float(np.median(luma[mask]))


def shading_contrast(image: np.ndarray, points: np.ndarray) -> tuple[float, int]:
    """(mean contrast of the usable patch pairs, how many pairs were usable)."""
    luma = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY).astype(np.float64)
    eyes, across, down, scale = face_frame(points)
    values = []
    for u, v in PATCHES:
        left = patch_luma(luma, eyes + scale * (u * across + v * down), PATCH_RADIUS * scale)
        right = patch_luma(luma, eyes + scale * (-u * across + v * down), PATCH_RADIUS * scale)
        if math.isfinite(left) and math.isfinite(right) and left + right > 1.0:
            values.append((right - left) / (right + left))
    return (float(np.mean(values)) if values else math.nan), len(values)


@LABELERS.register("light")
class LightLabeler(Labeler):
    """Where the light comes from, by the shading contrast of mirrored skin patches; classes by
    :data:`CONTRAST_THRESHOLD`."""

    name = "light"
    unit = "shading contrast (right - left) / (right + left)"

    def __init__(self, *, threshold: float = CONTRAST_THRESHOLD) -> None:
        self.threshold = threshold

    def label(self, image: np.ndarray, landmarks: np.ndarray) -> AutoLabel:
        points = check_landmarks(landmarks)
        raw, pairs = shading_contrast(image, points)
        if not math.isfinite(raw):
            return AutoLabel(None, math.nan, 0.0, {"patch_pairs": 0, "raw_contrast": math.nan})
        contrast = raw - YAW_SLOPE * head_pose(points)[0]
        cls, confidence = three_way(contrast, self.threshold, CONFIDENCE_SCALE)
        return AutoLabel(cls, contrast, confidence * pairs / len(PATCHES), {"patch_pairs": pairs, "raw_contrast": raw})
