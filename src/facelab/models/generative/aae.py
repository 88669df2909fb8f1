"""Adversarial autoencoder (Makhzani et al. 2016): an autoencoder whose codes are matched to N(0, I) by a GAN.

Three players per iteration, as in the paper:

1. ``"autoencoder"`` (encoder + decoder): reconstruction loss;
2. ``"discriminator"`` (an MLP on latents): tell prior draws z ~ N(0, I) from codes q(z|x);
3. ``"generator"`` (the encoder): make codes the discriminator takes for prior draws (non-saturating BCE).

The encoder is deterministic (z = f(x)) or Gaussian (reparameterised draw from N(mu, sigma^2)). With
conditions the decoder sees them (concatenated to z) but the encoder does not, so z learns the style
that the labels leave out and ``decode(z, other_label)`` swaps the label (the paper's "disentangling style
and content"). Since the codes are matched to the prior, ``sample`` decodes z ~ N(0, I).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from facelab.models.generative.base import (
    Betas,
    Conditioning,
    GenBatch,
    GenerativeConfig,
    GenerativeModel,
    ModelOutput,
    adam,
    logs_of,
    register_generative,
)
from facelab.models.generative.blocks import MLP, ActName, ConvDecoder, ConvEncoder, NormName
from facelab.models.generative.losses import (
    ReconLoss,
    bce_discriminator_loss,
    bce_generator_loss,
    raw_to_image,
    reconstruction_loss,
)


class AAEConfig(GenerativeConfig):
    """AAE options; ``conditions`` are optional and condition the decoder only.

    Attributes:
        encoder: ``deterministic`` or ``gaussian`` q(z|x).
        norm, encoder_act, decoder_act: conv stack layers (names in facelab.models.layers).
        recon_loss, gaussian_sigma: reconstruction term (see :func:`losses.reconstruction_loss`).
        disc_hidden, disc_depth: the latent discriminator MLP.
        lr_autoencoder, lr_discriminator, lr_generator, betas: recommended Adam settings.
    """

    conditioning: ClassVar[Conditioning] = "optional"

    latent_dim: int = Field(64, ge=1)
    encoder: Literal["deterministic", "gaussian"] = "deterministic"
    norm: NormName = "batchnorm"
    encoder_act: ActName = "leaky_relu_0.2"
    decoder_act: ActName = "relu"
    recon_loss: ReconLoss = "sse"
    gaussian_sigma: float = Field(0.1, gt=0)
    disc_hidden: int = Field(512, ge=1)
    disc_depth: int = Field(2, ge=1)
    lr_autoencoder: float = Field(1e-3, gt=0)
    lr_discriminator: float = Field(2e-4, gt=0)
    lr_generator: float = Field(2e-4, gt=0)
    betas: Betas = (0.5, 0.999)


@register_generative("aae")
class AAE(GenerativeModel):
    """Conv autoencoder + latent discriminator; groups autoencoder / discriminator / generator (the encoder)."""

    config_class = AAEConfig
    has_encoder = True

    def __init__(self, config: AAEConfig | None = None) -> None:
        super().__init__(config)
        c = self.config
        size = dict(image_size=c.image_size, width=c.width, max_width=c.max_width, norm_layer=c.norm)
        self.encoder = ConvEncoder(3, act_layer=c.encoder_act, **size)
        n_out = 2 * c.latent_dim if c.encoder == "gaussian" else c.latent_dim
        self.to_latent = nn.Linear(self.encoder.feat_dim, n_out)
        self.decoder = ConvDecoder(c.latent_dim, 3, act_layer=c.decoder_act, cond_dim=self.cond_dim, **size)
        self.latent_discriminator = MLP(c.latent_dim, 1, hidden=c.disc_hidden, depth=c.disc_depth)

    def _codes(self, x: Tensor, *, draw: bool) -> Tensor:
        """(B, latent_dim) codes of ``x``: the encoder output, or for a Gaussian encoder its mean / a draw."""
        h = self.to_latent(self.encoder(x))  # (B, D) or (B, 2D)
        if self.config.encoder == "deterministic":
            return h
        mu, logvar = h.chunk(2, dim=1)
        return mu + torch.randn_like(mu) * (0.5 * logvar.clamp(-30, 20)).exp() if draw else mu

    def _encode(self, x: Tensor, cond: Tensor | None) -> Tensor:
        return self._codes(x, draw=False)  # the encoder ignores the condition by design

    def _generate(self, z: Tensor, cond: Tensor | None) -> Tensor:
        return raw_to_image(self.decoder(z, cond), self.config.recon_loss)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        encoder = [*self.encoder.parameters(), *self.to_latent.parameters()]
        return {
            "autoencoder": encoder + list(self.decoder.parameters()),
            "discriminator": list(self.latent_discriminator.parameters()),
            "generator": encoder,
        }

    def train_step_schedule(self) -> list[tuple[str, int]]:
        return [("autoencoder", 1), ("discriminator", 1), ("generator", 1)]

    def recommended_optimizers(self) -> dict[str, dict[str, Any]]:
        c = self.config
        return {
            "autoencoder": adam(c.lr_autoencoder, c.betas),
            "discriminator": adam(c.lr_discriminator, c.betas),
            "generator": adam(c.lr_generator, c.betas),
        }

    def _loss_autoencoder(self, batch: GenBatch) -> ModelOutput:
        c = self.config
        raw = self.decoder(self._codes(batch.x, draw=True), batch.cond)  # (B, 3, S, S)
        loss = reconstruction_loss(raw, batch.x, kind=c.recon_loss, sigma=c.gaussian_sigma)
        return ModelOutput(loss, logs_of(ae_recon=loss), recon=raw_to_image(raw, c.recon_loss).detach())

    def _loss_discriminator(self, batch: GenBatch) -> ModelOutput:
        fake = self._codes(batch.x, draw=True).detach()  # (B, D) codes; the encoder is frozen here
        prior = self.sample_latent(fake.shape[0])  # (B, D) draws from N(0, I)
        real_out = self.latent_discriminator(prior).squeeze(1)  # (B,)
        fake_out = self.latent_discriminator(fake).squeeze(1)
        loss = bce_discriminator_loss(real_out, fake_out)
        return ModelOutput(loss, logs_of(d_loss=loss, d_prior=real_out.float().mean(), d_codes=fake_out.float().mean()))

    def _loss_generator(self, batch: GenBatch) -> ModelOutput:
        out = self.latent_discriminator(self._codes(batch.x, draw=True)).squeeze(1)  # (B,)
        loss = bce_generator_loss(out)
        return ModelOutput(loss, logs_of(g_loss=loss))
