"""``supervised``: the task loss of a classifier on labelled rows (per-label losses, optional mixup)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from facelab.config import StrictConfig
from facelab.data.preprocessing import Preprocessing
from facelab.data.store import Store
from facelab.eval.inference import evaluate_model
from facelab.models.checkpoint import CheckpointMeta
from facelab.models.classifiers.heads import Task, flip_permutation, task_loss
from facelab.train.objectives import OBJECTIVES, ObjectiveSpec
from facelab.train.trainer import StepOutput

if TYPE_CHECKING:
    from facelab.train.classifier import ClassifierConfig


class SupervisedOptions(StrictConfig):
    """No options of its own: the loss is set by the classifier config (balance, label_smoothing, mixup_alpha)."""


def preprocessing_of(model: torch.nn.Module, store: Store) -> Preprocessing:
    """What inference must do to an image so the model sees what it saw in training."""
    cfg = model.pretrained_cfg
    return Preprocessing.of_store(store, mean=cfg.mean, std=cfg.std)


class ClassifierObjective:
    """Task loss of a classifier; evaluation = per-label metrics averaged over labels.

    Training variants (another loss, an auxiliary head) subclass it and are passed to
    :func:`~facelab.train.classifier.train_classifier` as ``objective=``.
    """

    def __init__(self, model: torch.nn.Module, task: Task, *, cfg: ClassifierConfig, store: Store,
                 pos_weight: torch.Tensor | None = None, class_weights: dict[str, torch.Tensor] | None = None,
                 label_priors: dict[str, list[float]] | None = None) -> None:
        self.model, self.task, self.cfg, self.store = model, task, cfg, store
        self.pos_weight, self.class_weights = pos_weight, class_weights
        #: class frequencies of the training rows, which the model's probabilities carry (eval --adapt-priors)
        self.label_priors = label_priors or {}
        self.lr_groups: list[dict[str, Any]] | None = None

    def parameter_groups(self) -> dict[str, Any]:
        return {"model": self.lr_groups or list(self.model.parameters())}

    def step_schedule(self) -> list[tuple[str, int]]:
        return [("model", 1)]

    def loss(self, group: str, batch: Any) -> StepOutput:
        alpha = self.cfg.mixup_alpha
        if alpha > 0 and self.model.training:
            return self._mixup_loss(batch, alpha)
        logits = self.model(batch.x)  # (B, num_logits)
        loss = self._task_loss(logits, batch.y)
        return StepOutput(loss, {"loss": float(loss.detach())})

    def _task_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return task_loss(logits, y, self.task, pos_weight=self.pos_weight, class_weights=self.class_weights,
                         label_smoothing=self.cfg.label_smoothing)

    def _mixup_loss(self, batch: Any, alpha: float) -> StepOutput:
        """Mixup: the batch mixed with a shuffled copy of itself by ``lam ~ Beta(alpha, alpha)``; the loss is
        the same mix of the losses against both label sets, so unknown labels (-1) and class weights keep
        working. Drawn from torch's global generator, which checkpoints save: resume stays exact."""
        lam = float(torch.distributions.Beta(alpha, alpha).sample())
        perm = torch.randperm(batch.x.shape[0]).to(batch.x.device)
        logits = self.model(lam * batch.x + (1 - lam) * batch.x[perm])  # (B, num_logits)
        loss = lam * self._task_loss(logits, batch.y) + (1 - lam) * self._task_loss(logits, batch.y[perm])
        return StepOutput(loss, {"loss": float(loss.detach()), "mixup_lambda": lam})

    def evaluate(self, loader: Any, *, model: torch.nn.Module | None = None) -> dict[str, float]:
        return evaluate_model(model or self.model, loader, self.task, tta_flip=self.cfg.tta_flip,
                              flip_perm=flip_permutation(self.task, self.store.label_specs))

    def checkpoint_meta(self) -> CheckpointMeta:
        m = self.model
        specs = {s.name: s for s in self.store.label_specs}
        return CheckpointMeta(
            kind="classifier",
            arch=self.cfg.model,
            arch_kwargs={**getattr(m, "arch_kwargs", {}), **self.cfg.model_kwargs, "num_outputs": self.task.num_logits,
                         "image_size": self.store.image_size},
            labels=[specs[n].to_dict() for n in self.task.names],
            preprocessing=preprocessing_of(m, self.store),
            config={**self.cfg.model_dump(mode="json"), "task": self.task.to_dict(),
                    **({"labels_file_sha256": self.store.overlay.sha256} if self.store.overlay else {})},
            label_priors=self.label_priors,
        )


@OBJECTIVES.register("supervised")
def _supervised() -> ObjectiveSpec:
    return ObjectiveSpec(factory=ClassifierObjective, labelled=True, options=SupervisedOptions,
                         monitor="val_mean_accuracy", monitor_mode="max",
                         doc="the task loss of the labels (multi-label / multi-class heads)")
