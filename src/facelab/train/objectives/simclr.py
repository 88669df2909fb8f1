"""``simclr``: contrastive pretraining without labels (SimCLR, Chen et al. 2020).

Each image of a batch is augmented twice (the ``simclr`` augmentation preset: resized crop, flip, colour
jitter, greyscale, blur); the encoder's pooled features go through a projection MLP, and the NT-Xent loss
asks each view to pick its partner out of the other ``2B - 1`` views of the batch (of the global batch, all
processes' rows, under DDP). Validation reports the same loss and ``positive_top1``, the share of views whose
nearest other view (cosine similarity) is their partner, on held-out rows with fixed views (seeded per batch),
so epochs are comparable.

The loader serves images in [0, 1] (mean 0, std 1): views are made from the untouched images, then
normalised with the encoder's own mean/std, which the checkpoint's preprocessing records.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from facelab.config import StrictConfig
from facelab.data.augment import AugmentConfig, BatchAugment
from facelab.data.preprocessing import Preprocessing
from facelab.models.classifiers.base import Classifier
from facelab.models.projection import ProjectedEncoder, ProjectionMLP
from facelab.train.objectives import OBJECTIVES, ObjectiveSpec
from facelab.train.objectives.encoder import EncoderObjective
from facelab.train.trainer import StepOutput

VAL_VIEW_SEED = 20_201  # validation views are seeded per batch from this: every epoch sees the same views


class SimCLROptions(StrictConfig):
    """``objective_kwargs`` of ``simclr``."""

    temperature: float = Field(0.2, gt=0, le=10)  # of NT-Xent; SimCLR used 0.1-0.5
    proj_hidden: int = Field(512, ge=1)  # projection MLP: pooled features -> hidden -> proj_dim
    proj_dim: int = Field(128, ge=1)
    augment: str = "simclr"  # augmentation preset (facelab.data.augment) drawn for each view
    augment_overrides: dict[str, Any] = Field(default_factory=dict)  # e.g. {resized_crop: {scale: [0.5, 1.0]}}

    @model_validator(mode="after")
    def _preset_exists(self) -> SimCLROptions:
        self.view_config()  # ConfigError now, not after the run folder is made
        return self

    def view_config(self) -> AugmentConfig:
        return AugmentConfig.preset(self.augment, **self.augment_overrides)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float, *,
            across_processes: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """NT-Xent loss of two views' projections (B, D) each, and (2B,) whether each view's most similar other
    view is its partner. Computed in float32 (under bf16 autocast too).

    With ``across_processes`` and several processes (``torch.distributed`` initialised, more than one rank;
    every process must call it, as in a training step) every view is also compared with the views of the other
    processes' rows, gathered with gradients, as SimCLR does across its devices: the loss is this process's
    rows' mean, so DDP's average over processes is the loss of one process holding the whole global batch
    (tested). Processes may hold different numbers of rows (a partial last batch).
    """
    b = z1.shape[0]
    z1, z2 = F.normalize(z1.float(), dim=1), F.normalize(z2.float(), dim=1)
    # (N, D) each: every process's rows, ours from ``offset`` on
    a1, a2, offset = _gather_views(z1, z2) if across_processes else (z1, z2, 0)
    n = a1.shape[0]
    sim = torch.cat([z1, z2]) @ torch.cat([a1, a2]).T / temperature  # (2B, 2N) cosine similarity / T
    own = torch.arange(b, device=z1.device) + offset  # our rows' positions among the N
    itself = torch.cat([own, own + n])  # each view's own column
    partner = torch.cat([own + n, own])  # the other view of the same image
    sim = sim.masked_fill(F.one_hot(itself, 2 * n).bool(), float("-inf"))
    return F.cross_entropy(sim, partner), sim.argmax(dim=1) == partner


def _gather_views(z1: torch.Tensor, z2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Both views of every process's rows (with gradients back to their owners) and where this process's rows
    start; the local views alone with one process."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return z1, z2, 0
    from torch.distributed.nn.functional import all_gather

    world, rank = dist.get_world_size(), dist.get_rank()
    sizes = [torch.zeros(1, dtype=torch.int64, device=z1.device) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([z1.shape[0]], device=z1.device))
    counts = [int(c) for c in sizes]
    pad = max(counts) - z1.shape[0]  # all_gather takes equal shapes: pad, then drop every process's padding
    parts = all_gather(torch.cat([torch.cat([z1, z2], 1), z1.new_zeros(pad, 2 * z1.shape[1])]))
    rows = torch.cat([p[:c] for p, c in zip(parts, counts)])
    d = z1.shape[1]
    return rows[:, :d], rows[:, d:], sum(counts[:rank])


class SimCLRObjective(EncoderObjective):
    """Trains ``encoder`` with a projection head by NT-Xent on two views of each image.

    Args:
        encoder: a registered classifier built without a head (``num_outputs=0``).
        options: :class:`SimCLROptions`.
        preprocessing: what the checkpoint records (image size, alignment, the encoder's mean/std).
        config: the run's resolved config, saved in every checkpoint.
    """

    def __init__(self, encoder: Classifier, *, options: SimCLROptions, preprocessing: Preprocessing,
                 config: dict[str, Any]) -> None:
        projector = ProjectionMLP(encoder.num_features, hidden=options.proj_hidden, out_features=options.proj_dim)
        super().__init__(ProjectedEncoder(encoder, projector), options=options, preprocessing=preprocessing,
                         config=config)
        self.augment = BatchAugment(options.view_config())

    def views(self, x: torch.Tensor, *, seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Two normalised views (B, 3, S, S) of images ``x`` (B, 3, S, S) in [0, 1]; ``seed`` fixes them."""
        v1, _ = self.augment(x, seed=None if seed is None else 2 * seed)
        v2, _ = self.augment(x, seed=None if seed is None else 2 * seed + 1)
        return self.normalise(v1), self.normalise(v2)

    def loss(self, group: str, batch: Any) -> StepOutput:
        v1, v2 = self.views(batch.x)
        loss, hit = nt_xent(self.model(v1), self.model(v2), self.options.temperature, across_processes=True)
        return StepOutput(loss, {"loss": float(loss.detach()), "positive_top1": float(hit.float().mean())})

    @torch.no_grad()
    def evaluate(self, loader: Any, *, model: torch.nn.Module | None = None) -> dict[str, float]:
        """NT-Xent loss and positive_top1 over the held-out rows (batches of one row are skipped: no negatives);
        within each batch only, so that the figure does not depend on the number of processes (rank 0 alone
        validates)."""
        model = model or self.model
        loss_sum, hits, views = 0.0, 0, 0
        for i, batch in enumerate(loader):
            if len(batch) < 2:
                continue
            v1, v2 = self.views(batch.x, seed=VAL_VIEW_SEED + i)
            loss, hit = nt_xent(model(v1), model(v2), self.options.temperature)
            loss_sum += float(loss) * hit.numel()
            hits += int(hit.sum())
            views += hit.numel()
        if not views:
            return {}
        return {"loss": loss_sum / views, "positive_top1": hits / views}


@OBJECTIVES.register("simclr")
def _simclr() -> ObjectiveSpec:
    return ObjectiveSpec(factory=SimCLRObjective, labelled=False, options=SimCLROptions,
                         monitor="val_positive_top1", monitor_mode="max",
                         doc="contrastive (NT-Xent) on two augmented views of unlabelled images")
