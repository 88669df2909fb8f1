"""beta-VAE (Higgins et al. 2017): a VAE whose KL term is weighted by beta > 1 for disentangled latents."""

from __future__ import annotations

from pydantic import Field

from facelab.models.generative.base import register_generative
from facelab.models.generative.vae import VAE, VAEConfig


class BetaVAEConfig(VAEConfig):
    """VAE options plus ``beta``, the KL weight (after any warm-up)."""

    beta: float = Field(4.0, gt=0)


@register_generative("beta_vae")
class BetaVAE(VAE):
    """A :class:`VAE` overriding only the KL weight hook: ``beta * warm-up(step)``."""

    config_class = BetaVAEConfig

    def kl_weight(self, step: int) -> float:
        return self.config.beta * super().kl_weight(step)
