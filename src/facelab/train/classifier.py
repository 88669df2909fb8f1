"""Train an attribute classifier on a store: config -> run folder with checkpoints, metrics and plots."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator

from facelab.config import StrictConfig, overlay
from facelab.data.store import Store
from facelab.errors import ConfigError
from facelab.eval.classification import evaluate_model
from facelab.models.classifiers.heads import (
    Task,
    class_weights_from_labels,
    head_bias_from_labels,
    pos_weight_from_labels,
    task_loss,
)
from facelab.train.checkpoint import CheckpointMeta
from facelab.train.trainer import Callback, StepOutput, Trainer, TrainerConfig


def default_trainer_config() -> TrainerConfig:
    return TrainerConfig(epochs=20, monitor="val_mean_accuracy", monitor_mode="max")


class ClassifierConfig(StrictConfig):
    """Everything a classifier run needs; saved as config.yaml in the run folder."""

    store: str
    labels: list[str] | None = None  # None: every binary/categorical label of the store
    split: Literal["auto", "official", "random"] = "auto"
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    model: str = "vgg_scratch"
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    pretrained: str | None = None  # torchvision-format file or facelab checkpoint
    freeze_backbone: bool = False
    unfreeze_at_epoch: int | None = Field(None, ge=0)
    backbone_lr_scale: float = Field(0.1, gt=0, le=1)
    batch_size: int = Field(64, ge=1)  # the CelebA figures in docs/results.md use this default recipe
    augment: str = "geometric"  # preset of facelab.data.augment (flip + small affine: +1% on CelebA over flip)
    random_erasing: float = Field(0.0, ge=0, le=1)
    balance: Literal["none", "class_weights", "sampler"] = "none"
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    mixup_alpha: float = Field(0.0, ge=0)  # mixup (Zhang et al. 2018) with lambda ~ Beta(a, a); 0: off
    tta_flip: bool = False
    train_limit: int | None = Field(None, ge=1)  # use at most this many training rows (quick runs)
    # train on the photos of this many randomly chosen training people only (all of their photos): fewer
    # people, not fewer photos per person, which is what limits CelebA attributes (docs/results.md)
    train_identities: int | None = Field(None, ge=1)
    device: str = "auto"
    seed: int = 0
    trainer: TrainerConfig = Field(default_factory=default_trainer_config)

    @field_validator("trainer", mode="before")
    @classmethod
    def _trainer_over_defaults(cls, v: Any) -> Any:
        return overlay(default_trainer_config().model_dump(), v)  # {epochs: 2} keeps the classifier's monitor


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; anything else is passed to torch.device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class ClassifierObjective:
    """Task loss of a classifier; evaluation = per-label metrics averaged over labels."""

    def __init__(self, model: torch.nn.Module, task: Task, *, cfg: ClassifierConfig, store: Store,
                 pos_weight: torch.Tensor | None = None, class_weights: dict[str, torch.Tensor] | None = None,
                 label_priors: dict[str, list[float]] | None = None) -> None:
        self.model, self.task, self.cfg, self.store = model, task, cfg, store
        self.pos_weight, self.class_weights = pos_weight, class_weights
        #: class frequencies of the training rows, which the model's probabilities carry (eval --adapt-priors)
        self.label_priors = label_priors or {}
        self.lr_groups: list[dict[str, Any]] | None = None

    def parameter_groups(self) -> dict[str, Any]:
        return {"model": self.lr_groups or list(self.model.parameters())}

    def step_schedule(self) -> list[tuple[str, int]]:
        return [("model", 1)]

    def loss(self, group: str, batch: Any) -> StepOutput:
        alpha = self.cfg.mixup_alpha
        if alpha > 0 and self.model.training:
            return self._mixup_loss(batch, alpha)
        logits = self.model(batch.x)  # (B, num_logits)
        loss = self._task_loss(logits, batch.y)
        return StepOutput(loss, {"loss": float(loss.detach())})

    def _task_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return task_loss(logits, y, self.task, pos_weight=self.pos_weight, class_weights=self.class_weights,
                         label_smoothing=self.cfg.label_smoothing)

    def _mixup_loss(self, batch: Any, alpha: float) -> StepOutput:
        """Mixup: the batch mixed with a shuffled copy of itself by ``lam ~ Beta(alpha, alpha)``; the loss is
        the same mix of the losses against both label sets, so unknown labels (-1) and class weights keep
        working. Drawn from torch's global generator, which checkpoints save: resume stays exact."""
        lam = float(torch.distributions.Beta(alpha, alpha).sample())
        perm = torch.randperm(batch.x.shape[0]).to(batch.x.device)
        logits = self.model(lam * batch.x + (1 - lam) * batch.x[perm])  # (B, num_logits)
        loss = lam * self._task_loss(logits, batch.y) + (1 - lam) * self._task_loss(logits, batch.y[perm])
        return StepOutput(loss, {"loss": float(loss.detach()), "mixup_lambda": lam})

    def evaluate(self, loader: Any, *, model: torch.nn.Module | None = None) -> dict[str, float]:
        return evaluate_model(model or self.model, loader, self.task, tta_flip=self.cfg.tta_flip)

    def checkpoint_meta(self) -> CheckpointMeta:
        m = self.model
        specs = {s.name: s for s in self.store.label_specs}
        return CheckpointMeta(
            kind="classifier",
            arch=self.cfg.model,
            arch_kwargs={**getattr(m, "arch_kwargs", {}), **self.cfg.model_kwargs, "num_outputs": self.task.num_logits,
                         "image_size": self.store.image_size},
            labels=[specs[n].to_dict() for n in self.task.names],
            preprocessing=preprocessing_of(m, self.store),
            config={**self.cfg.model_dump(mode="json"), "task": self.task.to_dict()},
            label_priors=self.label_priors,
        )


def preprocessing_of(model: torch.nn.Module, store: Store) -> dict[str, Any]:
    """What inference must do to an image so the model sees what it saw in training."""
    cfg = model.pretrained_cfg
    return {
        "image_size": store.image_size,
        "crop": store.manifest.get("crop"),
        "source": store.source,
        "mean": list(cfg.mean),
        "std": list(cfg.std),
        "store_hash": store.content_hash,
    }


class UnfreezeCallback(Callback):
    """Unfreeze the backbone at ``epoch`` with ``lr_scale`` times the base learning rate."""

    def __init__(self, epoch: int, lr_scale: float) -> None:
        self.at, self.lr_scale = epoch, lr_scale

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        if epoch == self.at and not trainer.batches_done:
            self.unfreeze(trainer)

    def on_resume(self, trainer: Trainer, state: dict[str, Any]) -> None:
        """A run killed after the unfreeze resumes unfrozen, with the backbone group its optimizer state has."""
        if state["epoch"] > self.at or (state["epoch"] == self.at and state["batches_done"]):
            self.unfreeze(trainer)

    def unfreeze(self, trainer: Trainer) -> None:
        """Make the backbone trainable and add it to the optimizer at ``lr_scale`` times the base lr."""
        from facelab.models.classifiers.transfer import unfreeze

        groups = unfreeze(trainer.model, lr_scale=self.lr_scale)
        opt = trainer.optimizers["model"]
        base = trainer.base_lrs["model"][0]
        have = {id(p) for g in opt.param_groups for p in g["params"]}
        for g in groups:
            params = [p for p in g["params"] if id(p) not in have]
            if params:
                opt.add_param_group({**g, "params": params, "lr": base * g.get("lr_scale", self.lr_scale)})
                trainer.base_lrs["model"].append(base * g.get("lr_scale", self.lr_scale))


def build_task(store: Store, labels: list[str] | None) -> Task:
    try:
        return Task.from_labels(store.label_specs, labels)
    except ConfigError as e:
        raise ConfigError(f"{store.path}: {e}") from None


def check_config(cfg: ClassifierConfig) -> Task:
    """What can be checked before a run folder is made: the store opens, the model and the labels exist."""
    from facelab.models.classifiers import list_classifiers

    if cfg.model not in list_classifiers():
        raise ConfigError(f"unknown classifier {cfg.model!r}; known classifiers: {', '.join(list_classifiers())}")
    store = Store.open(cfg.store)
    task = build_task(store, cfg.labels)
    if cfg.train_identities:
        make_splits(cfg, store, task)  # enough people in the training split, identities recorded
    return task


def _training_labels(store: Store, rows: np.ndarray, task: Task) -> torch.Tensor:
    cols = [store.label_index(n) for n in task.names]
    return torch.from_numpy(store.labels[rows][:, cols].astype(np.int64))


def balanced_sample_weights(y: np.ndarray) -> np.ndarray:
    """Per-row weights inversely proportional to the frequency of the row's joint label combination."""
    _, inverse, counts = np.unique(y, axis=0, return_inverse=True, return_counts=True)
    w = 1.0 / counts[inverse.ravel()]
    return w / w.sum()


def make_splits(cfg: ClassifierConfig, store: Store, task: Task) -> dict[str, np.ndarray]:
    """Train/val/test rows: official partitions or a seeded stratified split (identities kept apart)."""
    from facelab.data.views import splits_for

    from facelab.data.views import split

    stratify = list(task.names)[:1]
    splits = splits_for(store, policy=cfg.split, fractions=cfg.split_fractions, seed=cfg.seed, stratify=stratify)
    if splits["val"].size == 0 and splits["train"].size >= 20:
        # official partitions without a validation set (CIFAR-10: train/test): hold out a stratified,
        # identity-disjoint share of train for model selection, never the test rows
        share = cfg.split_fractions[1] / (cfg.split_fractions[0] + cfg.split_fractions[1]) or 0.1
        held = split(store, indices=splits["train"], fractions=(1 - share, share, 0.0), seed=cfg.seed, stratify=stratify)
        splits = {**splits, "train": held["train"], "val": held["val"]}
    if cfg.train_identities:
        splits = {**splits, "train": _rows_of_people(store, splits["train"], cfg.train_identities, cfg.seed)}
    if cfg.train_limit:
        rows = np.random.default_rng(cfg.seed).permutation(splits["train"])[: cfg.train_limit]
        splits = {**splits, "train": np.sort(rows)}
    return splits


def _people(store: Store, rows: np.ndarray) -> np.ndarray:
    """The distinct known identities of ``rows``."""
    from facelab.data.schema import NO_IDENTITY

    ids = store.identities[rows]
    return np.unique(ids[ids != NO_IDENTITY])


def _rows_of_people(store: Store, rows: np.ndarray, n: int, seed: int) -> np.ndarray:
    """The ``rows`` of ``n`` people drawn at random (seeded) from those in ``rows``, all of their photos;
    rows of unknown identity are left out."""
    if not store.has_identities:
        raise ConfigError(f"train_identities={n}: {store.path} records no identities; use train_limit instead")
    people = _people(store, rows)
    if n > len(people):
        raise ConfigError(f"train_identities={n}: the training split holds {len(people)} people")
    kept = np.random.default_rng(seed).choice(people, size=n, replace=False)
    return np.sort(rows[np.isin(store.identities[rows], kept)])


def make_loaders(cfg: ClassifierConfig, store: Store, task: Task, splits: dict[str, np.ndarray],
                 device: torch.device, mean, std, *, extra: tuple[np.ndarray, np.ndarray] | None = None):
    """Train and validation loaders; ``extra`` = synthetic (images, task labels) appended to training only."""
    from facelab.data.augment import BatchAugment
    from facelab.data.loader import BatchLoader

    train_rows = splits["train"]
    overrides = {"random_erasing": {"p": cfg.random_erasing}} if cfg.random_erasing else {}
    specs = {s.name: s for s in store.label_specs}
    augment = BatchAugment.from_preset(cfg.augment, label_specs=[specs[n] for n in task.names], **overrides)
    weights = None
    if cfg.balance == "sampler":
        y = _training_labels(store, train_rows, task).numpy()
        if extra is not None:
            y = np.concatenate([y, extra[1]])
        weights = balanced_sample_weights(y)
    common = dict(labels=list(task.names), mean=mean, std=std, device=device,
                  channels_last=cfg.trainer.channels_last)
    train = BatchLoader(store, train_rows, batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed, drop_last=True,
                        augment=augment, sampler_weights=weights, extra=extra, **common)
    val = BatchLoader(store, splits["val"], batch_size=max(256, cfg.batch_size), shuffle=False, **common)
    return train, val


def build_classifier(cfg: ClassifierConfig, store: Store, task: Task,
                     train_y: torch.Tensor) -> tuple[torch.nn.Module, str | None]:
    """Create the model, load pretrained weights, freeze, initialise the head bias with label priors.

    Returns: (model, what the pretrained loading did, or None without ``cfg.pretrained``).
    """
    from facelab.models.classifiers import create_classifier
    from facelab.models.classifiers.transfer import freeze_backbone, load_pretrained

    model = create_classifier(cfg.model, num_outputs=task.num_logits, image_size=store.image_size, **cfg.model_kwargs)
    loaded = None
    if cfg.pretrained is not None:
        loaded = load_pretrained(model, cfg.pretrained).summary()
    else:
        with torch.no_grad():
            model.fc.bias.copy_(head_bias_from_labels(train_y, task))
    if cfg.freeze_backbone:
        freeze_backbone(model)
    return model, loaded


def train_classifier(cfg: ClassifierConfig, *, run_dir: str | Path, resume: bool = False,
                     callbacks: list[Callback] | None = None, splits: dict[str, np.ndarray] | None = None,
                     extra: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
    """Train (or resume) a classifier run in ``run_dir``; returns the summary written to summary.json.

    Args:
        splits: train/val(/test) store rows to use instead of the config's split policy (experiments).
        extra: synthetic training rows (images (M, S, S, 3) uint8, labels (M, num task labels)); tagged
            synthetic by the loader, never used for validation.
    """
    from facelab.eval.label_shift import label_priors
    from facelab.eval.plots import plot_curves
    from facelab.utils.io import atomic_write_json

    run_dir = Path(run_dir)
    torch.manual_seed(cfg.seed)
    store = Store.open(cfg.store)
    task = build_task(store, cfg.labels)
    device = resolve_device(cfg.device)
    splits = splits if splits is not None else make_splits(cfg, store, task)
    train_y = _training_labels(store, splits["train"], task)
    if extra is not None:
        train_y = torch.cat([train_y, torch.from_numpy(np.asarray(extra[1], dtype=np.int64))])
    model, loaded = build_classifier(cfg, store, task, train_y)
    pc = model.pretrained_cfg
    train_loader, val_loader = make_loaders(cfg, store, task, splits, device, pc.mean, pc.std, extra=extra)
    pos_w = class_w = None
    if cfg.balance == "class_weights":
        pos_w = pos_weight_from_labels(train_y, task) if task.binary_index[0] else None
        class_w = class_weights_from_labels(train_y, task) or None
    obj = ClassifierObjective(model, task, cfg=cfg, store=store, pos_weight=pos_w, class_weights=class_w,
                              label_priors=label_priors(train_y.numpy(), task))
    cbs = list(callbacks or [])
    if cfg.freeze_backbone and cfg.unfreeze_at_epoch is not None:
        cbs.append(UnfreezeCallback(cfg.unfreeze_at_epoch, cfg.backbone_lr_scale))
    trainer = Trainer(obj, train_loader, val_loader, config=cfg.trainer, run_dir=run_dir, device=device, callbacks=cbs)
    t0 = time.monotonic()
    result = trainer.fit(resume=resume)
    plot_curves(run_dir / "curves.png", trainer.history)
    summary = {
        "kind": "classifier", "run_dir": str(run_dir), "model": cfg.model, "labels": list(task.names),
        "params": sum(p.numel() for p in model.parameters()),
        "train_rows": int(len(splits["train"])), "synthetic_rows": 0 if extra is None else int(len(extra[0])),
        **({"train_identities": len(_people(store, splits["train"]))} if store.has_identities else {}),
        "val_rows": int(len(splits["val"])),
        "test_rows": int(len(splits.get("test", []))), "device": str(device),
        **({"pretrained": loaded} if loaded else {}),
        **result, "fit_seconds": round(time.monotonic() - t0, 2),
        "final": trainer.history[-1] if trainer.history else {},
    }
    atomic_write_json(run_dir / "summary.json", summary)
    from facelab.report import render_report

    summary["report"] = str(render_report(run_dir))
    return summary

