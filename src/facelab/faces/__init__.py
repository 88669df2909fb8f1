"""Find faces in any photo and align them into CelebA's aligned frame, as CelebA-trained models expect.

Sits below :mod:`facelab.data` (which uses it to build stores of aligned faces) and imports only
facelab.errors, facelab.registry, facelab.config and facelab.utils. See docs/faces.md.

    >>> from facelab.faces import AlignSpec, FacePipeline
    >>> pipeline = FacePipeline(AlignSpec(detector="mtcnn"))
    >>> faces = pipeline.find(image)               # image: (H, W, 3) RGB uint8 -> list[AlignedFace], best first
    >>> faces[0].image.shape                       # (218, 178, 3)

- :mod:`~facelab.faces.face`: :class:`Face` (box, 5 landmarks, score) and the landmark convention;
- :mod:`~facelab.faces.detectors`: the DETECTORS registry (``mtcnn``, ``retinaface``);
- :mod:`~facelab.faces.align`: :func:`similarity_transform` (Umeyama) and :func:`warp_face`;
- :mod:`~facelab.faces.template`: each detector's template in CelebA's frame, derived from CelebA;
- :mod:`~facelab.faces.pipeline`: :class:`AlignSpec` (JSON-able) and :class:`FacePipeline`;
- :mod:`~facelab.faces.model_pool`: :class:`ModelPool`, how a detector runs in several threads at once.
"""

from facelab.faces.align import CELEBA_FRAME, similarity_transform, transform_points, warp_face
from facelab.faces.detectors import DETECTORS, Detections, Detector, create_detector, detector_class
from facelab.faces.face import LANDMARK_NAMES, Face
from facelab.faces.pipeline import AlignedFace, AlignSpec, FacePipeline, FoundFaces
from facelab.faces.template import TEMPLATES, default_template

__all__ = [
    "CELEBA_FRAME", "DETECTORS", "LANDMARK_NAMES", "TEMPLATES", "AlignSpec", "AlignedFace", "Detections", "Detector",
    "Face", "FacePipeline", "FoundFaces", "create_detector", "default_template", "detector_class",
    "similarity_transform", "transform_points", "warp_face",
]
