"""Condition consistency: an auxiliary classifier that makes conditional samples show their condition.

A conditional generator can learn to ignore its condition: a CVAE's latent also encodes it (the decoder
reconstructs without reading ``c``), and a projection discriminator rewards realism first. Like the
auxiliary classifier of AC-GAN (Odena et al. 2017), :class:`ConditionClassifier` learns to predict the
condition from **real** images, and the generator pays its classification loss on generated images drawn
with given conditions. The classifier's weights are held fixed in that second term, so the generator has
to draw the condition instead of teaching the classifier its own conventions. Sample quality is judged by
an *independent* classifier (``facelab.eval.generative_metrics.conditional_fidelity``), never by this one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from facelab.models.generative.blocks import ConvEncoder
from facelab.models.generative.conditions import Condition, condition_loss


class ConditionClassifier(nn.Sequential):
    """A small conv classifier ``(B, 3, S, S) -> (B, cond_dim)`` logits of a model's conditions.

    Group norm (no batch statistics, so real and generated batches are scored alike) and LeakyReLU; the
    stages of :class:`~facelab.models.generative.blocks.ConvEncoder`, summed over space, then a linear layer.
    """

    def __init__(self, *, image_size: int, width: int, max_width: int, cond_dim: int,
                 conditions: Sequence[Condition] | None) -> None:
        features = ConvEncoder(3, image_size=image_size, width=width, max_width=max_width,
                               norm_layer="groupnorm", act_layer="leaky_relu_0.2", pool="sum")
        super().__init__(features, nn.Linear(features.feat_dim, cond_dim))  # (B, 3, S, S) -> (B, cond_dim)
        self.conditions = list(conditions) if conditions is not None else None

    def real_loss(self, x: Tensor, cond: Tensor) -> Tensor:
        """Classification loss on real images ``x`` with their conditions (trains this classifier)."""
        return condition_loss(self(x), cond, self.conditions)

    def consistency_loss(self, fake: Tensor, cond: Tensor) -> Tensor:
        """Classification loss on generated images with the conditions they were drawn with; gradients reach
        the images (the generator), not this classifier's weights."""
        fixed = {k: p.detach() for k, p in self.named_parameters()}
        return condition_loss(torch.func.functional_call(self, fixed, (fake,)), cond, self.conditions)
