"""What the unlabelled objectives share: a classifier's backbone with a head of the objective's own
(:class:`~facelab.models.projection.ProjectedEncoder`), trained as one parameter group on images the loader
serves in [0, 1] and normalised here with the encoder's mean/std, saved as a checkpoint of kind ``encoder``
that ``facelab train --pretrained`` fine-tunes (the head left behind)."""

from __future__ import annotations

from typing import Any

import torch

from facelab.data.preprocessing import Preprocessing
from facelab.models.checkpoint import CheckpointMeta
from facelab.models.projection import ProjectedEncoder


class Normaliser:
    """``(x - mean) / std`` for images ``x`` (B, 3, H, W) in [0, 1], on whatever device ``x`` is."""

    def __init__(self, pre: Preprocessing) -> None:
        self.mean = torch.tensor(pre.mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(pre.std, dtype=torch.float32).view(1, 3, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.device)) / self.std.to(x.device)


class EncoderObjective:
    """Base of the unlabelled objectives: ``model`` trained as the one group ``model``.

    Args:
        model: the encoder with the objective's head.
        options: the objective's typed options (saved in every checkpoint).
        preprocessing: what the checkpoint records (image size, alignment, the encoder's mean/std).
        config: the run's resolved config, saved in every checkpoint.
    """

    def __init__(self, model: ProjectedEncoder, *, options: Any, preprocessing: Preprocessing,
                 config: dict[str, Any]) -> None:
        self.model, self.options, self.preprocessing, self.config = model, options, preprocessing, config
        self.normalise = Normaliser(preprocessing)

    def parameter_groups(self) -> dict[str, Any]:
        return {"model": list(self.model.parameters())}

    def step_schedule(self) -> list[tuple[str, int]]:
        return [("model", 1)]

    def checkpoint_meta(self, **config: Any) -> CheckpointMeta:
        """An ``encoder`` checkpoint of the backbone's architecture; ``config`` adds to the run's config."""
        enc = self.model.encoder
        return CheckpointMeta(kind="encoder", arch=enc.arch_name, arch_kwargs=dict(enc.arch_kwargs),
                              preprocessing=self.preprocessing,
                              config={**self.config, "objective_options": self.options.model_dump(mode="json"),
                                      **config})
