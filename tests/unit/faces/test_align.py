"""Similarity fitting (Umeyama) and warping into the aligned frame, on points and images with known answers."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from facelab.faces import CELEBA_FRAME, TEMPLATES, similarity_transform, transform_points, warp_face


def _similarity(angle: float, scale: float, tx: float, ty: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[scale * c, -scale * s, tx], [scale * s, scale * c, ty]])


TEMPLATE = np.asarray(TEMPLATES["mtcnn"], dtype=np.float64)


@pytest.mark.parametrize("seed", range(5))
def test_a_known_similarity_is_recovered(seed):
    rng = np.random.default_rng(seed)
    truth = _similarity(rng.uniform(-math.pi, math.pi), rng.uniform(0.2, 5.0), *rng.uniform(-500, 500, 2))
    src = rng.uniform(0, 400, size=(5, 2))
    fitted = similarity_transform(src, transform_points(src, truth))
    probe = rng.uniform(-1000, 1000, size=(50, 2))  # anywhere, not only at the fitted points
    assert np.abs(transform_points(probe, fitted) - transform_points(probe, truth)).max() < 0.1


def test_it_maps_photo_landmarks_onto_the_template():
    truth = _similarity(0.4, 2.5, 300.0, 120.0)
    photo = transform_points(TEMPLATE, cv2.invertAffineTransform(truth))  # where the template points are in a photo
    assert np.abs(transform_points(photo, similarity_transform(photo, TEMPLATE)) - TEMPLATE).max() < 0.1


def test_a_mirror_image_is_fitted_by_a_rotation_not_a_reflection():
    mirrored = TEMPLATE * [-1.0, 1.0] + [300.0, 0.0]
    m = similarity_transform(TEMPLATE, mirrored)
    assert np.linalg.det(m[:, :2]) > 0  # proper rotation times a positive scale
    reflection = np.array([[-1.0, 0.0, 300.0], [0.0, 1.0, 0.0]])  # the exact (refused) answer
    assert np.abs(transform_points(TEMPLATE, reflection) - mirrored).max() < 1e-9
    assert np.abs(transform_points(TEMPLATE, m) - mirrored).max() > 1.0


def test_least_squares_beats_the_two_point_lmeds_fit_on_noisy_points():
    rng = np.random.default_rng(0)
    ours, lmeds = [], []
    for _ in range(200):
        truth = _similarity(rng.uniform(-0.5, 0.5), rng.uniform(0.5, 3.0), *rng.uniform(-100, 100, 2))
        photo = transform_points(TEMPLATE, cv2.invertAffineTransform(truth))
        noisy = photo + rng.normal(0, 2.0, size=photo.shape)  # detector noise, in photo pixels
        fitted = similarity_transform(noisy, TEMPLATE)
        robust, _ = cv2.estimateAffinePartial2D(noisy.astype(np.float32), TEMPLATE.astype(np.float32),
                                                method=cv2.LMEDS)
        ours.append(np.linalg.norm(transform_points(photo, fitted) - TEMPLATE, axis=1).mean())
        lmeds.append(np.linalg.norm(transform_points(photo, robust) - TEMPLATE, axis=1).mean())
    assert np.mean(ours) < np.mean(lmeds)


@pytest.mark.parametrize("src", [np.zeros((5, 2)), np.ones((1, 2)), np.full((5, 2), np.nan), np.zeros((5, 3))])
def test_points_that_fit_nothing_are_a_clear_error(src):
    with pytest.raises(ValueError, match="src"):
        similarity_transform(src, np.zeros((len(src), 2)))


def _blob(shape: tuple[int, int], at: tuple[float, float], sigma: float) -> np.ndarray:
    ys, xs = np.mgrid[: shape[0], : shape[1]]
    g = np.exp(-((xs - at[0]) ** 2 + (ys - at[1]) ** 2) / (2 * sigma**2))
    return np.repeat((255 * g).astype(np.uint8)[:, :, None], 3, axis=2)


def _centroid(img: np.ndarray) -> np.ndarray:
    w = img[:, :, 0].astype(np.float64)
    ys, xs = np.mgrid[: img.shape[0], : img.shape[1]]
    return np.array([(xs * w).sum(), (ys * w).sum()]) / w.sum()


@pytest.mark.parametrize("scale", [1.3, 0.6, 0.1])  # 0.1: the area-filtered path
def test_warp_puts_a_point_where_the_matrix_says(scale):
    src_at = (700.3, 410.7)
    image = _blob((900, 1200), src_at, sigma=4.0 / scale)  # about 4 px wide once warped
    m = _similarity(0.3, scale, 0.0, 0.0)
    m[:, 2] += np.array([88.0, 110.0]) - transform_points(np.array([src_at]), m)[0]
    out = warp_face(image, m)
    assert out.shape == (CELEBA_FRAME[1], CELEBA_FRAME[0], 3) and out.dtype == np.uint8
    assert np.abs(_centroid(out) - [88.0, 110.0]).max() < 0.3


def test_shrinking_warps_are_not_aliased():
    stripes = np.zeros((1000, 1000, 3), np.uint8)
    stripes[:, ::2] = 255  # one-pixel stripes: a plain bilinear 10x shrink samples them as noise
    out = warp_face(stripes, _similarity(0.0, 0.1, 0.0, 0.0), size=(90, 90))
    assert abs(float(out.mean()) - 127.5) < 3 and out.std() < 3


def test_frame_beyond_the_photo_repeats_its_edge():
    image = np.zeros((50, 50, 3), np.uint8)
    image[:, -1] = 200  # the right edge column
    out = warp_face(image, _similarity(0.0, 1.0, 0.0, 0.0), size=(120, 40))
    assert (out[:, 60:] == 200).all() and (out[:, :49] == 0).all()
