"""Condition consistency: an auxiliary classifier that makes conditional samples show their condition.

A conditional generator can learn to ignore its condition: a CVAE's latent also encodes it (the decoder
reconstructs without reading ``c``), and a projection discriminator rewards realism first. Like the
auxiliary classifier of AC-GAN (Odena et al. 2017), :class:`ConditionClassifier` learns to predict the
condition from **real** images, and the generator pays its classification loss on generated images drawn
with given conditions. The classifier's weights are held fixed in that second term, so the generator has
to draw the condition instead of teaching the classifier its own conventions. Both real and generated
images are randomly shifted (DiffAugment's translation) before the classifier sees them: without it, a
CelebA cvae satisfied the classifier with a repeated stripe pattern as much as with glasses. Sample quality is judged by
an *independent* classifier (``facelab.eval.generative_metrics.conditional_fidelity``), never by this one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from facelab.models.generative.blocks import ConvEncoder
from facelab.models.generative.conditions import Condition, condition_loss
from facelab.models.generative.diffaug import DiffAugment


class ConditionClassifier(nn.Module):
    """A small conv classifier ``(B, 3, S, S) -> (B, cond_dim)`` logits of a model's conditions.

    Group norm (no batch statistics, so real and generated batches are scored alike) and LeakyReLU; the
    stages of :class:`~facelab.models.generative.blocks.ConvEncoder`, summed over space, then a linear layer.
    """

    def __init__(self, *, image_size: int, width: int, max_width: int, cond_dim: int,
                 conditions: Sequence[Condition] | None, augment: Sequence[str] = ("translation",)) -> None:
        super().__init__()
        self.features = ConvEncoder(3, image_size=image_size, width=width, max_width=max_width,
                                    norm_layer="groupnorm", act_layer="leaky_relu_0.2", pool="sum")
        self.head = nn.Linear(self.features.feat_dim, cond_dim)
        self.conditions = list(conditions) if conditions is not None else None
        self.augment = DiffAugment(augment)  # no parameters: the state dict is the same for every policy

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))  # (B, 3, S, S) -> (B, cond_dim)

    def real_loss(self, x: Tensor, cond: Tensor) -> Tensor:
        """Classification loss on real images ``x`` with their conditions (trains this classifier)."""
        return condition_loss(self(self.augment(x)), cond, self.conditions)

    def consistency_loss(self, fake: Tensor, cond: Tensor) -> Tensor:
        """Classification loss on generated images with the conditions they were drawn with; gradients reach
        the images (the generator), not this classifier's weights."""
        fixed = {k: p.detach() for k, p in self.named_parameters()}
        logits = torch.func.functional_call(self, fixed, (self.augment(fake),))  # (B, cond_dim)
        return condition_loss(logits, cond, self.conditions)
