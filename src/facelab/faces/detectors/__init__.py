"""Face detectors: one file per detector, each registered in DETECTORS by name."""

from facelab.faces.detectors.base import DETECTORS, Detections, Detector, create_detector, detector_class

# Importing the modules registers them.
from facelab.faces.detectors import mtcnn, retinaface  # noqa: E402,F401

__all__ = ["DETECTORS", "Detections", "Detector", "create_detector", "detector_class"]
