"""ACAI, adversarially constrained autoencoder interpolation (Berthelot, Raffel, Roy & Goodfellow 2019).

A deterministic autoencoder whose interpolations should look real. Per batch, latents are mixed with the
batch reversed, ``z_mix = alpha * z + (1 - alpha) * z[::-1]`` with ``alpha ~ U(0, 0.5)`` per sample, and
decoded to ``x_mix``. Two players:

- ``"critic"`` (a conv net predicting alpha from an image):
  ``||d(x_mix) - alpha||^2 + ||d(gamma * x + (1 - gamma) * g(f(x)))||^2``
  (the second term, gamma = 0.2, keeps the critic honest on near-real images);
- ``"autoencoder"``: ``||x - g(f(x))||^2 + lambda * ||d(x_mix)||^2`` (lambda = 0.5): make mixes the
  critic cannot tell from real images (alpha = 0).

Squared errors are means over pixels, as in the reference code, so lambda and gamma keep their meaning.
The latent has no prior; ``sample`` draws z from a diagonal Gaussian fitted to the training codes (running
means and standard deviations, saved with the weights). Use ``encode``/``decode`` for interpolation.
"""

from __future__ import annotations

from typing import Any

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
from facelab.models.generative.blocks import ActName, ConvDecoder, ConvDiscriminator, ConvEncoder, NormName


class ACAIConfig(GenerativeConfig):
    """ACAI options.

    Attributes:
        norm, act: conv stack layers of autoencoder and critic (the paper uses no norm, LeakyReLU(0.2)).
        adv_weight: lambda, weight of the critic term in the autoencoder loss.
        reg_gamma: gamma, mixing weight of the critic's regulariser on (input, reconstruction) blends.
        latent_momentum: update rate of the running latent statistics used by ``sample``.
        lr_autoencoder, lr_critic, betas: recommended Adam settings (paper: 1e-4).
    """

    latent_dim: int = Field(64, ge=1)
    norm: NormName = "none"
    act: ActName = "leaky_relu_0.2"
    adv_weight: float = Field(0.5, ge=0)
    reg_gamma: float = Field(0.2, ge=0, le=1)
    latent_momentum: float = Field(0.01, gt=0, le=1)
    lr_autoencoder: float = Field(1e-4, gt=0)
    lr_critic: float = Field(1e-4, gt=0)
    betas: Betas = (0.9, 0.999)


@register_generative("acai")
class ACAI(GenerativeModel):
    """Deterministic conv autoencoder + interpolation critic; groups autoencoder / critic."""

    config_class = ACAIConfig
    has_encoder = True

    def __init__(self, config: ACAIConfig | None = None) -> None:
        super().__init__(config)
        c = self.config
        size = dict(image_size=c.image_size, width=c.width, max_width=c.max_width, norm_layer=c.norm, act_layer=c.act)
        self.encoder = ConvEncoder(3, **size)
        self.to_latent = nn.Linear(self.encoder.feat_dim, c.latent_dim)
        self.decoder = ConvDecoder(c.latent_dim, 3, **size)
        self.critic = ConvDiscriminator(3, **size)
        self.register_buffer("latent_mean", torch.zeros(c.latent_dim))
        self.register_buffer("latent_std", torch.ones(c.latent_dim))

    def _encode(self, x: Tensor, cond: Tensor | None) -> Tensor:
        return self.to_latent(self.encoder(x))  # (B, D)

    def _generate(self, z: Tensor, cond: Tensor | None) -> Tensor:
        return torch.tanh(self.decoder(z))  # (B, 3, S, S)

    def sample_latent(self, n: int, *, generator: torch.Generator | None = None, temperature: float = 1.0) -> Tensor:
        """(n, latent_dim) draws from N(running mean, running std^2 * temperature^2) of the training codes."""
        z = super().sample_latent(n, generator=generator, temperature=temperature)  # (n, D) ~ N(0, T^2 I)
        return self.latent_mean + self.latent_std * z

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        autoencoder = [*self.encoder.parameters(), *self.to_latent.parameters(), *self.decoder.parameters()]
        return {"autoencoder": autoencoder, "critic": list(self.critic.parameters())}

    def train_step_schedule(self) -> list[tuple[str, int]]:
        return [("autoencoder", 1), ("critic", 1)]

    def recommended_optimizers(self) -> dict[str, dict[str, Any]]:
        c = self.config
        return {"autoencoder": adam(c.lr_autoencoder, c.betas), "critic": adam(c.lr_critic, c.betas)}

    def _mix(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Codes, reconstructions and decoded interpolants of ``x``, plus alpha: (z, x_hat, x_mix, alpha)."""
        z = self._encode(x, None)  # (B, D)
        alpha = 0.5 - (torch.rand(z.shape[0], 1, device=z.device) - 0.5).abs()  # (B, 1) in [0, 0.5]
        z_mix = alpha * z + (1 - alpha) * z.flip(0)  # (B, D), each code mixed with its mirror in the batch
        x_hat = self._generate(z, None)  # (B, 3, S, S)
        x_mix = self._generate(z_mix.to(z.dtype), None)  # (B, 3, S, S)
        return z, x_hat, x_mix, alpha.squeeze(1)

    def _loss_autoencoder(self, batch: GenBatch) -> ModelOutput:
        z, x_hat, x_mix, _ = self._mix(batch.x)
        recon = ((x_hat.float() - batch.x.float()) ** 2).mean()
        adv = (self.critic(x_mix).float() ** 2).mean()
        loss = recon + self.config.adv_weight * adv
        if self.training:
            self._track_latents(z.detach())
        return ModelOutput(loss, logs_of(ae_loss=loss, ae_recon=recon, ae_adv=adv), recon=x_hat.detach())

    def _loss_critic(self, batch: GenBatch) -> ModelOutput:
        with torch.no_grad():  # the autoencoder is not trained by this loss
            _, x_hat, x_mix, alpha = self._mix(batch.x)
        gamma = self.config.reg_gamma
        fit = ((self.critic(x_mix).float() - alpha.float()) ** 2).mean()
        reg = (self.critic(gamma * batch.x + (1 - gamma) * x_hat).float() ** 2).mean()
        loss = fit + reg
        return ModelOutput(loss, logs_of(critic_loss=loss, critic_fit=fit, critic_reg=reg))

    @torch.no_grad()
    def _track_latents(self, z: Tensor) -> None:
        m = self.config.latent_momentum
        self.latent_mean.lerp_(z.float().mean(0).to(self.latent_mean.dtype), m)
        if z.shape[0] > 1:
            self.latent_std.lerp_(z.float().std(0).to(self.latent_std.dtype), m)
