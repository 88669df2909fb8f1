"""DCGAN (Radford, Metz & Chintala 2016), and the base of every image GAN in facelab.

Generator: z -> linear to 4x4 -> stride-2 transposed convolutions with BatchNorm + ReLU -> tanh.
Discriminator: stride-2 convolutions with BatchNorm (none on the first) + LeakyReLU(0.2) -> one logit.
Weights ~ N(0, 0.02); loss: BCE for D, non-saturating -log D(G(z)) for G; Adam(2e-4, (0.5, 0.999)).

Two players, ``"discriminator"`` and ``"generator"``, stepped ``[("discriminator", n_critic),
("generator", 1)]``. Variants override hooks, never the loss methods: ``discriminator_loss``,
``generator_loss``, ``discriminator_regularizer`` (wgan_gp's gradient penalty), ``generator_regularizer``
(cgan's condition consistency), ``build_generator`` /
``build_discriminator`` (cgan's conditional networks) and ``init_weights``.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from facelab.models.generative.base import (
    Betas,
    GenBatch,
    GenerativeConfig,
    GenerativeModel,
    ModelOutput,
    adam,
    logs_of,
    register_generative,
)
from facelab.models.generative.blocks import (
    ActName,
    ConvDecoder,
    ConvDiscriminator,
    NormName,
    init_dcgan_weights,
)
from facelab.models.generative.diffaug import DiffAugment
from facelab.models.generative.losses import bce_discriminator_loss, bce_generator_loss


class DCGANConfig(GenerativeConfig):
    """Options of DCGAN and its variants.

    Attributes:
        g_norm, g_act: generator norm and activation (names in facelab.models.layers).
        d_norm, d_act: discriminator norm and activation.
        d_spectral_norm: spectrally normalise every discriminator layer.
        d_extra_convs: 3x3 convolutions per discriminator stage before the stride-2 one.
        n_critic: discriminator steps per generator step.
        init: ``dcgan`` (N(0, 0.02)) or ``default`` (PyTorch's initialisation).
        lr_generator, lr_discriminator, betas: recommended Adam settings.
        diffaug: DiffAugment policy (``color``, ``translation``, ``cutout``) applied to every image the
            discriminator sees, real and generated; for small training sets. Empty: none.
    """

    latent_dim: int = Field(100, ge=1)
    g_norm: NormName = "batchnorm"
    g_act: ActName = "relu"
    d_norm: NormName = "batchnorm"
    d_act: ActName = "leaky_relu_0.2"
    d_spectral_norm: bool = False
    d_extra_convs: int = Field(0, ge=0, le=3)
    n_critic: int = Field(1, ge=1)
    init: Literal["dcgan", "default"] = "dcgan"
    lr_generator: float = Field(2e-4, gt=0)
    lr_discriminator: float = Field(2e-4, gt=0)
    betas: Betas = (0.5, 0.999)
    diffaug: list[Literal["color", "translation", "cutout"]] = Field(default_factory=list)


@register_generative("dcgan")
class DCGAN(GenerativeModel):
    """Generator + discriminator trained adversarially; ``generate(z)`` maps latents to images."""

    config_class = DCGANConfig

    def __init__(self, config: DCGANConfig | None = None) -> None:
        super().__init__(config)
        self.generator = self.build_generator()
        self.discriminator = self.build_discriminator()
        self.diffaug = DiffAugment(self.config.diffaug)
        self.init_weights()

    # ---- hooks -----------------------------------------------------------------------------------
    def _sizes(self) -> dict[str, int]:
        c = self.config
        return {"image_size": c.image_size, "width": c.width, "max_width": c.max_width}

    def build_generator(self) -> nn.Module:
        """The generator: ``(z (B, latent_dim), cond) -> raw image (B, 3, S, S)`` (tanh is applied after)."""
        c = self.config
        return ConvDecoder(c.latent_dim, 3, norm_layer=c.g_norm, act_layer=c.g_act, **self._sizes())

    def build_discriminator(self) -> nn.Module:
        """The discriminator: ``(x (B, 3, S, S), cond) -> (B,)`` logits or critic values."""
        c = self.config
        return ConvDiscriminator(
            3, norm_layer=c.d_norm, act_layer=c.d_act, spectral_norm=c.d_spectral_norm,
            extra_convs=c.d_extra_convs, **self._sizes(),
        )

    def init_weights(self) -> None:
        if self.config.init == "dcgan":
            init_dcgan_weights(self)

    def discriminator_loss(self, real: Tensor, fake: Tensor) -> Tensor:
        """Discriminator loss from its (B,) outputs on real and generated images."""
        return bce_discriminator_loss(real, fake)

    def generator_loss(self, fake: Tensor) -> Tensor:
        """Generator loss from the discriminator's (B,) outputs on generated images."""
        return bce_generator_loss(fake)

    def discriminator_regularizer(
        self, real: Tensor, fake: Tensor, cond: Tensor | None
    ) -> tuple[Tensor, dict[str, float]]:
        """An extra discriminator loss term and its logs (none for DCGAN)."""
        return real.new_zeros(()), {}

    def generator_regularizer(self, batch: GenBatch) -> tuple[Tensor, dict[str, float]]:
        """An extra generator loss term and its logs (none for DCGAN)."""
        return batch.x.new_zeros(()), {}

    # ---- the protocol ----------------------------------------------------------------------------
    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"generator": list(self.generator.parameters()), "discriminator": list(self.discriminator.parameters())}

    def train_step_schedule(self) -> list[tuple[str, int]]:
        return [("discriminator", self.config.n_critic), ("generator", 1)]

    def recommended_optimizers(self) -> dict[str, dict[str, Any]]:
        c = self.config
        return {"generator": adam(c.lr_generator, c.betas), "discriminator": adam(c.lr_discriminator, c.betas)}

    def _generate(self, z: Tensor, cond: Tensor | None) -> Tensor:
        return torch.tanh(self.generator(z, cond))  # (B, 3, S, S)

    def _fake(self, batch: GenBatch) -> Tensor:
        """Generated images for a batch (same size, the batch's conditions), fresh latents from the prior."""
        return self._generate(self.sample_latent(batch.x.shape[0]), batch.cond)

    def _loss_discriminator(self, batch: GenBatch) -> ModelOutput:
        fake = self.diffaug(self._fake(batch).detach())  # (B, 3, S, S); the generator is frozen here
        real = self.diffaug(batch.x)
        real_out = self.discriminator(real, batch.cond)  # (B,)
        fake_out = self.discriminator(fake, batch.cond)  # (B,)
        adv = self.discriminator_loss(real_out, fake_out)
        reg, reg_logs = self.discriminator_regularizer(real, fake, batch.cond)
        loss = adv + reg
        logs = logs_of(d_loss=loss, d_real=real_out.float().mean(), d_fake=fake_out.float().mean())
        return ModelOutput(loss, {**logs, **reg_logs})

    def _loss_generator(self, batch: GenBatch) -> ModelOutput:
        adv = self.generator_loss(self.discriminator(self.diffaug(self._fake(batch)), batch.cond))
        reg, reg_logs = self.generator_regularizer(batch)
        loss = adv + reg
        return ModelOutput(loss, {**logs_of(g_loss=loss), **reg_logs})
