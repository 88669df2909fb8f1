"""Pretrain a classifier's backbone without labels on one or more stores: config -> ordinary run folder.

The objective is a registered unlabelled one (:data:`facelab.train.objectives.OBJECTIVES`, e.g. ``simclr``);
the loop is the one :class:`~facelab.train.trainer.Trainer`. The run's checkpoint is a facelab checkpoint of
kind ``encoder`` that ``facelab train TARGET --pretrained RUN`` fine-tunes (head reset, projector left out).

Leakage rule: rows of a store's official ``val`` and ``test`` partitions never enter pretraining, so a
classifier fine-tuned and scored on those partitions has not seen their images, even without labels. Stores
without official partitions give every row. The pretraining's own validation rows (for monitoring and early
stopping) are a small identity-disjoint share of the pretraining rows of each store.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field, model_validator

from facelab.config import StrictConfig, overlay
from facelab.data.loader import BatchLoader
from facelab.data.preprocessing import Preprocessing
from facelab.data.schema import Partition
from facelab.data.store import Store
from facelab.data.union import StoreUnion
from facelab.data.views import split
from facelab.errors import ConfigError
from facelab.eval.plots import plot_curves
from facelab.models.classifiers import create_classifier, list_classifiers
from facelab.report import render_report
from facelab.runs.inputs import RunInput, check_inputs, store_input
from facelab.runs.splits import load_pretrain_splits, save_pretrain_splits
from facelab.runs.summary import PretrainSummary, write_summary
from facelab.train.distributed import Distributed
from facelab.train.objectives import objective_spec
from facelab.train.trainer import Callback, Trainer, TrainerConfig
from facelab.utils.device import resolve_device

HELD_OUT = (Partition.VAL, Partition.TEST)  # official partitions that never enter pretraining


def default_pretrain_trainer() -> dict[str, Any]:
    return {"epochs": 30, "optim": {"lr": 1e-3, "weight_decay": 1e-4}}


class PretrainConfig(StrictConfig):
    """Everything a pretraining run needs; saved as config.yaml in the run folder."""

    stores: list[str] = Field(min_length=1)  # one image size and alignment (checked)
    objective: str = "simclr"  # an unlabelled objective of facelab.train.objectives
    objective_kwargs: dict[str, Any] = Field(default_factory=dict)  # e.g. {temperature: 0.2}
    model: str = "vgg_scratch"
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    batch_size: int = Field(256, ge=2)  # NT-Xent contrasts each view with the 2B - 2 views of other images
    val_fraction: float = Field(0.05, gt=0, lt=0.5)  # share of each store's pretraining rows held out
    val_max_rows: int = Field(2048, ge=2)  # at most this many held-out rows in all (validation stays cheap)
    train_limit: int | None = Field(None, ge=2)  # use at most this many training rows (quick runs)
    device: str = "auto"
    seed: int = 0
    trainer: TrainerConfig

    @model_validator(mode="before")
    @classmethod
    def _trainer_over_defaults(cls, data: Any) -> Any:
        """The trainer's defaults, monitoring the objective's own validation metric unless told otherwise."""
        if not isinstance(data, dict) or isinstance(data.get("trainer"), TrainerConfig):
            return data
        defaults = default_pretrain_trainer()
        spec = _spec_or_none(data.get("objective", "simclr"))
        if spec is not None:
            defaults = overlay(defaults, {**spec.trainer_defaults, "monitor": spec.monitor,
                                          "monitor_mode": spec.monitor_mode})
        return {**data, "trainer": overlay(defaults, data.get("trainer") or {})}


def _spec_or_none(name: Any):
    try:
        return objective_spec(str(name), labelled=False)
    except ConfigError:
        return None  # reported by check_pretrain_config with the list of objectives


def pretrain_rows(cfg: PretrainConfig, stores: list[Store]) -> tuple[list[dict[str, np.ndarray]], str]:
    """Each store's train/val rows for pretraining and a sentence saying how they were chosen.

    Official val/test rows are left out; ``val_fraction`` (at most ``val_max_rows`` in all) of the rest is
    held out per store, identity-disjoint; ``train_limit`` then keeps that many random training rows.
    """
    candidates = [_pretraining_candidates(s) for s in stores]
    total = sum(c.size for c in candidates)
    share = min(cfg.val_fraction, cfg.val_max_rows / max(total, 1))
    out, notes = [], []
    for s, rows in zip(stores, candidates):
        held = split(s, indices=rows, fractions=(1 - share, share, 0.0), seed=cfg.seed)
        out.append({"train": held["train"], "val": held["val"]})
        left = len(s) - rows.size
        notes.append(f"{s.path.name}: {rows.size} rows" + (f" (its official val/test partitions, {left} rows, left "
                                                           "out: they never enter pretraining)" if left else
                                                           " (no official val/test partitions)"))
    people = ", identity-disjoint" if any(s.has_identities for s in stores) else ""
    how = "; ".join(notes) + f"; val: {share:.1%} of each store's rows held out (seed {cfg.seed}{people})"
    n_train = sum(r["train"].size for r in out)
    if cfg.train_limit and cfg.train_limit < n_train:
        out = _limit_train(out, cfg.train_limit, cfg.seed)
        how += f"; train: {cfg.train_limit} random rows of it (seed {cfg.seed})"
    return out, how


def _pretraining_candidates(store: Store) -> np.ndarray:
    """The rows of ``store`` that may enter pretraining: all but its official val/test partitions."""
    rows = np.arange(len(store), dtype=np.int64)
    if not store.has_partitions:
        return rows
    return rows[~np.isin(store.partitions, [int(p) for p in HELD_OUT])]


def _limit_train(rows: list[dict[str, np.ndarray]], limit: int, seed: int) -> list[dict[str, np.ndarray]]:
    """``limit`` random training rows over all stores together (seeded), val rows unchanged."""
    tagged = np.concatenate([np.stack([np.full(r["train"].size, k), r["train"]], 1) for k, r in enumerate(rows)])
    kept = tagged[np.random.default_rng(seed).permutation(len(tagged))[:limit]]  # (limit, 2): store, row
    return [{"train": np.sort(kept[kept[:, 0] == k, 1]), "val": r["val"]} for k, r in enumerate(rows)]


def _union_rows(union: StoreUnion, rows: list[dict[str, np.ndarray]], name: str) -> np.ndarray:
    return np.concatenate([union.to_union(k, r[name]) for k, r in enumerate(rows)])


def check_rows(cfg: PretrainConfig, rows: list[dict[str, np.ndarray]], *, processes: int = 1) -> None:
    """At least one training step (``processes`` x the batch) and two held-out rows (a contrast needs another
    image)."""
    n_train, n_val = (sum(r[k].size for r in rows) for k in ("train", "val"))
    if n_train < cfg.batch_size * processes:
        of = f"{processes} processes x --batch-size {cfg.batch_size}" if processes > 1 else f"{cfg.batch_size}"
        raise ConfigError(f"pretraining has {n_train} training rows, fewer than one batch of {of}: lower "
                          f"--batch-size (at most {n_train // processes}) or add stores")
    if n_val < 2:
        raise ConfigError(f"pretraining holds out {n_val} validation rows; it needs at least 2: raise "
                          f"-o val_fraction (now {cfg.val_fraction}) or add rows")


def check_pretrain_config(cfg: PretrainConfig, *, processes: int = 1) -> None:
    """What can be checked before a run folder is made: objective and its options, model, device, the
    stores (one image size and alignment), and enough rows for ``processes`` training together."""
    spec = objective_spec(cfg.objective, labelled=False)
    options = spec.parse_options(cfg.objective, cfg.objective_kwargs)
    if cfg.model not in list_classifiers():
        raise ConfigError(f"unknown classifier {cfg.model!r}; known classifiers: {', '.join(list_classifiers())}")
    resolve_device(cfg.device)
    union = StoreUnion.open(cfg.stores)
    if spec.check is not None:
        pc = create_classifier(cfg.model, num_outputs=0, image_size=union.image_size, **cfg.model_kwargs).pretrained_cfg
        spec.check(options, Preprocessing.of_stores(union.stores, mean=pc.mean, std=pc.std))
    check_rows(cfg, pretrain_rows(cfg, union.stores)[0], processes=processes)


def _run_rows(cfg: PretrainConfig, union: StoreUnion, run_dir: Path, *, resume: bool):
    recorded = load_pretrain_splits(run_dir, union.stores) if resume else None
    if recorded is not None:
        return recorded
    rows, how = pretrain_rows(cfg, union.stores)
    save_pretrain_splits(run_dir, union.stores, rows, how=how)
    return rows, how


def make_loaders(cfg: PretrainConfig, union: StoreUnion, rows: list[dict[str, np.ndarray]],
                 device: torch.device, dist: Distributed | None = None) -> tuple[BatchLoader, BatchLoader]:
    """Loaders of images in [0, 1] without labels (the objective makes and normalises its views); the training
    one serves this process's share of every step."""
    dist = dist or Distributed()
    common = dict(labels=[], mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), device=device,
                  channels_last=cfg.trainer.channels_last)
    train = BatchLoader(union, _union_rows(union, rows, "train"), batch_size=cfg.batch_size, shuffle=True,
                        seed=cfg.seed, drop_last=True, rank=dist.rank, world_size=dist.world_size, **common)
    val = BatchLoader(union, _union_rows(union, rows, "val"), batch_size=cfg.batch_size, shuffle=False, **common)
    return train, val


def run_inputs(cfg: PretrainConfig, union: StoreUnion, options: StrictConfig) -> list[RunInput]:
    """What a pretraining run reads besides its config, as it is now: its stores and what its objective reads
    (a distillation's teachers)."""
    spec = objective_spec(cfg.objective, labelled=False)
    extra = spec.inputs(options) if spec.inputs is not None else []
    return [*(store_input(s, f"store:{k}") for k, s in enumerate(union.stores)), *extra]


def pretrain(cfg: PretrainConfig, *, run_dir: str | Path, resume: bool = False,
             callbacks: list[Callback] | None = None, dist: Distributed | None = None,
             accept_changed_inputs: bool = False) -> dict[str, Any]:
    """Pretrain (or resume) in ``run_dir``; returns the summary written to summary.json (and the report path).

    The rows are written once to ``run_dir/pretrain_splits.json`` (by rank 0) and read back on resume. With
    ``dist`` (a torchrun launch), ``cfg.batch_size`` is each process's share of a step, the objective compares
    views across all processes (SimCLR's negatives come from the whole step), and rank 0 alone writes.

    ``accept_changed_inputs``: resume even though a store, a teacher or a config file changed since the run
    recorded it (:mod:`facelab.runs.inputs`); the acceptance is recorded in the run.

    Raises:
        ConfigError: an unknown or labelled objective, bad options, stores of other sizes or alignments, too
            few rows.
        ChangedInputError: resuming with an input that changed, without ``accept_changed_inputs``.
    """
    run_dir, dist = Path(run_dir), dist or Distributed()
    torch.manual_seed(cfg.seed)
    spec = objective_spec(cfg.objective, labelled=False)
    options = spec.parse_options(cfg.objective, cfg.objective_kwargs)
    union = StoreUnion.open(cfg.stores)
    check_inputs(run_dir, run_inputs(cfg, union, options), accept=accept_changed_inputs, doing="resume",
                 adopt=True, command="pretrain --resume" if resume else "pretrain", write=dist.is_main)
    device = dist.device if dist.active else resolve_device(cfg.device)
    recorded = _run_rows(cfg, union, run_dir, resume=resume) if dist.is_main else None
    rows, how = dist.broadcast(recorded)  # rank 0 records them once; the others train on what it recorded
    check_rows(cfg, rows, processes=dist.world_size)
    encoder = create_classifier(cfg.model, num_outputs=0, image_size=union.image_size, **cfg.model_kwargs)
    pc = encoder.pretrained_cfg
    preprocessing = Preprocessing.of_stores(union.stores, mean=pc.mean, std=pc.std)
    obj = spec.factory(encoder, options=options, preprocessing=preprocessing, config=cfg.model_dump(mode="json"))
    train_loader, val_loader = make_loaders(cfg, union, rows, device, dist)
    trainer = Trainer(obj, train_loader, val_loader, config=cfg.trainer, run_dir=run_dir, device=device,
                      callbacks=list(callbacks or []), dist=dist)
    t0 = time.monotonic()
    result = trainer.fit(resume=resume)
    final = trainer.history[-1] if trainer.history else {}
    summary = PretrainSummary(
        run_dir=str(run_dir), model=cfg.model, params=sum(p.numel() for p in obj.model.parameters()),
        stores=[str(s.path) for s in union.stores], objective=cfg.objective,
        objective_kwargs=options.model_dump(mode="json"),
        excluded_rows={str(s.path): int(len(s) - _pretraining_candidates(s).size) for s in union.stores},
        train_rows=int(train_loader.num_items), val_rows=int(val_loader.num_items), device=str(device),
        **result, fit_seconds=round(time.monotonic() - t0, 2), final=final, splits=how,
        images_per_s=final.get("train_images_per_s"), processes=dist.world_size,
    )
    if not dist.is_main:
        return summary.to_dict()
    plot_curves(run_dir / "curves.png", trainer.history)
    write_summary(run_dir, summary)
    return {**summary.to_dict(), "report": str(render_report(run_dir))}
