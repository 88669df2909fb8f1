"""Train an attribute classifier on a store: config -> run folder with splits, checkpoints, metrics and plots."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator

from facelab.config import StrictConfig, overlay
from facelab.data.augment import BatchAugment
from facelab.data.labels_file import LabelsFile, open_store
from facelab.data.loader import BatchLoader
from facelab.data.preprocessing import Preprocessing
from facelab.data.schema import NO_IDENTITY, LabelKind
from facelab.data.store import Store
from facelab.data.views import run_splits
from facelab.errors import ConfigError
from facelab.eval.label_shift import label_priors
from facelab.eval.plots import plot_curves
from facelab.models.checkpoint import weights_path
from facelab.models.classifiers import (
    check_pretrained_fits,
    classifier_arch_kwargs,
    create_classifier,
    freeze_backbone,
    list_classifiers,
    load_pretrained,
    unfreeze,
)
from facelab.models.classifiers.heads import (
    Task,
    class_weights_from_labels,
    head_bias_from_labels,
    pos_weight_from_labels,
)
from facelab.report import render_report
from facelab.runs.inputs import RunInput, check_inputs, file_input, store_input
from facelab.runs.splits import load_run_splits, save_run_splits
from facelab.runs.summary import ClassifierSummary, write_summary
from facelab.train.distributed import Distributed
from facelab.train.objectives import objective_spec
from facelab.train.objectives.supervised import ClassifierObjective, preprocessing_of
from facelab.train.trainer import Callback, Trainer, TrainerConfig
from facelab.utils.device import resolve_device

log = logging.getLogger("facelab")


def default_trainer_config() -> TrainerConfig:
    return TrainerConfig(epochs=20, monitor="val_mean_accuracy", monitor_mode="max")


class ClassifierConfig(StrictConfig):
    """Everything a classifier run needs; saved as config.yaml in the run folder."""

    store: str
    labels: list[str] | None = None  # None: every binary/categorical label of the store (or the labels file's tasks)
    # a labels CSV (facelab label auto / review) whose tasks become categorical labels of the store
    labels_file: str | None = None
    split: Literal["auto", "official", "random"] = "auto"
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    # the registered objective (facelab.train.objectives) that learns from the labels, and its options
    objective: str = "supervised"
    objective_kwargs: dict[str, Any] = Field(default_factory=dict)
    model: str = "vgg_scratch"
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    # torchvision-format file, or a facelab checkpoint / run folder (facelab train or facelab pretrain)
    pretrained: str | None = None
    freeze_backbone: bool = False
    unfreeze_at_epoch: int | None = Field(None, ge=0)
    backbone_lr_scale: float = Field(0.1, gt=0, le=1)
    batch_size: int = Field(64, ge=1)  # the CelebA figures in docs/results.md use this default recipe
    augment: str = "geometric"  # preset of facelab.data.augment (flip + small affine: +1% on CelebA over flip)
    random_erasing: float = Field(0.0, ge=0, le=1)
    balance: Literal["none", "class_weights", "sampler"] = "none"
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    mixup_alpha: float = Field(0.0, ge=0)  # mixup (Zhang et al. 2018) with lambda ~ Beta(a, a); 0: off
    tta_flip: bool = False  # validate with flip averaging; eval/predict/serve of the run then default to it
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


#: what builds a classifier run's objective: ClassifierObjective or a subclass (same signature)
ObjectiveFactory = Callable[..., ClassifierObjective]
#: what builds its network: :func:`facelab.models.classifiers.create_classifier` or a function of that signature
ModelFactory = Callable[..., torch.nn.Module]


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
    """The task of ``labels`` (default: every label of the store, or only the labels file's tasks when one is
    laid over it)."""
    if labels is None and store.overlay is not None:
        labels = [s.name for s in store.overlay.specs]
    try:
        return Task.from_labels(store.label_specs, labels)
    except ConfigError as e:
        raise ConfigError(f"{store.path}: {e}") from None


def open_training_store(cfg: ClassifierConfig) -> Store:
    """The run's store, with its labels file's tasks laid over it when the config names one (those among
    ``cfg.labels``, or all of them)."""
    if cfg.labels_file is None:
        return Store.open(cfg.store)
    tasks = None
    if cfg.labels is not None:
        tasks = [t for t in LabelsFile.read(cfg.labels_file).tasks if t in cfg.labels] or None
    return open_store(cfg.store, cfg.labels_file, tasks=tasks)


def check_config(cfg: ClassifierConfig, *, processes: int = 1) -> Task:
    """What can be checked before a run folder is made: the store opens, the model, labels and device exist,
    and the training split holds at least one batch (of every process: ``processes * batch_size`` rows)."""
    if cfg.model not in list_classifiers():
        raise ConfigError(f"unknown classifier {cfg.model!r}; known classifiers: {', '.join(list_classifiers())}")
    spec = objective_spec(cfg.objective, labelled=True)
    spec.parse_options(cfg.objective, cfg.objective_kwargs)
    resolve_device(cfg.device)
    store = open_training_store(cfg)
    task = build_task(store, cfg.labels)
    splits, _ = make_splits(cfg, store, task)
    check_batches(cfg, splits["train"].size, processes=processes)
    check_pretrained(cfg, store, task)
    return task


def check_pretrained(cfg: ClassifierConfig, store: Store, task: Task) -> None:
    """A facelab checkpoint given as ``pretrained`` must be of the run's architecture (and options), image size
    and alignment (FacelabError naming each that differs); nothing to check without one."""
    if cfg.pretrained is None:
        return
    kwargs = classifier_arch_kwargs(cfg.model, num_outputs=task.num_logits, image_size=store.image_size,
                                    **cfg.model_kwargs)
    mean_std = (0.5,) * 3  # the comparison reads only the image size and the alignment
    check_pretrained_fits(cfg.pretrained, arch=cfg.model, arch_kwargs=kwargs,
                          preprocessing=Preprocessing.of_store(store, mean=mean_std, std=mean_std))


def check_batches(cfg: ClassifierConfig, train_rows: int, *, processes: int = 1) -> None:
    """A step larger than the training rows would train on nothing (the loader drops partial batches)."""
    step = cfg.batch_size * processes
    if train_rows < step:
        of = f"{processes} processes x --batch-size {cfg.batch_size}" if processes > 1 else f"{cfg.batch_size}"
        fix = f"lower --batch-size (at most {train_rows // processes})" + (" or --nproc" if processes > 1 else "")
        raise ConfigError(f"the training split has {train_rows} rows, fewer than one batch of {of}: every epoch "
                          f"would end without a single optimizer step; {fix} or train on more rows")


def _training_labels(store: Store, rows: np.ndarray, task: Task) -> torch.Tensor:
    cols = [store.label_index(n) for n in task.names]
    return torch.from_numpy(store.labels[rows][:, cols].astype(np.int64))


def balanced_sample_weights(y: np.ndarray) -> np.ndarray:
    """Per-row weights inversely proportional to the frequency of the row's joint label combination."""
    _, inverse, counts = np.unique(y, axis=0, return_inverse=True, return_counts=True)
    w = 1.0 / counts[inverse.ravel()]
    return w / w.sum()


def make_splits(cfg: ClassifierConfig, store: Store, task: Task) -> tuple[dict[str, np.ndarray], str]:
    """Train/val/test rows of a new run and how they were chosen: :func:`facelab.data.views.run_splits`
    (official partitions or a seeded stratified split, identities kept apart, a validation hold-out when
    there is no val partition), then ``train_identities`` and ``train_limit`` applied to train."""
    splits, how = run_splits(store, policy=cfg.split, fractions=cfg.split_fractions, seed=cfg.seed,
                             stratify=list(task.names)[:1])
    if store.overlay is not None:  # images the labels file gives no class for any task label teach nothing
        y = store.labels[:, [store.label_index(n) for n in task.names]]
        known = (y >= 0).any(axis=1)
        dropped = {k: int((~known[v]).sum()) for k, v in splits.items()}
        splits = {k: v[known[v]] for k, v in splits.items()}
        if any(dropped.values()):
            how += (f"; images without a label in {Path(store.overlay.source).name} left out "
                    f"(train {dropped['train']}, val {dropped['val']}, test {dropped['test']})")
    if cfg.train_identities:
        splits["train"] = _rows_of_people(store, splits["train"], cfg.train_identities, cfg.seed)
        how += f"; train: every photo of {cfg.train_identities} randomly chosen training people (seed {cfg.seed})"
    if cfg.train_limit and cfg.train_limit < splits["train"].size:
        splits["train"] = np.sort(np.random.default_rng(cfg.seed).permutation(splits["train"])[: cfg.train_limit])
        how += f"; train: {cfg.train_limit} random rows of it (seed {cfg.seed})"
    return splits, how


def _people(store: Store, rows: np.ndarray) -> np.ndarray:
    """The distinct known identities of ``rows``."""
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
                 device: torch.device, mean, std, *, extra: tuple[np.ndarray, np.ndarray] | None = None,
                 rank: int = 0, world_size: int = 1):
    """Train and validation loaders; ``extra`` = synthetic (images, task labels) appended to training only.
    With several processes the training loader serves process ``rank``'s share of each batch; validation
    (rank 0's) reads every row."""
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
                        augment=augment, sampler_weights=weights, extra=extra, rank=rank, world_size=world_size,
                        **common)
    val = BatchLoader(store, splits["val"], batch_size=max(256, cfg.batch_size), shuffle=False, **common)
    return train, val


def build_classifier(cfg: ClassifierConfig, store: Store, task: Task, train_y: torch.Tensor, *,
                     create: ModelFactory = create_classifier) -> tuple[torch.nn.Module, str | None]:
    """Create the model, load pretrained weights, freeze, initialise the head bias with label priors.

    Returns: (model, what the pretrained loading did, or None without ``cfg.pretrained``).
    """
    model = create(cfg.model, num_outputs=task.num_logits, image_size=store.image_size, **cfg.model_kwargs)
    loaded = None
    if cfg.pretrained is not None:
        check_pretrained(cfg, store, task)
        loaded = load_pretrained(model, cfg.pretrained).summary()
    else:
        with torch.no_grad():
            model.fc.bias.copy_(head_bias_from_labels(train_y, task))
    if cfg.freeze_backbone:
        freeze_backbone(model)
    return model, loaded


def one_class_warnings(train_y: torch.Tensor, task: Task) -> list[str]:
    """Labels whose training rows show one class only: the model can only learn to predict that class."""
    out = []
    for i, o in enumerate(task.outputs):
        col = train_y[:, i]
        present = torch.unique(col[col >= 0]).tolist()
        if o.kind is LabelKind.BINARY and len(present) < 2:
            out.append(f"label {o.name!r}: every training row is {present or 'unknown'}; the model can only "
                       "predict that value, and its balanced accuracy and AUROC are undefined")
        elif o.kind is LabelKind.CATEGORICAL and len(present) < 2:
            out.append(f"label {o.name!r}: the training rows show one class only ({present})")
    return out


def run_inputs(cfg: ClassifierConfig, store: Store) -> list[RunInput]:
    """What a classifier run reads besides its config, as it is now: the store, the labels file laid over it,
    the ``pretrained`` weights (:mod:`facelab.runs.inputs` records and checks them)."""
    out = [store_input(store)]
    if store.overlay is not None:
        out.append(RunInput("labels_file", "labels file", store.overlay.source, store.overlay.sha256))
    if cfg.pretrained is not None:
        out.append(file_input("pretrained", "pretrained checkpoint", weights_path(cfg.pretrained)))
    return out


def _run_rows(cfg: ClassifierConfig, store: Store, task: Task, run_dir: Path, *, resume: bool,
              splits: dict[str, np.ndarray] | None, how: str | None) -> tuple[dict[str, np.ndarray], str]:
    """The run's rows: recorded in its splits.json when resuming, else given (experiments) or made, then
    recorded, once."""
    recorded = load_run_splits(run_dir, store) if resume else None
    if recorded is not None:
        return {k: recorded.rows(k) for k in ("train", "val", "test")}, recorded.how
    if splits is None:
        splits, how = make_splits(cfg, store, task)
    splits = {k: np.asarray(splits.get(k, np.zeros(0, np.int64)), dtype=np.int64) for k in ("train", "val", "test")}
    how = how or "chosen by the caller"
    save_run_splits(run_dir, splits, store, how=how)
    return splits, how


def train_classifier(cfg: ClassifierConfig, *, run_dir: str | Path, resume: bool = False,
                     callbacks: list[Callback] | None = None, splits: dict[str, np.ndarray] | None = None,
                     splits_how: str | None = None, extra: tuple[np.ndarray, np.ndarray] | None = None,
                     objective: ObjectiveFactory | None = None,
                     create_model: ModelFactory = create_classifier,
                     dist: Distributed | None = None, accept_changed_inputs: bool = False) -> dict[str, Any]:
    """Train (or resume) a classifier run in ``run_dir``; returns the summary written to summary.json.

    The run's train/val/test rows are written once to ``run_dir/splits.json`` and read back on resume.

    Args:
        splits: train/val(/test) store rows to use instead of the config's split policy (experiments), and
            ``splits_how`` a sentence saying how they were chosen.
        extra: synthetic training rows (images (M, S, S, 3) uint8, labels (M, num task labels)); tagged
            synthetic by the loader, never used for validation.
        objective: the training objective (a :class:`ClassifierObjective` subclass for a training variant);
            default: the config's registered ``objective``.
        create_model: builds the network (default: the registry's :func:`create_classifier`).
        dist: the processes training together (a torchrun launch; default this one): ``cfg.batch_size`` is
            each one's share of a step; rank 0 alone writes into ``run_dir`` (the others return the same
            summary without ``report``).
        accept_changed_inputs: resume even though an input (store, labels file, pretrained weights, config
            file) changed since the run recorded it; the acceptance is recorded in the run.

    Raises:
        ConfigError: fewer training rows than one batch, among the config checks.
        ChangedInputError: resuming with an input that changed, without ``accept_changed_inputs``.
    """
    run_dir, dist = Path(run_dir), dist or Distributed()
    torch.manual_seed(cfg.seed)
    store = open_training_store(cfg)
    check_inputs(run_dir, run_inputs(cfg, store), accept=accept_changed_inputs, doing="resume", adopt=True,
                 command="train --resume" if resume else "train", write=dist.is_main)
    task = build_task(store, cfg.labels)
    device = dist.device if dist.active else resolve_device(cfg.device)
    rows = _run_rows(cfg, store, task, run_dir, resume=resume, splits=splits, how=splits_how) if dist.is_main else None
    splits, how = dist.broadcast(rows)  # rank 0 records them once; the others train on what it recorded
    check_batches(cfg, int(splits["train"].size) + (0 if extra is None else len(extra[0])), processes=dist.world_size)
    train_y = _training_labels(store, splits["train"], task)
    if extra is not None:
        train_y = torch.cat([train_y, torch.from_numpy(np.asarray(extra[1], dtype=np.int64))])
    warnings = one_class_warnings(train_y, task)
    for w in warnings if dist.is_main else []:
        log.warning(w)
    model, loaded = build_classifier(cfg, store, task, train_y, create=create_model)
    pc = model.pretrained_cfg
    train_loader, val_loader = make_loaders(cfg, store, task, splits, device, pc.mean, pc.std, extra=extra,
                                            rank=dist.rank, world_size=dist.world_size)
    pos_w = class_w = None
    if cfg.balance == "class_weights":
        pos_w = pos_weight_from_labels(train_y, task) if task.binary_index[0] else None
        class_w = class_weights_from_labels(train_y, task) or None
    objective = objective or objective_spec(cfg.objective, labelled=True).factory
    obj = objective(model, task, cfg=cfg, store=store, pos_weight=pos_w, class_weights=class_w,
                    label_priors=label_priors(train_y.numpy(), task))
    cbs = list(callbacks or [])
    if cfg.freeze_backbone and cfg.unfreeze_at_epoch is not None:
        cbs.append(UnfreezeCallback(cfg.unfreeze_at_epoch, cfg.backbone_lr_scale))
    trainer = Trainer(obj, train_loader, val_loader, config=cfg.trainer, run_dir=run_dir, device=device, callbacks=cbs,
                      dist=dist)
    t0 = time.monotonic()
    result = trainer.fit(resume=resume)
    summary = ClassifierSummary(
        run_dir=str(run_dir), model=cfg.model, labels=list(task.names),
        params=sum(p.numel() for p in model.parameters()),
        train_rows=int(splits["train"].size), synthetic_rows=0 if extra is None else int(len(extra[0])),
        train_identities=len(_people(store, splits["train"])) if store.has_identities else None,
        val_rows=int(splits["val"].size), test_rows=int(splits["test"].size), device=str(device),
        pretrained=loaded, labels_file=store.overlay.describe() if store.overlay else None,
        **result, fit_seconds=round(time.monotonic() - t0, 2),
        final=trainer.history[-1] if trainer.history else {}, splits=how, warnings=warnings,
        processes=dist.world_size,
    )
    if not dist.is_main:
        return summary.to_dict()
    plot_curves(run_dir / "curves.png", trainer.history)
    write_summary(run_dir, summary)
    return {**summary.to_dict(), "report": str(render_report(run_dir))}
