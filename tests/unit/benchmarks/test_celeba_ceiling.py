"""The label-prior corrections of benchmarks/celeba_ceiling.py against cases with a known answer."""

import importlib.util
import itertools
from pathlib import Path

import numpy as np

from tests.fixtures.layouts import CELEBA_ATTRIBUTES, make_celeba

spec = importlib.util.spec_from_file_location(
    "celeba_ceiling", Path(__file__).resolve().parents[3] / "benchmarks" / "celeba_ceiling.py")
ceiling = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ceiling)


def test_joint_posterior_over_every_vector_equally_often_is_the_independent_prior_shift():
    rng = np.random.default_rng(0)
    p, prior = rng.uniform(0.05, 0.95, (7, 4)), rng.uniform(0.2, 0.8, 4)
    every = np.array(list(itertools.product([0, 1], repeat=4)))  # the uniform joint: prior 0.5, independent
    expected = ceiling.shift_prior(p, prior, np.full(4, 0.5))
    np.testing.assert_allclose(ceiling.joint_posterior(p, prior, *np.unique(every, axis=0, return_counts=True), tau=1.0), expected, rtol=1e-9)


def test_joint_posterior_at_tau_zero_is_the_empirical_marginal():
    vectors = np.array([[1, 0], [1, 0], [1, 1], [0, 0]])
    q = ceiling.joint_posterior(np.full((3, 2), 0.9), np.full(2, 0.5),
                              *np.unique(vectors, axis=0, return_counts=True), tau=0.0)
    np.testing.assert_allclose(q, np.tile([0.75, 0.25], (3, 1)))


def test_full_train_labels_reads_every_train_partition_row_even_without_its_image(tmp_path):
    fx = make_celeba(tmp_path / "celeba", n_images=3, n_rows=20)  # a partial download: 3 of 20 images
    names = ["Smiling", "Male"]
    cols = [CELEBA_ATTRIBUTES.index(n) for n in names]
    got = ceiling.full_train_labels(fx.root, names)
    np.testing.assert_array_equal(got, (fx.values[fx.partitions == 0][:, cols] > 0).astype(got.dtype))
    assert len(got) == 16
