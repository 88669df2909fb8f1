"""The synthetic face source and its renderer: determinism, label prevalence, options, splits, images."""

from __future__ import annotations

import dataclasses
import hashlib
import pickle
import subprocess
import sys

import cv2
import numpy as np
import pytest

from facelab.data.face_params import FaceLabels, sample_face_params
from facelab.data.render_face import render_face
from facelab.data.schema import LabelKind, Partition
from facelab.data.sources import SOURCES, create_source
from facelab.data.sources import synthetic as syn
from facelab.errors import ConfigError, DataError


def _source(**options):
    return create_source("synthetic", **options)


def _column(index, name: str) -> np.ndarray:
    col = [s.name for s in index.labels].index(name)
    return np.array([r.labels[col] for r in index.records])


# ---- registration and schema --------------------------------------------------------------------------
def test_registered_without_root_and_labels_in_order():
    assert "synthetic" in SOURCES
    index = _source(n=12).index()
    assert index.root is None and index.has_identities and index.has_partitions
    assert [s.name for s in index.labels] == [
        "Male", "Smiling", "Eyeglasses", "Bangs", "Young", "Wearing_Hat", "hair_color", "yaw", "light"]
    assert all(s.kind is LabelKind.BINARY for s in index.labels[:6])
    assert index.labels[6].classes == ("black", "blond", "brown", "gray")
    assert index.labels[7].classes == index.labels[8].classes == ("left", "center", "right")
    assert len({r.key for r in index.records}) == 12


# ---- determinism ----------------------------------------------------------------------------------------
def test_same_seed_same_labels_and_pixels_different_seed_differs():
    a, b, c = _source(n=6, seed=3), _source(n=6, seed=3), _source(n=6, seed=4)
    ra, rb, rc = a.index().records, b.index().records, c.index().records
    assert [r.labels for r in ra] == [r.labels for r in rb]
    for x, y in zip(ra, rb):
        np.testing.assert_array_equal(a.load(x, min_side=32), b.load(y, min_side=32))
    assert any(not np.array_equal(a.load(x, min_side=32), c.load(z, min_side=32)) for x, z in zip(ra, rc))
    imgs = [a.load(r, min_side=32) for r in ra]
    assert all(not np.array_equal(imgs[0], im) for im in imgs[1:])  # records differ from each other


def test_record_depends_only_on_seed_and_position():
    small, big = _source(n=7, seed=1), _source(n=40, seed=1)
    rs, rb = small.index().records, big.index().records[:7]
    def describe(records):
        return [(r.key, r.labels, r.identity, r.partition) for r in records]

    assert describe(rs) == describe(rb)
    reversed_imgs = [big.load(r, min_side=32) for r in reversed(rb)][::-1]  # order does not matter
    for r, img in zip(rs, reversed_imgs):
        np.testing.assert_array_equal(small.load(r, min_side=32), img)


def test_pickled_source_and_other_process_render_identical_pixels():
    src = _source(n=3, seed=9)
    rec = src.index().records[2]
    clone = pickle.loads(pickle.dumps(src))
    img = clone.load(pickle.loads(pickle.dumps(rec)), min_side=32)
    np.testing.assert_array_equal(img, src.load(rec, min_side=32))
    code = (
        "import hashlib; from facelab.data.sources import create_source as c; s = c('synthetic', n=3, seed=9); "
        "print(hashlib.sha256(s.load(s.index().records[2], min_side=32).tobytes()).hexdigest())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == hashlib.sha256(img.tobytes()).hexdigest()


# ---- prevalence -------------------------------------------------------------------------------------------
def test_index_draws_labels_without_rendering(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("index() must not render")

    monkeypatch.setattr(syn, "render_face", boom)
    assert len(_source(n=2000).index().records) == 2000


SKEWED = {"Male": 0.1, "Eyeglasses": 0.5, "Bangs": 0.6, "Young": 0.3, "Wearing_Hat": 0.02}


@pytest.mark.parametrize("prevalence", [{}, SKEWED])
def test_binary_prevalence_holds(prevalence):
    src = _source(n=2000, seed=5, prevalence=prevalence)
    index = src.index()
    n_ids = 2000 // 5
    for name in syn.BINARY:
        p = {**syn.DEFAULT_PREVALENCE, **prevalence}[name]
        # person-level attributes vary over identities only, so their effective sample is the identity count
        n_eff = n_ids if name in ("Male", "Young", "Bangs") else 2000
        tol = 4.5 * np.sqrt(p * (1 - p) / n_eff) + 1e-9
        assert abs(_column(index, name).mean() - p) <= tol, name


def test_class_probs_hold_and_extremes_are_exact():
    probs = {"hair_color": [0.1, 0.2, 0.3, 0.4], "yaw": [0.6, 0.2, 0.2], "light": [0.0, 1.0, 0.0]}
    index = _source(n=2000, seed=2, class_probs=probs, prevalence={"Smiling": 0.0, "Eyeglasses": 1.0}).index()
    for name, p in probs.items():
        freq = np.bincount(_column(index, name), minlength=len(p)) / 2000
        n_eff = 400 if name == "hair_color" else 2000
        assert np.all(np.abs(freq - p) <= 4.5 * np.sqrt(np.array(p) * (1 - np.array(p)) / n_eff) + 1e-9), name
    assert _column(index, "Smiling").max() == 0 and _column(index, "Eyeglasses").min() == 1


@pytest.mark.parametrize("p_b,p_a,strength", [(0.25, 0.42, 0.6), (0.9, 0.9, 0.85), (0.1, 0.75, 0.4), (0.5, 0.0, 0.5)])
def test_conditional_probs_keep_the_marginal(p_b, p_a, strength):
    given_a, given_not_a = syn.conditional_probs(p_b, p_a, strength)
    assert 0.0 <= given_a <= p_b <= given_not_a <= 1.0
    assert p_a * given_a + (1 - p_a) * given_not_a == pytest.approx(p_b)


def test_mild_correlations_are_present():
    index = _source(n=3000, seed=1).index()
    male, bangs = _column(index, "Male"), _column(index, "Bangs")
    young, gray = _column(index, "Young"), _column(index, "hair_color") == 3
    assert bangs[male == 1].mean() < bangs[male == 0].mean()
    assert gray[young == 0].mean() > 2 * gray[young == 1].mean()


# ---- option validation ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "options,match",
    [
        ({"nn": 3}, "nn"),
        ({"prevalence": {"Beard": 0.2}}, "valid names: Male, Smiling"),
        ({"prevalence": {"Male": 1.5}}, "must lie in"),
        ({"class_probs": {"eye_color": [1.0]}}, "valid names: hair_color, yaw, light"),
        ({"class_probs": {"yaw": [0.5, 0.5]}}, "3 non-negative"),
        ({"class_probs": {"light": [0.2, 0.2, 0.2]}}, "summing to 1"),
        ({"partitions": (0.5, 0.2, 0.1)}, "summing to 1"),
        ({"n": 0}, "n"),
        ({"images_per_identity": 0}, "images_per_identity"),
    ],
)
def test_bad_options_raise_config_error(options, match):
    with pytest.raises(ConfigError, match=match):
        _source(**options)


def test_foreign_ref_is_a_data_error():
    src = _source(n=2)
    rec = dataclasses.replace(src.index().records[0], ref="/some/file.jpg")
    with pytest.raises(DataError, match="not a synthetic"):
        src.load(rec)


# ---- identities and partitions ------------------------------------------------------------------------------
def test_identities_share_person_labels_and_never_cross_partitions():
    index = _source(n=1003, seed=8, images_per_identity=4).index()
    by_id: dict[int, set] = {}
    for i, r in enumerate(index.records):
        assert r.identity == i // 4
        person = (r.labels[0], r.labels[3], r.labels[4], r.labels[6])  # Male, Bangs, Young, hair_color
        by_id.setdefault(r.identity, set()).add((r.partition, person))
    assert all(len(v) == 1 for v in by_id.values())
    parts = np.array([next(iter(v))[0] for v in by_id.values()])
    frac = np.bincount(parts, minlength=3) / len(parts)
    np.testing.assert_allclose(frac, [0.8, 0.1, 0.1], atol=0.02)
    assert set(parts) == {Partition.TRAIN, Partition.VAL, Partition.TEST}


def test_shot_labels_vary_within_an_identity():
    index = _source(n=400, seed=0, images_per_identity=10).index()
    yaw = _column(index, "yaw").reshape(40, 10)
    assert np.mean([len(set(row)) > 1 for row in yaw]) > 0.9


# ---- images ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("min_side,expected", [(None, 48), (16, 32), (32, 32), (64, 64), (128, 128)])
def test_load_renders_square_uint8_at_the_asked_size(min_side, expected):
    src = _source(n=2, render_size=48)
    img = src.load(src.index().records[1], min_side=min_side)
    assert img.shape == (expected, expected, 3) and img.dtype == np.uint8
    assert img.std() > 10  # a picture, not a flat fill


def test_sizes_render_the_same_face():
    params = sample_face_params(12, FaceLabels(male=True, eyeglasses=True, yaw="left"))
    big, small = render_face(params, 128), render_face(params, 32)
    down = cv2.resize(big, (32, 32), interpolation=cv2.INTER_AREA).astype(float)
    assert np.abs(down - small).mean() < 8  # noise differs, the face does not


@pytest.mark.parametrize("label", ["Eyeglasses", "Smiling", "Wearing_Hat"])
def test_flipping_a_label_changes_only_its_part_of_the_same_face(label):
    src = _source(n=4, seed=2)
    rec = src.index().records[3]
    col = [s.name for s in src.label_specs()].index(label)
    imgs = []
    for value in (0, 1):
        labels = list(rec.labels)
        labels[col] = value
        imgs.append(src.load(dataclasses.replace(rec, labels=tuple(labels)), min_side=64).astype(int))
    changed = np.abs(imgs[0] - imgs[1]).max(axis=2) > 12
    assert 0.005 < changed.mean() < 0.3  # visible, yet the rest of the face and the shot stay the same


def test_labels_are_visible_to_a_linear_probe():
    """A logistic regression on 32 px pixels finds Eyeglasses, Smiling and yaw well above chance."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    n, n_train = 600, 400
    src = _source(n=n, seed=0, images_per_identity=1, prevalence={"Eyeglasses": 0.5, "Smiling": 0.5})
    index = src.index()
    x = np.stack([src.load(r, min_side=32) for r in index.records]).reshape(n, -1).astype(np.float32) / 255
    for name, margin in (("Eyeglasses", 0.2), ("Smiling", 0.1), ("yaw", 0.4)):
        y = _column(index, name)
        chance = np.bincount(y[n_train:]).max() / (n - n_train)
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=1000))
        acc = probe.fit(x[:n_train], y[:n_train]).score(x[n_train:], y[n_train:])
        assert acc >= chance + margin, f"{name}: accuracy {acc:.2f}, chance {chance:.2f}"
