"""Conv stacks shared by the generative models at 32 and 64 px (DCGAN layout, Radford et al. 2016).

- :class:`ConvEncoder`: image -> feature vector, stride-2 4x4 convolutions down to 4x4 (an encoder or
  the body of a discriminator);
- :class:`ConvDecoder`: vector -> image, a linear projection to 4x4 then stride-2 4x4 transposed
  convolutions (a decoder or a generator); raw outputs, the model applies its output map (tanh);
- :class:`ConvDiscriminator`: ConvEncoder + linear head, with an optional projection term for conditions
  (Miyato & Koyama 2018);
- :class:`ConditionalNorm`: a norm whose scale and shift are predicted from the condition (conditional BN);
- :class:`MLP`: a small fully connected net (the AAE's latent discriminator).

Norms and activations come from the shared registries of :mod:`facelab.models.layers`; each block takes
``norm_layer``/``act_layer`` as a registered name or a callable. This module adds the names generative
models need there: ``layernorm`` (GroupNorm with one group, as in WGAN-GP's critic), ``none`` and
``leaky_relu_0.2`` (DCGAN's slope).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
from pydantic import AfterValidator
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from facelab.errors import ConfigError
from facelab.models.layers import ACT_LAYERS, NORM_LAYERS, ActFactory, NormFactory, get_act_layer, get_norm_layer

Pool = Literal["flatten", "sum"]


def _layernorm(num_channels: int) -> nn.Module:
    # Normalises each sample over (C, H, W) with a per-channel affine: "layer norm" for conv features.
    return nn.GroupNorm(1, num_channels)


def _no_norm(num_channels: int) -> nn.Module:
    return nn.Identity()


def _leaky_relu_02() -> nn.Module:
    return nn.LeakyReLU(0.2)


for _registry, _name, _factory in (
    (NORM_LAYERS, "layernorm", _layernorm),
    (NORM_LAYERS, "none", _no_norm),
    (ACT_LAYERS, "leaky_relu_0.2", _leaky_relu_02),
):
    if _name not in _registry:
        _registry.register(_name)(_factory)


def _known_norm(name: str) -> str:
    if name not in NORM_LAYERS:
        raise ValueError(f"unknown norm layer {name!r}; known: {', '.join(NORM_LAYERS.names())}")
    return name


def _known_act(name: str) -> str:
    if name not in ACT_LAYERS:
        raise ValueError(f"unknown activation {name!r}; known: {', '.join(ACT_LAYERS.names())}")
    return name


NormName = Annotated[str, AfterValidator(_known_norm)]  # a config field naming a registered norm layer
ActName = Annotated[str, AfterValidator(_known_act)]  # a config field naming a registered activation


def stage_channels(image_size: int, width: int, max_width: int) -> list[int]:
    """Channels of the stride-2 stages from ``image_size`` down to 4x4: width, 2*width, ... (capped).

    Example: ``stage_channels(32, 64, 512) == [64, 128, 256]``.
    """
    n = round(math.log2(max(image_size, 1) / 4))
    if n < 1 or 4 * 2**n != image_size:
        raise ConfigError(f"image_size must be 4 * 2^k with k >= 1 (e.g. 32 or 64); got {image_size}")
    return [min(width * 2**i, max_width) for i in range(n)]


def maybe_spectral_norm(module: nn.Module, enabled: bool) -> nn.Module:
    """Wrap ``module``'s weight in a spectral-norm parametrization when ``enabled`` (Miyato et al. 2018)."""
    return _spectral_norm(module) if enabled else module


def concat_cond_channels(x: Tensor, cond: Tensor) -> Tensor:
    """Append ``cond`` (B, D) to ``x`` (B, C, H, W) as D constant channels -> (B, C + D, H, W)."""
    maps = cond[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3]).to(x.dtype)  # (B, D, H, W)
    return torch.cat([x, maps], dim=1)


class ConditionalNorm(nn.Module):
    """``norm(x) * (1 + gamma(cond)) + beta(cond)``: conditional batch norm generalised to multi-hot conditions.

    ``gamma``/``beta`` are linear maps of the condition, zero-initialised, so the layer starts as the plain
    norm. For a one-hot class vector this is the class-embedding conditional BN of Miyato & Koyama; for a
    multi-hot attribute vector each present attribute adds its own scale and shift.
    """

    def __init__(self, norm_layer: str | NormFactory, num_channels: int, cond_dim: int) -> None:
        super().__init__()
        self.norm = get_norm_layer(norm_layer)(num_channels)
        self.gamma = nn.Linear(cond_dim, num_channels)
        self.beta = nn.Linear(cond_dim, num_channels)
        for lin in (self.gamma, self.beta):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        h = self.norm(x)  # (B, C, H, W)
        gamma = self.gamma(cond)[:, :, None, None]  # (B, C, 1, 1)
        beta = self.beta(cond)[:, :, None, None]
        return h * (1 + gamma) + beta


def conditional_norm_layer(norm_layer: str | NormFactory, cond_dim: int) -> NormFactory:
    """A norm factory ``f(num_channels)`` building :class:`ConditionalNorm` around ``norm_layer``."""

    def make(num_channels: int) -> nn.Module:
        return ConditionalNorm(norm_layer, num_channels, cond_dim)

    return make


def apply_norm(norm: nn.Module, x: Tensor, cond: Tensor | None) -> Tensor:
    """Call ``norm`` with the condition when it is a :class:`ConditionalNorm`."""
    if isinstance(norm, ConditionalNorm):
        assert cond is not None, "a conditional norm needs the condition"
        return norm(x, cond)
    return norm(x)


class ConvEncoder(nn.Module):
    """(B, in_channels, S, S) [+ cond (B, cond_channels)] -> (B, feat_dim) features.

    Each stage is ``extra_convs`` 3x3 stride-1 convolutions then one 4x4 stride-2 convolution, each followed
    by norm and activation; the first convolution has no norm (DCGAN). The 4x4 output is flattened
    (``pool="flatten"``) or summed over space after the activation (``pool="sum"``, SNGAN's projection
    discriminator). A condition, when ``cond_channels > 0``, is appended to the input as constant channels.

    Args:
        in_channels: image channels.
        image_size: S, a power of two >= 8 (facelab models use 32 or 64).
        width: channels of the first stage; doubles per stage up to ``max_width``.
        max_width: channel cap.
        norm_layer: norm name (``facelab.models.layers.NORM_LAYERS``) or ``f(channels) -> module``.
        act_layer: activation name or ``f() -> module``.
        spectral_norm: wrap every convolution in spectral normalisation.
        extra_convs: 3x3 convolutions per stage before the downsampling one (Miyato's "standard CNN": 1).
        pool: how the final 4x4 map becomes a vector.
        cond_channels: size of a condition vector appended as channels (0: unconditional).
    """

    def __init__(
        self,
        in_channels: int = 3,
        *,
        image_size: int,
        width: int,
        max_width: int,
        norm_layer: str | NormFactory = "batchnorm",
        act_layer: str | ActFactory = "leaky_relu_0.2",
        spectral_norm: bool = False,
        extra_convs: int = 0,
        pool: Pool = "flatten",
        cond_channels: int = 0,
    ) -> None:
        super().__init__()
        norm_fn, act_fn = get_norm_layer(norm_layer), get_act_layer(act_layer)
        layers: list[nn.Module] = []
        c_prev = in_channels + cond_channels
        for c in stage_channels(image_size, width, max_width):
            for kernel, stride in [(3, 1)] * extra_convs + [(4, 2)]:
                norm = nn.Identity() if not layers else norm_fn(c)
                conv = nn.Conv2d(c_prev, c, kernel, stride, padding=1, bias=isinstance(norm, nn.Identity))
                layers += [maybe_spectral_norm(conv, spectral_norm), norm, act_fn()]
                c_prev = c
        self.layers = nn.Sequential(*layers)
        self.cond_channels, self.pool = cond_channels, pool
        self.out_channels = c_prev
        self.feat_dim = c_prev * 16 if pool == "flatten" else c_prev

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        if self.cond_channels:
            assert cond is not None, "this encoder is conditional"
            x = concat_cond_channels(x, cond)  # (B, C + D, S, S)
        h = self.layers(x)  # (B, C', 4, 4)
        return h.flatten(1) if self.pool == "flatten" else h.sum(dim=(2, 3))  # (B, feat_dim)


class ConvDecoder(nn.Module):
    """(B, in_dim) [+ cond (B, cond_dim)] -> (B, out_channels, S, S) raw outputs (no output activation).

    A linear layer projects to a 4x4 map with the widest channel count, then 4x4 stride-2 transposed
    convolutions with norm + activation double the resolution and halve the channels; the last one maps to
    ``out_channels`` with neither (the DCGAN generator). ``cond_dim > 0`` concatenates the condition to the
    input vector; conditional norms (:func:`conditional_norm_layer`) receive it at every stage.

    Args:
        in_dim: size of the input vector (the latent).
        out_channels: image channels.
        image_size: output side S.
        width: channels of the last hidden stage (the widest is ``width * S / 8``, capped at ``max_width``).
        max_width: channel cap.
        norm_layer: norm name or factory (may be conditional).
        act_layer: activation name or factory.
        cond_dim: size of a condition vector concatenated to the input (0: none).
    """

    def __init__(
        self,
        in_dim: int,
        out_channels: int = 3,
        *,
        image_size: int,
        width: int,
        max_width: int,
        norm_layer: str | NormFactory = "batchnorm",
        act_layer: str | ActFactory = "relu",
        cond_dim: int = 0,
    ) -> None:
        super().__init__()
        norm_fn = get_norm_layer(norm_layer)
        chans = stage_channels(image_size, width, max_width)[::-1]  # widest first
        self.norms = nn.ModuleList(norm_fn(c) for c in chans)
        plain = isinstance(self.norms[0], nn.Identity)
        self.fc = nn.Linear(in_dim + cond_dim, chans[0] * 16, bias=plain)
        self.convs = nn.ModuleList(
            nn.ConvTranspose2d(a, b, 4, 2, 1, bias=isinstance(n, nn.Identity))
            for a, b, n in zip(chans[:-1], chans[1:], self.norms[1:])
        )
        self.act = get_act_layer(act_layer)()
        self.out = nn.ConvTranspose2d(chans[-1], out_channels, 4, 2, 1)
        self.cond_dim, self.base_channels = cond_dim, chans[0]

    def forward(self, z: Tensor, cond: Tensor | None = None) -> Tensor:
        if self.cond_dim:
            assert cond is not None, "this decoder is conditional"
            z = torch.cat([z, cond.to(z.dtype)], dim=1)  # (B, in_dim + D)
        h = self.fc(z).reshape(z.shape[0], self.base_channels, 4, 4)  # (B, C0, 4, 4)
        h = self.act(apply_norm(self.norms[0], h, cond))
        for conv, norm in zip(self.convs, self.norms[1:]):
            h = self.act(apply_norm(norm, conv(h), cond))  # (B, C_i, 2H, 2W)
        return self.out(h)  # (B, out_channels, S, S)


class ConvDiscriminator(nn.Module):
    """(B, 3, S, S) [+ cond (B, cond_dim)] -> (B,) logits or critic values.

    ``head(phi(x))`` plus, when ``cond_dim > 0``, the projection term ``<embed(cond), phi(x)>`` of Miyato &
    Koyama (2018); ``embed`` is a bias-free linear map, i.e. a class embedding for one-hot conditions and a
    sum of attribute embeddings for multi-hot ones. Keyword options are those of :class:`ConvEncoder`.
    """

    def __init__(
        self,
        in_channels: int = 3,
        *,
        image_size: int,
        width: int,
        max_width: int,
        norm_layer: str | NormFactory = "batchnorm",
        act_layer: str | ActFactory = "leaky_relu_0.2",
        spectral_norm: bool = False,
        extra_convs: int = 0,
        pool: Pool = "flatten",
        cond_dim: int = 0,
    ) -> None:
        super().__init__()
        self.features = ConvEncoder(
            in_channels, image_size=image_size, width=width, max_width=max_width, norm_layer=norm_layer,
            act_layer=act_layer, spectral_norm=spectral_norm, extra_convs=extra_convs, pool=pool,
        )
        feat = self.features.feat_dim
        self.head = maybe_spectral_norm(nn.Linear(feat, 1), spectral_norm)
        self.embed = maybe_spectral_norm(nn.Linear(cond_dim, feat, bias=False), spectral_norm) if cond_dim else None

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        h = self.features(x)  # (B, F)
        out = self.head(h).squeeze(1)  # (B,)
        if self.embed is not None:
            assert cond is not None, "this discriminator is conditional"
            out = out + (self.embed(cond.to(h.dtype)) * h).sum(dim=1)  # projection term
        return out


class MLP(nn.Sequential):
    """``depth`` hidden linear layers of ``hidden`` units with activations, then a linear output layer."""

    def __init__(
        self, in_dim: int, out_dim: int, *, hidden: int, depth: int = 2, act_layer: str | ActFactory = "leaky_relu_0.2"
    ) -> None:
        act_fn = get_act_layer(act_layer)
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Linear(in_dim if i == 0 else hidden, hidden), act_fn()]
        layers.append(nn.Linear(hidden if depth else in_dim, out_dim))
        super().__init__(*layers)


def init_dcgan_weights(module: nn.Module) -> None:
    """DCGAN initialisation: conv/linear weights ~ N(0, 0.02), BN scales ~ N(1, 0.02), zero biases.

    The zero-initialised scale/shift maps inside :class:`ConditionalNorm` are left alone; spectrally
    normalised layers initialise their unnormalised weight.
    """
    skip = {id(m) for c in module.modules() if isinstance(c, ConditionalNorm) for m in (c.gamma, c.beta)}
    for m in module.modules():
        if id(m) in skip:
            continue
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            weight = m.parametrizations.weight.original if parametrize.is_parametrized(m, "weight") else m.weight
            nn.init.normal_(weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)

