"""Train a generative model on a store through the shared Trainer: grids every epoch, EMA, resume."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator

from facelab.config import StrictConfig, overlay
from facelab.data.augment import BatchAugment
from facelab.data.loader import BatchLoader
from facelab.data.preprocessing import Preprocessing
from facelab.data.store import Store
from facelab.data.views import run_splits
from facelab.errors import ConfigError
from facelab.eval.grids import save_grid
from facelab.eval.plots import plot_curves
from facelab.models.checkpoint import CheckpointMeta, read_training_state
from facelab.models.generative import Condition, GenBatch, create_generative, encode_label_rows, grid_conditions
from facelab.report import render_report
from facelab.runs.inputs import check_inputs, store_input
from facelab.runs.splits import load_run_splits, save_run_splits
from facelab.runs.summary import GenerativeSummary, write_summary
from facelab.train.distributed import Distributed
from facelab.train.optim import OPTIM_SETTINGS, OptimConfig, OptimGroup
from facelab.train.trainer import Callback, StepOutput, Trainer, TrainerConfig
from facelab.utils.device import resolve_device

GEN_MEAN = (0.5, 0.5, 0.5)  # images reach generative models in [-1, 1]
GEN_STD = (0.5, 0.5, 0.5)


def default_gen_trainer() -> TrainerConfig:
    """The loop settings of a generative run; the optimizer settings are unset, so that each parameter group
    trains with the model's recommendation unless the run sets them (:func:`optimizer_groups`)."""
    unset = OptimConfig(**{k: None for k in OPTIM_SETTINGS})
    return TrainerConfig(epochs=20, monitor="val_loss", monitor_mode="min", optim=unset,
                         schedule={"name": "constant"}, checkpoint_every_minutes=5.0)


#: what versions before run-wide settings applied to generative models wrote into every generative run's
#: ``trainer.optim`` (the classifier defaults); the model's recommendations overrode them, so they mean "unset"
_LEGACY_OPTIM = {"name": "adamw", "lr": 0.003, "weight_decay": 0.05, "momentum": 0.9, "betas": [0.9, 0.999]}


def _legacy_optim_unset(trainer: Any) -> Any:
    """``trainer`` (a mapping from a YAML file) with the classifier defaults that older versions wrote into its
    ``optim`` read as unset: a config.yaml of an older run, or a copy of one, trains as it did then."""
    optim = trainer.get("optim") if isinstance(trainer, dict) else None
    if not isinstance(optim, dict):
        return trainer
    given = {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in optim.items() if k in _LEGACY_OPTIM}
    if given != _LEGACY_OPTIM:
        return trainer
    return {**trainer, "optim": {**optim, **{k: None for k in _LEGACY_OPTIM}}}


def optimizer_groups(optim: OptimConfig, recommended: dict[str, dict[str, Any]], *,
                     run_wide: bool = True) -> dict[str, OptimGroup]:
    """Each parameter group's optimizer settings, from the lowest precedence to the highest:

    1. the model's recommendation (``recommended_optimizers()``: the paper's optimizer, with the lrs of the
       model's options such as ``model_options.lr`` or ``model_options.lr_generator``);
    2. a setting the run gives for every group (``trainer.optim.lr``, ``.name``, ``.betas``, ``.weight_decay``,
       ``.momentum``; ``-o trainer.optim.lr=X`` or a sweep over it sets every group's lr to X);
    3. a setting the run gives for that group (``trainer.optim.groups.<group>.lr``, ...).

    ``run_wide=False`` leaves out 2: how runs whose checkpoints predate it trained (they resume that way).

    Raises:
        ConfigError: ``trainer.optim.groups`` names a group the model does not have.
    """
    unknown = sorted(set(optim.groups) - set(recommended))
    if unknown:
        raise ConfigError(f"trainer.optim.groups: {', '.join(map(repr, unknown))} is not a parameter group of this "
                          f"model; its groups are {', '.join(recommended)}")
    wide = optim.run_wide() if run_wide else {}
    out = {}
    for g, rec in recommended.items():
        own = optim.groups[g].model_dump(exclude_none=True) if g in optim.groups else {}
        out[g] = OptimGroup(**{**rec, **wide, **own})
    return out


def generative_trainer_config(cfg: GenerativeRunConfig, model: torch.nn.Module, *,
                              run_wide: bool = True) -> TrainerConfig:
    """The Trainer's settings for ``model``: every group's optimizer settings resolved (:func:`optimizer_groups`),
    the EMA (0.999 for GANs unless set), no monitored metric for models without a validation loss."""
    tcfg = cfg.trainer.model_copy(deep=True)
    recommended = {g: model.recommended_optimizers().get(g, {}) for g in model.parameter_groups()}
    tcfg.optim.groups = optimizer_groups(cfg.trainer.optim, recommended, run_wide=run_wide)
    if tcfg.ema_decay is None:
        tcfg.ema_decay = cfg.ema_decay if cfg.ema_decay is not None else (None if model.has_encoder else 0.999)
    if not model.has_encoder:
        tcfg.monitor = "none"
    return tcfg


class GenerativeRunConfig(StrictConfig):
    """A generative run: which model, on which store rows, conditioned on which labels."""

    store: str
    model: str = "vae"
    model_options: dict[str, Any] = Field(default_factory=dict)  # width, latent_dim, beta, gp_weight, ...
    conditions: list[str] | None = None  # store labels the model is conditioned on (conditional models)
    split: Literal["auto", "official", "random", "all"] = "auto"
    batch_size: int = Field(64, ge=2)
    augment: str = "flip"
    ema_decay: float | None = Field(None, gt=0, lt=1)  # default: 0.999 for GANs, none for autoencoders
    grid_every_epochs: int = Field(1, ge=1)
    device: str = "auto"
    seed: int = 0
    trainer: TrainerConfig = Field(default_factory=default_gen_trainer)

    @field_validator("trainer", mode="before")
    @classmethod
    def _trainer_over_defaults(cls, v: Any) -> Any:
        return overlay(default_gen_trainer().model_dump(), _legacy_optim_unset(v))  # {epochs: 2} keeps the schedule


class GenerativeObjective:
    """Adapts a GenerativeModel's players to the Trainer; batches become GenBatch in [-1, 1]."""

    def __init__(self, model: torch.nn.Module, *, cfg: GenerativeRunConfig, store: Store) -> None:
        self.model, self.cfg, self.store = model, cfg, store

    def parameter_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        return self.model.parameter_groups()

    def step_schedule(self) -> list[tuple[str, int]]:
        return self.model.train_step_schedule()

    def gen_batch(self, batch: Any) -> GenBatch:
        cond = None
        if self.model.is_conditional:
            cond = encode_label_rows(self.model.config.conditions, batch.y).to(batch.x.device)
        return GenBatch(batch.x.contiguous(), cond)

    def loss(self, group: str, batch: Any) -> StepOutput:
        out = self.model.loss(group, self.gen_batch(batch))
        return StepOutput(out.loss, {f"{group}/{k}" if len(self.parameter_groups()) > 1 else k: v for k, v in out.logs.items()})

    def evaluate(self, loader: Any, *, model: torch.nn.Module | None = None) -> dict[str, float]:
        """Autoencoders: mean validation loss; GANs have no validation loss (their metrics are FID/KID)."""
        model = model or self.model
        if not model.has_encoder:
            return {}
        groups = list(model.parameter_groups())
        total, n = 0.0, 0
        for batch in loader:
            out = model.loss(groups[0], self.gen_batch(batch))
            total += float(out.loss) * len(batch.x)
            n += len(batch.x)
        return {"loss": total / max(1, n)}

    def checkpoint_meta(self) -> CheckpointMeta:
        conds = self.cfg.conditions or []
        return CheckpointMeta(
            kind="generative", arch=self.cfg.model, arch_kwargs=self.model.config.model_dump(mode="json"),
            labels=[self.store.spec(n).to_dict() for n in conds],
            preprocessing=Preprocessing.of_store(self.store, mean=GEN_MEAN, std=GEN_STD),
            config=self.cfg.model_dump(mode="json"),
        )


class GridCallback(Callback):
    """Save an 8x8 grid of samples (fixed latents) every ``every`` epochs into ``samples/``."""

    def __init__(self, every: int = 1, *, n: int = 64, seed: int = 1234) -> None:
        self.every, self.n, self.seed = every, n, seed

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        if not trainer.is_main:
            return  # rank 0 writes the run folder
        if epoch % self.every and epoch != trainer.cfg.epochs and trainer.stop_reason is None:
            return  # the last epoch (planned, or cut by a time budget or early stopping) always gets its grid
        model = trainer.eval_model()
        cond = grid_conditions(model, self.n)
        g = torch.Generator(device="cpu").manual_seed(self.seed)
        images = model.sample(self.n, cond, generator=g)
        save_grid(images, trainer.run_dir / "samples" / f"epoch_{epoch:03d}.png")
        save_grid(images, trainer.run_dir / "samples" / "latest.png")


def _conditions(cfg: GenerativeRunConfig, store: Store) -> list[dict[str, Any]] | None:
    if not cfg.conditions:
        return None
    return [Condition.from_label_spec(store.spec(n)).model_dump() for n in cfg.conditions]


def build_generative(cfg: GenerativeRunConfig, store: Store) -> torch.nn.Module:
    """The model for ``cfg`` at the store's resolution, conditioned on ``cfg.conditions``."""
    if store.image_size not in (32, 64):
        raise ConfigError(f"{store.path}: generative models work at 32 or 64 px, the store is {store.image_size}px; "
                          "prepare a store with --size 32 or --size 64")
    opts = {**cfg.model_options, "image_size": store.image_size}
    conds = _conditions(cfg, store)
    if conds is not None:
        opts["conditions"] = conds
    return create_generative(cfg.model, **opts)


def check_config(cfg: GenerativeRunConfig, *, processes: int = 1) -> None:
    """Build the model once before a run folder is made: unknown models, conditions, options or devices fail
    early, and so does a step (``processes * batch_size`` rows) larger than the training rows."""
    resolve_device(cfg.device)
    store = Store.open(cfg.store)
    generative_trainer_config(cfg, build_generative(cfg, store))
    splits, _ = make_splits(cfg, store)
    check_batches(cfg, splits["train"].size, processes=processes)


def check_batches(cfg: GenerativeRunConfig, train_rows: int, *, processes: int = 1) -> None:
    """A step larger than the training rows would train on nothing (the loader drops partial batches)."""
    if train_rows < cfg.batch_size * processes:
        of = f"{processes} processes x --batch-size {cfg.batch_size}" if processes > 1 else f"{cfg.batch_size}"
        fix = f"lower --batch-size (at most {train_rows // processes})" + (" or --nproc" if processes > 1 else "")
        raise ConfigError(f"the training split has {train_rows} rows, fewer than one batch of {of}: every epoch "
                          f"would end without a single optimizer step; {fix} or train on more rows")


def make_splits(cfg: GenerativeRunConfig, store: Store) -> tuple[dict[str, np.ndarray], str]:
    """Train/val/test rows of a generative run and how they were chosen (``split: all`` trains on every row)."""
    if cfg.split == "all":
        empty = np.zeros(0, np.int64)
        return {"train": np.arange(len(store), dtype=np.int64), "val": empty, "test": empty}, "every row of the store"
    return run_splits(store, policy=cfg.split, seed=cfg.seed, hold_out_val=False)


def _run_rows(cfg: GenerativeRunConfig, store: Store, run_dir: Path, *, resume: bool, rows: np.ndarray | None,
              val_rows: np.ndarray | None) -> tuple[dict[str, np.ndarray], str]:
    """The run's rows: recorded in splits.json when resuming, else made (or given), then recorded once."""
    recorded = load_run_splits(run_dir, store) if resume else None
    if recorded is not None:
        return {k: recorded.rows(k) for k in ("train", "val", "test")}, recorded.how
    splits, how = make_splits(cfg, store)
    if rows is not None:
        splits = {**splits, "train": np.sort(np.asarray(rows, dtype=np.int64))}
        how = "training rows chosen by the caller (an experiment's reduced training split)"
    if val_rows is not None:
        splits = {**splits, "val": np.sort(np.asarray(val_rows, dtype=np.int64))}
    save_run_splits(run_dir, splits, store, how=how)
    return splits, how


def _run_wide_settings_apply(run_dir: Path, *, resume: bool) -> bool:
    """Whether run-wide optimizer settings apply: always, except when resuming a checkpoint written before they
    did (its training state records no ``optimizer_settings``), which goes on as it trained."""
    state = read_training_state(run_dir / "checkpoints" / "last") if resume else None
    return state is None or "optimizer_settings" in state


def train_generative(cfg: GenerativeRunConfig, *, run_dir: str | Path, resume: bool = False,
                     rows: np.ndarray | None = None, val_rows: np.ndarray | None = None,
                     callbacks: list[Callback] | None = None, dist: Distributed | None = None,
                     accept_changed_inputs: bool = False) -> dict[str, Any]:
    """Train (or resume) a generative run; its rows are recorded in ``run_dir/splits.json``.

    Args:
        rows: train only on these store rows (e.g. an experiment's reduced training split) instead of the
            config's split; ``val_rows``: the rows of the validation loss (autoencoders).
        dist: the processes training together (a torchrun launch; default this one): ``cfg.batch_size`` is
            each one's share of a step; one DistributedDataParallel over the whole model syncs the gradients
            of whichever player steps; rank 0 alone writes into ``run_dir``.
        accept_changed_inputs: resume even though the store or a config file changed since the run recorded
            it (:mod:`facelab.runs.inputs`); the acceptance is recorded in the run.

    Raises:
        ChangedInputError: resuming with an input that changed, without ``accept_changed_inputs``.
    """
    run_dir, dist = Path(run_dir), dist or Distributed()
    torch.manual_seed(cfg.seed)
    store = Store.open(cfg.store)
    check_inputs(run_dir, [store_input(store)], accept=accept_changed_inputs, doing="resume", adopt=True,
                 command="train-gen --resume" if resume else "train-gen", write=dist.is_main)
    model = build_generative(cfg, store)
    device = dist.device if dist.active else resolve_device(cfg.device)
    recorded = _run_rows(cfg, store, run_dir, resume=resume, rows=rows, val_rows=val_rows) if dist.is_main else None
    splits, how = dist.broadcast(recorded)  # rank 0 records them once; the others train on what it recorded
    check_batches(cfg, splits["train"].size, processes=dist.world_size)
    labels = list(cfg.conditions or [])
    served = labels or store.label_names
    augment = BatchAugment.from_preset(cfg.augment, label_specs=[store.spec(n) for n in served])
    common = dict(labels=served, mean=GEN_MEAN, std=GEN_STD, device=device)
    train = BatchLoader(store, splits["train"], batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed,
                        drop_last=True, augment=augment, rank=dist.rank, world_size=dist.world_size, **common)
    val = (BatchLoader(store, splits["val"][:2048], batch_size=256, shuffle=False, **common)
           if len(splits["val"]) and model.has_encoder else None)
    tcfg = generative_trainer_config(cfg, model, run_wide=_run_wide_settings_apply(run_dir, resume=resume))
    obj = GenerativeObjective(model, cfg=cfg, store=store)
    cbs = [GridCallback(cfg.grid_every_epochs), *(callbacks or [])]
    trainer = Trainer(obj, train, val, config=tcfg, run_dir=run_dir, device=device, callbacks=cbs, dist=dist)
    t0 = time.monotonic()
    result = trainer.fit(resume=resume)
    summary = GenerativeSummary(
        run_dir=str(run_dir), model=cfg.model, conditions=labels, train_rows=int(splits["train"].size),
        val_rows=int(splits["val"].size), test_rows=int(splits["test"].size),
        params=sum(p.numel() for p in model.parameters()), device=str(device), **result,
        fit_seconds=round(time.monotonic() - t0, 2), grid=str(run_dir / "samples" / "latest.png"),
        final=trainer.history[-1] if trainer.history else {}, splits=how, processes=dist.world_size)
    if not dist.is_main:
        return summary.to_dict()
    plot_curves(run_dir / "curves.png", trainer.history)
    write_summary(run_dir, summary)
    return {**summary.to_dict(), "report": str(render_report(run_dir))}
