"""Loss terms of the generative models: reconstruction, KL, adversarial (BCE, hinge, Wasserstein), GP.

Per-image terms are summed over pixels / latent dimensions and averaged over the batch, so a VAE's loss
is the negative ELBO per image. Every term is computed in float32 (safe under bf16 autocast).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

ReconLoss = Literal["sse", "gaussian", "bce"]


def raw_to_image(raw: Tensor, kind: ReconLoss) -> Tensor:
    """Map a decoder's raw output to an image in [-1, 1]: ``2 * sigmoid(raw) - 1`` for bce, else tanh."""
    return torch.tanh(raw / 2) if kind == "bce" else torch.tanh(raw)


def reconstruction_loss(raw: Tensor, x: Tensor, *, kind: ReconLoss, sigma: float = 1.0) -> Tensor:
    """Reconstruction term per image (summed over pixels, averaged over the batch).

    Args:
        raw: (B, 3, S, S) raw decoder output.
        x: (B, 3, S, S) target images in [-1, 1].
        kind: ``sse`` sum of squared errors of ``tanh(raw)``; ``gaussian`` negative log-likelihood of x under
            N(tanh(raw), sigma^2) per pixel; ``bce`` binary cross-entropy of the pixel intensities
            ``(x + 1) / 2`` against ``sigmoid(raw)`` (continuous Bernoulli-style targets).
        sigma: the Gaussian's standard deviation (``gaussian`` only).
    """
    raw, x = raw.float(), x.float()
    if kind == "bce":
        per_pixel = F.binary_cross_entropy_with_logits(raw, (x + 1) / 2, reduction="none")
    else:
        sq = (torch.tanh(raw) - x) ** 2  # (B, 3, S, S)
        per_pixel = sq if kind == "sse" else sq / (2 * sigma**2) + math.log(sigma * math.sqrt(2 * math.pi))
    return per_pixel.flatten(1).sum(1).mean()


def kl_standard_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per image (summed over latent dimensions, averaged over the batch)."""
    mu, logvar = mu.float(), logvar.float()
    return (0.5 * (mu**2 + logvar.exp() - 1 - logvar)).sum(1).mean()


def bce_discriminator_loss(real: Tensor, fake: Tensor) -> Tensor:
    """Standard GAN discriminator loss on logits: -log D(x) - log(1 - D(G(z)))."""
    real, fake = real.float(), fake.float()
    return F.binary_cross_entropy_with_logits(real, torch.ones_like(real)) + F.binary_cross_entropy_with_logits(
        fake, torch.zeros_like(fake)
    )


def bce_generator_loss(fake: Tensor) -> Tensor:
    """Non-saturating generator loss: -log D(G(z))."""
    fake = fake.float()
    return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))


def hinge_discriminator_loss(real: Tensor, fake: Tensor) -> Tensor:
    """Hinge loss (Lim & Ye 2017; Miyato et al. 2018): E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]."""
    return F.relu(1 - real.float()).mean() + F.relu(1 + fake.float()).mean()


def wasserstein_discriminator_loss(real: Tensor, fake: Tensor) -> Tensor:
    """Critic loss of WGAN: E[D(G(z))] - E[D(x)]."""
    return fake.float().mean() - real.float().mean()


def mean_negated_generator_loss(fake: Tensor) -> Tensor:
    """Generator loss of WGAN and hinge GANs: -E[D(G(z))]."""
    return -fake.float().mean()


def gradient_penalty(
    critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor, *, generator: torch.Generator | None = None
) -> Tensor:
    """WGAN-GP penalty (Gulrajani et al. 2017): E[(||grad_x D(x_hat)||_2 - 1)^2] on random interpolates.

    ``x_hat = eps * real + (1 - eps) * fake`` with one ``eps ~ U(0, 1)`` per sample. The graph of the
    penalty is kept (when gradients are enabled) so it trains the critic.

    Args:
        critic: maps (B, ...) inputs to (B,) values.
        real: (B, ...) real samples.
        fake: (B, ...) generated samples (detached here).
        generator: seeds the interpolation coefficients.
    """
    train = torch.is_grad_enabled()
    eps_shape = (real.shape[0],) + (1,) * (real.ndim - 1)
    eps = torch.rand(eps_shape, generator=generator, device=generator.device if generator else real.device)
    eps = eps.to(real.device, real.dtype)
    with torch.enable_grad():
        x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)  # (B, ...)
        (grad,) = torch.autograd.grad(critic(x_hat).float().sum(), x_hat, create_graph=train)
        norm = (grad.float().flatten(1).pow(2).sum(1) + 1e-12).sqrt()  # (B,)
        return ((norm - 1) ** 2).mean()
