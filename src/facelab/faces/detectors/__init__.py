"""Face detectors: one file per detector, each registered in DETECTORS by name."""

from facelab.faces.detectors.base import DETECTORS, Detector, create_detector, detector_class

# Importing the modules registers them.
from facelab.faces.detectors import mtcnn, retinaface  # noqa: E402,F401

__all__ = ["DETECTORS", "Detector", "create_detector", "detector_class"]
