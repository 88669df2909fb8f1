"""What a dataset source produces: label specs, records, partitions, skips, crop policy."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Any, Literal

from pydantic import Field

from facelab.config import StrictConfig


class LabelKind(str, Enum):
    BINARY = "binary"  # values 0/1 (CelebA's -1 is stored as 0)
    CATEGORICAL = "categorical"  # values 0..K-1, names in LabelSpec.classes
    NUMERIC = "numeric"  # integer value (e.g. age in years)


class Partition(IntEnum):
    """Official partition codes as stored in the store's ``partition`` column (-1 = none)."""

    TRAIN = 0
    VAL = 1
    TEST = 2


NO_PARTITION = -1
NO_IDENTITY = -1


@dataclass(frozen=True)
class LabelSpec:
    """One label column. ``classes`` names the values of binary/categorical labels."""

    name: str
    kind: LabelKind
    classes: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind is LabelKind.BINARY and self.classes is None:
            object.__setattr__(self, "classes", ("no", "yes"))
        if self.kind is LabelKind.CATEGORICAL and not self.classes:
            raise ValueError(f"categorical label {self.name!r} needs class names")

    @property
    def num_classes(self) -> int | None:
        return None if self.classes is None or self.kind is LabelKind.NUMERIC else len(self.classes)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind.value, "classes": list(self.classes) if self.classes else None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LabelSpec:
        classes = tuple(d["classes"]) if d.get("classes") is not None else None
        return cls(name=d["name"], kind=LabelKind(d["kind"]), classes=classes)


@dataclass
class Record:
    """One image of a source: a unique key, what ``Source.load`` needs, and its annotations.

    ``labels`` follows the order of ``SourceIndex.labels``. ``ref`` is source-specific and must be
    picklable (a path string, a (file, row) pair, a seed), because workers load records in parallel.
    """

    key: str
    ref: Any
    labels: tuple[int, ...]
    identity: int = NO_IDENTITY
    partition: int = NO_PARTITION
    landmarks: tuple[float, ...] | None = None  # 5 points (x, y) in source pixel coordinates


@dataclass(frozen=True)
class Skip:
    """A file or annotation row left out, with the reason the user sees in the report."""

    key: str
    reason: str


@dataclass
class SourceIndex:
    """Everything a source found under its root, before any image is decoded."""

    source: str
    root: str | None
    labels: list[LabelSpec]
    records: list[Record]
    skipped: list[Skip] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. "197,259 annotation rows had no image"
    has_identities: bool = False
    has_partitions: bool = False
    has_landmarks: bool = False


class CropSpec(StrictConfig):
    """How a decoded image becomes a square ``size`` x ``size`` store image.

    - ``center``: the largest centred square, scaled by ``scale`` (``scale < 1`` crops tighter around the
      centre) and shifted down by ``offset_y`` (a fraction of the image height, negative = up; clipped);
      scale-invariant, so decoders may downscale first;
    - ``box``: an explicit (left, top, right, bottom) box in source pixels (no decoder downscaling);
    - ``none``: resize the whole image (aspect ratio not kept).
    """

    mode: Literal["center", "box", "none"] = "center"
    scale: float = Field(1.0, gt=0.0, le=1.0)
    offset_y: float = Field(0.0, ge=-0.5, le=0.5)
    box: tuple[int, int, int, int] | None = None
