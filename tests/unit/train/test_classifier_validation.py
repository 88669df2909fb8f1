"""The validation figures a run records are the figures ``facelab eval`` computes from its checkpoint.

Training under bf16 autocast (``precision: auto`` on a CPU with native bf16, or on CUDA) once validated under
autocast too, while ``evaluate_run`` scores in fp32: the same checkpoint on the same rows then gave two
different mean accuracies (0.8921 in the log and summary, 0.8918 from ``facelab eval`` on CelebA).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from facelab.data.schema import LabelKind, LabelSpec, Partition
from facelab.data.write import write_store_arrays
from facelab.errors import FacelabError
from facelab.eval.inference import predict_rows
from facelab.eval.evaluate import evaluate_run
from facelab.models.classifiers.ensemble import load_classifier
from facelab.train.classifier import ClassifierConfig, train_classifier
from tests.helpers import near_decision_boundary


def _store(tmp_path):
    rng = np.random.default_rng(0)
    n_train, n_val = 96, 64
    n = n_train + n_val
    images = rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)
    red, top = images[..., 0].mean(axis=(1, 2)), images[:, :8].mean(axis=(1, 2, 3))
    labels = np.stack([red > np.median(red), top > np.median(top), rng.random(n) < 0.3], axis=1).astype(np.int64)
    specs = [LabelSpec(name, LabelKind.BINARY) for name in ("Red", "Top", "Noise")]
    parts = np.array([int(Partition.TRAIN)] * n_train + [int(Partition.VAL)] * n_val)
    return write_store_arrays(tmp_path / "store", images, labels, specs, parts, source="synthetic")


def _train(tmp_path, store, *, precision="fp32", epochs=2):
    cfg = ClassifierConfig.from_dict({
        "store": str(store.path), "model": "vgg_scratch", "batch_size": 16, "augment": "none", "device": "cpu",
        "model_kwargs": {"channels": [8, 16], "pool_grid": 2},
        "trainer": {"epochs": epochs, "precision": precision, "progress": False, "optim": {"lr": 0.01}},
    })
    run = tmp_path / "run"
    train_classifier(cfg, run_dir=run)
    return run


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_recorded_val_figures_equal_eval_of_the_checkpoint(tmp_path, precision):
    store = _store(tmp_path)
    run = _train(tmp_path, store, precision=precision)
    recorded = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
    report = evaluate_run(run / "checkpoints" / "last", store.path, split="val", out_dir=tmp_path / "eval")
    assert report["count"] == 64
    # the trainer validates its channels_last model, eval a freshly loaded one: the logits may differ in the
    # last bits, which can flip only a decision within float noise of the threshold (none, nearly always)
    model, meta = load_classifier(run / "checkpoints" / "last")
    probs, _, _ = predict_rows(model, meta, store, store.partition_indices(Partition.VAL))
    flippable = sum(int(near_decision_boundary(p, 1e-5).sum()) for p in probs.values())
    summary = report["summary"]
    assert recorded["val_mean_accuracy"] == pytest.approx(summary["mean_accuracy"], abs=flippable / (64 * 3) + 1e-12)
    if not flippable:
        assert recorded["val_mean_balanced_accuracy"] == pytest.approx(summary["mean_balanced_accuracy"], abs=1e-12)
    assert recorded["val_loss"] == pytest.approx(report["loss"], rel=1e-5)


def test_an_empty_split_names_the_splits_that_have_rows(tmp_path):
    store = _store(tmp_path)  # official train and val partitions, no test partition
    run = _train(tmp_path, store, epochs=1)
    with pytest.raises(FacelabError, match=r"the test split .* is empty; choose --split train or --split val or --split all"):
        evaluate_run(run, store.path, split="test", out_dir=tmp_path / "eval")
