"""Differentiable augmentation for GANs on small data (DiffAugment, Zhao et al. 2020), built from kornia ops.

The same random transformation family is applied to every image the discriminator sees, real and
generated, in both the discriminator and the generator steps; the ops are differentiable with respect to
the images, so the generator's gradient passes through them. This keeps the discriminator from
memorising a small training set without leaking the augmentation into the generated images.

Policies (``DIFFAUG_OPS``), as in the paper: ``color`` (brightness, saturation and contrast jitter),
``translation`` (shift by up to 1/8 of the side, zero padding), ``cutout`` (a square of half the side set
to grey); and ``blur`` (Gaussian blur, sigma 0.1-1.5; not in the paper: for the auxiliary classifier of
:mod:`facelab.models.generative.consistency`, so that a fine texture carries little signal). Images are in
[-1, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import kornia.augmentation as K
from torch import Tensor, nn

from facelab.registry import Registry

DIFFAUG_OPS: Registry[nn.Module] = Registry("DiffAugment policy")


@DIFFAUG_OPS.register("color")
def _color() -> nn.Module:
    return K.ColorJiggle(brightness=0.5, contrast=0.5, saturation=1.0, p=1.0)


@DIFFAUG_OPS.register("translation")
def _translation() -> nn.Module:
    return K.RandomAffine(degrees=0.0, translate=(0.125, 0.125), padding_mode="zeros", p=1.0)


@DIFFAUG_OPS.register("cutout")
def _cutout() -> nn.Module:
    return K.RandomErasing(scale=(0.25, 0.25), ratio=(1.0, 1.0), value=0.5, p=1.0)


@DIFFAUG_OPS.register("blur")
def _blur() -> nn.Module:
    # not in DiffAugment's paper: for auxiliary classifiers, so that a fine texture carries little signal
    return K.RandomGaussianBlur((5, 5), sigma=(0.1, 1.5), p=1.0)


class DiffAugment(nn.Module):
    """``policy`` ops applied in order to (B, 3, S, S) images in [-1, 1]; identity for an empty policy."""

    def __init__(self, policy: Sequence[str] = ()) -> None:
        super().__init__()
        self.policy = list(policy)
        self.ops = nn.ModuleList(DIFFAUG_OPS.create(name) for name in self.policy)

    def forward(self, x: Tensor) -> Tensor:
        if not self.ops:
            return x
        y = (x.float() + 1) / 2  # kornia's colour ops work in [0, 1]
        for op in self.ops:
            y = op(y)
        return (y * 2 - 1).to(x.dtype)

    def extra_repr(self) -> str:
        return f"policy={self.policy}"
