"""Batch augmentation with kornia, on (B, 3, H, W) float tensors in [0, 1], on the batch's device.

Augmentation runs at fit time on training batches only, before normalisation. A horizontal flip also
fixes up labels whose meaning flips with the image (a face turned 'left' becomes 'right'): declare them in
``AugmentConfig.label_flip_map``.

Presets live in the :data:`AUGMENT_PRESETS` registry; kornia ops are built by the :data:`AUGMENT_OPS`
registry from the config field of the same name, applied in :data:`OP_ORDER` after the flip.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import kornia.augmentation as K
import torch
from pydantic import Field, field_validator, model_validator
from torch import nn

from facelab.config import StrictConfig
from facelab.data.schema import LabelKind, LabelSpec
from facelab.errors import ConfigError
from facelab.registry import Registry

class ResizedCropConfig(StrictConfig):
    """A random crop of ``scale`` x the image area and aspect ``ratio``, resized back to the image size
    (the view sampler of contrastive learning; faces keep most of the frame with the default scale)."""

    p: float = Field(1.0, ge=0.0, le=1.0)
    scale: tuple[float, float] = (0.35, 1.0)
    ratio: tuple[float, float] = (0.75, 1.3333)

    @field_validator("scale")
    @classmethod
    def _area_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0.0 < v[0] <= v[1] <= 1.0:
            raise ValueError(f"scale must be (low, high) with 0 < low <= high <= 1, got {v}")
        return v


class AffineConfig(StrictConfig):
    """Small random rotation, translation and scaling (reflection padding)."""

    p: float = Field(0.5, ge=0.0, le=1.0)
    degrees: float = Field(10.0, ge=0.0, le=45.0)
    translate: float = Field(0.05, ge=0.0, le=0.3)  # fraction of the image side, both axes
    scale: tuple[float, float] = (0.95, 1.05)

    @field_validator("scale")
    @classmethod
    def _scale_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0.5 <= v[0] <= v[1] <= 2.0:
            raise ValueError(f"scale must be (low, high) with 0.5 <= low <= high <= 2, got {v}")
        return v


class ColorJitterConfig(StrictConfig):
    """Random brightness/contrast/saturation (factors in [1 - v, 1 + v]) and hue shift ([-hue, hue])."""

    p: float = Field(0.8, ge=0.0, le=1.0)
    brightness: float = Field(0.2, ge=0.0, le=1.0)
    contrast: float = Field(0.2, ge=0.0, le=1.0)
    saturation: float = Field(0.2, ge=0.0, le=1.0)
    hue: float = Field(0.02, ge=0.0, le=0.5)


class ErasingConfig(StrictConfig):
    """Random erasing (cutout): a rectangle of ``scale`` x area and aspect ``ratio`` set to ``value``."""

    p: float = Field(0.25, ge=0.0, le=1.0)
    scale: tuple[float, float] = (0.02, 0.1)
    ratio: tuple[float, float] = (0.3, 3.3)
    value: float = Field(0.0, ge=0.0, le=1.0)  # in [0, 1] image units (before normalisation)

    @field_validator("scale")
    @classmethod
    def _area_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0.0 < v[0] <= v[1] < 1.0:
            raise ValueError(f"scale must be (low, high) with 0 < low <= high < 1, got {v}")
        return v


class BlurConfig(StrictConfig):
    """Gaussian blur with a random ``sigma`` in pixels (out-of-focus and downscaled photos)."""

    p: float = Field(0.2, ge=0.0, le=1.0)
    sigma: tuple[float, float] = (0.1, 1.2)

    @field_validator("sigma")
    @classmethod
    def _sigma_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0.0 < v[0] <= v[1] <= 5.0:
            raise ValueError(f"sigma must be (low, high) with 0 < low <= high <= 5 pixels, got {v}")
        return v


class AugmentConfig(StrictConfig):
    """What :class:`BatchAugment` does; every op is off unless set. Build one from a preset with
    ``AugmentConfig.preset("standard")``.

    ``label_flip_map`` maps a label name to the classes a horizontal flip swaps, e.g.
    ``{"yaw": {"left": "right"}}``; the swap is made symmetric (right -> left too).
    """

    hflip: float = Field(0.0, ge=0.0, le=1.0)  # probability; 0 turns flipping off
    resized_crop: ResizedCropConfig | None = None
    affine: AffineConfig | None = None
    color_jitter: ColorJitterConfig | None = None
    grayscale: float = Field(0.0, ge=0.0, le=1.0)
    blur: BlurConfig | None = None
    random_erasing: ErasingConfig | None = None
    label_flip_map: dict[str, dict[str | int, str | int]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _symmetric_flip_map(self) -> AugmentConfig:
        for name, pairs in self.label_flip_map.items():
            full = dict(pairs)
            for a, b in pairs.items():
                if full.setdefault(b, a) != a:
                    raise ValueError(
                        f"label_flip_map[{name!r}]: {b!r} would swap with both {full[b]!r} and {a!r}; "
                        "a flip swaps classes in pairs, e.g. {left: right}"
                    )
            pairs.update(full)
        return self

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> AugmentConfig:
        """The registered preset ``name`` (none, flip, geometric, standard, strong, wild, simclr), with field ``overrides``."""
        base = AUGMENT_PRESETS.create(name)
        return cls.from_dict({**base.model_dump(), **overrides}, where=f"augmentation preset {name!r}")

    @property
    def is_identity(self) -> bool:
        return self.hflip == 0 and not any(_enabled(self, op) for op in OP_ORDER)


# ---- presets --------------------------------------------------------------------------------------
AUGMENT_PRESETS: Registry[AugmentConfig] = Registry("augmentation preset")


@AUGMENT_PRESETS.register("none")
def _preset_none() -> AugmentConfig:
    return AugmentConfig()


@AUGMENT_PRESETS.register("flip")
def _preset_flip() -> AugmentConfig:
    return AugmentConfig(hflip=0.5)


@AUGMENT_PRESETS.register("geometric")
def _preset_geometric() -> AugmentConfig:
    """Flip and a small affine jitter, no colour change: for labels that are colours (hair, skin, lipstick)."""
    return AugmentConfig(hflip=0.5, affine=AffineConfig())


@AUGMENT_PRESETS.register("standard")
def _preset_standard() -> AugmentConfig:
    return AugmentConfig(
        hflip=0.5, affine=AffineConfig(), color_jitter=ColorJitterConfig(), random_erasing=ErasingConfig()
    )


@AUGMENT_PRESETS.register("strong")
def _preset_strong() -> AugmentConfig:
    return AugmentConfig(
        hflip=0.5,
        affine=AffineConfig(p=0.8, degrees=15.0, translate=0.1, scale=(0.9, 1.1)),
        color_jitter=ColorJitterConfig(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.05),
        grayscale=0.1,
        random_erasing=ErasingConfig(p=0.5, scale=(0.02, 0.2)),
    )


@AUGMENT_PRESETS.register("wild")
def _preset_wild() -> AugmentConfig:
    """For models meant for photos taken in the wild: flip and small affine jitter as ``geometric``, plus what
    separates a phone photo from CelebA's studio images: black-and-white photos (greyscale 20%), light and
    colour casts (brightness/contrast/saturation 0.3, hardly any hue: hair colours are labels) and blur."""
    return AugmentConfig(hflip=0.5, affine=AffineConfig(),
                         color_jitter=ColorJitterConfig(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.02),
                         grayscale=0.2, blur=BlurConfig())


@AUGMENT_PRESETS.register("simclr")
def _preset_simclr() -> AugmentConfig:
    """The views of contrastive pretraining (SimCLR, Chen et al. 2020), tuned for aligned faces: a resized
    crop keeping 35-100% of the area (faces fill the frame: smaller crops show only skin), flip, strong colour
    jitter (p 0.8, 0.4/0.4/0.4/0.1), greyscale 20% and blur half of the time. No labels are involved."""
    return AugmentConfig(hflip=0.5, resized_crop=ResizedCropConfig(),
                         color_jitter=ColorJitterConfig(p=0.8, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1),
                         grayscale=0.2, blur=BlurConfig(p=0.5, sigma=(0.1, 2.0)))


# ---- ops ------------------------------------------------------------------------------------------
AUGMENT_OPS: Registry[nn.Module] = Registry("augmentation op")
OP_ORDER = ("resized_crop", "affine", "color_jitter", "grayscale", "blur", "random_erasing")  # after the flip, in this order


def _enabled(config: AugmentConfig, op: str) -> bool:
    value = getattr(config, op)
    return value is not None and (not isinstance(value, float) or value > 0) and getattr(value, "p", 1.0) > 0


@AUGMENT_OPS.register("resized_crop")
def _resized_crop(c: ResizedCropConfig) -> nn.Module:
    return _SameSizeCrop(c)


class _SameSizeCrop(nn.Module):
    """kornia's RandomResizedCrop at the size of the images it gets (the op is built before the size is known)."""

    def __init__(self, c: ResizedCropConfig) -> None:
        super().__init__()
        self.c = c
        self.ops = nn.ModuleDict()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = f"{x.shape[-2]}x{x.shape[-1]}"
        if key not in self.ops:
            self.ops[key] = K.RandomResizedCrop(tuple(x.shape[-2:]), scale=self.c.scale, ratio=self.c.ratio, p=self.c.p)
        return self.ops[key](x)  # (B, 3, H, W)


@AUGMENT_OPS.register("affine")
def _affine(c: AffineConfig) -> nn.Module:
    t = (c.translate, c.translate)
    return K.RandomAffine(degrees=c.degrees, translate=t, scale=c.scale, padding_mode="reflection", p=c.p)


@AUGMENT_OPS.register("color_jitter")
def _color_jitter(c: ColorJitterConfig) -> nn.Module:
    return K.ColorJitter(brightness=c.brightness, contrast=c.contrast, saturation=c.saturation, hue=c.hue, p=c.p)


@AUGMENT_OPS.register("grayscale")
def _grayscale(p: float) -> nn.Module:
    return K.RandomGrayscale(p=p)


@AUGMENT_OPS.register("blur")
def _blur(c: BlurConfig) -> nn.Module:
    return K.RandomGaussianBlur(kernel_size=(5, 5), sigma=c.sigma, p=c.p)


@AUGMENT_OPS.register("random_erasing")
def _erasing(c: ErasingConfig) -> nn.Module:
    return K.RandomErasing(scale=c.scale, ratio=c.ratio, value=c.value, p=c.p)


# ---- the module -----------------------------------------------------------------------------------
def _flip_lut(spec: LabelSpec, pairs: dict[str | int, str | int]) -> torch.Tensor:
    """(K,) int64 lookup table: label value -> value after a horizontal flip."""
    if spec.kind is LabelKind.NUMERIC:
        raise ConfigError(f"label_flip_map: {spec.name!r} is numeric; only binary/categorical labels can be swapped")
    classes = list(spec.classes)
    lut = torch.arange(len(classes))

    def value(v: str | int) -> int:
        if isinstance(v, str) and v in classes:
            return classes.index(v)
        if isinstance(v, int) and 0 <= v < len(classes):
            return v
        raise ConfigError(
            f"label_flip_map[{spec.name!r}]: {v!r} is not a class of {spec.name!r} ({', '.join(classes)})"
        )

    for a, b in pairs.items():
        lut[value(a)] = value(b)
    return lut


def mirrored_labels(label_specs: Sequence[LabelSpec]) -> dict[str, dict[str | int, str | int]]:
    """Labels a horizontal flip mirrors: every categorical label with classes 'left' and 'right' (head yaw,
    light direction). Without this, a flipped face turned left would keep the label 'left'."""
    return {s.name: {"left": "right", "right": "left"} for s in label_specs
            if s.kind is LabelKind.CATEGORICAL and s.classes and {"left", "right"} <= set(s.classes)}


class BatchAugment(nn.Module):
    """Random augmentation of a batch, returning ``(x, y)`` with flip-sensitive labels fixed up.

    Args:
        config: what to apply.
        label_specs: the columns of the ``y`` it will see (needed only with ``config.label_flip_map``).

    Kornia draws its random parameters from torch's global CPU generator, so results are deterministic
    under ``torch.manual_seed``; pass ``seed=`` to a call to make that batch's augmentation depend on the
    seed alone (the loader does this per batch so that resumed runs see identical batches).
    """

    def __init__(self, config: AugmentConfig, *, label_specs: Sequence[LabelSpec] = ()) -> None:
        super().__init__()
        self.config = config
        self.label_names = [s.name for s in label_specs]
        self.flip = K.RandomHorizontalFlip(p=config.hflip) if config.hflip > 0 else None
        ops = [AUGMENT_OPS.create(op, getattr(config, op)) for op in OP_ORDER if _enabled(config, op)]
        self.ops = nn.Sequential(*ops)
        by_name = {s.name: (j, s) for j, s in enumerate(label_specs)}
        self._flip_cols: list[tuple[int, torch.Tensor]] = []
        flip_map = dict(config.label_flip_map)
        if config.hflip > 0:
            flip_map = {**mirrored_labels(label_specs), **flip_map}
        for name, pairs in flip_map.items():
            if name not in by_name:
                known = ", ".join(by_name) or "none given: pass label_specs="
                raise ConfigError(f"label_flip_map names label {name!r}, which is not among the labels ({known})")
            j, spec = by_name[name]
            self._flip_cols.append((j, _flip_lut(spec, pairs)))

    @classmethod
    def from_preset(cls, name: str, *, label_specs: Sequence[LabelSpec] = (), **overrides: Any) -> BatchAugment:
        """A BatchAugment from a registered preset with optional config overrides."""
        return cls(AugmentConfig.preset(name, **overrides), label_specs=label_specs)

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> BatchAugment:
        """``.to(device)`` keeps the random parameters on the CPU generator (kornia would move it), so a
        seed gives the same augmentation on every device; kornia moves parameters to the images itself."""
        out = super()._apply(fn, *args, **kwargs)
        for m in self.modules():
            if m is not self and hasattr(m, "set_rng_device_and_dtype"):
                m.set_rng_device_and_dtype(torch.device("cpu"), torch.float32)
        return out

    @property
    def flips_labels(self) -> bool:
        return bool(self._flip_cols) and self.flip is not None

    def forward(
        self, x: torch.Tensor, y: torch.Tensor | None = None, *, seed: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Augment ``x`` (B, 3, H, W) float in [0, 1]; return it with ``y`` (B, L) fixed up for flips."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"BatchAugment expects (B, 3, H, W) images, got {tuple(x.shape)}")
        if seed is None:
            return self._augment(x, y)
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(int(seed))
            return self._augment(x, y)

    def _augment(self, x: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.flip is not None:
            params = self.flip.forward_parameters(x.shape)
            x = self.flip(x, params=params)  # (B, 3, H, W)
            if y is not None and self._flip_cols:
                y = self._flip_labels(y, params["batch_prob"].to(y.device) > 0.5)
        if len(self.ops):
            x = self.ops(x)  # (B, 3, H, W)
        return x, y

    def _flip_labels(self, y: torch.Tensor, flipped: torch.Tensor) -> torch.Tensor:
        if y.ndim != 2 or y.shape[1] != len(self.label_names):
            raise ConfigError(
                f"labels have shape {tuple(y.shape)} but this BatchAugment was built for "
                f"{len(self.label_names)} labels ({', '.join(self.label_names)})"
            )
        y = y.clone()
        for j, lut in self._flip_cols:
            swapped = lut.to(y.device)[y[:, j]]
            y[:, j] = torch.where(flipped, swapped, y[:, j])
        return y

    def extra_repr(self) -> str:
        return f"hflip={self.config.hflip}, label_flip_map={self.config.label_flip_map or None}"

