"""label_metrics, summarize and confusion on small arrays whose figures are counted by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from facelab.eval.metrics import METRIC_NAMES, confusion, label_metrics, summarize

# ---- binary: (N,) probabilities of class 1 ------------------------------------------------------
#                   0    1    2    3    4    5    6    7
BINARY_Y = np.array([0, 0, 0, 1, 1, 0, 1, 0])
BINARY_P = np.array([0.1, 0.6, 0.3, 0.8, 0.4, 0.2, 0.9, 0.7])
# at 0.5 the predictions are 0 1 0 1 0 0 1 1: rows 1, 4 and 7 are wrong


def test_binary_figures_by_hand():
    m = label_metrics(BINARY_Y, BINARY_P)
    assert set(m) == set(METRIC_NAMES)
    assert m["accuracy"] == pytest.approx(5 / 8)
    # recall of class 0: rows 0, 2, 5 of 0, 1, 2, 5, 7; of class 1: rows 3, 6 of 3, 4, 6
    assert m["balanced_accuracy"] == pytest.approx((3 / 5 + 2 / 3) / 2)
    # class 0: precision 3/4, recall 3/5 -> F1 2/3; class 1: precision 2/4, recall 2/3 -> F1 4/7
    assert m["f1_macro"] == pytest.approx((2 / 3 + 4 / 7) / 2)
    # positives 0.8, 0.4, 0.9 against negatives 0.1, 0.6, 0.3, 0.2, 0.7: 5 + 3 + 5 of 15 pairs ranked right
    assert m["auroc"] == pytest.approx(13 / 15)
    assert m["majority_accuracy"] == pytest.approx(5 / 8)  # five of the eight rows are class 0


def test_binary_threshold_moves_the_decisions_not_the_ranking():
    high = label_metrics(BINARY_Y, BINARY_P, threshold=0.75)  # predictions 0 0 0 1 0 0 1 0: only row 4 wrong
    assert high["accuracy"] == pytest.approx(7 / 8)
    assert high["balanced_accuracy"] == pytest.approx((1 + 2 / 3) / 2)
    assert high["auroc"] == label_metrics(BINARY_Y, BINARY_P)["auroc"]
    assert high["majority_accuracy"] == pytest.approx(5 / 8)
    # a probability equal to the threshold is a positive decision
    assert label_metrics([1, 1], [0.6, 0.6], threshold=0.6)["accuracy"] == 1.0
    assert label_metrics([1, 1], [0.6, 0.6], threshold=0.61)["accuracy"] == 0.0


def test_binary_with_one_class_present_has_no_auroc():
    m = label_metrics([0, 0, 0, 0], [0.2, 0.7, 0.1, 0.4])
    assert math.isnan(m["auroc"])
    assert m["accuracy"] == pytest.approx(3 / 4) and m["majority_accuracy"] == 1.0
    assert m["balanced_accuracy"] == pytest.approx(3 / 4)  # the recall of the only class present
    # class 0: precision 1, recall 3/4 -> F1 6/7; class 1 (predicted once, never true): F1 0
    assert m["f1_macro"] == pytest.approx((6 / 7 + 0) / 2)


# ---- categorical: (N, K) class probabilities -------------------------------------------------------
CAT_Y = np.array([0, 1, 2, 2, 1, 0])
CAT_P = np.array([
    [0.7, 0.2, 0.1],   # -> 0, right
    [0.1, 0.6, 0.3],   # -> 1, right
    [0.2, 0.5, 0.3],   # -> 1, wrong (2)
    [0.1, 0.2, 0.7],   # -> 2, right
    [0.5, 0.3, 0.2],   # -> 0, wrong (1)
    [0.4, 0.35, 0.25],  # -> 0, right
])  # fmt: skip


def test_categorical_figures_by_hand():
    m = label_metrics(CAT_Y, CAT_P)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx((2 / 2 + 1 / 2 + 1 / 2) / 3)
    # class 0: P 2/3 R 1 -> 4/5; class 1: P 1/2 R 1/2 -> 1/2; class 2: P 1 R 1/2 -> 2/3
    assert m["f1_macro"] == pytest.approx((4 / 5 + 1 / 2 + 2 / 3) / 3)
    # one-vs-rest, 2 positives x 4 negatives each: class 0 ranks 7 of 8 pairs right, class 1 6, class 2 7.5
    # (its positive 0.3 ties the negative 0.3 of row 1: half a pair)
    assert m["auroc"] == pytest.approx((7 / 8 + 6 / 8 + 7.5 / 8) / 3)
    assert m["majority_accuracy"] == pytest.approx(1 / 3)  # two rows of each class


def test_categorical_class_absent_from_y():
    y = np.array([0, 1, 0, 1])
    p = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.3, 0.2, 0.5], [0.1, 0.8, 0.1]])  # row 2 predicted as class 2
    m = label_metrics(y, p)
    assert m["accuracy"] == pytest.approx(3 / 4)
    assert m["balanced_accuracy"] == pytest.approx((1 / 2 + 2 / 2) / 2)  # over the classes present in y
    # class 0: P 1 R 1/2 -> 2/3; class 1: 1; class 2 (absent, predicted once): 0 -- K=3 classes in the mean
    assert m["f1_macro"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert math.isnan(m["auroc"])  # one-vs-rest is undefined for the absent class
    assert m["majority_accuracy"] == pytest.approx(1 / 2)
    assert confusion(y, p.argmax(1), 3).tolist() == [[1, 0, 1], [0, 2, 0], [0, 0, 0]]


def test_two_class_categorical_probabilities_score_like_binary_ones():
    p1 = np.array([0.1, 0.6, 0.3, 0.8, 0.4, 0.2, 0.9, 0.7])
    two = label_metrics(BINARY_Y, np.stack([1 - p1, p1], axis=1))
    one = label_metrics(BINARY_Y, p1)
    assert two == pytest.approx(one)


def test_inputs_may_be_lists_of_any_int_and_float_type():
    m = label_metrics([True, False, True], np.array([0.9, 0.2, 0.4], dtype=np.float32))
    assert m["accuracy"] == pytest.approx(2 / 3) and m["auroc"] == 1.0


# ---- summarize and confusion ----------------------------------------------------------------------
def test_summarize_is_the_mean_over_labels_ignoring_nan_auroc():
    per_label = {
        "a": label_metrics(BINARY_Y, BINARY_P),
        "b": label_metrics(CAT_Y, CAT_P),
        "c": label_metrics([0, 0, 0, 0], [0.2, 0.7, 0.1, 0.4]),  # AUROC undefined
    }
    s = summarize(per_label)
    assert list(s) == [f"mean_{m}" for m in METRIC_NAMES]
    for m in ("accuracy", "balanced_accuracy", "f1_macro", "majority_accuracy"):
        assert s[f"mean_{m}"] == pytest.approx(np.mean([d[m] for d in per_label.values()])), m
    assert s["mean_accuracy"] == pytest.approx((5 / 8 + 4 / 6 + 3 / 4) / 3)
    assert s["mean_auroc"] == pytest.approx((13 / 15 + (7 / 8 + 6 / 8 + 7.5 / 8) / 3) / 2)  # label c left out


def test_summarize_of_labels_without_any_auroc_is_nan():
    s = summarize({"c": label_metrics([1, 1], [0.2, 0.7]), "d": label_metrics([0, 0], [0.2, 0.7])})
    assert math.isnan(s["mean_auroc"])
    assert s["mean_accuracy"] == pytest.approx(0.5) and s["mean_majority_accuracy"] == 1.0


def test_confusion_rows_are_true_classes_columns_predicted():
    y = np.array([0, 0, 1, 2, 2, 2])
    pred = np.array([0, 1, 1, 2, 0, 2])
    c = confusion(y, pred, 4)  # class 3 never occurs: its row and column stay zero
    assert c.shape == (4, 4) and c.sum() == 6
    assert c.tolist() == [[1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 2, 0], [0, 0, 0, 0]]
    assert np.trace(c) / c.sum() == pytest.approx(4 / 6)


def test_unknown_labels_are_left_out_not_a_crash():
    y = np.array([1, -1, 0, 1, -1])
    p = np.array([0.9, 0.2, 0.1, 0.4, 0.8])
    m = label_metrics(y, p)
    assert m["accuracy"] == pytest.approx(2 / 3) and m["majority_accuracy"] == pytest.approx(2 / 3)
    assert all(math.isnan(v) for v in label_metrics(np.array([-1, -1]), np.array([0.3, 0.6])).values())


def test_macro_f1_ignores_a_class_absent_from_labels_and_predictions():
    y = np.array([0, 0, 1, 1])
    p = np.array([[0.8, 0.1, 0.1], [0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.7, 0.1]])  # class 2 never occurs
    assert label_metrics(y, p)["f1_macro"] == pytest.approx(1.0)
    assert label_metrics(np.zeros(4, int), np.full(4, 0.1))["f1_macro"] == pytest.approx(1.0)  # one class, all right


def test_score_with_unknown_labels_scores_the_known_rows_and_confusions():
    from facelab.eval.metrics import score
    from facelab.models.classifiers.heads import Task

    task = Task.multiclass("c", 3)
    y = np.array([[0], [-1], [2], [1]])
    probs = {"c": np.array([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.1, 0.8, 0.1]])}
    out = score(task, y, probs)
    assert out["per_label"]["c"]["accuracy"] == 1.0 and np.trace(np.array(out["confusion"]["c"])) == 3
