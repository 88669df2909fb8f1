"""``vgg_scratch``: a small VGG-style CNN trained from scratch (under 700k parameters).

Stages of 3x3 conv-norm-act blocks with 2x2 max-pooling between them; the head average-pools the last
feature map to a ``pool_grid x pool_grid`` grid, flattens it and applies dropout and one linear layer.
The default is the plain four-block CNN that CelebA attribute notebooks use (one convolution per stage,
a 4x4 grid flattened into the head, dropout 0.5)::

    64 px:  64x64x32 -> 32x32x64 -> 16x16x128 -> 8x8x256 -> 4x4 cells x 256 -> dropout -> fc
            (3 poolings and a 4x4 grid: at least 32 px; 128 px ends at 16x16, pooled to 4x4)

It has 553k parameters (40 outputs) and costs 0.06 GMACs per 64-px image. On the CelebA subset it
beats the earlier default (five stages 24-48-96-192-384 with depthwise-separable convolutions in the
last two and global average pooling: 460k parameters, 0.074 GMACs) in fewer epochs, because where a
feature fires matters for aligned faces (a hat is at the top, a necklace at the bottom); see
docs/results.md. The earlier layout is ``channels=[24, 48, 96, 192, 384], convs_per_stage=[1, 2, 2, 2, 2],
separable_from=3, pool_grid=1, drop_rate=0.2``; checkpoints record their layout and keep loading.
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
    """VGG-style CNN with batch norm and dropout for small (32-128 px) images.

    Args:
        num_outputs: logits of the head (0: none, ``forward`` returns pooled features).
        in_chans: input channels.
        image_size: the size the model is trained at (recorded in ``pretrained_cfg``).
        drop_rate: dropout before the linear head.
        channels: output channels of each stage; one 2x2 max-pool precedes every stage but the first.
        convs_per_stage: conv-norm-act blocks per stage, one number for all or one per stage; None: one in
            the first (full-resolution) stage and two in every other.
        separable_from: index of the first stage that uses depthwise-separable convolutions (None: none).
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
        drop_rate: float = 0.5,
        channels: Sequence[int] = (32, 64, 128, 256),
        convs_per_stage: int | Sequence[int] | None = 1,
        separable_from: int | None = None,
        pool_grid: int = 4,
        norm_layer: str | NormFactory = "batchnorm",
        act_layer: str | ActFactory = "relu",
    ) -> None:
        super().__init__()
        if separable_from is None:
            separable_from = len(channels)  # none
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
            raise ConfigError(
                f"vgg_scratch with {len(channels)} stages and pool_grid {pool_grid} needs image_size >= {min_size}, "
                f"not {image_size}; for smaller images lower pool_grid (-o model_kwargs.pool_grid=2) or use fewer stages"
            )
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
