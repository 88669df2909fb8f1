"""EM label-shift adaptation recovers the priors of shifted data from a calibrated model's outputs alone."""

from __future__ import annotations

import numpy as np
import pytest

from facelab.data.schema import LabelKind
from facelab.eval.label_shift import adapt_probabilities, em_priors, label_priors, reweight
from facelab.models.classifiers import Task, TaskOutput


def _gaussian_posteriors(rng: np.random.Generator, prior: np.ndarray, n: int, train_prior: np.ndarray):
    """Classes with unit Gaussians at 0, 1.5, 3, ... drawn with ``prior``; the exact posterior under
    ``train_prior`` (what a perfectly calibrated model trained on that prior outputs)."""
    k = len(prior)
    y = rng.choice(k, size=n, p=prior)
    means = 1.5 * np.arange(k)
    x = rng.normal(means[y], 1.0)
    lik = np.exp(-0.5 * (x[:, None] - means[None]) ** 2)  # (n, k)
    post = lik * train_prior
    return post / post.sum(1, keepdims=True), y


@pytest.mark.parametrize("true_prior", [[0.8, 0.2], [0.3, 0.7], [0.6, 0.3, 0.1]])
def test_em_recovers_the_shifted_priors_and_raises_accuracy(true_prior):
    rng = np.random.default_rng(0)
    true_prior = np.array(true_prior)
    train_prior = np.full(len(true_prior), 1 / len(true_prior))
    p, y = _gaussian_posteriors(rng, true_prior, 20_000, train_prior)
    q, prior, iters = em_priors(p, train_prior)
    np.testing.assert_allclose(prior, true_prior, atol=0.02)
    assert 1 < iters < 1000
    np.testing.assert_allclose(q.sum(1), 1, atol=1e-9)
    assert (q.argmax(1) == y).mean() > (p.argmax(1) == y).mean() + 0.01
    # the adapted posteriors are what the exact posterior under the true prior would be
    exact, _ = _gaussian_posteriors(np.random.default_rng(0), true_prior, 20_000, true_prior)
    np.testing.assert_allclose(q, exact, atol=0.03)


def test_data_with_the_training_priors_is_left_almost_unchanged():
    rng = np.random.default_rng(1)
    prior = np.array([0.7, 0.3])
    p, _ = _gaussian_posteriors(rng, prior, 20_000, prior)
    q, est, _ = em_priors(p, prior)
    np.testing.assert_allclose(est, prior, atol=0.02)
    assert np.abs(q - p).max() < 0.05


def test_reweight_is_bayes_rule():
    p = np.array([[0.5, 0.5], [0.9, 0.1]])
    q = reweight(p, np.array([0.5, 0.5]), np.array([0.2, 0.8]))
    np.testing.assert_allclose(q[0], [0.2, 0.8])
    np.testing.assert_allclose(q[1], [0.18 / 0.26, 0.08 / 0.26])


TASK = Task((TaskOutput("Male", LabelKind.BINARY), TaskOutput("yaw", LabelKind.CATEGORICAL, 3)))


def test_label_priors_count_known_values_only():
    y = np.array([[1, 0], [0, 2], [1, 2], [-1, -1], [1, 2]])
    assert label_priors(y, TASK) == {"Male": [0.25, 0.75], "yaw": [0.25, 0.0, 0.75]}


def test_adapt_probabilities_keeps_the_task_layout():
    rng = np.random.default_rng(2)
    male, _ = _gaussian_posteriors(rng, np.array([0.9, 0.1]), 5000, np.array([0.5, 0.5]))
    yaw, _ = _gaussian_posteriors(rng, np.array([0.2, 0.2, 0.6]), 5000, np.array([1 / 3] * 3))
    probs = {"Male": male[:, 1].astype(np.float32), "yaw": yaw.astype(np.float32)}
    adapted, info = adapt_probabilities(probs, TASK, {"Male": [0.5, 0.5], "yaw": [1 / 3] * 3})
    assert adapted["Male"].shape == (5000,) and adapted["yaw"].shape == (5000, 3)
    assert adapted["Male"].mean() < probs["Male"].mean()  # fewer men than in training
    assert info["Male"]["estimated"][1] == pytest.approx(0.1, abs=0.03)
    assert info["yaw"]["estimated"] == pytest.approx([0.2, 0.2, 0.6], abs=0.04)
    assert info["Male"]["train"] == [0.5, 0.5]
