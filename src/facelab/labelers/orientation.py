"""Head orientation from the 5 landmarks: yaw, pitch and roll of a mean 3D face fitted to them.

The fit is weak-perspective (scaled orthographic) and linear: the roll is the angle of the eye line; with
the roll taken out, the landmarks' x coordinates are ``a * X + b * Z + t`` of the mean face's points
(X across, Z in depth), so ``yaw = atan2(b, a)`` by least squares over all five points, and the same on y
gives the pitch. A full perspective fit (``cv2.solvePnP`` on the same 5 points and mean face) was tried
first: with 5 points it trades yaw for pitch (on synthetic faces of known pose it gave pitches of 20-40
degrees for frontal faces and flipped the sign of turned ones), while this fit follows the true yaw with a
correlation of 0.999 (docs/labels.md).
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import Field

from facelab.config import StrictConfig
from facelab.labelers.base import LABELERS, AutoLabel, Labeler, check_landmarks, three_way

#: A mean face's 5 points in millimetres, facelab's landmark order (image-left eye, image-right eye, nose
#: tip, image-left and image-right mouth corner), for a frontal face: x to the image's right, y down, z away
#: from the camera, origin at the nose tip: eye centres 66 mm apart, 34 mm above and 27 mm behind the tip;
#: mouth corners 60 mm apart, 30 mm below and 25 mm behind it (the proportions of the generic head model used
#: by common OpenCV head-pose estimators).
MEAN_FACE = np.array([[-33.0, -34.0, 27.0], [33.0, -34.0, 27.0], [0.0, 0.0, 0.0],
                      [-30.0, 30.0, 25.0], [30.0, 30.0, 25.0]], dtype=np.float64)
#: |yaw| above this is ``left``/``right``, below it ``center`` (degrees): where people call a face "turned".
#: On 200 CelebA images hand-checked against these labels (docs/labels.md), 15 degrees put faces a person
#: calls frontal into left/right (agreement 0.75); thresholds of 22-25 did best on the first 100 images
#: (0.91) and 25 held on the other 100 (0.95). It lies between the synthetic source's frontal (|yaw| <= 5)
#: and turned (28-40) faces.
YAW_THRESHOLD = 25.0
CONFIDENCE_SCALE = 5.0  # degrees from the class boundary for a confidence of 0.63


def head_pose(landmarks: np.ndarray, model: np.ndarray = MEAN_FACE) -> tuple[float, float, float, float]:
    """(yaw, pitch, roll, fit error) of a face with ``landmarks`` (5, 2): yaw > 0 when the face points towards
    the image's right, pitch > 0 when it points up, roll > 0 when the eye line slopes down to the right, in
    degrees; the error is the fit's RMS residual in units of the eye distance. ``model`` is the head's 5 points
    in 3D (:data:`MEAN_FACE`'s frame and order): exact when it is the face's own, as for the synthetic faces
    (:func:`facelab.data.render_face.landmark_model`)."""
    p = landmarks.astype(np.float64).reshape(5, 2)
    eyes = p[1] - p[0]
    roll = math.atan2(eyes[1], eyes[0])
    c, s = math.cos(-roll), math.sin(-roll)
    q = (p - p.mean(0)) @ np.array([[c, -s], [s, c]]).T  # roll removed: the eye line is horizontal
    ones = np.ones(5)
    (a, b, _), res_x, *_ = np.linalg.lstsq(np.c_[model[:, 0], model[:, 2], ones], q[:, 0], rcond=None)
    (e, f, _), res_y, *_ = np.linalg.lstsq(np.c_[model[:, 1], model[:, 2], ones], q[:, 1], rcond=None)
    yaw = -math.degrees(math.atan2(b, a))  # the nose tip moves towards where the face points
    pitch = math.degrees(math.atan2(f, e))
    residual = float(np.sqrt((np.sum(res_x) + np.sum(res_y)) / 10)) / max(float(np.linalg.norm(eyes)), 1e-9)
    return yaw, pitch, math.degrees(roll), residual


class OrientationConfig(StrictConfig):
    """The orientation labeler's options."""

    threshold: float = Field(YAW_THRESHOLD, gt=0, lt=90, description="degrees of yaw, above 0 and below 90: "
                             "a face turned further than this either way is left or right, else center")


@LABELERS.register("orientation")
class OrientationLabeler(Labeler):
    """Head yaw from the landmarks; classes by :data:`YAW_THRESHOLD`. Pitch, roll and the fit error are
    recorded too."""

    name = "orientation"
    unit = "degrees of yaw"
    Config = OrientationConfig

    def label(self, image: np.ndarray, landmarks: np.ndarray) -> AutoLabel:
        yaw, pitch, roll, error = head_pose(check_landmarks(landmarks))
        if not math.isfinite(yaw):
            return AutoLabel(None, math.nan, 0.0, {"pitch": math.nan, "roll": math.nan, "fit_error": math.nan})
        cls, confidence = three_way(yaw, self.config.threshold, CONFIDENCE_SCALE)
        return AutoLabel(cls, yaw, confidence, {"pitch": pitch, "roll": roll, "fit_error": error})
