"""``distill``: a trained classifier (or an ensemble of them) teaches a fresh backbone its labels on unlabelled
faces (knowledge distillation, Hinton et al. 2015; with noise on the student only, as in Noisy Student, Xie et
al. 2020).

A teacher trained on a few people's labels (the CelebA subset's 152) predicts its labels for every face of
any number of other stores (UTKFace's 19,466 faces of thousands of people); the student, a backbone of any
registered architecture with a linear head of the teacher's logits, learns to give the teacher's
probabilities from augmented, dropped-out views of those faces. Its backbone then carries what the teacher
knows about the target labels, spread over far more people than the teacher saw; ``facelab train TARGET
--pretrained RUN`` fine-tunes it on the labelled rows as any pretrained encoder (the distillation head is
left behind).

The teacher labels each face once, from the clean image (flip-averaged with ``teacher_tta_flip``), and its
targets are cached by row: later epochs cost the student's step alone. The student sees the face mirrored
half of the time (its left/right classes, if the teacher has any, swapped with it) and then ``augment``
(flip excluded: it is done here). Binary labels are learnt with binary cross-entropy against the teacher's
probability, categorical ones with cross-entropy against its class distribution, each label weighing the
same; ``temperature`` softens the teacher's logits first and ``hard`` uses its decisions instead.

Validation (held-out pretraining rows) reports that loss and ``agreement``: the share of label decisions of
the student that match the teacher's, which picks the best checkpoint.

Leakage: the teacher must not have trained on rows a fine-tuned student is later scored on; ``facelab
pretrain`` already leaves every store's official val/test partitions out, so a teacher and student both kept
from the validation partition keep the figure honest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator
from torch import nn

from facelab.config import StrictConfig
from facelab.data.augment import AugmentConfig, BatchAugment
from facelab.data.preprocessing import Preprocessing, describe_alignment, same_alignment
from facelab.data.schema import LabelKind
from facelab.errors import ConfigError, FacelabError
from facelab.eval.inference import forward_logits
from facelab.models.checkpoint import CheckpointMeta, weights_path
from facelab.models.classifiers.base import Classifier
from facelab.models.classifiers.ensemble import load_classifier
from facelab.models.classifiers.heads import Task, flip_permutation
from facelab.models.projection import ProjectedEncoder
from facelab.runs.inputs import RunInput, file_input
from facelab.train.objectives import OBJECTIVES, ObjectiveSpec
from facelab.train.objectives.encoder import EncoderObjective, Normaliser
from facelab.train.trainer import StepOutput

class DistillOptions(StrictConfig):
    """``objective_kwargs`` of ``distill``."""

    teacher: list[str] = Field(min_length=1)  # classifier run folders (or checkpoints); several are averaged
    teacher_checkpoint: str = "last"  # "best" or "last" checkpoint of each teacher run
    teacher_tta_flip: bool = False  # the teacher's targets averaged over the face and its mirror image
    temperature: float = Field(1.0, gt=0, le=20)  # teacher logits / T before the sigmoid or softmax
    hard: bool = False  # learn the teacher's decisions (0/1, one class) instead of its probabilities
    drop_rate: float = Field(0.5, ge=0, lt=1)  # dropout before the student's head (the student's noise)
    hflip: float = Field(0.5, ge=0, le=1)  # probability of mirroring a student view (targets mirrored with it)
    augment: str = "geometric"  # augmentation preset of the student's views (its flip is replaced by hflip)
    augment_overrides: dict[str, Any] = Field(default_factory=dict)

    @field_validator("teacher", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, (str, Path)) else v

    @field_validator("teacher_checkpoint")
    @classmethod
    def _which(cls, v: str) -> str:
        if v not in ("best", "last"):
            raise ValueError(f"teacher_checkpoint {v!r}: choose best or last")
        return v

    @model_validator(mode="after")
    def _preset_exists(self) -> DistillOptions:
        self.view_config()
        return self

    def view_config(self) -> AugmentConfig:
        """The student's augmentation without its flip (done by the objective, which mirrors the targets too)."""
        return AugmentConfig.preset(self.augment, **{**self.augment_overrides, "hflip": 0.0})


class DistillHead(nn.Module):
    """Dropout, then a linear layer from the pooled features to the teacher's logits."""

    def __init__(self, in_features: int, out_features: int, *, drop_rate: float) -> None:
        super().__init__()
        self.drop, self.fc = nn.Dropout(drop_rate), nn.Linear(in_features, out_features)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(h))


def check_teacher_fits(meta: CheckpointMeta, preprocessing: Preprocessing, where: str) -> None:
    """A teacher must take the images the student learns from: same image size, same alignment.

    Raises:
        ConfigError: naming what differs on each side.
    """
    theirs = meta.preprocessing
    if theirs is None:
        raise ConfigError(f"teacher {where} records no preprocessing; train it again with facelab train")
    problems = []
    if theirs.image_size != preprocessing.image_size:
        problems.append(f"image size: the teacher takes {theirs.image_size}px images, the stores hold "
                        f"{preprocessing.image_size}px")
    if not same_alignment(theirs.align, preprocessing.align):
        problems.append(f"alignment: the teacher learnt faces {describe_alignment(theirs.align)}, the stores are "
                        f"{describe_alignment(preprocessing.align)}")
    if problems:
        raise ConfigError(f"teacher {where} cannot label these stores:\n  " + "\n  ".join(problems) +
                          "\nFix: distil from a teacher trained on stores prepared like these (same --size, --align)")


def load_teacher(options: DistillOptions, preprocessing: Preprocessing) -> tuple[nn.Module, CheckpointMeta, Task]:
    """The teacher (one run, or an ensemble), in eval mode with frozen weights, checked to fit the stores."""
    where = ", ".join(options.teacher)
    try:
        teacher, meta = load_classifier(options.teacher, which=options.teacher_checkpoint)
    except FacelabError as e:  # a missing run, a checkpoint of another kind: say which option it came from
        raise ConfigError(f"objective_kwargs.teacher {where}: {e}") from None
    if meta.kind != "classifier" or "task" not in (meta.config or {}):
        raise ConfigError(f"teacher {where} is a {meta.kind} checkpoint, not a trained classifier")
    check_teacher_fits(meta, preprocessing, where)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.eval(), meta, Task.from_dict(meta.config["task"])


class DistillObjective(EncoderObjective):
    """Trains ``encoder`` with a linear head to give a teacher's probabilities on augmented views.

    Args:
        encoder: a registered classifier built without a head (``num_outputs=0``).
        options: :class:`DistillOptions`.
        preprocessing: what the checkpoint records (image size, alignment, the encoder's mean/std).
        config: the run's resolved config, saved in every checkpoint.
    """

    def __init__(self, encoder: Classifier, *, options: DistillOptions, preprocessing: Preprocessing,
                 config: dict[str, Any]) -> None:
        self.teacher, self.teacher_meta, self.task = load_teacher(options, preprocessing)
        head = DistillHead(encoder.num_features, self.task.num_logits, drop_rate=options.drop_rate)
        super().__init__(ProjectedEncoder(encoder, head), options=options, preprocessing=preprocessing, config=config)
        self.flip_perm = flip_permutation(self.task, self.teacher_meta.labels)
        self.augment = BatchAugment(options.view_config())
        self.teacher_normalise = Normaliser(self.teacher_meta.preprocessing)
        self._cache: dict[int, torch.Tensor] = {}  # row -> the teacher's logits (num_logits,), on the CPU

    # ---- the teacher's targets ----------------------------------------------------------------------
    @torch.no_grad()
    def teacher_logits(self, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """(B, num_logits) fp32 teacher logits of the clean images ``x`` (B, 3, S, S) in [0, 1], cached by store
        row (``rows``; a batch holding rows without one, -1, is labelled afresh)."""
        keys = [int(r) for r in rows]
        if min(keys, default=0) < 0:
            return self._teach(x)
        missing = [i for i, k in enumerate(keys) if k not in self._cache]
        if missing:
            for i, z in zip(missing, self._teach(x[missing]).cpu()):
                self._cache[keys[i]] = z
        return torch.stack([self._cache[k] for k in keys]).to(x.device)

    def _teach(self, x: torch.Tensor) -> torch.Tensor:
        self.teacher.to(x.device)
        return forward_logits(self.teacher, self.teacher_normalise(x), tta_flip=self.options.teacher_tta_flip, flip_perm=self.flip_perm)

    def targets(self, logits: torch.Tensor) -> list[torch.Tensor]:
        """Per label of the teacher's task: (B,) probabilities of binary labels, (B, K) class distributions."""
        out = []
        for o, s in zip(self.task.outputs, self.task.slices):
            z = logits[:, s] / self.options.temperature
            if o.kind is LabelKind.BINARY:
                p = torch.sigmoid(z[:, 0])
                out.append((p > 0.5).float() if self.options.hard else p)
            else:
                p = torch.softmax(z, dim=1)
                out.append(F.one_hot(p.argmax(1), p.shape[1]).float() if self.options.hard else p)
        return out

    def distill_loss(self, student: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean over labels of each label's loss, and (B, labels) whether the student's decision is the
        teacher's."""
        losses, agree = [], []
        for o, s, t in zip(self.task.outputs, self.task.slices, self.targets(teacher)):
            z = student[:, s].float()
            if o.kind is LabelKind.BINARY:
                losses.append(F.binary_cross_entropy_with_logits(z[:, 0], t))
                agree.append((z[:, 0] > 0) == (teacher[:, s][:, 0] > 0))
            else:
                losses.append(-(t * F.log_softmax(z, dim=1)).sum(1).mean())
                agree.append(z.argmax(1) == teacher[:, s].argmax(1))
        return torch.stack(losses).mean(), torch.stack(agree, dim=1)

    # ---- the student's views ------------------------------------------------------------------------
    def student_view(self, x: torch.Tensor, z_teacher: torch.Tensor, *, seed: int | None = None,
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """A normalised, augmented view of ``x`` and the teacher's logits mirrored where the view is."""
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        flip = torch.rand(x.shape[0], generator=gen) < self.options.hflip
        if flip.any():
            f = flip.to(x.device)
            x = torch.where(f.view(-1, 1, 1, 1), torch.flip(x, dims=[3]), x)
            if self.flip_perm is not None:
                z_teacher = torch.where(f.view(-1, 1), z_teacher[:, self.flip_perm], z_teacher)
        x, _ = self.augment(x, seed=seed)
        return self.normalise(x), z_teacher

    def loss(self, group: str, batch: Any) -> StepOutput:
        z_teacher = self.teacher_logits(batch.x, batch.index)
        view, z_teacher = self.student_view(batch.x, z_teacher)
        loss, agree = self.distill_loss(self.model(view), z_teacher)
        return StepOutput(loss, {"loss": float(loss.detach()), "agreement": float(agree.float().mean())})

    @torch.no_grad()
    def evaluate(self, loader: Any, *, model: torch.nn.Module | None = None) -> dict[str, float]:
        """The distillation loss and the agreement with the teacher on the clean held-out faces."""
        model = model or self.model
        loss_sum, agree_sum, n = 0.0, 0.0, 0
        for batch in loader:
            z_teacher = self.teacher_logits(batch.x, batch.index)
            loss, agree = self.distill_loss(model(self.normalise(batch.x)), z_teacher)
            loss_sum += float(loss) * len(batch)
            agree_sum += float(agree.float().mean()) * len(batch)
            n += len(batch)
        return {"loss": loss_sum / n, "agreement": agree_sum / n} if n else {}

    def checkpoint_meta(self) -> CheckpointMeta:
        return super().checkpoint_meta(teacher_task=self.task.to_dict(), teacher_labels=self.teacher_meta.labels)


def _check_teacher(options: DistillOptions, preprocessing: Preprocessing) -> None:
    load_teacher(options, preprocessing)  # ConfigError if it cannot be loaded or cannot label the stores


def _teacher_inputs(options: DistillOptions) -> list[RunInput]:
    """Each teacher's weights file (the ``teacher_checkpoint`` of a run folder), recorded and checked with the run."""
    return [file_input(f"teacher:{k}", "teacher", weights_path(t, options.teacher_checkpoint))
            for k, t in enumerate(options.teacher)]


@OBJECTIVES.register("distill")
def _distill() -> ObjectiveSpec:
    return ObjectiveSpec(factory=DistillObjective, labelled=False, options=DistillOptions,
                         monitor="val_agreement", monitor_mode="max", check=_check_teacher, inputs=_teacher_inputs,
                         # the classifier recipe's optimiser: the student learns labels, as a classifier does
                         trainer_defaults={"epochs": 10, "optim": {"lr": 3e-3, "weight_decay": 0.05}},
                         doc="a trained classifier's (or ensemble's) probabilities on unlabelled faces, learnt "
                             "from noisy views")
