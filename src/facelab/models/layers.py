"""Norm and activation layers by name, and the conv-norm-act blocks built from them.

Models take ``norm_layer``/``act_layer`` as a registered name (serialisable, so a checkpoint can rebuild
the model) or as a callable: ``norm_layer(num_channels) -> nn.Module``, ``act_layer() -> nn.Module``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import nn

from facelab.registry import Registry

NormFactory = Callable[[int], nn.Module]
ActFactory = Callable[[], nn.Module]

NORM_LAYERS: Registry[nn.Module] = Registry("norm layer")
ACT_LAYERS: Registry[nn.Module] = Registry("activation")


@NORM_LAYERS.register("batchnorm")
def _batchnorm(num_channels: int) -> nn.Module:
    return nn.BatchNorm2d(num_channels)


@NORM_LAYERS.register("groupnorm")
def _groupnorm(num_channels: int) -> nn.Module:
    # 32 groups (Wu & He) or fewer when the channel count is small or not divisible.
    return nn.GroupNorm(math.gcd(32, num_channels), num_channels)


@NORM_LAYERS.register("instancenorm")
def _instancenorm(num_channels: int) -> nn.Module:
    return nn.InstanceNorm2d(num_channels, affine=True)


ACT_LAYERS.register("relu")(lambda: nn.ReLU(inplace=True))
ACT_LAYERS.register("leaky_relu")(lambda: nn.LeakyReLU(0.1, inplace=True))
ACT_LAYERS.register("silu")(lambda: nn.SiLU(inplace=True))
ACT_LAYERS.register("mish")(lambda: nn.Mish(inplace=True))
ACT_LAYERS.register("gelu")(lambda: nn.GELU())
ACT_LAYERS.register("elu")(lambda: nn.ELU(inplace=True))


def get_norm_layer(spec: str | NormFactory) -> NormFactory:
    """Resolve ``spec`` (a name in NORM_LAYERS or a callable) to ``f(num_channels) -> nn.Module``."""
    return NORM_LAYERS.get(spec) if isinstance(spec, str) else spec


def get_act_layer(spec: str | ActFactory) -> ActFactory:
    """Resolve ``spec`` (a name in ACT_LAYERS or a callable) to ``f() -> nn.Module``."""
    return ACT_LAYERS.get(spec) if isinstance(spec, str) else spec


class ConvNormAct(nn.Sequential):
    """``conv (no bias) -> norm -> act``; submodules are named ``conv``, ``bn``, ``act``."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 3,
        *,
        stride: int = 1,
        norm_layer: str | NormFactory = "batchnorm",
        act_layer: str | ActFactory | None = "relu",
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, padding=kernel_size // 2, bias=False)
        self.bn = get_norm_layer(norm_layer)(out_chs)
        self.act = get_act_layer(act_layer)() if act_layer is not None else nn.Identity()


class SeparableConvNormAct(nn.Sequential):
    """Depthwise-separable conv: ``dw conv -> norm -> pw conv -> norm -> act``.

    No activation between the depthwise and pointwise convolutions (Xception, Chollet 2017). About
    ``9 / out_chs + 1 / 9`` of the parameters of a full 3x3 convolution with the same channels.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 3,
        *,
        stride: int = 1,
        norm_layer: str | NormFactory = "batchnorm",
        act_layer: str | ActFactory | None = "relu",
    ) -> None:
        super().__init__()
        norm = get_norm_layer(norm_layer)
        self.conv_dw = nn.Conv2d(
            in_chs, in_chs, kernel_size, stride=stride, padding=kernel_size // 2, groups=in_chs, bias=False
        )
        self.bn_dw = norm(in_chs)
        self.conv_pw = nn.Conv2d(in_chs, out_chs, 1, bias=False)
        self.bn = norm(out_chs)
        self.act = get_act_layer(act_layer)() if act_layer is not None else nn.Identity()


def init_conv_norm(module: nn.Module) -> None:
    """Kaiming-normal (fan-out) convolutions with zero bias, unit-scale norms with zero bias."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d)) and m.weight is not None:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def count_params(module: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters (elements), optionally only those with ``requires_grad``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
