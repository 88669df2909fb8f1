"""Light direction from the shading of the face's skin: the left-to-right brightness gradient across the face.

The skin region is laid out in the face's own frame, built from its landmarks (the eye-to-mouth axis and the
axis across it), so it follows the face whatever its pose, stays between the brows and the mouth and within
the cheeks (never on the background), leaves the eyes out, and mirrors exactly under a horizontal flip. Over
that region the log of the luma is fitted by ``a + b*u + c*v + d*|u|`` (``u`` across the face, towards the
image's right, ``v`` down it, both in eye-to-mouth units): ``b`` is the relative brightness change per unit
across the face, which a darker or lighter skin does not change (the log turns its albedo into ``a``) and
which ``c`` (light from above or below) and ``d`` (cheeks turning away from the camera on both sides) do not
absorb. Hair, glasses and highlights are damped by two rounds of Cauchy reweighting, smooth in the data so
that a mirrored face gets exactly the negated gradient.

A turned head shows its skin at other angles to the light, which shifts ``b`` by about :data:`YAW_SLOPE` per
degree of yaw under frontal light (measured on synthetic faces of known light and yaw), so the yaw from the
landmarks (:func:`facelab.labelers.orientation.head_pose`) is taken out.

This replaced a comparison of two mirrored pairs of small skin patches (cheeks, forehead): 0.87 of 300 synthetic
faces that neither was fitted on in the right class, against 0.97 for the gradient (benchmarks/bench_labels.py).
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from pydantic import Field

from facelab.config import StrictConfig
from facelab.labelers.base import LABELERS, AutoLabel, Labeler, check_landmarks, three_way
from facelab.labelers.orientation import head_pose

#: the skin region in the face's frame (eye-to-mouth units from the eyes' midpoint): |u| <= HALF_WIDTH,
#: TOP <= v <= BOTTOM (above the brows' lower edge to between the nose and the mouth), beyond EYE_RADIUS of
#: each eye
HALF_WIDTH, TOP, BOTTOM, EYE_RADIUS = 0.6, -0.35, 0.8, 0.22
#: the fewest region pixels worth a fit (a face smaller than about 12 px between the eyes and the mouth has fewer)
MIN_PIXELS = 40
#: gradient per degree of yaw under frontal light (least squares on 300 synthetic faces, seed 0)
YAW_SLOPE = -0.0114
#: |gradient| above this is ``left``/``right`` (the best three-way split of 300 synthetic faces, seed 0; 0.97 of
#: another 300 in the right class)
GRADIENT_THRESHOLD = 0.20
CONFIDENCE_SCALE = 0.1
#: the largest threshold taken: a gradient of 3 makes one side of the region (1.2 units wide) e^3.6 = 37 times
#: brighter than the other, so a threshold at or above it would leave practically every face in ``center``
MAX_GRADIENT = 3.0
#: luma offset of the log (0-255 luma), so that near-black pixels do not dominate
LOG_OFFSET = 8.0


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


def skin_region(shape: tuple[int, int], points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mask, u, v): the region's pixels of an image of ``shape`` and every pixel's face coordinates."""
    h, w = shape
    eyes, across, down, scale = face_frame(points)
    ys, xs = np.mgrid[:h, :w].astype(np.float64)
    dx, dy = (xs - eyes[0]) / scale, (ys - eyes[1]) / scale
    u, v = dx * across[0] + dy * across[1], dx * down[0] + dy * down[1]
    mask = (np.abs(u) <= HALF_WIDTH) & (v >= TOP) & (v <= BOTTOM)
    for eye in points[:2]:
        mask &= np.hypot(xs - eye[0], ys - eye[1]) > EYE_RADIUS * scale
    return mask, u, v


def shading_gradient(image: np.ndarray, points: np.ndarray) -> tuple[float, int]:
    """(relative brightness change per eye-to-mouth unit towards the image's right, pixels fitted); NaN when the
    region has fewer than :data:`MIN_PIXELS` pixels inside the image."""
    luma = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY).astype(np.float64)
    mask, u, v = skin_region(luma.shape, points)
    n = int(mask.sum())
    if n < MIN_PIXELS:
        return math.nan, n
    y = np.log(luma[mask] + LOG_OFFSET)
    a = np.stack([np.ones(n), u[mask], v[mask], np.abs(u[mask])], 1)
    weights = np.ones(n)
    for _ in range(3):  # least squares, then two rounds of Cauchy weights (c = 2.4 x the median absolute residual)
        sw = np.sqrt(weights)
        coef = np.linalg.lstsq(a * sw[:, None], y * sw, rcond=None)[0]
        r = y - a @ coef
        c = 2.385 * max(float(np.median(np.abs(r))), 1e-6)
        weights = 1.0 / (1.0 + (r / c) ** 2)
    return float(coef[1]), n


class LightConfig(StrictConfig):
    """The light labeler's options."""

    threshold: float = Field(GRADIENT_THRESHOLD, gt=0, lt=MAX_GRADIENT, description=f"the brightness gradient, "
                             f"above 0 and below {MAX_GRADIENT}: a face whose gradient is stronger than this "
                             "either way is lit from the left or the right, else center")


@LABELERS.register("light")
class LightLabeler(Labeler):
    """Where the light comes from, by the brightness gradient across the face's skin (yaw taken out); classes
    by :data:`GRADIENT_THRESHOLD`."""

    name = "light"
    unit = "relative brightness gradient across the face, towards the image's right (per eye-to-mouth distance)"
    Config = LightConfig

    def label(self, image: np.ndarray, landmarks: np.ndarray) -> AutoLabel:
        points = check_landmarks(landmarks)
        raw, pixels = shading_gradient(image, points)
        if not math.isfinite(raw):
            return AutoLabel(None, math.nan, 0.0, {"pixels": pixels, "raw_gradient": math.nan})
        gradient = raw - YAW_SLOPE * head_pose(points)[0]
        cls, confidence = three_way(gradient, self.config.threshold, CONFIDENCE_SCALE)
        return AutoLabel(cls, gradient, confidence, {"pixels": pixels, "raw_gradient": raw})
