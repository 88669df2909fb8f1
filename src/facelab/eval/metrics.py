"""Classification metrics from labels and probabilities: per label, next to the majority-class baseline of
the same data, their means over a task's labels, and confusion matrices."""

from __future__ import annotations

import warnings

from typing import Any

import numpy as np
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, f1_score, roc_auc_score

from facelab.data.schema import LabelKind
from facelab.models.classifiers.heads import Task

METRIC_NAMES = ("accuracy", "balanced_accuracy", "f1_macro", "auroc", "majority_accuracy")


def _auroc(y: np.ndarray, prob: np.ndarray, n_classes: int) -> float:
    present = np.unique(y)
    if len(present) < 2:
        return float("nan")  # undefined with one class present
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if n_classes == 2:
            p1 = prob if prob.ndim == 1 else prob[:, 1]
            return float(roc_auc_score(y, p1))
        if len(present) < n_classes:
            return float("nan")
        return float(roc_auc_score(y, prob, multi_class="ovr", average="macro"))


def label_metrics(y: np.ndarray, prob: np.ndarray, *, threshold: float = 0.5) -> dict[str, float]:
    """Metrics of one label.

    Args:
        y: (N,) true values (0/1 for binary labels, class index for categorical ones; -1 = unknown, left out).
        prob: (N,) probability of class 1 for binary labels, or (N, K) class probabilities.
        threshold: decision threshold for binary labels.

    Macro-F1 averages over the classes that occur in ``y`` or in the predictions (scikit-learn's default):
    a class absent from both is not a failure.
    """
    y = np.asarray(y).astype(np.int64)
    prob = np.asarray(prob, dtype=np.float64)
    known = y >= 0
    y, prob = y[known], prob[known]
    n_classes = 2 if prob.ndim == 1 else prob.shape[1]
    if y.size == 0:
        return {m: float("nan") for m in METRIC_NAMES}
    pred = (prob >= threshold).astype(np.int64) if prob.ndim == 1 else prob.argmax(1)
    counts = np.bincount(y, minlength=n_classes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "accuracy": float((pred == y).mean()),
            "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
            "f1_macro": float(f1_score(y, pred, average="macro", zero_division=0)),
            "auroc": _auroc(y, prob, n_classes),
            "majority_accuracy": float(counts.max() / max(1, counts.sum())),
        }


def summarize(per_label: dict[str, dict[str, float]]) -> dict[str, float]:
    """Mean of every metric over labels (NaN AUROCs ignored), prefixed ``mean_``."""
    out = {}
    for m in METRIC_NAMES:
        vals = np.array([d[m] for d in per_label.values()], dtype=np.float64)
        out[f"mean_{m}"] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
    return out


def confusion(y: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(K, K) counts, rows = true class, columns = predicted class."""
    return confusion_matrix(y, pred, labels=list(range(n_classes)))


def score(task: Task, y: np.ndarray, probs: dict[str, np.ndarray]) -> dict[str, Any]:
    """Per-label metrics (with majority baseline), their means, and confusion matrices of categorical labels."""
    per_label = {o.name: label_metrics(y[:, i], probs[o.name]) for i, o in enumerate(task.outputs)}
    confusions = {}
    for i, o in enumerate(task.outputs):
        if o.kind is LabelKind.CATEGORICAL:
            known = y[:, i] >= 0  # unknown labels (-1) are left out, as in the per-label metrics
            confusions[o.name] = confusion(y[known, i], probs[o.name][known].argmax(1), o.num_classes).tolist()
    return {"per_label": per_label, "summary": summarize(per_label), "confusion": confusions, "count": int(len(y))}
