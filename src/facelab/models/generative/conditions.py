"""What a conditional generative model is conditioned on, and how labels become its condition vector.

A condition is a binary attribute (CelebA ``Smiling`` -> one entry of a multi-hot vector, 0 or 1) or a
categorical label (CIFAR-10 ``label`` -> a one-hot block of K entries). A model's condition vector is the
concatenation of its conditions in order: ``[Smiling, Male, label=airplane, ..., label=truck]``.
"""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor

from facelab.config import StrictConfig
from facelab.data.schema import LabelKind, LabelSpec
from facelab.errors import ConfigError, FacelabError

BINARY_NAMES = ("no", "yes")


class Condition(StrictConfig):
    """One named condition: a binary attribute or a categorical label with named classes.

    Attributes:
        name: the label's name, e.g. ``Smiling`` or ``label``.
        kind: ``binary`` (one entry, 0/1) or ``categorical`` (one-hot over ``classes``).
        classes: categorical: the K class names (required); binary: names of 0 and 1 (default no/yes).
    """

    name: str = Field(min_length=1)
    kind: Literal["binary", "categorical"]
    classes: list[str] | None = None

    @model_validator(mode="after")
    def _check_classes(self) -> Condition:
        if self.kind == "categorical" and (self.classes is None or len(self.classes) < 2):
            raise ValueError(f"categorical condition {self.name!r} needs `classes`: at least 2 class names")
        if self.kind == "binary" and self.classes is not None and len(self.classes) != 2:
            raise ValueError(f"binary condition {self.name!r}: `classes` names the values 0 and 1 (2 names)")
        if self.classes is not None and len(set(self.classes)) != len(self.classes):
            raise ValueError(f"condition {self.name!r}: class names must be unique, got {self.classes}")
        return self

    @property
    def value_names(self) -> tuple[str, ...]:
        """Names of the values 0..K-1 (binary: ``("no", "yes")`` unless named)."""
        return tuple(self.classes) if self.classes is not None else BINARY_NAMES

    @property
    def width(self) -> int:
        """Entries of this condition in the condition vector (1 or K)."""
        return 1 if self.kind == "binary" else len(self.value_names)

    @classmethod
    def from_label_spec(cls, spec: LabelSpec) -> Condition:
        """The condition for a store label column (binary or categorical; numeric labels cannot condition)."""
        if spec.kind is LabelKind.NUMERIC:
            raise ConfigError(
                f"label {spec.name!r} is numeric and cannot be a condition; bin it into a categorical label first"
            )
        return cls(name=spec.name, kind=spec.kind.value, classes=list(spec.classes) if spec.classes else None)

    def describe(self) -> str:
        return f"{self.name} ({self.kind}: {' | '.join(f'{i}={n}' for i, n in enumerate(self.value_names))})"

    def value_index(self, value: object) -> int:
        """The index of ``value`` (an int, a bool or a value name); FacelabError listing valid values."""
        names = self.value_names
        if isinstance(value, str):
            if value in names:
                return names.index(value)
        elif isinstance(value, numbers.Integral) and 0 <= int(value) < len(names):
            return int(value)
        raise FacelabError(f"condition {self.describe()}: invalid value {value!r}; use one of the listed values")


def conditions_width(conditions: Sequence[Condition]) -> int:
    """Size of the condition vector of ``conditions``."""
    return sum(c.width for c in conditions)


def describe_conditions(conditions: Sequence[Condition]) -> str:
    """One line per condition with its values, for error messages."""
    return "\n".join(f"  {c.describe()}" for c in conditions)


def encode_condition_dict(conditions: Sequence[Condition], labels: Mapping[str, object]) -> Tensor:
    """(cond_dim,) float vector for a mapping ``{name: value}``.

    Missing binary attributes are 0 (absent); every categorical condition must be given.

    Raises:
        FacelabError: unknown names, invalid values or a missing categorical condition, listing valid ones.
    """
    known = {c.name for c in conditions}
    unknown = sorted(set(labels) - known)
    if unknown:
        listing = describe_conditions(conditions)
        raise FacelabError(f"unknown condition(s) {unknown}; this model is conditioned on:\n{listing}")
    parts = []
    for c in conditions:
        if c.name not in labels:
            if c.kind == "categorical":
                raise FacelabError(f"missing categorical condition {c.describe()}; give one of its classes")
            parts.append(torch.zeros(1))
            continue
        idx = c.value_index(labels[c.name])
        parts.append(torch.tensor([float(idx)]) if c.kind == "binary" else torch.nn.functional.one_hot(
            torch.tensor(idx), c.width).float())
    return torch.cat(parts)  # (cond_dim,)


def encode_label_rows(conditions: Sequence[Condition], labels: Tensor) -> Tensor:
    """(B, cond_dim) condition vectors for (B, len(conditions)) integer label rows (a store's label columns).

    Raises:
        FacelabError: wrong shape or a value out of range for its condition.
    """
    if labels.ndim != 2 or labels.shape[1] != len(conditions):
        raise FacelabError(
            f"label rows must be (B, {len(conditions)}) for conditions {[c.name for c in conditions]}; "
            f"got shape {tuple(labels.shape)}; select those label columns in this order first"
        )
    parts = []
    for j, c in enumerate(conditions):
        col = labels[:, j].long()  # (B,)
        bad = (col < 0) | (col >= len(c.value_names))
        if bool(bad.any()):
            raise FacelabError(f"condition {c.describe()}: label value {int(col[bad][0])} is out of range")
        parts.append(col[:, None].float() if c.kind == "binary" else torch.nn.functional.one_hot(col, c.width).float())
    return torch.cat(parts, dim=1)  # (B, cond_dim)


def random_conditions(conditions: Sequence[Condition] | None, cond_dim: int, n: int, *,
                      device: torch.device | str = "cpu", generator: torch.Generator | None = None) -> Tensor:
    """(n, cond_dim) condition vectors with every value equally likely: each binary attribute 0 or 1 with
    probability 1/2, each categorical label uniform over its classes (an unnamed vector: independent 0/1
    entries). Rare values (CelebA ``Eyeglasses=1``, 3% of faces) get as many samples as common ones."""
    if conditions is None:
        return torch.randint(0, 2, (n, cond_dim), device=device, generator=generator).float()
    parts = []
    for c in conditions:
        idx = torch.randint(0, c.width if c.kind == "categorical" else 2, (n,), device=device, generator=generator)
        parts.append(idx[:, None].float() if c.kind == "binary" else torch.nn.functional.one_hot(idx, c.width).float())
    return torch.cat(parts, dim=1)  # (n, cond_dim)


def condition_loss(logits: Tensor, cond: Tensor, conditions: Sequence[Condition] | None, *,
                   balanced: bool = False) -> Tensor:
    """Classification loss of ``logits`` (B, cond_dim) predicting the condition vectors ``cond`` (B, cond_dim):
    binary cross-entropy per binary attribute, cross-entropy per categorical block (an unnamed vector: binary
    cross-entropy per entry); summed over conditions, averaged over the batch.

    With ``balanced``, each condition's loss is instead the mean over the values present in the batch of that
    value's mean loss (every value weighs the same, as under a uniform prior over values): a classifier trained
    so is calibrated for images drawn with balanced conditions instead of for the data's prevalence.
    """
    logits, cond = logits.float(), cond.float()
    if conditions is None:
        blocks = [(slice(i, i + 1), True) for i in range(cond.shape[1])]
    else:
        starts = [0, *itertools.accumulate(c.width for c in conditions)]
        blocks = [(slice(a, a + c.width), c.kind == "binary") for a, c in zip(starts, conditions)]
    total = logits.new_zeros(())
    for s, binary in blocks:
        if binary:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, s], cond[:, s], reduction="none")[:, 0]  # (B,)
            values = torch.cat([cond[:, s], 1 - cond[:, s]], 1)  # (B, 2): membership of value 1 and value 0
        else:
            loss = torch.nn.functional.cross_entropy(logits[:, s], cond[:, s].argmax(1), reduction="none")  # (B,)
            values = cond[:, s]  # (B, K) one-hot
        if balanced:
            count = values.sum(0)  # (V,) images per value
            per_value = (loss[:, None] * values).sum(0) / count.clamp_min(1)
            total = total + per_value.sum() / (count > 0).sum().clamp_min(1)
        else:
            total = total + loss.mean()
    return total
