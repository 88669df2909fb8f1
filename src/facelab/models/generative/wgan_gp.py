"""WGAN-GP (Gulrajani et al. 2017): a Wasserstein critic regularised by a gradient penalty.

Critic loss ``E[D(G(z))] - E[D(x)] + gp_weight * E[(||grad D(x_hat)||_2 - 1)^2]`` on random interpolates
x_hat of real and generated images; generator loss ``-E[D(G(z))]``. The penalty is per sample, so the
critic must not use batch norm (layer norm by default, as in the paper; instance norm or none also work).
Paper defaults: gp_weight 10, n_critic 5, Adam(1e-4, (0, 0.9)). The ``"discriminator"`` group is the critic.
"""

from __future__ import annotations

from functools import partial
from typing import Literal

from pydantic import Field
from torch import Tensor

from facelab.models.generative.base import Betas, logs_of, register_generative
from facelab.models.generative.dcgan import DCGAN, DCGANConfig
from facelab.models.generative.losses import (
    gradient_penalty,
    mean_negated_generator_loss,
    wasserstein_discriminator_loss,
)


class WGANGPConfig(DCGANConfig):
    """DCGAN options with a batch-norm-free critic, the penalty weight and the paper's optimiser settings."""

    d_norm: Literal["layernorm", "instancenorm", "none"] = "layernorm"
    gp_weight: float = Field(10.0, ge=0)
    n_critic: int = Field(5, ge=1)
    init: Literal["dcgan", "default"] = "default"
    lr_generator: float = Field(1e-4, gt=0)
    lr_discriminator: float = Field(1e-4, gt=0)
    betas: Betas = (0.0, 0.9)


@register_generative("wgan_gp")
class WGANGP(DCGAN):
    """DCGAN architecture with Wasserstein losses and the gradient penalty as discriminator regulariser."""

    config_class = WGANGPConfig

    def discriminator_loss(self, real: Tensor, fake: Tensor) -> Tensor:
        return wasserstein_discriminator_loss(real, fake)

    def generator_loss(self, fake: Tensor) -> Tensor:
        return mean_negated_generator_loss(fake)

    def discriminator_regularizer(
        self, real: Tensor, fake: Tensor, cond: Tensor | None
    ) -> tuple[Tensor, dict[str, float]]:
        gp = gradient_penalty(partial(self.discriminator, cond=cond), real, fake)
        return self.config.gp_weight * gp, logs_of(gp=gp)
