"""Classification Accuracy Score (Ravuri & Vinyals 2019): train on generated images only, test on real ones.

``n_train`` samples of a conditional generator, labelled by the condition they were drawn with, train a
classifier recipe; the same recipe trained on as many real training images is the reference. Both pick their
best epoch on the same real validation rows and are tested on the same real test rows: the rows the generator
run recorded (splits.json) when the data is its own store. See docs/metrics.md.

Everything lands in the CAS run folder: the two classifier runs and cas.json. The two training stores are
scratch data in a folder made fresh by this call inside it, and only that folder is removed at the end.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from facelab.config import StrictConfig
from facelab.data.schema import LabelSpec, Partition
from facelab.data.store import Store
from facelab.data.write import write_store_arrays
from facelab.errors import FacelabError
from facelab.eval.features import images_to_uint8
from facelab.eval.generative_metrics import (
    check_same_data,
    condition_labels,
    generate,
    generator_splits,
    load_generator,
    metric_name,
    named_conditions,
)
from facelab.eval.inference import predict_rows
from facelab.eval.metrics import label_metrics
from facelab.models.checkpoint import CheckpointMeta
from facelab.models.loading import load_model
from facelab.train.classifier import ClassifierConfig, train_classifier
from facelab.utils.io import atomic_write_json

#: the two classifier runs inside a CAS folder
RUNS = ("classifier-generated", "classifier-real")


class CasConfig(StrictConfig):
    """What ``facelab metrics cas`` measured (saved as the CAS folder's config.yaml)."""

    generator: str
    data: str
    label: str
    n_train: int = 10000
    epochs: int = 5
    device: str = "cpu"


def _training_store(path: Path, images: np.ndarray, labels: np.ndarray, val: tuple[np.ndarray, np.ndarray],
                    specs: list[LabelSpec], source: str, crop: Any) -> Store:
    """A store with ``images`` as TRAIN and the real validation rows as VAL (early stopping on real data)."""
    parts = np.r_[np.full(len(images), int(Partition.TRAIN)), np.full(len(val[0]), int(Partition.VAL))]
    return write_store_arrays(path, np.concatenate([images, val[0]]), np.concatenate([labels, val[1]]), specs, parts,
                              source=source, crop=crop)


def _train_and_test(train_store: Store, run_dir: Path, cfg_kwargs: dict[str, Any], test: tuple[Store, np.ndarray],
                    label: str, device: str | torch.device) -> dict[str, float]:
    """Train the recipe on ``train_store`` (official split) and score it on the real test rows."""
    options = {"store": str(train_store.path), "labels": [label], "split": "official", **cfg_kwargs}
    cfg = ClassifierConfig.from_dict(options, where="CAS classifier config")
    train_classifier(cfg, run_dir=run_dir)
    model, meta = load_model(run_dir, kind="classifier", device=device)
    store, rows = test
    probs, y, _ = predict_rows(model, meta, store, rows, device=device, prefetch=0)
    return label_metrics(y[:, 0], probs[label])


def _cas_stores(gen: nn.Module, meta: CheckpointMeta, store: Store, splits: dict[str, np.ndarray], folder: Path, *,
                n_train: int, max_val: int, seed: int) -> tuple[Store, Store]:
    """(generated training store, real training store) in ``folder``, both with the same real validation rows.

    Generated images take the condition vectors of random real training rows (with replacement) and are
    labelled by them; the real store holds up to ``n_train`` real training rows (without replacement).
    """
    rng = np.random.default_rng(seed)
    gen_labels = condition_labels(gen, store, rng.choice(splits["train"], size=n_train))  # (n_train, n_conds)
    fake = np.concatenate([images_to_uint8(x) for x in generate(gen, n_train, gen_labels, batch_size=256, seed=seed)])
    real_rows = np.sort(rng.permutation(splits["train"])[:n_train])
    val_rows = np.sort(rng.permutation(splits["val"])[:max_val])
    specs = [store.spec(c.name) for c in gen.config.conditions]
    val = (np.asarray(store.images[val_rows]), condition_labels(gen, store, val_rows))
    crop = store.manifest.crop
    fake_store = _training_store(folder / "generated", fake, gen_labels, val, specs, f"generated-{meta.arch}", crop)
    real_store = _training_store(folder / "real", np.asarray(store.images[real_rows]),
                                condition_labels(gen, store, real_rows), val, specs, store.source, crop)
    return fake_store, real_store


def classification_accuracy_score(gen_run: str | Path, *, data: str | Path, label: str, run_dir: str | Path,
                                  n_train: int = 10000, epochs: int = 5, batch_size: int = 128,
                                  model: str = "vgg_scratch", model_kwargs: dict[str, Any] | None = None,
                                  trainer: dict[str, Any] | None = None, max_val: int = 2000,
                                  device: str | torch.device = "cpu", seed: int = 0,
                                  keep_stores: bool = False) -> dict[str, Any]:
    """CAS of a generator conditioned on ``label``, next to the real-data accuracy of the same recipe.

    Args:
        gen_run: a generative run conditioned on ``label``.
        data: the real store (the generator's own store keeps the rows the generator run recorded).
        label: the condition to classify.
        run_dir: the CAS folder (new or empty): the two classifier runs and cas.json go there.
        n_train: generated (and real) training images.
        epochs: training epochs of both classifiers.
        batch_size: training batch size (capped at the training set size).
        model: classifier architecture; model_kwargs: its options.
        trainer: TrainerConfig overrides (default: ``epochs``, monitor val_mean_accuracy, no progress bar).
        max_val: real validation rows used for model selection.
        device: where generation and training run.
        seed: seeds the generated samples, the drawn rows and training.
        keep_stores: keep the generated/real training stores (their folder is named in the result).

    Returns:
        {"cas", "real_accuracy", balanced accuracies, "majority_accuracy", "metrics" with exact names, ...}.

    Raises:
        FacelabError: bad counts, a generator not conditioned on ``label``, data of another source, missing
            splits, or a ``run_dir`` that already holds CAS classifier runs (nothing is overwritten).
    """
    if n_train < 2 or epochs < 1 or max_val < 1:
        raise FacelabError(f"CAS needs n_train >= 2, epochs >= 1 and max_val >= 1; got {n_train}, {epochs}, {max_val}")
    run_dir = Path(run_dir)
    taken = [name for name in RUNS if (run_dir / name).exists()]
    if taken:
        raise FacelabError(f"{run_dir} already holds {', '.join(taken)} from an earlier CAS; use a new folder")
    gen, meta = load_generator(gen_run, device=device)
    store = Store.open(data)
    conds = named_conditions(gen, f"generator {gen_run}")
    if label not in [c.name for c in conds]:
        raise FacelabError(f"generator {gen_run} is not conditioned on {label!r}; "
                           f"its conditions: {', '.join(c.name for c in conds)}")
    warns = check_same_data(f"generator {gen_run}", meta.preprocessing, store)
    splits, how, more = generator_splits(meta, store, need_test=True, seed=seed)
    if splits["train"].size < 2 or splits["test"].size == 0 or splits["val"].size == 0:
        raise FacelabError(f"{store.path}: CAS needs train, val and test rows; {how} has "
                           f"{', '.join(f'{k} {v.size}' for k, v in splits.items())}")
    run_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="cas-stores-", dir=run_dir))  # made by this call: only it is removed
    try:
        fake_store, real_store = _cas_stores(gen, meta, store, splits, scratch, n_train=n_train, max_val=max_val,
                                             seed=seed)
        n_real = int((real_store.partitions == Partition.TRAIN).sum())
        n_val = int((real_store.partitions == Partition.VAL).sum())
        tcfg = {"epochs": epochs, "monitor": "val_mean_accuracy", "monitor_mode": "max", "progress": False,
                **(trainer or {})}
        cfg_kwargs = {"model": model, "model_kwargs": dict(model_kwargs or {}), "device": str(device), "seed": seed,
                      "batch_size": max(1, min(batch_size, n_train, n_real)), "trainer": tcfg}
        test = (store, splits["test"])
        on_fake = _train_and_test(fake_store, run_dir / RUNS[0], cfg_kwargs, test, label, device)
        on_real = _train_and_test(real_store, run_dir / RUNS[1], cfg_kwargs, test, label, device)
    finally:
        if not keep_stores:
            shutil.rmtree(scratch, ignore_errors=True)
    recipe = f"{model}-{label}"
    names = {"cas": metric_name("cas", n_train, "test", recipe), "real": metric_name("realacc", n_real, "test", recipe)}
    if n_real < n_train:
        warns.append(f"only {n_real} real training rows exist: the real-data reference used {n_real}, not {n_train}")
    result = {
        "metrics": {names["cas"]: on_fake["accuracy"], names["real"]: on_real["accuracy"]}, "metric_names": names,
        "cas": on_fake["accuracy"], "real_accuracy": on_real["accuracy"],
        "cas_balanced_accuracy": on_fake["balanced_accuracy"], "real_balanced_accuracy": on_real["balanced_accuracy"],
        "majority_accuracy": on_fake["majority_accuracy"], "label": label, "classifier": model, "epochs": epochs,
        "n_train": n_train, "n_real_train": n_real, "n_val": n_val,
        "n_test": int(splits["test"].size), "rows": how, "generator": str(gen_run), "generator_arch": meta.arch,
        "data": str(store.path), "seed": seed, "run_dir": str(run_dir), "warnings": warns + more,
        "stores": str(scratch) if keep_stores else None,
    }
    atomic_write_json(run_dir / "cas.json", result)
    return result
