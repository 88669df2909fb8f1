"""Blending between classes and images: condition mixes, class latent means, latent interpolation.

Two ways to draw a pegasus (half bird, half horse) with models trained on CIFAR-10:

- a conditional model (cvae, cgan, conditional aae): ``blend_conditions(bird, horse, 0.5)`` is the
  interpolated one-hot ``[.., bird=0.5, .., horse=0.5, ..]``; sample with it;
- an autoencoder (vae, beta_vae, aae, acai): the mean latent of each class from
  ``class_latent_means``, interpolated with ``interpolate_latents`` and decoded.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from facelab.errors import FacelabError
from facelab.models.generative.base import GenerativeModel, eval_mode


def blend_conditions(cond_a: Tensor, cond_b: Tensor, weight: float | Sequence[float] | Tensor) -> Tensor:
    """``(1 - weight) * cond_a + weight * cond_b``: a condition part-way between two others.

    Args:
        cond_a: (cond_dim,) or (1, cond_dim) or (n, cond_dim) condition (e.g. ``model.make_cond({"label": "bird"})``).
        cond_b: the same shape as ``cond_a``.
        weight: in [0, 1]; a float gives one blend, a sequence / (m,) tensor gives m blends (a sweep) of
            single-row conditions.

    Returns:
        (n, cond_dim) for a float weight, (m, cond_dim) for a sweep.
    """
    a, b = torch.as_tensor(cond_a, dtype=torch.float32), torch.as_tensor(cond_b, dtype=torch.float32)
    a, b = a.reshape(1, -1) if a.ndim == 1 else a, b.reshape(1, -1) if b.ndim == 1 else b
    if a.shape != b.shape or a.ndim != 2:
        raise FacelabError(
            "blend_conditions: conditions must have the same (n, cond_dim) shape; "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    w = torch.as_tensor(weight, dtype=torch.float32)
    if not bool(((w >= 0) & (w <= 1)).all()):
        raise FacelabError(f"blend_conditions: weights must lie in [0, 1]; got {w.tolist()}")
    if w.ndim == 0:
        return torch.lerp(a, b, w)  # (n, D)
    if w.ndim != 1 or a.shape[0] != 1:
        raise FacelabError("blend_conditions: a sweep of weights needs a 1-D weight list and single-row conditions")
    return torch.lerp(a, b, w[:, None])  # (m, D)


def interpolate_latents(z_a: Tensor, z_b: Tensor, steps: int, *, spherical: bool = False) -> Tensor:
    """(steps, D) latents from ``z_a`` to ``z_b`` (both (D,) or (1, D)), end points included.

    ``spherical`` uses slerp, which keeps Gaussian latents at a typical norm (White 2016); linear
    interpolation is what ACAI is trained for.
    """
    a, b = z_a.reshape(-1).float(), z_b.reshape(-1).float()
    if a.shape != b.shape or steps < 2:
        raise FacelabError(
            "interpolate_latents: needs two latents of one size and steps >= 2; "
            f"got {tuple(a.shape)}, {tuple(b.shape)}, steps={steps}"
        )
    t = torch.linspace(0, 1, steps, device=a.device)[:, None]  # (steps, 1)
    if not spherical:
        return torch.lerp(a, b, t).to(z_a.dtype)
    cos = torch.dot(a, b) / (a.norm() * b.norm()).clamp_min(1e-12)
    omega = torch.acos(cos.clamp(-1, 1))
    if float(omega.sin().abs()) < 1e-6:  # (anti)parallel: slerp is undefined, fall back to lerp
        return torch.lerp(a, b, t).to(z_a.dtype)
    out = (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)  # (steps, D)
    return out.to(z_a.dtype)


def class_latent_means(
    model: GenerativeModel, batches: Iterable[Sequence[Tensor]], *, num_classes: int
) -> Tensor:
    """(num_classes, latent_dim) mean latent code per class, encoded in eval mode without gradients.

    Args:
        model: an autoencoder (``model.has_encoder``).
        batches: ``(x, labels)`` or, for conditional models, ``(x, labels, cond)`` tuples; x (B, 3, S, S)
            in [-1, 1], labels (B,) integer class indices in [0, num_classes).
        num_classes: number of classes.

    Raises:
        FacelabError: the model has no encoder, a label is out of range, or a class has no images.
    """
    if not model.has_encoder:
        raise FacelabError(f"{model.name} has no encoder; class latent means need an autoencoder")
    sums = torch.zeros(num_classes, model.latent_dim, dtype=torch.float64)
    counts = torch.zeros(num_classes, dtype=torch.long)
    with torch.no_grad(), eval_mode(model):
        for batch in batches:
            x, labels, cond = batch[0], batch[1], batch[2] if len(batch) > 2 else None
            labels = torch.as_tensor(labels).reshape(-1).long().cpu()
            if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
                bad = labels[(labels < 0) | (labels >= num_classes)].tolist()[:10]
                raise FacelabError(f"class_latent_means: labels must lie in [0, {num_classes}); got {bad}")
            z = model.encode(x.to(model.device), cond).double().cpu()  # (B, D)
            sums.index_add_(0, labels, z)
            counts += torch.bincount(labels, minlength=num_classes)
    empty = (counts == 0).nonzero().flatten().tolist()
    if empty:
        raise FacelabError(f"class_latent_means: no images of class(es) {empty}; give batches covering every class")
    return (sums / counts[:, None]).float()
