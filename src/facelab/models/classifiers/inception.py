"""Inception-v3 with torchvision's exact module and parameter names (``Conv2d_1a_3x3 ... Mixed_7c, fc``).

A torchvision ImageNet state dict (``inception_v3_google-0cc3c7bd.pth``) loads with
``create_classifier("inception_v3", num_outputs=1000, pretrained=path)``; the auxiliary head
(``AuxLogits``) is optional both in the model (``aux_logits``) and in the file.

Input size: 299 px natively, 75 px at least (below, ``Mixed_7a``'s stride-2 3x3 convolution gets an
empty input); smaller images raise a FacelabError. At 75 px the last feature map is 1x1, at 139 px 3x3,
at 299 px 8x8. ``pooled_features(x)`` gives the 2048-d pooled features used for FID/KID.

Input normalisation: the Google weights expect pixels scaled to [-1, 1]. With ``transform_input=True``
(default, as torchvision does for its pretrained weights) the model takes ImageNet-normalised input,
like every facelab model with ImageNet mean/std, and converts it internally.

``pooling="tf"`` reproduces the pooling of the original TensorFlow graph used by FID (pytorch-fid's
``FIDInceptionA/C/E``): average pools ignore the padding and ``Mixed_7c`` max-pools. Parameter names do
not change, so FID weights (1008 outputs) load with ``num_outputs=1008, pooling="tf"``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal

import torch
import torch.nn.functional as F
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
from facelab.models.layers import init_conv_norm

Pool = Callable[[torch.Tensor], torch.Tensor]
MIN_INPUT_SIZE = 75


def _avg_pool(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1)


def _avg_pool_tf(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def _max_pool_same(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


class BasicConv2d(nn.Module):
    """conv (no bias) -> batch norm (eps 1e-3) -> ReLU; submodules ``conv`` and ``bn``."""

    def __init__(self, in_channels: int, out_channels: int, **kwargs) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


class InceptionA(nn.Module):
    def __init__(self, in_channels: int, pool_features: int, pool: Pool) -> None:
        super().__init__()
        self.pool = pool
        self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(self.pool(x))], 1)


class InceptionB(nn.Module):
    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionC(nn.Module):
    def __init__(self, in_channels: int, channels_7x7: int, pool: Pool) -> None:
        super().__init__()
        c7 = channels_7x7
        self.pool = pool
        self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = self.branch7x7dbl_2(self.branch7x7dbl_1(x))
        d = self.branch7x7dbl_5(self.branch7x7dbl_4(self.branch7x7dbl_3(d)))
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(self.pool(x))], 1)


class InceptionD(nn.Module):
    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    def __init__(self, in_channels: int, pool: Pool) -> None:
        super().__init__()
        self.pool = pool
        self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        return torch.cat([self.branch1x1(x), b3, d, self.branch_pool(self.pool(x))], 1)


class InceptionAux(nn.Module):
    """Auxiliary classifier on ``Mixed_6e`` (B, 768, 17, 17 at 299 px).

    torchvision's 5x5/stride-3 average pool needs a 17x17 map (299 px input); on smaller maps an adaptive
    average pool to 5x5 takes its place, so the head also trains at 75-298 px.
    """

    def __init__(self, in_channels: int, num_outputs: int) -> None:
        super().__init__()
        self.conv0 = BasicConv2d(in_channels, 128, kernel_size=1)
        self.conv1 = BasicConv2d(128, 768, kernel_size=5)
        self.fc = make_linear(768, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) >= 17:
            x = F.avg_pool2d(x, kernel_size=5, stride=3)  # (B, 768, 5, 5) at 17x17
        else:
            x = F.adaptive_avg_pool2d(x, 5)  # (B, 768, 5, 5)
        x = self.conv1(self.conv0(x))  # (B, 768, 1, 1) at 5x5
        return self.fc(x.mean(dim=(2, 3)))  # (B, num_outputs)


class InceptionV3(Classifier):
    """torchvision-compatible Inception-v3.

    Args:
        num_outputs: logits of ``fc`` (and of ``AuxLogits.fc``).
        in_chans: input channels.
        image_size: the size the model is used at (>= 75; recorded in ``pretrained_cfg``).
        drop_rate: dropout before ``fc`` (torchvision: 0.5).
        aux_logits: build the auxiliary head; ``forward_with_aux`` returns its logits in training mode.
        transform_input: convert ImageNet-normalised input to the [-1, 1] scaling of the Google weights
            (3-channel input only).
        pooling: "torchvision" or "tf" (FID Inception pooling, see the module docstring).
    """

    head_names = ("fc", "AuxLogits")
    optional_state_prefixes = ("AuxLogits.",)

    def __init__(
        self,
        *,
        num_outputs: int,
        in_chans: int = 3,
        image_size: int = 299,
        drop_rate: float = 0.5,
        aux_logits: bool = False,
        transform_input: bool = True,
        pooling: Literal["torchvision", "tf"] = "torchvision",
    ) -> None:
        super().__init__()
        if image_size < MIN_INPUT_SIZE:
            raise ConfigError(f"inception_v3 needs image_size >= {MIN_INPUT_SIZE} (299 native), got {image_size}")
        if pooling not in ("torchvision", "tf"):
            raise ConfigError(f"inception_v3: pooling must be 'torchvision' or 'tf', got {pooling!r}")
        self.in_chans, self.num_outputs, self.num_features = in_chans, num_outputs, 2048
        self.transform_input = transform_input and in_chans == 3
        avg = _avg_pool_tf if pooling == "tf" else _avg_pool
        self.Conv2d_1a_3x3 = BasicConv2d(in_chans, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.maxpool1 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.maxpool2 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Mixed_5b = InceptionA(192, 32, avg)
        self.Mixed_5c = InceptionA(256, 64, avg)
        self.Mixed_5d = InceptionA(288, 64, avg)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, 128, avg)
        self.Mixed_6c = InceptionC(768, 160, avg)
        self.Mixed_6d = InceptionC(768, 160, avg)
        self.Mixed_6e = InceptionC(768, 192, avg)
        self.AuxLogits = InceptionAux(768, num_outputs) if aux_logits else None
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, avg)
        self.Mixed_7c = InceptionE(2048, _max_pool_same if pooling == "tf" else avg)
        self.dropout = nn.Dropout(drop_rate)
        self.fc = make_linear(2048, num_outputs)
        mean, std = channel_stats(IMAGENET_MEAN, in_chans), channel_stats(IMAGENET_STD, in_chans)
        # x_google = (x * std + mean - 0.5) / 0.5; not saved in the state dict.
        scale, shift = [s / 0.5 for s in std], [(m - 0.5) / 0.5 for m in mean]
        self.register_buffer("input_scale", torch.tensor(scale).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("input_shift", torch.tensor(shift).view(1, -1, 1, 1), persistent=False)
        self.pretrained_cfg = PretrainedCfg(
            input_size=(in_chans, image_size, image_size),
            mean=mean,
            std=std,
            min_input_size=MIN_INPUT_SIZE,
            first_conv="Conv2d_1a_3x3.conv",
        )
        init_conv_norm(self)

    def reset_classifier(self, num_outputs: int) -> None:
        super().reset_classifier(num_outputs)
        if self.AuxLogits is not None:
            self.AuxLogits.fc = make_linear(768, num_outputs, like=next(self.parameters(), None))

    def _to_mixed_6e(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        if self.transform_input:
            x = x * self.input_scale + self.input_shift
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # (B, 64, 147, 147) at 299
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(self.maxpool1(x)))  # (B, 192, 71, 71)
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(self.maxpool2(x))))  # (B, 288, 35, 35)
        x = self.Mixed_6a(x)  # (B, 768, 17, 17)
        return self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(x))))  # (B, 768, 17, 17)

    def _from_mixed_6e(self, x: torch.Tensor) -> torch.Tensor:
        return self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))  # (B, 2048, 8, 8) at 299, 1x1 at 75

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._from_mixed_6e(self._to_mixed_6e(x))

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(logits, aux logits); aux logits only in training mode with ``aux_logits=True`` (torchvision)."""
        mid = self._to_mixed_6e(x)
        aux = self.AuxLogits(mid) if self.AuxLogits is not None and self.training else None
        return self.forward_head(self._from_mixed_6e(mid)), aux


CLASSIFIERS.register("inception_v3")(InceptionV3)


@ARCHITECTURE_SIGNATURES.register("inception_v3")
def _inception_signature(state: Mapping[str, torch.Tensor]) -> str | None:
    if "Mixed_7c.branch_pool.conv.weight" not in state:
        return None
    aux = "with" if any(k.startswith("AuxLogits.") for k in state) else "without"
    fc = state.get("fc.weight")
    head = f"{fc.shape[0]} outputs" if fc is not None else "no head"
    return f"inception_v3 ({aux} AuxLogits, {state['Conv2d_1a_3x3.conv.weight'].shape[1]} input channels, {head})"
