"""SNGAN (Miyato et al. 2018): spectral normalisation in every discriminator layer and the hinge loss.

The discriminator has no norm layers and LeakyReLU(0.1), with every weight divided by its spectral norm
(power iteration, one step per training forward, via ``torch.nn.utils.parametrizations.spectral_norm``);
the generator is DCGAN's. By default the discriminator is DCGAN's stride-2 stack, which trains on a CPU;
``d_extra_convs=1`` adds a 3x3 convolution before each stride-2 one, Miyato's "standard CNN" (about 5x
the discriminator compute at 32 px).
Loss: ``E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]`` for D, ``-E[D(G(z))]`` for G. Optimiser: the paper's
setting C, Adam(2e-4, (0.5, 0.999)) with one D step per G step.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import Tensor

from facelab.models.generative.base import Betas, register_generative
from facelab.models.generative.blocks import ActName, NormName
from facelab.models.generative.dcgan import DCGAN, DCGANConfig
from facelab.models.generative.losses import hinge_discriminator_loss, mean_negated_generator_loss


class SNGANConfig(DCGANConfig):
    """DCGAN options with spectral norm on and Miyato's discriminator defaults."""

    d_norm: NormName = "none"
    d_act: ActName = "leaky_relu"
    d_spectral_norm: bool = True
    d_extra_convs: int = Field(0, ge=0, le=3)
    init: Literal["dcgan", "default"] = "default"
    n_critic: int = Field(1, ge=1)
    lr_generator: float = Field(2e-4, gt=0)
    lr_discriminator: float = Field(2e-4, gt=0)
    betas: Betas = (0.5, 0.999)


@register_generative("sngan")
class SNGAN(DCGAN):
    """DCGAN with a spectrally normalised discriminator and hinge losses."""

    config_class = SNGANConfig

    def discriminator_loss(self, real: Tensor, fake: Tensor) -> Tensor:
        return hinge_discriminator_loss(real, fake)

    def generator_loss(self, fake: Tensor) -> Tensor:
        return mean_negated_generator_loss(fake)
