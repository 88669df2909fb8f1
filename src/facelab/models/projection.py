"""A classifier's backbone with a projection MLP on its pooled features: what contrastive pretraining trains.

The encoder is an ordinary registered classifier built without a head (``num_outputs=0``), so its weights
are those of a classifier of the same architecture under the prefix ``encoder.``; the projector (SimCLR's
``g``) sits on ``encoder.pooled_features``, is trained and checkpointed with it, and is left behind when a
classifier is fine-tuned from the checkpoint (:func:`facelab.models.classifiers.load_pretrained` strips the
prefix and ignores ``projector.*``).
"""

from __future__ import annotations

import torch
from torch import nn

from facelab.models.classifiers.base import Classifier

ENCODER_PREFIX = "encoder."


class ProjectionMLP(nn.Module):
    """``in_features -> hidden -> BN -> ReLU -> out_features`` (SimCLR's two-layer projection head).

    Args:
        in_features: size of the pooled backbone features.
        hidden: width of the hidden layer.
        out_features: size of the projection the contrastive loss compares.
    """

    def __init__(self, in_features: int, *, hidden: int = 512, out_features: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_features, hidden, bias=False), nn.BatchNorm1d(hidden),
                                 nn.ReLU(inplace=True), nn.Linear(hidden, out_features))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)  # (B, in_features) -> (B, out_features)


class ProjectedEncoder(nn.Module):
    """``projector(encoder.pooled_features(x))``: (B, C, H, W) -> (B, out_features).

    Args:
        encoder: a classifier without a head (``num_outputs=0``).
        projector: maps ``encoder.num_features`` to the projection.
    """

    def __init__(self, encoder: Classifier, projector: nn.Module) -> None:
        super().__init__()
        self.encoder, self.projector = encoder, projector

    @property
    def pretrained_cfg(self):
        return self.encoder.pretrained_cfg

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, num_features): what a classifier's linear head would see."""
        return self.encoder.pooled_features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.features(x))  # (B, out_features)
