"""Several stores read as one, for training that needs no labels (self-supervised pretraining).

Row ``r`` of a :class:`StoreUnion` is row ``r - offsets[k]`` of its ``k``-th store. It offers what
:class:`~facelab.data.loader.BatchLoader` reads from a store (images, an empty label table, the size), so
batches mix rows of every store. Every store must hold images of one size aligned the same way
(:func:`check_same_images`): a network cannot learn one input distribution from faces that sit in
different places of the frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from facelab.data.preprocessing import describe_alignment, same_alignment, store_alignment
from facelab.data.schema import LabelSpec
from facelab.data.store import Store
from facelab.errors import ConfigError, StoreError


def check_same_images(stores: Sequence[Store]) -> None:
    """Raise ConfigError unless every store has the first one's image size and alignment, naming the store
    that differs, what each holds and the fix."""
    if not stores:
        raise ConfigError("no store given: pass at least one store folder")
    first = stores[0]
    a0 = store_alignment(first)
    for s in stores[1:]:
        if s.image_size != first.image_size:
            raise ConfigError(f"{s.path} holds {s.image_size}px images but {first.path} holds {first.image_size}px: "
                              f"every store must have one image size; prepare {s.path.name} again with "
                              f"--size {first.image_size}")
        a = store_alignment(s)
        if not same_alignment(a, a0):
            raise ConfigError(f"{s.path} is {describe_alignment(a)} but {first.path} is {describe_alignment(a0)}: "
                              "every store must be aligned the same way; prepare the stores with the same "
                              "--align options (or none of them aligned)")
    hashes = [s.content_hash for s in stores]
    if len(set(hashes)) != len(hashes):
        dup = next(s for i, s in enumerate(stores) if hashes[i] in hashes[:i])
        raise ConfigError(f"{dup.path} holds the same images as another store given: pass each store once")


class _UnionImages:
    """``images[rows]`` over several memory maps (rows sorted or not; each store is read in the given order)."""

    def __init__(self, union: StoreUnion) -> None:
        self.u = union
        self.shape = (len(union), union.image_size, union.image_size, 3)
        self.dtype = np.dtype(np.uint8)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        out = np.empty((rows.size, *self.shape[1:]), np.uint8)  # (n, S, S, 3)
        k = self.u.store_of(rows)
        for i in np.unique(k):
            sel = np.flatnonzero(k == i)
            out[sel] = self.u.stores[i].images[rows[sel] - self.u.offsets[i]]
        return out


@dataclass
class StoreUnion:
    """The rows of ``stores`` one after the other, without labels (checked by :func:`check_same_images`)."""

    stores: list[Store]

    def __post_init__(self) -> None:
        check_same_images(self.stores)
        self.offsets = np.concatenate([[0], np.cumsum([len(s) for s in self.stores])]).astype(np.int64)

    @classmethod
    def open(cls, paths: Sequence[str | Path]) -> StoreUnion:
        return cls([Store.open(p) for p in paths])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def path(self) -> Path:
        """The first store's folder (messages about rows name it; :meth:`describe` names them all)."""
        return self.stores[0].path

    def describe(self) -> str:
        return " + ".join(str(s.path) for s in self.stores)

    @property
    def image_size(self) -> int:
        return self.stores[0].image_size

    @cached_property
    def images(self) -> _UnionImages:
        return _UnionImages(self)

    @cached_property
    def labels(self) -> np.ndarray:
        """(N, 0): a union has no label columns (the stores' labels need not agree)."""
        return np.zeros((len(self), 0), np.int32)

    @property
    def label_specs(self) -> list[LabelSpec]:
        return []

    @property
    def label_names(self) -> list[str]:
        return []

    def label_index(self, name: str) -> int:
        raise StoreError(f"{self.describe()}: several stores read together have no labels (asked for {name!r})")

    def store_of(self, rows: np.ndarray) -> np.ndarray:
        """(n,) number of the store each union row belongs to."""
        return np.searchsorted(self.offsets, rows, side="right") - 1

    def to_union(self, k: int, rows: np.ndarray) -> np.ndarray:
        """Rows of store ``k`` as union rows."""
        return np.asarray(rows, dtype=np.int64) + self.offsets[k]

    def per_store(self, rows: np.ndarray) -> list[np.ndarray]:
        """Union ``rows`` as each store's own sorted rows."""
        rows = np.asarray(rows, dtype=np.int64)
        k = self.store_of(rows)
        return [np.sort(rows[k == i] - self.offsets[i]) for i in range(len(self.stores))]
