"""Variational autoencoder (Kingma & Welling 2014) with a DCGAN-style conv encoder and decoder.

The encoder maps an image to the mean and log-variance of q(z|x); a latent drawn with the
reparameterisation trick is decoded; the loss is the negative ELBO per image,
``reconstruction + kl_weight(step) * KL(q(z|x) || N(0, I))``. Variants override one hook:
``beta_vae`` the KL weight, ``cvae`` requires conditions (the VAE feeds a condition to both the
encoder, as extra channels, and the decoder, concatenated to z) and adds an auxiliary loss.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import Tensor

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
from facelab.models.generative.blocks import ActName, ConvDecoder, ConvEncoder, NormName
from facelab.models.generative.losses import ReconLoss, kl_standard_normal, raw_to_image, reconstruction_loss

LOGVAR_RANGE = (-30.0, 20.0)  # keeps exp(logvar) finite early in training


class VAEConfig(GenerativeConfig):
    """VAE options.

    Attributes:
        norm: norm layer of encoder and decoder (a name in ``facelab.models.layers.NORM_LAYERS``).
        encoder_act: encoder activation name; decoder_act: decoder activation name.
        recon_loss: ``sse`` (sum of squared errors), ``gaussian`` (NLL with std ``gaussian_sigma``) or ``bce``.
        gaussian_sigma: pixel noise std of the ``gaussian`` likelihood, in [-1, 1] units.
        kl_warmup_steps: the KL weight ramps linearly from 0 to 1 over this many training steps (0: off).
        lr, betas: recommended Adam settings.
    """

    latent_dim: int = Field(64, ge=1)
    norm: NormName = "batchnorm"
    encoder_act: ActName = "leaky_relu_0.2"
    decoder_act: ActName = "relu"
    recon_loss: ReconLoss = "sse"
    gaussian_sigma: float = Field(0.1, gt=0)
    kl_warmup_steps: int = Field(0, ge=0)
    lr: float = Field(1e-3, gt=0)
    betas: Betas = (0.9, 0.999)


@register_generative("vae")
class VAE(GenerativeModel):
    """Conv VAE: encoder -> (mu, logvar), reparameterise, decoder; one parameter group ``"model"``.

    ``step`` (a buffer, saved with the weights) counts training-mode loss calls for the KL warm-up.
    """

    config_class = VAEConfig
    has_encoder = True

    def __init__(self, config: VAEConfig | None = None) -> None:
        super().__init__(config)
        c = self.config
        size = dict(image_size=c.image_size, width=c.width, max_width=c.max_width, norm_layer=c.norm)
        self.encoder = ConvEncoder(3, act_layer=c.encoder_act, cond_channels=self.cond_dim, **size)
        self.to_moments = torch.nn.Linear(self.encoder.feat_dim, 2 * c.latent_dim)
        self.decoder = ConvDecoder(c.latent_dim, 3, act_layer=c.decoder_act, cond_dim=self.cond_dim, **size)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def kl_weight(self, step: int) -> float:
        """Weight of the KL term at training step ``step`` (linear warm-up to 1)."""
        warmup = self.config.kl_warmup_steps
        return min(1.0, step / warmup) if warmup else 1.0

    def moments(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of q(z|x), each (B, latent_dim)."""
        mu, logvar = self.to_moments(self.encoder(x, cond)).chunk(2, dim=1)  # (B, D), (B, D)
        return mu, logvar.clamp(*LOGVAR_RANGE)

    def _encode(self, x: Tensor, cond: Tensor | None) -> Tensor:
        return self.moments(x, cond)[0]

    def _generate(self, z: Tensor, cond: Tensor | None) -> Tensor:
        return raw_to_image(self.decoder(z, cond), self.config.recon_loss)

    def _loss_model(self, batch: GenBatch) -> ModelOutput:
        mu, logvar = self.moments(batch.x, batch.cond)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()  # (B, D), reparameterised
        raw = self.decoder(z, batch.cond)  # (B, 3, S, S)
        c = self.config
        recon = reconstruction_loss(raw, batch.x, kind=c.recon_loss, sigma=c.gaussian_sigma)
        kl = kl_standard_normal(mu, logvar)
        weight = self.kl_weight(int(self.step))
        if self.training:
            self.step += 1
        extra, extra_logs = self.auxiliary_loss(batch)
        loss = recon + weight * kl + extra
        out_logs = logs_of(loss=loss, recon=recon, kl=kl, kl_weight=weight)
        return ModelOutput(loss, {**out_logs, **extra_logs}, recon=raw_to_image(raw, c.recon_loss).detach())

    def auxiliary_loss(self, batch: GenBatch) -> tuple[Tensor, dict[str, float]]:
        """A loss term added to the negative ELBO, and its logs (none for the VAE; cvae's condition consistency)."""
        return batch.x.new_zeros(()), {}

    def recommended_optimizers(self) -> dict[str, dict[str, Any]]:
        return {"model": adam(self.config.lr, self.config.betas)}
