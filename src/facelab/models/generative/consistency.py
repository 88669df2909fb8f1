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

from collections.abc import Callable, Mapping, Sequence

import torch
from pydantic import Field
from torch import Tensor, nn

from facelab.config import StrictConfig
from facelab.models.generative.blocks import ConvEncoder
from facelab.models.generative.conditions import Condition, condition_loss, random_conditions
from facelab.models.generative.diffaug import DiffAugment


class ConsistencyOptions(StrictConfig):
    """Config fields of a model that can train a :class:`ConditionClassifier` (cvae, cgan).

    Attributes:
        consistency_weight: weight of the classifier's loss on generated images, in the units of the
            model's own loss (a VAE's negative ELBO is in nats per image, about 600 on CelebA at 64 px).
            0: off, the published model.
        classifier_width: channels of the classifier's first stage (doubles per stage).
        classifier_balanced: train the classifier on real images with every value of a condition weighted
            equally (``condition_loss(balanced=True)``), so that it is calibrated for the balanced conditions
            the generated images are drawn with; False: the data's prevalence (CelebA: 30% Male), under which
            a rare value needs stronger evidence and the common one is granted to ambiguous images.
        classifier_augment: DiffAugment policy (``color``, ``translation``, ``cutout``, ``blur``) applied to real
            and generated images before the classifier sees them, so that a texture does not satisfy it.
    """

    consistency_weight: float = Field(0.0, ge=0)
    classifier_width: int = Field(16, ge=1)
    classifier_balanced: bool = True
    classifier_augment: list[str] = Field(default_factory=lambda: ["translation"])


def legacy_consistency_options(state: Mapping[str, Tensor]) -> dict[str, object]:
    """Options to load a checkpoint from before the consistency loss existed: it has no classifier weights."""
    return {} if any(k.startswith("classifier.") for k in state) else {"consistency_weight": 0.0}


class WithConditionClassifier:
    """Mixin of a conditional generative model whose config has the :class:`ConsistencyOptions`: builds its
    ``classifier`` (None when the weight is 0) after the model, and loads checkpoints written before the
    consistency loss existed. Put it before the model class: ``class CVAE(WithConditionClassifier, VAE)``."""

    classifier: ConditionClassifier | None

    def __init__(self, config: ConsistencyOptions | None = None) -> None:
        super().__init__(config)  # type: ignore[call-arg]
        self.classifier = ConditionClassifier.for_model(self.config, self.cond_dim)  # type: ignore[attr-defined]

    @classmethod
    def legacy_options(cls, state: Mapping[str, Tensor]) -> dict[str, object]:
        return {**super().legacy_options(state), **legacy_consistency_options(state)}  # type: ignore[misc]


class ConditionClassifier(nn.Module):
    """A small conv classifier ``(B, 3, S, S) -> (B, cond_dim)`` logits of a model's conditions.

    Group norm (no batch statistics, so real and generated batches are scored alike) and LeakyReLU; the
    stages of :class:`~facelab.models.generative.blocks.ConvEncoder`, summed over space, then a linear layer.
    """

    def __init__(self, *, image_size: int, width: int, max_width: int, cond_dim: int,
                 conditions: Sequence[Condition] | None, augment: Sequence[str] = ("translation",),
                 balanced: bool = True) -> None:
        super().__init__()
        self.features = ConvEncoder(3, image_size=image_size, width=width, max_width=max_width,
                                    norm_layer="groupnorm", act_layer="leaky_relu_0.2", pool="sum")
        self.head = nn.Linear(self.features.feat_dim, cond_dim)
        self.conditions = list(conditions) if conditions is not None else None
        self.augment = DiffAugment(augment)  # no parameters: the state dict is the same for every policy
        self.balanced = balanced

    @classmethod
    def for_model(cls, config: ConsistencyOptions, cond_dim: int) -> ConditionClassifier | None:
        """The classifier a model's config (a GenerativeConfig with these options) asks for; None when
        ``consistency_weight`` is 0."""
        if config.consistency_weight <= 0:
            return None
        return cls(image_size=config.image_size, width=config.classifier_width, max_width=config.max_width,
                   cond_dim=cond_dim, conditions=config.conditions, balanced=config.classifier_balanced,
                   augment=config.classifier_augment)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))  # (B, 3, S, S) -> (B, cond_dim)

    def real_loss(self, x: Tensor, cond: Tensor) -> Tensor:
        """Classification loss on real images ``x`` with their conditions (trains this classifier); balanced
        over each condition's values unless built with ``balanced=False``."""
        return condition_loss(self(self.augment(x)), cond, self.conditions, balanced=self.balanced)

    def consistency_loss(self, fake: Tensor, cond: Tensor) -> Tensor:
        """Classification loss on generated images with the conditions they were drawn with; gradients reach
        the images (the generator), not this classifier's weights."""
        fixed = {k: p.detach() for k, p in self.named_parameters()}
        logits = torch.func.functional_call(self, fixed, (self.augment(fake),))  # (B, cond_dim)
        return condition_loss(logits, cond, self.conditions)

    def prior_consistency_loss(self, generate: Callable[[Tensor], Tensor], n: int, like: Tensor) -> Tensor:
        """:meth:`consistency_loss` of ``generate(cond)``, images for ``n`` conditions drawn with every value
        equally likely (rare values such as CelebA ``Eyeglasses=1`` get as many samples as common ones), on
        the device and in the dtype of ``like``."""
        cond = random_conditions(self.conditions, self.head.out_features, n, device=like.device).to(like.dtype)
        return self.consistency_loss(generate(cond), cond)
