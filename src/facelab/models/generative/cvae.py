"""Conditional VAE (Sohn et al. 2015): q(z|x, c) and p(x|z, c) for attribute or class conditions.

The :class:`~facelab.models.generative.vae.VAE` already routes a condition to both networks (the encoder
sees it as extra constant input channels, the decoder concatenated to z); the CVAE requires one, so its
latent can model what the condition does not say (pose, lighting, identity). Sampling with a fixed z and
a changed condition edits that attribute.

**Condition consistency** (``consistency_weight > 0``). A plain CVAE's latent also encodes the condition
(CelebA: KL 124 nats per face), so the decoder can reconstruct without reading ``c``, and samples from the
prior follow z rather than ``c``: after 12 CPU minutes an independent classifier saw glasses on 7% of the
faces drawn with ``Eyeglasses=1`` (docs/results.md). The model then also trains a
:class:`~facelab.models.generative.consistency.ConditionClassifier` on the real images and, on every step,
decodes a batch of prior latents with conditions drawn with every value equally likely and adds
``consistency_weight *`` that classifier's loss on those samples.
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from facelab.models.generative.base import Conditioning, GenBatch, logs_of, register_generative
from facelab.models.generative.consistency import ConsistencyOptions, WithConditionClassifier
from facelab.models.generative.losses import raw_to_image
from facelab.models.generative.vae import VAE, VAEConfig


class CVAEConfig(VAEConfig, ConsistencyOptions):
    """VAE options plus the condition-consistency ones; ``conditions`` (or ``cond_dim``) are required."""

    conditioning: ClassVar[Conditioning] = "required"


@register_generative("cvae")
class CVAE(WithConditionClassifier, VAE):
    """A :class:`VAE` with a required condition ``c`` (B, cond_dim) on encoder and decoder, and optionally
    an auxiliary classifier that makes prior samples show their condition."""

    config_class = CVAEConfig

    def auxiliary_loss(self, batch: GenBatch) -> tuple[Tensor, dict[str, float]]:
        if self.classifier is None or not self.training:
            return batch.x.new_zeros(()), {}
        real = self.classifier.real_loss(batch.x, batch.cond)  # trains the classifier only
        n = batch.x.shape[0]
        consistency = self.classifier.prior_consistency_loss(
            lambda cond: raw_to_image(self.decoder(self.sample_latent(n), cond), self.config.recon_loss), n, batch.x)
        return real + self.config.consistency_weight * consistency, logs_of(cls_real=real, cls_fake=consistency)
