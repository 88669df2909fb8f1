"""Train a generative model on a store through the shared Trainer: grids every epoch, EMA, resume."""

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
from facelab.train.checkpoint import CheckpointMeta
from facelab.train.classifier import resolve_device
from facelab.train.trainer import Callback, StepOutput, Trainer, TrainerConfig

GEN_MEAN = (0.5, 0.5, 0.5)  # images reach generative models in [-1, 1]
GEN_STD = (0.5, 0.5, 0.5)


def default_gen_trainer() -> TrainerConfig:
    return TrainerConfig(epochs=20, monitor="val_loss", monitor_mode="min",
                         schedule={"name": "constant"}, checkpoint_every_minutes=5.0)


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
        return overlay(default_gen_trainer().model_dump(), v)  # {epochs: 2} keeps the constant schedule


class GenerativeObjective:
    """Adapts a GenerativeModel's players to the Trainer; batches become GenBatch in [-1, 1]."""

    def __init__(self, model: torch.nn.Module, *, cfg: GenerativeRunConfig, store: Store) -> None:
        self.model, self.cfg, self.store = model, cfg, store

    def parameter_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        return self.model.parameter_groups()

    def step_schedule(self) -> list[tuple[str, int]]:
        return self.model.train_step_schedule()

    def gen_batch(self, batch: Any):
        from facelab.models.generative import GenBatch, encode_label_rows

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
            preprocessing={"image_size": self.store.image_size, "crop": self.store.manifest.get("crop"),
                           "source": self.store.source, "mean": list(GEN_MEAN), "std": list(GEN_STD),
                           "store_hash": self.store.content_hash},
            config=self.cfg.model_dump(mode="json"),
        )


class GridCallback(Callback):
    """Save an 8x8 grid of samples (fixed latents) every ``every`` epochs into ``samples/``."""

    def __init__(self, every: int = 1, *, n: int = 64, seed: int = 1234) -> None:
        self.every, self.n, self.seed = every, n, seed

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        if epoch % self.every and epoch != trainer.cfg.epochs and trainer.stop_reason is None:
            return  # the last epoch (planned, or cut by a time budget or early stopping) always gets its grid
        from facelab.eval.grids import save_grid

        model = trainer.eval_model()
        cond = grid_conditions(model, self.n)
        g = torch.Generator(device="cpu").manual_seed(self.seed)
        images = model.sample(self.n, cond, generator=g)
        save_grid(images, trainer.run_dir / "samples" / f"epoch_{epoch:03d}.png")
        save_grid(images, trainer.run_dir / "samples" / "latest.png")


def grid_conditions(model: torch.nn.Module, n: int) -> torch.Tensor | None:
    """Conditions for a grid: row r of a categorical condition shows class r; binary ones alternate."""
    if not model.is_conditional:
        return None
    rows = []
    for i in range(n):
        r = i // 8
        row = {}
        for c in model.config.conditions:
            row[c.name] = (r % c.width) if c.kind == "categorical" else (r + i) % 2
        rows.append(row)
    return model.make_cond(rows)


def _conditions(cfg: GenerativeRunConfig, store: Store) -> list[dict[str, Any]] | None:
    from facelab.models.generative import Condition

    if not cfg.conditions:
        return None
    return [Condition.from_label_spec(store.spec(n)).model_dump() for n in cfg.conditions]


def build_generative(cfg: GenerativeRunConfig, store: Store) -> torch.nn.Module:
    """The model for ``cfg`` at the store's resolution, conditioned on ``cfg.conditions``."""
    from facelab.models.generative import create_generative

    if store.image_size not in (32, 64):
        raise ConfigError(f"{store.path}: generative models work at 32 or 64 px, the store is {store.image_size}px; "
                          "prepare a store with --size 32 or --size 64")
    opts = {**cfg.model_options, "image_size": store.image_size}
    conds = _conditions(cfg, store)
    if conds is not None:
        opts["conditions"] = conds
    return create_generative(cfg.model, **opts)


def check_config(cfg: GenerativeRunConfig) -> None:
    """Build the model once before a run folder is made: unknown models, conditions or options fail early."""
    build_generative(cfg, Store.open(cfg.store))


def train_generative(cfg: GenerativeRunConfig, *, run_dir: str | Path, resume: bool = False,
                     rows: np.ndarray | None = None, val_rows: np.ndarray | None = None,
                     callbacks: list[Callback] | None = None) -> dict[str, Any]:
    """Train (or resume) a generative run.

    Args:
        rows: train only on these store rows (e.g. an experiment's reduced training split) instead of the
            config's split; ``val_rows``: the rows of the validation loss (autoencoders).
    """
    from facelab.data.augment import BatchAugment
    from facelab.data.loader import BatchLoader
    from facelab.data.views import splits_for
    from facelab.eval.plots import plot_curves
    from facelab.utils.io import atomic_write_json

    run_dir = Path(run_dir)
    torch.manual_seed(cfg.seed)
    store = Store.open(cfg.store)
    model = build_generative(cfg, store)
    device = resolve_device(cfg.device)
    splits = {"train": np.arange(len(store)), "val": np.array([], dtype=np.int64)} if cfg.split == "all" else \
        splits_for(store, policy=cfg.split, seed=cfg.seed)
    train_rows = np.asarray(rows) if rows is not None else splits["train"]
    if val_rows is not None:
        splits = {**splits, "val": np.asarray(val_rows)}
    labels = list(cfg.conditions or [])
    served = labels or store.label_names
    augment = BatchAugment.from_preset(cfg.augment, label_specs=[store.spec(n) for n in served])
    common = dict(labels=served, mean=GEN_MEAN, std=GEN_STD, device=device)
    train = BatchLoader(store, train_rows, batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed, drop_last=True,
                        augment=augment, **common)
    val = BatchLoader(store, splits["val"][:2048], batch_size=256, shuffle=False, **common) if len(splits["val"]) and model.has_encoder else None
    tcfg = cfg.trainer.model_copy(deep=True)
    recommended = model.recommended_optimizers()
    tcfg.optim.groups = {g: {**recommended.get(g, {}), **tcfg.optim.groups.get(g, {})} for g in model.parameter_groups()}
    if tcfg.ema_decay is None:
        tcfg.ema_decay = cfg.ema_decay if cfg.ema_decay is not None else (None if model.has_encoder else 0.999)
    if not model.has_encoder:
        tcfg.monitor = "none"
    obj = GenerativeObjective(model, cfg=cfg, store=store)
    cbs = [GridCallback(cfg.grid_every_epochs), *(callbacks or [])]
    trainer = Trainer(obj, train, val, config=tcfg, run_dir=run_dir, device=device, callbacks=cbs)
    t0 = time.monotonic()
    result = trainer.fit(resume=resume)
    plot_curves(run_dir / "curves.png", trainer.history)
    summary = {"kind": "generative", "run_dir": str(run_dir), "model": cfg.model, "conditions": labels, "train_rows": int(len(train_rows)),
               "params": sum(p.numel() for p in model.parameters()), "device": str(device), **result,
               "fit_seconds": round(time.monotonic() - t0, 2), "grid": str(run_dir / "samples" / "latest.png"),
               "final": trainer.history[-1] if trainer.history else {}}
    atomic_write_json(run_dir / "summary.json", summary)
    from facelab.report import render_report

    summary["report"] = str(render_report(run_dir))
    return summary
