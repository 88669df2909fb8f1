"""Learning-rate schedules by name, as multipliers of the base lr over fractional epochs."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field

from facelab.config import StrictConfig
from facelab.registry import Registry

SCHEDULES: Registry[Any] = Registry("lr schedule")


class ScheduleConfig(StrictConfig):
    """``name``: constant | step | cosine | onecycle | plateau. Milestones are in epochs."""

    name: Literal["constant", "step", "cosine", "onecycle", "plateau"] = "onecycle"
    warmup_epochs: float = Field(0.0, ge=0)
    milestones: list[float] = Field(default_factory=lambda: [0.5, 0.75])  # fractions of training (<=1) or epochs
    gamma: float = Field(0.1, gt=0, le=1)
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    patience: int = Field(2, ge=0)
    pct_start: float = Field(0.25, gt=0, lt=1)


def milestone_epochs(milestones: list[float], *, epochs: int) -> list[float]:
    """Milestones <= 1 are fractions of the run, larger ones are epochs; returns epochs."""
    return [m * epochs if m <= 1 else m for m in milestones]


def _warm(cfg: ScheduleConfig, t: float) -> float:
    return min(1.0, (t + 1e-9) / cfg.warmup_epochs) if cfg.warmup_epochs else 1.0


@SCHEDULES.register("constant")
def _constant(cfg: ScheduleConfig, *, epochs: int):
    return lambda t: _warm(cfg, t)


@SCHEDULES.register("step")
def _step(cfg: ScheduleConfig, *, epochs: int):
    ms = milestone_epochs(cfg.milestones, epochs=epochs)
    return lambda t: _warm(cfg, t) * cfg.gamma ** sum(t >= m - 1e-9 for m in ms)


@SCHEDULES.register("cosine")
def _cosine(cfg: ScheduleConfig, *, epochs: int):
    def f(t: float) -> float:
        if cfg.warmup_epochs and t < cfg.warmup_epochs:
            return _warm(cfg, t)
        p = min(1.0, (t - cfg.warmup_epochs) / max(1e-9, epochs - cfg.warmup_epochs))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p))

    return f


ONECYCLE_START = 0.04  # onecycle starts at 1/25 of the peak lr, as torch's OneCycleLR (div_factor 25)
ONECYCLE_FLOOR = 1e-3  # and never anneals below 1/1000 of it (nor below min_lr_ratio)


@SCHEDULES.register("onecycle")
def _onecycle(cfg: ScheduleConfig, *, epochs: int):
    """Linear warm-up over ``pct_start`` of training from 1/25 of the peak lr to the peak, then cosine down to
    ``min_lr_ratio`` (at least :data:`ONECYCLE_FLOOR`)."""
    up = cfg.pct_start * epochs

    def f(t: float) -> float:
        if t < up:
            return ONECYCLE_START + (1 - ONECYCLE_START) * t / up
        p = min(1.0, (t - up) / max(1e-9, epochs - up))
        return max(ONECYCLE_FLOOR, cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p)))

    return f


@SCHEDULES.register("plateau")
def _plateau(cfg: ScheduleConfig, *, epochs: int):
    return lambda t: _warm(cfg, t)  # the plateau factor is applied by PlateauTracker on top


class PlateauTracker:
    """Multiply the lr by ``gamma`` once more than ``patience`` epochs in a row did not improve the monitored
    metric (as torch's ReduceLROnPlateau), never below ``min_lr_ratio`` of the base lr."""

    def __init__(self, cfg: ScheduleConfig, *, mode: str = "max") -> None:
        self.enabled = cfg.name == "plateau"
        self.gamma, self.patience, self.mode, self.floor = cfg.gamma, cfg.patience, mode, cfg.min_lr_ratio
        self.best: float | None = None
        self.bad_epochs = 0
        self.factor = 1.0

    def update(self, value: float) -> None:
        if not self.enabled:
            return
        better = self.best is None or (value > self.best if self.mode == "max" else value < self.best)
        if better:
            self.best, self.bad_epochs = value, 0
            return
        self.bad_epochs += 1
        if self.bad_epochs > self.patience:
            self.factor = max(self.floor, self.factor * self.gamma)
            self.bad_epochs = 0

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "bad_epochs": self.bad_epochs, "factor": self.factor}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.best, self.bad_epochs, self.factor = d["best"], d["bad_epochs"], d["factor"]


def lr_factor_fn(cfg: ScheduleConfig, *, epochs: int):
    """f(t) -> lr multiplier, t = fractional epochs elapsed. Epoch-based so batch-size changes don't shift it."""
    return SCHEDULES.create(cfg.name, cfg, epochs=epochs)
