"""ResNet-18/34/50 with torchvision's exact module and parameter names.

``conv1, bn1, layer1.0.conv1, ..., layer4.1.downsample.0/1, fc``: a torchvision ImageNet state dict
(``resnet18-f37072fd.pth``) loads with ``create_classifier("resnet18", ..., pretrained=path)``.

``stem="small"`` replaces the 7x7 stride-2 convolution and the max-pool by a 3x3 stride-1 convolution
(the CIFAR ResNet stem), so a 64 px image reaches ``layer4`` at 8x8 instead of 2x2. Loading ImageNet
weights into the small stem resamples the 7x7 ``conv1`` kernel to 3x3 (area-preserving, see
``transfer.load_pretrained``); every other weight loads unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Literal

import torch
from torch import nn

from facelab.errors import ConfigError
from facelab.models.classifiers.base import (
    ARCHITECTURE_SIGNATURES,
    CLASSIFIERS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Classifier,
    PretrainedCfg,
    channel_stats,
    make_linear,
)
from facelab.models.layers import ActFactory, NormFactory, get_act_layer, get_norm_layer, init_conv_norm


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or 1x1 ``downsample``) shortcut."""

    expansion = 1

    def __init__(
        self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None, norm: NormFactory, act: ActFactory
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = norm(planes)
        self.relu = act()
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = norm(planes)
        self.downsample = downsample

    def last_norm(self) -> nn.Module:
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride, "ResNet v1.5" as in torchvision), 1x1 expand by 4."""

    expansion = 4

    def __init__(
        self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None, norm: NormFactory, act: ActFactory
    ) -> None:
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = norm(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = norm(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = norm(planes * self.expansion)
        self.relu = act()
        self.downsample = downsample

    def last_norm(self) -> nn.Module:
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


Stem = Literal["imagenet", "small"]


class ResNet(Classifier):
    """torchvision-compatible ResNet.

    Args:
        block: BasicBlock (18/34) or Bottleneck (50).
        layers: blocks per stage, e.g. (2, 2, 2, 2).
        num_outputs: logits of ``fc`` (0: none).
        in_chans: input channels.
        image_size: the size the model is trained at (recorded in ``pretrained_cfg``).
        drop_rate: dropout before ``fc``.
        stem: "imagenet" (7x7 stride 2 + max-pool, torchvision) or "small" (3x3 stride 1, no pool;
            for 32-64 px images trained from scratch).
        zero_init_residual: start each residual branch's last norm at zero (the block starts as an
            identity; helps training from scratch, irrelevant once pretrained weights are loaded).
        norm_layer: name in ``NORM_LAYERS`` or ``f(channels) -> nn.Module``.
        act_layer: name in ``ACT_LAYERS`` or ``f() -> nn.Module``.
    """

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: tuple[int, int, int, int],
        *,
        num_outputs: int,
        in_chans: int = 3,
        image_size: int = 64,
        drop_rate: float = 0.0,
        stem: Stem = "imagenet",
        zero_init_residual: bool = True,
        norm_layer: str | NormFactory = "batchnorm",
        act_layer: str | ActFactory = "relu",
    ) -> None:
        super().__init__()
        if stem not in ("imagenet", "small"):
            raise ConfigError(f"resnet: stem must be 'imagenet' or 'small', got {stem!r}")
        norm, act = get_norm_layer(norm_layer), get_act_layer(act_layer)
        self.in_chans, self.num_outputs, self.stem = in_chans, num_outputs, stem
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        else:
            self.conv1 = nn.Conv2d(in_chans, 64, kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = norm(64)
        self.relu = act()
        self.inplanes = 64
        self.layer1 = self._make_layer(block, 64, layers[0], 1, norm, act)
        self.layer2 = self._make_layer(block, 128, layers[1], 2, norm, act)
        self.layer3 = self._make_layer(block, 256, layers[2], 2, norm, act)
        self.layer4 = self._make_layer(block, 512, layers[3], 2, norm, act)
        self.num_features = 512 * block.expansion
        self.dropout = nn.Dropout(drop_rate)
        self.fc = make_linear(self.num_features, num_outputs)
        self.pretrained_cfg = PretrainedCfg(
            input_size=(in_chans, image_size, image_size),
            mean=channel_stats(IMAGENET_MEAN, in_chans),
            std=channel_stats(IMAGENET_STD, in_chans),
            first_conv="conv1",
        )
        init_conv_norm(self)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)) and getattr(m.last_norm(), "weight", None) is not None:
                    nn.init.zeros_(m.last_norm().weight)

    def _make_layer(
        self, block: type[BasicBlock | Bottleneck], planes: int, blocks: int, stride: int, norm: NormFactory,
        act: ActFactory,
    ) -> nn.Sequential:
        downsample, width = None, planes * block.expansion
        if stride != 1 or self.inplanes != width:
            downsample = nn.Sequential(conv1x1(self.inplanes, width, stride), norm(width))
        out = [block(self.inplanes, planes, stride, downsample, norm, act)]
        self.inplanes = width
        out += [block(self.inplanes, planes, 1, None, norm, act) for _ in range(1, blocks)]
        return nn.Sequential(*out)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, 64, H/4, W/4); small stem: (B, 64, H, W)
        x = self.layer2(self.layer1(x))  # (B, 128 * e, H/8, W/8)
        return self.layer4(self.layer3(x))  # (B, 512 * e, H/32, W/32); small stem: H/8, W/8


# Factories are partials, so create_classifier can list their keyword options from the signature.
# Parameters with 1000 outputs, as torchvision: resnet18 11,689,512; resnet34 21,797,672; resnet50 25,557,032.
resnet18 = CLASSIFIERS.register("resnet18")(partial(ResNet, BasicBlock, (2, 2, 2, 2)))
resnet34 = CLASSIFIERS.register("resnet34")(partial(ResNet, BasicBlock, (3, 4, 6, 3)))
resnet50 = CLASSIFIERS.register("resnet50")(partial(ResNet, Bottleneck, (3, 4, 6, 3)))


_NAMES = {
    ((2, 2, 2, 2), "basic"): "resnet18",
    ((3, 4, 6, 3), "basic"): "resnet34",
    ((3, 4, 6, 3), "bottleneck"): "resnet50",
    ((3, 4, 23, 3), "bottleneck"): "resnet101",
    ((3, 8, 36, 3), "bottleneck"): "resnet152",
}


def _blocks_per_layer(state: Mapping[str, torch.Tensor]) -> tuple[int, ...]:
    depths = []
    for layer in range(1, 5):
        prefix = f"layer{layer}."
        idx = {int(k[len(prefix) :].split(".", 1)[0]) for k in state if k.startswith(prefix)}
        depths.append(max(idx) + 1 if idx else 0)
    return tuple(depths)


@ARCHITECTURE_SIGNATURES.register("resnet")
def _resnet_signature(state: Mapping[str, torch.Tensor]) -> str | None:
    if "conv1.weight" not in state or "layer1.0.conv1.weight" not in state:
        return None
    kind = "bottleneck" if "layer1.0.conv3.weight" in state else "basic"
    depths = _blocks_per_layer(state)
    name = _NAMES.get((depths, kind), "a ResNet")
    w = state["conv1.weight"]
    fc = state.get("fc.weight")
    head = f"{fc.shape[0]} outputs" if fc is not None else "no head"
    return (
        f"{name} ({kind} blocks {'-'.join(map(str, depths))}, {w.shape[-1]}x{w.shape[-2]} stem, "
        f"{w.shape[1]} input channels, {head})"
    )
