"""Conditional VAE (Sohn et al. 2015): q(z|x, c) and p(x|z, c) for attribute or class conditions.

The :class:`~facelab.models.generative.vae.VAE` already routes a condition to both networks (the encoder
sees it as extra constant input channels, the decoder concatenated to z); the CVAE requires one, so its
latent can model what the condition does not say (pose, lighting, identity). Sampling with a fixed z and
a changed condition edits that attribute.
"""

from __future__ import annotations

from typing import ClassVar

from facelab.models.generative.base import Conditioning, register_generative
from facelab.models.generative.vae import VAE, VAEConfig


class CVAEConfig(VAEConfig):
    """VAE options; ``conditions`` (or ``cond_dim``) are required."""

    conditioning: ClassVar[Conditioning] = "required"


@register_generative("cvae")
class CVAE(VAE):
    """A :class:`VAE` with a required condition ``c`` (B, cond_dim) on encoder and decoder."""

    config_class = CVAEConfig
