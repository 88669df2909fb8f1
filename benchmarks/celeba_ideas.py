"""Training ideas tried against the CelebA 0.915 target (AMD EPYC, 2026-11-24), kept so the figures in
docs/results.md can be re-run. None of them reached the target, so none is a library feature; each is a
subclass of the classifier objective (or an augmentation preset) swapped in for one run of facelab's
default recipe (official partitions, 64 px store, vgg_scratch, AdamW 3e-3, one-cycle, batch 64).

    OMP_NUM_THREADS=1 python benchmarks/celeba_ideas.py --idea identity_aux --weight 0.5 --json
    python benchmarks/celeba_ideas.py --idea sam --weight 0.05 --epochs 15   # same cost as 30 plain epochs
    python benchmarks/celeba_ideas.py --idea plain --augment geo_color --seed 1

Ideas:
    plain          the default objective (use with --augment to compare augmentation presets).
    identity_aux   + weight x cross-entropy of a linear identity classifier on the pooled features (the
                   original CelebA paper pretrained on identities); the identity head is not saved.
    identity_soft  targets (1 - weight) y + weight x (mean of y over the image's training identity):
                   label noise averaged within an identity.
    sam            sharpness-aware minimisation (Foret et al. 2021) with radius weight: the gradient is
                   taken at the worst-case nearby weights, then applied at the current ones; 2x the cost.
--head-hidden N (with any idea): a hidden layer in vgg_scratch's head (flatten -> dropout 0.5 ->
fc N -> ReLU -> dropout 0.3 -> fc), the shape of the common notebook CNN; N = 128 gives 918k parameters.
Extra augmentation presets: geo_strong (affine p 0.8, 15 degrees, 10% shift, scale 0.9-1.1) and
geo_color (geometric + brightness/contrast 0.2, saturation 0.1, no hue change).
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from facelab.data.augment import AUGMENT_PRESETS, AffineConfig, AugmentConfig, ColorJitterConfig
from facelab.data.store import Store
from facelab.models.classifiers import create_classifier
from facelab.train.classifier import ClassifierConfig, ClassifierObjective
from facelab.train.trainer import StepOutput

from celeba_common import train_and_score  # benchmarks/ is on sys.path when this runs as a script


@AUGMENT_PRESETS.register("geo_strong")
def _geo_strong() -> AugmentConfig:
    return AugmentConfig(hflip=0.5, affine=AffineConfig(p=0.8, degrees=15.0, translate=0.1, scale=(0.9, 1.1)))


@AUGMENT_PRESETS.register("geo_color")
def _geo_color() -> AugmentConfig:
    return AugmentConfig(hflip=0.5, affine=AffineConfig(),
                         color_jitter=ColorJitterConfig(brightness=0.2, contrast=0.2, saturation=0.1, hue=0.0))


def train_identities(store: Store) -> tuple[torch.Tensor, int]:
    """(store row -> training-identity index, -1 outside the official train partition), identity count."""
    train_rows = np.flatnonzero(np.asarray(store.partitions) == 0)
    _, inverse = np.unique(np.asarray(store.identities)[train_rows], return_inverse=True)
    row_to_id = np.full(len(store), -1, np.int64)
    row_to_id[train_rows] = inverse
    return torch.from_numpy(row_to_id), int(inverse.max()) + 1


class IdentityAux(ClassifierObjective):
    def __init__(self, *a, weight: float = 0.5, **k) -> None:
        super().__init__(*a, **k)
        self.weight = weight
        self.row_to_id, n = train_identities(self.store)
        self.id_head = torch.nn.Linear(self.model.embedding_dim, n)

    def parameter_groups(self):
        return {"model": list(self.model.parameters()) + list(self.id_head.parameters())}

    def loss(self, group, batch):
        if not self.model.training:
            return super().loss(group, batch)
        feats = self.model.forward_features(batch.x)  # (B, C, h, w)
        task = self._task_loss(self.model.forward_head(feats), batch.y)
        ids = self.row_to_id[batch.index].to(feats.device)  # batch.index stays on the CPU
        ce = F.cross_entropy(self.id_head.to(feats.device)(feats.mean(dim=(2, 3))), ids)
        return StepOutput(task + self.weight * ce, {"loss": float(task.detach()), "id_ce": float(ce.detach())})


class IdentitySoft(ClassifierObjective):
    def __init__(self, *a, weight: float = 0.5, **k) -> None:
        super().__init__(*a, **k)
        self.weight = weight
        row_to_id, n = train_identities(self.store)
        cols = [self.store.label_index(name) for name in self.task.names]
        y = torch.from_numpy(np.asarray(self.store.labels)[:, cols].astype(np.float32))  # (N, L)
        known = row_to_id >= 0
        sums = torch.zeros(n, y.shape[1]).index_add_(0, row_to_id[known], y[known])
        counts = torch.bincount(row_to_id[known], minlength=n).clamp(min=1)
        self.id_mean = torch.zeros_like(y)
        self.id_mean[known] = (sums / counts[:, None])[row_to_id[known]]

    def loss(self, group, batch):
        if not self.model.training:
            return super().loss(group, batch)
        soft = (1 - self.weight) * batch.y.float() + self.weight * self.id_mean[batch.index].to(batch.y.device)
        loss = F.binary_cross_entropy_with_logits(self.model(batch.x).float(), soft)
        return StepOutput(loss, {"loss": float(loss.detach())})


class Sam(ClassifierObjective):
    _pending: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None

    def __init__(self, *a, weight: float = 0.05, **k) -> None:  # weight: the radius rho
        super().__init__(*a, **k)
        self.weight = weight

    def loss(self, group, batch):
        if not self.model.training:
            return super().loss(group, batch)
        params = [p for p in self.model.parameters() if p.requires_grad]
        clean = self._task_loss(self.model(batch.x), batch.y)
        grads = torch.autograd.grad(clean, params)
        norm = torch.norm(torch.stack([g.norm() for g in grads]))
        eps = [self.weight * g / (norm + 1e-12) for g in grads]
        with torch.no_grad():
            torch._foreach_add_(params, eps)
        Sam._pending = (params, eps)  # undone just before the optimizer step (below)
        sharp = self._task_loss(self.model(batch.x), batch.y)
        return StepOutput(sharp, {"loss": float(clean.detach()), "sam_loss": float(sharp.detach())})


def _undo_sam_perturbation(optimizer, args, kwargs) -> None:
    if Sam._pending is not None:
        params, eps = Sam._pending
        with torch.no_grad():
            torch._foreach_sub_(params, eps)
        Sam._pending = None


class HiddenHead(nn.Sequential):
    """fc N -> ReLU -> dropout -> fc, standing in for a classifier's ``fc`` (``.bias`` is the output layer's, which
    the trainer initialises from the label priors)."""

    def __init__(self, n_in: int, hidden: int, n_out: int) -> None:
        super().__init__(nn.Linear(n_in, hidden), nn.ReLU(inplace=True), nn.Dropout(0.3), nn.Linear(hidden, n_out))

    @property
    def bias(self) -> torch.Tensor:
        return self[-1].bias


def with_hidden_head(hidden: int):
    """A model factory (``train_classifier(create_model=...)``): the registry's classifier carrying a HiddenHead
    of ``hidden`` units."""
    def create_with_hidden(*args, **kwargs):
        model = create_classifier(*args, **kwargs)
        model.fc = HiddenHead(model.fc.in_features, hidden, model.fc.out_features)
        return model

    return create_with_hidden


IDEAS = {"plain": ClassifierObjective, "identity_aux": IdentityAux, "identity_soft": IdentitySoft, "sam": Sam}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--idea", choices=sorted(IDEAS), required=True)
    ap.add_argument("--weight", type=float, default=None, help="the idea's weight (see above)")
    ap.add_argument("--store", type=Path, default=Path("~/facelab-stores/celeba64").expanduser())
    ap.add_argument("--out", type=Path, default=Path("bench-out/celeba-ideas"))
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--augment", default="geometric")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-limit", type=int, default=None, help="at most this many training rows (smoke runs)")
    ap.add_argument("--head-hidden", type=int, default=None, help="hidden units in the head (see above)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    training = {"objective": IDEAS[args.idea]}
    if args.weight is not None:
        training["objective"] = functools.partial(IDEAS[args.idea], weight=args.weight)
    if args.head_hidden:
        training["create_model"] = with_hidden_head(args.head_hidden)
    register_optimizer_step_pre_hook(_undo_sam_perturbation)
    cfg = ClassifierConfig.from_dict({"store": str(args.store), "split": "official", "augment": args.augment,
                                                 "seed": args.seed, "train_limit": args.train_limit, "trainer": {"epochs": args.epochs}})
    hidden = f"-h{args.head_hidden}" if args.head_hidden else ""
    run = args.out / f"{args.idea}{hidden}-{args.augment}-s{args.seed}-e{args.epochs}-{time.strftime('%H%M%S')}"
    run.mkdir(parents=True)
    out = {"idea": args.idea, "weight": args.weight, "head_hidden": args.head_hidden, "augment": args.augment,
           "seed": args.seed, "epochs": args.epochs, **train_and_score(cfg, run, **training)}
    print(json.dumps(out, indent=2) if args.json else out)


if __name__ == "__main__":
    main()
