"""Optimizers by name: sgd, adam, adamw, adabound (pytorch-optimizer), and their settings in a run's config
(``trainer.optim``: every group, ``trainer.optim.groups.<group>``: one group)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import torch
from pydantic import Field

from facelab.config import StrictConfig
from facelab.registry import Registry

OPTIMIZERS: Registry[torch.optim.Optimizer] = Registry("optimizer")

ParamsT = Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]]


@OPTIMIZERS.register("sgd")
def _sgd(params: ParamsT, *, lr: float, weight_decay: float = 0.0, momentum: float = 0.9, **_: Any):
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=momentum > 0)


@OPTIMIZERS.register("adam")
def _adam(params: ParamsT, *, lr: float, weight_decay: float = 0.0, betas=(0.9, 0.999), **_: Any):
    return torch.optim.Adam(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)


@OPTIMIZERS.register("adamw")
def _adamw(params: ParamsT, *, lr: float, weight_decay: float = 0.05, betas=(0.9, 0.999), **_: Any):
    return torch.optim.AdamW(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)


@OPTIMIZERS.register("adabound")
def _adabound(params: ParamsT, *, lr: float, weight_decay: float = 0.0, betas=(0.9, 0.999), final_lr: float = 0.1, **_: Any):
    from pytorch_optimizer import AdaBound

    return AdaBound(params, lr=lr, betas=tuple(betas), final_lr=final_lr, weight_decay=weight_decay)


def create_optimizer(name: str, params: ParamsT, *, lr: float, **kwargs: Any) -> torch.optim.Optimizer:
    """Create a registered optimizer; extra keyword options unknown to it are ignored."""
    return OPTIMIZERS.create(name, params, lr=lr, **kwargs)


OptimizerName = Literal["sgd", "adam", "adamw", "adabound"]


class OptimGroup(StrictConfig):
    """One parameter group's optimizer settings (``trainer.optim.groups.<group>``); what is left unset (None)
    comes from the run-wide settings."""

    name: OptimizerName | None = None
    lr: float | None = Field(None, gt=0)
    weight_decay: float | None = Field(None, ge=0)
    momentum: float | None = Field(None, ge=0, lt=1)
    betas: tuple[float, float] | None = None
    final_lr: float | None = Field(None, gt=0)  # adabound


class OptimConfig(StrictConfig):
    """Optimizer settings of every parameter group; ``groups`` overrides them per group (e.g. a GAN's
    discriminator lr). A setting left unset (None) takes the default below, or for a generative model the
    model's recommendation (:func:`facelab.train.generative.optimizer_groups` says the order)."""

    name: OptimizerName | None = "adamw"
    lr: float | None = Field(3e-3, gt=0)
    weight_decay: float | None = Field(0.05, ge=0)
    momentum: float | None = Field(0.9, ge=0, lt=1)
    betas: tuple[float, float] | None = (0.9, 0.999)
    groups: dict[str, OptimGroup] = Field(default_factory=dict)
    grad_clip: float | None = Field(None, gt=0)

    def run_wide(self) -> dict[str, Any]:
        """The settings given for every group (those left unset are left out)."""
        return {k: v for k in OPTIM_SETTINGS if (v := getattr(self, k)) is not None}

    def settings(self, group: str) -> dict[str, Any]:
        """What the optimizer of ``group`` is built with: the defaults < the run-wide settings < the group's."""
        given = self.groups.get(group)
        return {**OPTIM_DEFAULTS, **self.run_wide(), **(given.model_dump(exclude_none=True) if given else {})}


OPTIM_SETTINGS = ("name", "lr", "weight_decay", "momentum", "betas")  # the run-wide settings of OptimConfig
OPTIM_DEFAULTS: dict[str, Any] = {k: OptimConfig.model_fields[k].default for k in OPTIM_SETTINGS}
