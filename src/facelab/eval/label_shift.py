"""Label shift: re-weight a classifier's probabilities to the class priors of the data it is applied to.

A classifier's probabilities carry the class priors of its training rows. Data with other priors (another
group of people, an external test set) keeps the likelihoods ``p(x | class)`` but not the priors, and the
EM algorithm of Saerens, Latinne and Decaestecker (2002, "Adjusting the outputs of a classifier to new a
priori probabilities") estimates the new priors from the unlabelled predictions alone: re-weight the
posteriors to the current prior estimate, average them into the next estimate, repeat. No label of the
new data is read.

>>> import numpy as np
>>> p = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]])
>>> q, prior, _ = em_priors(p, np.array([0.5, 0.5]))
>>> bool(prior[0] > 0.6)
True
"""

from __future__ import annotations

from typing import Any

import numpy as np

from facelab.data.schema import LabelKind
from facelab.models.classifiers.heads import Task

EPS = 1e-6


def reweight(p: np.ndarray, train_prior: np.ndarray, new_prior: np.ndarray) -> np.ndarray:
    """Posteriors (N, K) under ``new_prior`` (K,) instead of ``train_prior`` (K,): Bayes' rule with the
    likelihoods kept."""
    q = p * (new_prior / train_prior)
    return q / q.sum(1, keepdims=True)


def em_priors(p: np.ndarray, train_prior: np.ndarray, *, max_iter: int = 1000,
              tol: float = 1e-7) -> tuple[np.ndarray, np.ndarray, int]:
    """Saerens et al.'s EM estimate of the class priors of unlabelled data.

    Args:
        p: (N, K) class probabilities of a model trained with class priors ``train_prior`` (K,).

    Returns:
        (the (N, K) re-weighted probabilities, the (K,) estimated priors, the iterations run).
    """
    train_prior = np.clip(np.asarray(train_prior, dtype=np.float64), EPS, None)
    train_prior = train_prior / train_prior.sum()
    p = np.asarray(p, dtype=np.float64)
    prior = train_prior.copy()
    for it in range(1, max_iter + 1):
        new = np.clip(reweight(p, train_prior, prior).mean(0), EPS, None)
        new /= new.sum()
        done = np.abs(new - prior).max() < tol
        prior = new
        if done:
            break
    return reweight(p, train_prior, prior), prior, it


def label_priors(y: np.ndarray, task: Task) -> dict[str, list[float]]:
    """Class frequencies of each label among known values of ``y`` (N, L) (-1 = unknown): binary labels
    give [P(0), P(1)], categorical ones one share per class."""
    out = {}
    for i, o in enumerate(task.outputs):
        col = y[:, i][y[:, i] >= 0]
        counts = np.bincount(col, minlength=o.num_classes)[: o.num_classes].astype(np.float64)
        out[o.name] = (counts / max(1, counts.sum())).tolist()
    return out


def adapt_probabilities(probs: dict[str, np.ndarray], task: Task,
                        train_priors: dict[str, list[float]]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """EM-adapt every label's probabilities (as ``task_predict`` gives them) to the data they were computed on.

    Returns:
        (adapted probabilities in the same layout, {label: {"train": priors, "estimated": priors,
        "iterations": n}}).
    """
    adapted, info = {}, {}
    for o in task.outputs:
        p = probs[o.name]
        binary = o.kind is LabelKind.BINARY
        pk = np.stack([1 - p, p], 1) if binary else p
        q, prior, iters = em_priors(pk, np.asarray(train_priors[o.name]))
        adapted[o.name] = (q[:, 1] if binary else q).astype(np.float32)
        info[o.name] = {"train": [round(float(v), 6) for v in train_priors[o.name]],
                        "estimated": [round(float(v), 6) for v in prior], "iterations": iters}
    return adapted, info
