"""Where each detector's five landmarks sit in CelebA's aligned frame: the alignment templates.

CelebA's ``img_align_celeba`` images (178 x 218 pixels) were aligned by the dataset's authors with their
own landmarks. Each detector places "the eye" or "the mouth corner" a little differently, so aligning a
photo with a detector must send that detector's landmarks where that same detector finds them on CelebA's
aligned faces. The templates below are those positions, measured, not taken from CelebA's annotation:

    python benchmarks/face_template.py --root ~/facelab-data/celeba --json

ran each detector (default settings: min score 0.9, MTCNN min face 20 px) over the 5,340 JPEGs of the
development copy of ``img_align_celeba`` (official partitions train 4,560 + val 780), and took per landmark
the median (x, y) over every image where the detector found exactly one face: mtcnn 5,280 images (17 with
no face, 43 with several), retinaface 5,314 (4 none, 22 several). Run on 2026-12-01 on a 2-vCPU AMD EPYC,
2 worker processes (mtcnn 129 s, retinaface 28 s). Median absolute deviations, in pixels: eyes about
1 (x and y), nose 3.6 x / 2.4 y (it moves with the head's yaw), mouth corners 2.3 x / 1.1 y.

Points are (x, y) in frame pixels, pixel centres at integers, in the order of
:data:`facelab.faces.face.LANDMARK_NAMES` (image-left eye first, see :mod:`facelab.faces.face`).
"""

from __future__ import annotations

import numpy as np

from facelab.errors import ConfigError
from facelab.faces.align import CELEBA_FRAME

#: detector name -> its template in CelebA's 178 x 218 frame: left eye, right eye, nose, left and right mouth corner
TEMPLATES: dict[str, tuple[tuple[float, float], ...]] = {
    "mtcnn": ((69.49, 111.82), (108.70, 111.87), (88.77, 136.43), (71.73, 152.78), (106.11, 152.74)),
    "retinaface": ((68.97, 111.91), (108.43, 111.38), (87.29, 136.59), (71.95, 151.85), (105.39, 151.43)),
}


def default_template(detector: str, frame: tuple[int, int] = CELEBA_FRAME) -> np.ndarray:
    """(5, 2) float64: ``detector``'s template, scaled from CelebA's 178 x 218 frame to ``frame`` (width, height).

    Raises:
        ConfigError: no template was derived for ``detector`` (give ``AlignSpec(template=...)``, or derive one
            with benchmarks/face_template.py).
    """
    if detector not in TEMPLATES:
        raise ConfigError(f"no alignment template for face detector {detector!r} (templates exist for "
                          f"{', '.join(sorted(TEMPLATES))}); give one (AlignSpec template=...) or derive it with "
                          "benchmarks/face_template.py --detector " + detector)
    scale = np.array([frame[0] / CELEBA_FRAME[0], frame[1] / CELEBA_FRAME[1]])
    return (np.asarray(TEMPLATES[detector], dtype=np.float64) + 0.5) * scale - 0.5
