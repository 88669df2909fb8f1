"""What a classifier's logits mean: one ``Task`` = several labels predicted by one head.

A binary label takes one logit (sigmoid, BCE-with-logits), a categorical label with K classes takes K
logits (softmax, cross-entropy). The logits of the labels are concatenated in task order, so 40 CelebA
attributes are a (B, 40) multi-label head and yaw(3) + light(3) is a (B, 6) head::

    task = Task.from_labels(index.labels, names=["Smiling", "Male"])
    model = create_classifier("vgg_scratch", num_outputs=task.num_logits)
    loss = task_loss(model(x), y, task)               # y: (B, L) int64 raw label values
    probs = task_predict(model(x), task)              # {"Smiling": (B,), "Male": (B,)}

Label values below 0 mean "unknown" and are left out of the loss.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import torch
import torch.nn.functional as F

from facelab.data.schema import LabelKind, LabelSpec
from facelab.errors import ConfigError, FacelabError


@dataclass(frozen=True)
class TaskOutput:
    """One predicted label: ``binary`` (1 logit) or ``categorical`` with ``num_classes`` logits."""

    name: str
    kind: LabelKind
    num_classes: int = 2

    def __post_init__(self) -> None:
        kind = LabelKind(self.kind)
        object.__setattr__(self, "kind", kind)
        if kind is LabelKind.NUMERIC:
            raise ConfigError(f"label {self.name!r} is numeric; bin it into classes to predict it with a classifier")
        if kind is LabelKind.BINARY and self.num_classes != 2:
            raise ConfigError(f"binary label {self.name!r} must have num_classes=2, got {self.num_classes}")
        if self.num_classes < 2:
            raise ConfigError(f"categorical label {self.name!r} needs at least 2 classes, got {self.num_classes}")

    @property
    def num_logits(self) -> int:
        return 1 if self.kind is LabelKind.BINARY else self.num_classes


@dataclass(frozen=True)
class Task:
    """The labels a head predicts, in the order of its logits (and of the columns of ``y``)."""

    outputs: tuple[TaskOutput, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "outputs", tuple(self.outputs))
        names = [o.name for o in self.outputs]
        if not names:
            raise ConfigError("a task needs at least one label")
        if len(set(names)) != len(names):
            raise ConfigError(f"a task lists a label twice: {names}")

    @classmethod
    def multilabel(cls, names: Sequence[str]) -> Task:
        """One binary output per name (e.g. the 40 CelebA attributes)."""
        return cls(tuple(TaskOutput(n, LabelKind.BINARY) for n in names))

    @classmethod
    def multiclass(cls, name: str, num_classes: int) -> Task:
        """One categorical output with ``num_classes`` classes."""
        return cls((TaskOutput(name, LabelKind.CATEGORICAL, num_classes),))

    @classmethod
    def from_labels(cls, specs: Sequence[LabelSpec], names: Sequence[str] | None = None) -> Task:
        """Task for the labels ``names`` (default: every binary/categorical label) of a source's specs."""
        by_name = {s.name: s for s in specs}
        if names is None:
            names = [s.name for s in specs if s.kind is not LabelKind.NUMERIC]
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise ConfigError(f"unknown label(s) {unknown}; the data has: {', '.join(by_name)}")
        return cls(tuple(TaskOutput(n, by_name[n].kind, by_name[n].num_classes or 2) for n in names))

    def to_dict(self) -> dict[str, Any]:
        return {"outputs": [{"name": o.name, "kind": o.kind.value, "num_classes": o.num_classes} for o in self.outputs]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Task:
        return cls(tuple(TaskOutput(o["name"], LabelKind(o["kind"]), int(o["num_classes"])) for o in d["outputs"]))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.outputs)

    @property
    def num_labels(self) -> int:
        return len(self.outputs)

    @cached_property
    def num_logits(self) -> int:
        return sum(o.num_logits for o in self.outputs)

    @cached_property
    def slices(self) -> tuple[slice, ...]:
        """Logit columns of each output, in task order."""
        out, start = [], 0
        for o in self.outputs:
            out.append(slice(start, start + o.num_logits))
            start += o.num_logits
        return tuple(out)

    @cached_property
    def binary_index(self) -> tuple[list[int], list[int]]:
        """(label positions, logit columns) of the binary outputs, for vectorised BCE."""
        pos = [i for i, o in enumerate(self.outputs) if o.kind is LabelKind.BINARY]
        return pos, [self.slices[i].start for i in pos]

    def split(self, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, num_logits) -> {name: (B,) binary logit or (B, K) categorical logits}."""
        self.check_logits(logits)
        return {
            o.name: logits[:, s].squeeze(1) if o.num_logits == 1 else logits[:, s]
            for o, s in zip(self.outputs, self.slices)
        }

    def check_logits(self, logits: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """Raise FacelabError unless logits are (B, num_logits) and ``y`` (if given) is (B, num_labels)."""
        if logits.ndim != 2 or logits.shape[1] != self.num_logits:
            raise FacelabError(
                f"logits of shape {tuple(logits.shape)} do not fit the task {list(self.names)} which needs "
                f"(B, {self.num_logits}); create the model with num_outputs=task.num_logits"
            )
        if y is not None and (y.ndim != 2 or y.shape != (logits.shape[0], self.num_labels)):
            raise FacelabError(
                f"labels of shape {tuple(y.shape)} do not fit (B={logits.shape[0]}, {self.num_labels} labels)"
            )


def _pos_weight_vector(task: Task, pos_weight: torch.Tensor | Mapping[str, float], like: torch.Tensor) -> torch.Tensor:
    pos, _ = task.binary_index
    if isinstance(pos_weight, Mapping):
        unknown = set(pos_weight) - {task.outputs[i].name for i in pos}
        if unknown:
            raise ConfigError(f"pos_weight names {sorted(unknown)} are not binary labels of the task")
        pos_weight = torch.tensor([float(pos_weight.get(task.outputs[i].name, 1.0)) for i in pos])
    if pos_weight.shape != (len(pos),):
        raise ConfigError(f"pos_weight needs one value per binary label ({len(pos)}), got {tuple(pos_weight.shape)}")
    return pos_weight.to(device=like.device, dtype=like.dtype)


def _binary_losses(logits: torch.Tensor, y: torch.Tensor, task: Task, pos_weight: Any) -> torch.Tensor:
    pos, cols = task.binary_index
    lb = logits[:, cols].float()  # (B, nb)
    yb = y[:, pos]  # (B, nb)
    mask = (yb >= 0).float()
    pw = None if pos_weight is None else _pos_weight_vector(task, pos_weight, lb)
    per = F.binary_cross_entropy_with_logits(lb, yb.clamp(min=0).float(), pos_weight=pw, reduction="none")
    return (per * mask).sum(0) / mask.sum(0).clamp(min=1.0)  # (nb,)


def _categorical_loss(
    logits: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | Sequence[float] | None, smoothing: float
) -> torch.Tensor:
    target = y.clamp(min=0)  # (B,)
    per = F.cross_entropy(logits.float(), target, reduction="none", label_smoothing=smoothing)  # (B,)
    w = (y >= 0).float()
    if weights is not None:
        w = w * torch.as_tensor(weights, dtype=per.dtype, device=per.device)[target]
    return (per * w).sum() / w.sum().clamp(min=1e-12)


def task_loss(
    logits: torch.Tensor,
    y: torch.Tensor,
    task: Task,
    *,
    pos_weight: torch.Tensor | Mapping[str, float] | None = None,
    class_weights: Mapping[str, torch.Tensor | Sequence[float]] | None = None,
    label_smoothing: float = 0.0,
    reduction: Literal["mean", "none"] = "mean",
) -> torch.Tensor:
    """Mean over labels of each label's mean loss (BCE-with-logits or cross-entropy).

    Args:
        logits: (B, task.num_logits).
        y: (B, task.num_labels) int64 raw values: 0/1 for binary labels, class index for categorical;
            values < 0 are unknown and ignored.
        task: the label layout of ``logits``.
        pos_weight: BCE weight of the positive class, per binary label: a (num_binary,) tensor in task
            order or {name: weight} (missing names weigh 1).
        class_weights: {categorical label name: (K,) class weights}.
        label_smoothing: for the categorical labels.
        reduction: "mean" -> scalar, "none" -> (num_labels,) per-label losses in task order.
    """
    task.check_logits(logits, y)
    unknown = set(class_weights or {}) - {o.name for o in task.outputs if o.kind is LabelKind.CATEGORICAL}
    if unknown:
        raise ConfigError(f"class_weights names {sorted(unknown)} are not categorical labels of the task")
    losses: list[torch.Tensor] = [logits.new_zeros(())] * task.num_labels
    pos, _ = task.binary_index
    if pos:
        for i, loss in zip(pos, _binary_losses(logits, y, task, pos_weight).unbind()):
            losses[i] = loss
    for i, (o, s) in enumerate(zip(task.outputs, task.slices)):
        if o.kind is LabelKind.CATEGORICAL:
            w = (class_weights or {}).get(o.name)
            losses[i] = _categorical_loss(logits[:, s], y[:, i], w, label_smoothing)
    per_label = torch.stack(losses)  # (L,)
    return per_label.mean() if reduction == "mean" else per_label


def task_predict(logits: torch.Tensor, task: Task) -> dict[str, torch.Tensor]:
    """Probabilities per label: binary -> (B,) P(label = 1), categorical -> (B, K) class probabilities."""
    out = {}
    for o, z in zip(task.outputs, task.split(logits).values()):
        out[o.name] = torch.sigmoid(z.float()) if o.kind is LabelKind.BINARY else torch.softmax(z.float(), dim=1)
    return out


def task_decode(logits: torch.Tensor, task: Task, *, threshold: float = 0.5) -> torch.Tensor:
    """Predicted label values (B, num_labels) int64, in the format of ``y`` (binary: P >= threshold)."""
    cols = []
    for o, p in zip(task.outputs, task_predict(logits, task).values()):
        cols.append((p >= threshold).long() if o.kind is LabelKind.BINARY else p.argmax(dim=1))
    return torch.stack(cols, dim=1)  # (B, L)


def pos_weight_from_labels(y: torch.Tensor, task: Task) -> torch.Tensor:
    """(num_binary,) negatives / positives per binary label of training labels ``y`` (B, L)."""
    pos, _ = task.binary_index
    yb = y[:, pos]
    n_pos = (yb == 1).sum(0).float()
    n_neg = (yb == 0).sum(0).float()
    return n_neg / n_pos.clamp(min=1.0)


def class_weights_from_labels(y: torch.Tensor, task: Task) -> dict[str, torch.Tensor]:
    """{categorical name: (K,) ``n / (K * count_k)``} (scikit-learn's "balanced" weights); empty classes get 0."""
    out = {}
    for i, o in enumerate(task.outputs):
        if o.kind is LabelKind.CATEGORICAL:
            col = y[:, i]
            counts = torch.bincount(col[col >= 0], minlength=o.num_classes).float()
            w = counts.sum() / (o.num_classes * counts.clamp(min=1.0))
            out[o.name] = torch.where(counts > 0, w, torch.zeros_like(w))
    return out


def head_bias_from_labels(y: torch.Tensor, task: Task, *, eps: float = 1e-3) -> torch.Tensor:
    """(num_logits,) logit-space label priors of ``y`` (B, L), to initialise a head's bias.

    Starting from the priors (log-odds for binary labels, log-frequencies for categorical ones) instead of
    zero removes the first epochs spent learning the base rates of rare attributes.
    """
    bias = torch.zeros(task.num_logits)
    for i, (o, s) in enumerate(zip(task.outputs, task.slices)):
        col = y[:, i]
        col = col[col >= 0]
        counts = torch.bincount(col, minlength=o.num_classes).float()
        freq = (counts / counts.sum().clamp(min=1.0)).clamp(eps, 1 - eps)
        bias[s] = torch.log(freq[1] / freq[0]) if o.kind is LabelKind.BINARY else torch.log(freq)
    return bias



def flip_permutation(task: Task, specs: Sequence[LabelSpec | Mapping[str, Any]]) -> list[int] | None:
    """Logit columns of the mirror image: ``logits[:, perm]`` of a face are the logits its flip should get.

    A horizontal flip swaps the ``left`` and ``right`` classes of every categorical label that has both (head
    orientation, light direction: classes in image coordinates); other logits stay. None when nothing swaps.
    ``specs`` are the labels' specs (a store's, or a checkpoint's ``labels``) giving the class names."""
    by_name = {s.name: s for s in (x if isinstance(x, LabelSpec) else LabelSpec.from_dict(x) for x in specs)}
    perm = list(range(task.num_logits))
    for o, sl in zip(task.outputs, task.slices):
        spec = by_name.get(o.name)
        classes = list(spec.classes or ()) if spec is not None and o.kind is LabelKind.CATEGORICAL else []
        if "left" in classes and "right" in classes:
            i, j = sl.start + classes.index("left"), sl.start + classes.index("right")
            perm[i], perm[j] = perm[j], perm[i]
    return None if perm == list(range(task.num_logits)) else perm
