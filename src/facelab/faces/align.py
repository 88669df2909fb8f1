"""Similarity alignment: fit the transform that maps a face's landmarks onto a template, and warp with it.

:func:`similarity_transform` is the least-squares similarity of Umeyama (1991): rotation, one uniform scale
and a translation, never a reflection, fitted to all point pairs. (OpenCV's
``cv2.estimateAffinePartial2D(method=cv2.LMEDS)`` fits the same model robustly, which with five points
means from two of them, and lands further from the template: see docs/faces.md for the measured errors.)

    >>> m = similarity_transform(face.landmarks, template)      # (2, 3)
    >>> crop = warp_face(image, m)                              # (218, 178, 3), CelebA's aligned frame
"""

from __future__ import annotations

import cv2
import numpy as np

CELEBA_FRAME = (178, 218)  # (width, height) of CelebA's img_align_celeba images
_MIN_WARP_SCALE = 0.5  # shrinking more than this is area-filtered before the warp (no aliasing)


def _points(a: np.ndarray, what: str) -> np.ndarray:
    pts = np.asarray(a, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or pts.shape[0] < 2:
        raise ValueError(f"{what} must be an (N, 2) array of N >= 2 points (x, y); got shape {pts.shape}")
    if not np.isfinite(pts).all():
        raise ValueError(f"{what} holds NaN or infinite coordinates")
    return pts


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The (2, 3) similarity ``[s R | t]`` minimising ``sum |s R src_i + t - dst_i|^2`` (Umeyama 1991).

    ``R`` is a proper rotation (det +1): when the best orthogonal fit would be a reflection (``dst`` is a
    mirror image of ``src``), the closest rotation is returned instead, as Umeyama's sign correction says.

    Args:
        src: (N, 2) points (x, y), e.g. a face's landmarks in photo pixels.
        dst: (N, 2) corresponding points, e.g. the template in the aligned frame.

    Returns:
        (2, 3) float64 matrix ``M``; a point ``p`` maps to ``M[:, :2] @ p + M[:, 2]`` (as cv2.warpAffine uses it).

    Raises:
        ValueError: shapes differ or are not (N >= 2, 2), non-finite points, or all ``src`` points coincide.
    """
    src, dst = _points(src, "src"), _points(dst, "dst")
    if src.shape != dst.shape:
        raise ValueError(f"src and dst must hold the same number of points; got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    sc, dc = src - mu_s, dst - mu_d  # (N, 2) centred
    var_s = float((sc**2).sum(axis=1).mean())
    if var_s <= 1e-12:
        raise ValueError("src points all coincide: no transform can be fitted (a degenerate face?)")
    cov = dc.T @ sc / len(src)  # (2, 2)
    u, d, vt = np.linalg.svd(cov)
    sign = np.diag([1.0, -1.0 if np.linalg.det(u) * np.linalg.det(vt) < 0 else 1.0])  # no reflection
    rot = u @ sign @ vt
    scale = float(np.trace(np.diag(d) @ sign)) / var_s
    return np.hstack([scale * rot, (mu_d - scale * rot @ mu_s)[:, None]])


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(N, 2) ``points`` mapped by the (2, 3) affine ``matrix``: ``points @ A.T + t``."""
    m = np.asarray(matrix, dtype=np.float64)
    return np.asarray(points, dtype=np.float64) @ m[:, :2].T + m[:, 2]


def warp_face(image: np.ndarray, matrix: np.ndarray, size: tuple[int, int] = CELEBA_FRAME) -> np.ndarray:
    """Warp ``image`` by ``matrix`` into a ``size`` = (width, height) frame (CelebA's 178 x 218 by default).

    Bilinear ``cv2.warpAffine`` with ``BORDER_REPLICATE``: where the frame reaches past the photo, its edge
    pixels are repeated (CelebA's aligned images look so too), never black. When the warp shrinks by more
    than 2x, the region it reads is first area-downscaled, so the crop is not aliased.

    Args:
        image: (H, W, 3) or (H, W) uint8.
        matrix: (2, 3) source -> frame transform (:func:`similarity_transform`).
        size: (width, height) of the output.

    Returns:
        (height, width, 3) (or (height, width)) uint8.
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (2, 3) or not np.isfinite(m).all():
        raise ValueError(f"matrix must be a finite (2, 3) affine transform; got shape {m.shape}")
    width, height = int(size[0]), int(size[1])
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    if 0 < scale < _MIN_WARP_SCALE:
        image, m = _area_prefilter(image, m, width, height, scale)
    return cv2.warpAffine(image, m, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _area_prefilter(image: np.ndarray, m: np.ndarray, width: int, height: int,
                    scale: float) -> tuple[np.ndarray, np.ndarray]:
    """The part of ``image`` the frame reads, area-downscaled by about ``scale``, and the matrix that warps it."""
    inv = cv2.invertAffineTransform(m)
    corners = transform_points(np.array([[-1, -1], [width, -1], [-1, height], [width, height]], float), inv)
    margin = 2.0 / scale  # a couple of output pixels: the bilinear kernel never reads past the crop
    h, w = image.shape[:2]
    x0, y0 = (max(0, int(np.floor(v - margin))) for v in corners.min(axis=0))
    x1, y1 = min(w, int(np.ceil(corners[:, 0].max() + margin)) + 1), min(h, int(np.ceil(corners[:, 1].max() + margin)) + 1)
    if x1 - x0 < 2 or y1 - y0 < 2:  # the frame lies (almost) outside the photo: nothing to filter
        return image, m
    crop = image[y0:y1, x0:x1]
    small = cv2.resize(crop, (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale))),
                       interpolation=cv2.INTER_AREA)
    rx, ry = small.shape[1] / crop.shape[1], small.shape[0] / crop.shape[0]
    # a small-image pixel p maps back to the photo pixel (p + 0.5) / r - 0.5 + offset
    back = np.array([[1 / rx, 0, 0.5 / rx - 0.5 + x0], [0, 1 / ry, 0.5 / ry - 0.5 + y0]])
    return small, np.hstack([m[:, :2] @ back[:, :2], (m[:, :2] @ back[:, 2] + m[:, 2])[:, None]])
