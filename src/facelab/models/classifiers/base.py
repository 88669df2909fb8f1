"""What every classifier shares: the registry, the timm-like interface and the preprocessing config.

Interface (timm ``resnet.py``)::

    feats = model.forward_features(x)      # (B, C, h, w) last feature map
    pooled = model.forward_head(feats, pre_logits=True)   # (B, num_features)
    logits = model.forward_head(feats)     # (B, num_outputs) == model(x)
    model.reset_classifier(n)              # new randomly initialised head with n outputs

A model file subclasses :class:`Classifier`, builds ``self.fc`` (the head) and registers a factory in
:data:`CLASSIFIERS`; the frozen-batch-norm behaviour of :func:`facelab.models.classifiers.transfer.freeze_backbone`
comes with the base class.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import nn

from facelab.errors import FacelabError
from facelab.registry import Registry

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)

#: Attribute set on norm modules whose running statistics are frozen (see ``Classifier.train``).
FROZEN_STATS_ATTR = "facelab_frozen_stats"

CLASSIFIERS: Registry[Classifier] = Registry("classifier")

#: Functions ``f(state_dict) -> description | None`` that recognise a weights file's architecture, so
#: that a wrong file gets an error naming what it is ("resnet50 (bottleneck blocks 3-4-6-3, ...)").
ARCHITECTURE_SIGNATURES: Registry[str | None] = Registry("architecture signature")


@dataclass(frozen=True)
class PretrainedCfg:
    """How images must be prepared for a model (timm ``pretrained_cfg``).

    Attributes:
        input_size: (C, H, W) the model was built for.
        mean: per-channel mean subtracted after scaling pixels to [0, 1].
        std: per-channel standard deviation divided by.
        interpolation: resize filter used when the input size differs.
        min_input_size: smallest H and W the architecture accepts.
        first_conv: name of the first convolution (adapted when loading weights with other
            input channels or kernel size).
    """

    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: Literal["bilinear", "bicubic", "nearest"] = "bilinear"
    min_input_size: int = 1
    first_conv: str = "conv1"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists), e.g. for a checkpoint's preprocessing block."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def channel_stats(stats: tuple[float, ...], in_chans: int) -> tuple[float, ...]:
    """Adapt 3-channel mean/std to ``in_chans``: the average for 1 channel, repeated otherwise."""
    if in_chans == len(stats):
        return tuple(stats)
    if in_chans == 1:
        return (round(sum(stats) / len(stats), 4),)
    return tuple(stats[i % len(stats)] for i in range(in_chans))


class Classifier(nn.Module):
    """Base class: ``forward = forward_head(forward_features(x))``.

    Subclasses set ``num_features``, ``num_outputs``, ``in_chans``, ``pretrained_cfg``, ``self.fc``
    and ``self.dropout`` and implement :meth:`forward_features`.

    Class attributes:
        head_names: top-level modules that form the head: trained when the backbone is frozen,
            dropped at load time when their shapes differ from the file's.
        optional_state_prefixes: state-dict keys a weights file may have or lack (e.g. an auxiliary head).
    """

    head_names: tuple[str, ...] = ("fc",)
    optional_state_prefixes: tuple[str, ...] = ()

    num_features: int
    num_outputs: int
    in_chans: int
    pretrained_cfg: PretrainedCfg
    fc: nn.Module
    dropout: nn.Module

    def __init__(self) -> None:
        super().__init__()
        self.arch_name = type(self).__name__.lower()  # create_classifier sets the registered name
        self.arch_kwargs: dict[str, Any] = {}  # and the factory keywords that rebuild this model

    @classmethod
    def legacy_options(cls, state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        """Options to load a checkpoint written before an option with a weight-changing default was recorded
        (read from its weights ``state``); overridden by models that gained such an option."""
        return {}

    @property
    def default_cfg(self) -> PretrainedCfg:
        """Alias of ``pretrained_cfg`` (timm's older name)."""
        return self.pretrained_cfg

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> last feature map (B, num_features, h, w)."""
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Features (B, C, h, w) or pooled (B, C) -> logits (B, num_outputs), or pooled (B, C) if ``pre_logits``."""
        if x.ndim == 4:
            x = x.mean(dim=(2, 3))  # (B, C) global average pool
        if pre_logits:
            return x
        return self.fc(self.dropout(x))  # (B, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(logits, auxiliary logits or None). Only models with an auxiliary head return a second tensor."""
        return self(x), None

    def pooled_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> (B, num_features): what the linear head sees (``pre_logits``)."""
        return self.forward_head(self.forward_features(x), pre_logits=True)

    @property
    def embedding_dim(self) -> int:
        """Size of ``embedding``."""
        return self.num_features

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> (B, embedding_dim) image embedding for FID/KID: the pooled features, as
        Inception's 2048-d pool3; a model whose head keeps a spatial grid gives its global average instead."""
        return self.pooled_features(x)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_outputs: int) -> None:
        """Replace the head by a new one with ``num_outputs`` outputs (0: identity, logits = pooled features)."""
        self.num_outputs = num_outputs
        self.fc = make_linear(self.num_features, num_outputs, like=next(self.parameters(), None))

    def check_input(self, x: torch.Tensor) -> None:
        """Raise FacelabError unless ``x`` is (B, in_chans, H, W) with H, W >= ``min_input_size``."""
        need = self.pretrained_cfg.min_input_size
        shape = tuple(x.shape)
        expected = f"{self.arch_name} expects images (B, {self.in_chans}, H, W) with H, W >= {need}, got {shape}"
        if x.ndim != 4:
            raise FacelabError(f"{expected}; add the batch dimension (x[None]) or reshape the input")
        if x.shape[1] != self.in_chans:
            raise FacelabError(f"{expected}; build the model with in_chans={x.shape[1]} or convert the images")
        if min(x.shape[-2:]) < need:
            raise FacelabError(f"{expected}; resize the images to at least {need} px (e.g. a store of that size)")

    def train(self, mode: bool = True) -> Classifier:
        """Set train/eval mode, keeping norm layers with frozen statistics in eval mode."""
        super().train(mode)
        if mode:
            for m in self.modules():
                if getattr(m, FROZEN_STATS_ATTR, False):
                    m.train(False)
        return self


def make_linear(in_features: int, out_features: int, *, like: torch.Tensor | None = None) -> nn.Module:
    """``nn.Linear`` on the device/dtype of ``like`` (if given); identity when ``out_features`` is 0."""
    if out_features == 0:
        return nn.Identity()
    kw = {"device": like.device, "dtype": like.dtype} if like is not None else {}
    return nn.Linear(in_features, out_features, **kw)


def identify_architecture(state: Mapping[str, torch.Tensor]) -> str | None:
    """Describe the architecture of a state dict with the registered signatures, or None if unknown."""
    for name in ARCHITECTURE_SIGNATURES:
        found = ARCHITECTURE_SIGNATURES.get(name)(state)
        if found:
            return found
    return None
