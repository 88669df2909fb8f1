"""Conditional GAN with a projection discriminator (Miyato & Koyama 2018) for attributes or classes.

Generator: the DCGAN generator conditioned by conditional batch norm (every norm's scale and shift are
linear functions of the condition; ``g_conditioning="cbn"``) or by concatenating the condition to z
(``"concat"``). Discriminator: SNGAN's, with global sum pooling of the last features phi(x) and the
output ``psi(phi(x)) + <V c, phi(x)>``: an inner product with a class embedding for a one-hot label,
a sum of attribute embeddings for a multi-hot attribute vector. Hinge loss and spectral norm as in
SNGAN; fakes are generated with the conditions of the real batch. Optimiser: SNGAN's setting C,
Adam(2e-4, (0.5, 0.999)) with one discriminator step per generator step. The projection paper's
Adam(2e-4, (0, 0.9)) with 5 discriminator steps (``n_critic=5, betas=[0, 0.9]``) suits long GPU runs; on
a CPU budget it gives the generator a fifth of the updates: 5 epochs of 7,924 UTKFace rows at 32 px left
pure noise, where one step each showed faces after 4 epochs (docs/results.md).

``consistency_weight > 0`` adds AC-GAN's auxiliary classifier (Odena et al. 2017) beside the projection:
a :class:`~facelab.models.generative.consistency.ConditionClassifier` trained with the discriminator on
real images, and its loss on generated images, drawn with every condition value equally likely, added to
the generator's loss (the classifier held fixed there).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from torch import Tensor, nn

from facelab.models.generative.base import Conditioning, GenBatch, logs_of, register_generative
from facelab.models.generative.blocks import ConvDecoder, ConvDiscriminator, conditional_norm_layer
from facelab.models.generative.consistency import ConsistencyOptions, WithConditionClassifier
from facelab.models.generative.sngan import SNGAN, SNGANConfig


class CGANConfig(SNGANConfig, ConsistencyOptions):
    """SNGAN options plus how the generator sees the (required) condition, and the consistency options."""

    conditioning: ClassVar[Conditioning] = "required"
    g_conditioning: Literal["cbn", "concat"] = "cbn"


@register_generative("cgan")
class CGAN(WithConditionClassifier, SNGAN):
    """SNGAN with a conditional generator and a projection discriminator; ``sample`` needs ``cond``."""

    config_class = CGANConfig

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        groups = super().parameter_groups()
        if self.classifier is not None:  # the auxiliary classifier learns in the discriminator's step
            groups["discriminator"] = groups["discriminator"] + list(self.classifier.parameters())
        return groups

    def discriminator_regularizer(self, real: Tensor, fake: Tensor, cond: Tensor | None) -> tuple[Tensor, dict[str, float]]:
        if self.classifier is None:
            return real.new_zeros(()), {}
        loss = self.classifier.real_loss(real, cond)
        return loss, logs_of(cls_real=loss)

    def generator_regularizer(self, batch: GenBatch) -> tuple[Tensor, dict[str, float]]:
        if self.classifier is None:
            return batch.x.new_zeros(()), {}
        n = batch.x.shape[0]
        loss = self.classifier.prior_consistency_loss(lambda cond: self._generate(self.sample_latent(n), cond), n, batch.x)
        return self.config.consistency_weight * loss, logs_of(cls_fake=loss)

    def build_generator(self) -> nn.Module:
        c = self.config
        if c.g_conditioning == "cbn":
            norm = conditional_norm_layer(c.g_norm, self.cond_dim)
            return ConvDecoder(c.latent_dim, 3, norm_layer=norm, act_layer=c.g_act, **self._sizes())
        return ConvDecoder(
            c.latent_dim, 3, norm_layer=c.g_norm, act_layer=c.g_act, cond_dim=self.cond_dim, **self._sizes()
        )

    def build_discriminator(self) -> nn.Module:
        c = self.config
        return ConvDiscriminator(
            3, norm_layer=c.d_norm, act_layer=c.d_act, spectral_norm=c.d_spectral_norm,
            extra_convs=c.d_extra_convs, pool="sum", cond_dim=self.cond_dim, **self._sizes(),
        )
