"""Optimizers by name: sgd, adam, adamw, adabound (pytorch-optimizer)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

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
