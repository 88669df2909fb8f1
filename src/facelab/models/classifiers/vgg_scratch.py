"""``vgg_scratch``: a small VGG-style CNN trained from scratch (under 700k parameters).

Five stages of 3x3 conv-norm-act blocks (one in the first, full-resolution stage, two in the others), 2x2
max-pooling between stages, global average pooling, dropout and one linear layer. The first stages (high
resolution, few channels) use full 3x3 convolutions; the later ones (low resolution, many channels) use
depthwise-separable convolutions, which cost ~1/8 of the parameters, so the budget buys width where the
features are most abstract::

    64 px:  64x64x24 -> 32x32x48 -> 16x16x96 -> 8x8x192 (sep) -> 4x4x384 (sep) -> pool -> fc
            (4 poolings: works from 16 px up; 32 px ends at 2x2, 128 px at 8x8)

The default layout costs 0.074 GMACs per 64-px image, 2.2x less than the earlier 32-64-128-256-384
layout with two convolutions in every stage (0.165), and trains 2.7x faster on a 2-core CPU at the
same CelebA accuracy per epoch (docs/results.md): on CPUs, more epochs beat more compute per image.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from facelab.errors import ConfigError
from facelab.models.classifiers.base import (
    ARCHITECTURE_SIGNATURES,
    CLASSIFIERS,
    HALF,
    Classifier,
    PretrainedCfg,
    channel_stats,
    make_linear,
)
from facelab.models.layers import ActFactory, ConvNormAct, NormFactory, SeparableConvNormAct, init_conv_norm


class VggScratch(Classifier):
    """VGG-style CNN with batch norm and dropout for small (16-128 px) images.

    Args:
        num_outputs: logits of the head (0: none, ``forward`` returns pooled features).
        in_chans: input channels.
        image_size: the size the model is trained at (recorded in ``pretrained_cfg``).
        drop_rate: dropout before the linear head.
        channels: output channels of each stage; one 2x2 max-pool precedes every stage but the first.
        convs_per_stage: conv-norm-act blocks per stage, one number for all or one per stage; default one
            in the first (full-resolution) stage and two in every other.
        separable_from: index of the first stage that uses depthwise-separable convolutions
            (``len(channels)``: none).
        pool_grid: the head pools the last feature map to ``pool_grid x pool_grid`` cells (adaptive average
            pooling) and flattens them: 1 is global average pooling; 2 or 4 keep where a feature fired, which
            matters for aligned faces (a hat is at the top, a necklace at the bottom).
        norm_layer: name in ``NORM_LAYERS`` or ``f(channels) -> nn.Module``.
        act_layer: name in ``ACT_LAYERS`` or ``f() -> nn.Module``.
    """

    def __init__(
        self,
        *,
        num_outputs: int,
        in_chans: int = 3,
        image_size: int = 64,
        drop_rate: float = 0.2,
        channels: Sequence[int] = (24, 48, 96, 192, 384),
        convs_per_stage: int | Sequence[int] | None = None,
        separable_from: int = 3,
        pool_grid: int = 1,
        norm_layer: str | NormFactory = "batchnorm",
        act_layer: str | ActFactory = "relu",
    ) -> None:
        super().__init__()
        if convs_per_stage is None:
            convs = [1] + [2] * (len(channels) - 1)
        else:
            convs = [convs_per_stage] * len(channels) if isinstance(convs_per_stage, int) else list(convs_per_stage)
        if not channels or len(convs) != len(channels) or min(convs) < 1 or not 0 <= separable_from <= len(channels):
            raise ConfigError(
                f"vgg_scratch: need channels (got {list(channels)}), convs_per_stage >= 1, one number or one per "
                f"stage (got {convs_per_stage}) and 0 <= separable_from <= {len(channels)} (got {separable_from})"
            )
        if pool_grid < 1:
            raise ConfigError(f"vgg_scratch: pool_grid must be >= 1, got {pool_grid}")
        self.pool_grid = pool_grid
        self.in_chans, self.num_outputs, self.num_features = in_chans, num_outputs, channels[-1] * pool_grid**2
        min_size = 2 ** (len(channels) - 1) * pool_grid
        if image_size < min_size:
            raise ConfigError(f"vgg_scratch with {len(channels)} stages needs image_size >= {min_size}, not {image_size}")
        stages, prev = [], in_chans
        for i, ch in enumerate(channels):
            block = SeparableConvNormAct if i >= separable_from and i > 0 else ConvNormAct
            layers: list[nn.Module] = [nn.MaxPool2d(2)] if i > 0 else []
            for j in range(convs[i]):
                layers.append(block(prev if j == 0 else ch, ch, norm_layer=norm_layer, act_layer=act_layer))
            stages.append(nn.Sequential(*layers))
            prev = ch
        self.stages = nn.Sequential(*stages)
        self.dropout = nn.Dropout(drop_rate)
        self.fc = make_linear(self.num_features, num_outputs)
        self.pretrained_cfg = PretrainedCfg(
            input_size=(in_chans, image_size, image_size),
            mean=channel_stats(HALF, in_chans),
            std=channel_stats(HALF, in_chans),
            min_input_size=min_size,
            first_conv="stages.0.0.conv",
        )
        init_conv_norm(self)

    @classmethod
    def legacy_options(cls, state: Mapping[str, torch.Tensor]) -> dict[str, object]:
        return layout_from_state(state)  # checkpoints from before the layout options were recorded

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.stages(x)  # (B, channels[-1], H / 2**(stages-1), W / 2**(stages-1))

    @property
    def embedding_dim(self) -> int:
        return self.num_features // self.pool_grid**2

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x).mean(dim=(2, 3))  # (B, channels[-1]) whatever the head's grid

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if x.ndim == 4 and self.pool_grid > 1:
            x = nn.functional.adaptive_avg_pool2d(x, self.pool_grid).flatten(1)  # (B, C * grid * grid)
        return super().forward_head(x, pre_logits=pre_logits)


CLASSIFIERS.register("vgg_scratch")(VggScratch)


def layout_from_state(state: Mapping[str, torch.Tensor]) -> dict[str, object]:
    """The layout options (channels, convs_per_stage, separable_from, pool_grid) that produced a state dict, for
    checkpoints written before every option was recorded (they hold only the options given explicitly)."""
    channels, convs, separable_from = [], [], None
    for i in itertools.count():
        blocks = sorted({int(k.split(".")[2]) for k in state if k.startswith(f"stages.{i}.")})
        if not blocks:
            break
        last = blocks[-1]
        out = state.get(f"stages.{i}.{last}.conv_pw.weight", state.get(f"stages.{i}.{last}.conv.weight"))
        channels.append(int(out.shape[0]))
        convs.append(len(blocks))
        if separable_from is None and f"stages.{i}.{last}.conv_dw.weight" in state:
            separable_from = i
    options: dict[str, object] = {"channels": channels, "convs_per_stage": convs,
                                  "separable_from": len(channels) if separable_from is None else separable_from}
    fc = state.get("fc.weight")
    if fc is not None and channels:
        options["pool_grid"] = round((fc.shape[1] / channels[-1]) ** 0.5)  # the head flattens C x grid x grid
    return options


@ARCHITECTURE_SIGNATURES.register("vgg_scratch")
def _vgg_signature(state: Mapping[str, torch.Tensor]) -> str | None:
    if "stages.0.0.conv.weight" not in state:
        return None
    widths = []
    for i in range(len(state)):
        outs = [v.shape[0] for k, v in state.items() if k.startswith(f"stages.{i}.") and k.endswith("bn.weight")]
        if not outs:
            break
        widths.append(str(outs[-1]))
    fc = state.get("fc.weight")
    head = f", {fc.shape[0]} outputs" if fc is not None else ", no head"
    return f"vgg_scratch (stage channels {'-'.join(widths)}{head})"
