"""Generative models with one interface: VAEs, an AAE, ACAI and GANs, built by name from the registry.

    >>> import torch
    >>> from facelab.models.generative import create_generative
    >>> model = create_generative("wgan_gp", image_size=32, width=32)
    >>> model.train_step_schedule()
    [('discriminator', 5), ('generator', 1)]
    >>> images = model.sample(16, generator=torch.Generator().manual_seed(0))  # (16, 3, 32, 32) in [-1, 1]

See :mod:`facelab.models.generative.base` for the protocol and ``docs/generative.md`` for the models.
"""

# importing the model modules registers them in GENERATIVE
from facelab.models.generative import aae, acai, beta_vae, cgan, cvae, dcgan, sngan, vae, wgan_gp  # noqa: F401
from facelab.models.generative.base import (
    GENERATIVE,
    GenBatch,
    GenerativeConfig,
    GenerativeModel,
    ModelOutput,
    create_generative,
    grid_conditions,
    register_generative,
)
from facelab.models.generative.blend import blend_conditions, class_latent_means, interpolate_latents
from facelab.models.generative.conditions import Condition, encode_label_rows

__all__ = [
    "GENERATIVE",
    "Condition",
    "GenBatch",
    "GenerativeConfig",
    "GenerativeModel",
    "ModelOutput",
    "blend_conditions",
    "class_latent_means",
    "create_generative",
    "encode_label_rows",
    "grid_conditions",
    "interpolate_latents",
    "register_generative",
]
