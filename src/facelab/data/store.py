"""The prepared store: images decoded once into a memory-mappable uint8 array, plus labels and a manifest.

Layout of a store folder (a folder is a valid store only once ``manifest.json`` exists; builds write into
``<out>.partial`` and rename it at the end, so a killed build never looks like a store)::

    images.npy      (N, S, S, 3) uint8, RGB, read with mmap
    labels.npy      (N, L) int32, columns in manifest["labels"] order
    index.npz       key (N,) str, identity (N,) int64 (-1 unknown), partition (N,) int8 (-1 none),
                    landmarks (N, 10) float32 in store pixels (when the source has them, or the faces
                    were aligned: then the alignment template's points)
    manifest.json   source, options, counts, label specs, preprocessing, alignment, skipped files, content hash
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from facelab.data.schema import CropSpec, LabelKind, LabelSpec, Partition
from facelab.errors import StoreError
from facelab.utils.io import foreign_entries

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
#: what a store folder holds: its arrays and manifest, and the plots ``facelab data stats`` writes into it
STORE_FILES = frozenset({MANIFEST, "images.npy", "labels.npy", "index.npz", "stats"})
STATS_FILES = frozenset({"correlation.png", "prevalence.png"})


def facelab_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of the store facelab made at ``folder``, as written (any format version); None when
    ``folder`` holds no manifest.json, or one facelab did not write: it must be a JSON object whose own
    format field (``format_version``, an integer) and facelab marker (``facelab_version``, text) say so,
    with the ``content_hash`` every store has."""
    try:
        data = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not (isinstance(data, dict) and isinstance(data.get("format_version"), int)
            and isinstance(data.get("facelab_version"), str) and isinstance(data.get("content_hash"), str)):
        return None
    return data


def not_store_files(folder: Path) -> list[str]:
    """The entries of the store folder ``folder`` that facelab did not make (sorted, at most a few named):
    anything beside :data:`STORE_FILES`, and anything in ``stats/`` beside its plots."""
    found = foreign_entries(folder, STORE_FILES)
    stats = folder / "stats"
    if stats.is_symlink() or stats.exists() and not stats.is_dir():
        found.append("stats")
    elif stats.is_dir():
        found += [f"stats/{name}" for name in foreign_entries(stats, STATS_FILES)]
    return found


class StoreManifest(BaseModel):
    """``manifest.json``: what a store holds and how it was made (written last: its presence marks a complete
    store). Builders write it (:mod:`facelab.data.build`, :mod:`facelab.data.write`), everything reads it here."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format_version: int
    source: str
    root: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    image_size: int
    crop: CropSpec | None = None
    align: dict[str, Any] | None = None  # the AlignSpec of a store of aligned faces (None: not aligned)
    facelab_version: str | None = None
    created: str | None = None
    count: int
    indexed: int
    labels: list[dict[str, Any]]
    has_identities: bool = False
    has_partitions: bool = False
    has_landmarks: bool = False
    partitions: dict[str, int] = Field(default_factory=dict)
    skipped: list[dict[str, str]] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    content_hash: str
    keys_sha256: str | None = None  # hash of the source's record keys (None: built before it was recorded)
    build_seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


@dataclass(frozen=True)
class LabelOverlay:
    """Label columns laid over a store from outside it (a labels file: :mod:`facelab.data.labels_file`)."""

    source: str  # where the labels came from (the labels file's path)
    sha256: str  # of that file when it was read
    specs: tuple[LabelSpec, ...]
    values: np.ndarray  # (N, len(specs)) int32, -1 unknown
    reviewed_only: bool = False  # only the rows a person reviewed carry a label

    def describe(self) -> dict[str, Any]:
        return {"labels_file": self.source, "sha256": self.sha256, "labels": [s.name for s in self.specs],
                "reviewed_only": self.reviewed_only, "known": {s.name: int((self.values[:, j] >= 0).sum())
                                                               for j, s in enumerate(self.specs)}}


@dataclass
class Store:
    """A read-only view of a prepared store. Images are memory-mapped, never loaded whole. An ``overlay`` adds
    label columns from outside the store after the stored ones (:meth:`with_overlay`)."""

    path: Path
    manifest: StoreManifest
    overlay: LabelOverlay | None = None

    @classmethod
    def open(cls, path: str | Path) -> Store:
        """Open the store at ``path``; raise StoreError with the fix when it is missing or incomplete."""
        path = Path(path).expanduser()
        mpath = path / MANIFEST
        if not mpath.is_file():
            partial = path.with_name(path.name + ".partial")
            hint = (
                f"; a build was interrupted ({partial} exists): re-run `facelab data prepare` to finish it"
                if partial.exists()
                else "; build one with `facelab data prepare SOURCE ROOT --out " + str(path) + "`"
            )
            raise StoreError(f"{path} is not a facelab store (no {MANIFEST}){hint}")
        try:
            data = json.loads(mpath.read_text())
        except (OSError, ValueError) as e:
            raise StoreError(f"{mpath}: unreadable manifest ({e}); rebuild the store") from None
        version = data.get("format_version") if isinstance(data, dict) else None
        if version != FORMAT_VERSION:
            raise StoreError(f"{path}: store format {version} is not supported (expected {FORMAT_VERSION}); rebuild it")
        try:
            manifest = StoreManifest.model_validate(data)
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()[:5])
            raise StoreError(f"{mpath}: not a valid store manifest ({problems}); rebuild the store") from None
        return cls(path=path, manifest=manifest)

    # ---- arrays -------------------------------------------------------------------------------
    def _damaged(self, name: str, why: str) -> StoreError:
        return StoreError(f"{self.path / name}: {why}; the store is damaged: rebuild it with `facelab data prepare "
                          f"... --out {self.path} --overwrite`")

    @cached_property
    def images(self) -> np.ndarray:
        """(N, S, S, 3) uint8 memory map."""
        want = (len(self), self.image_size, self.image_size, 3)
        try:
            images = np.load(self.path / "images.npy", mmap_mode="r")
        except (OSError, ValueError) as e:
            raise self._damaged("images.npy", f"cannot be read ({e})") from None
        if images.shape != want or images.dtype != np.uint8:
            raise self._damaged("images.npy", f"holds {images.dtype} {images.shape}, the manifest says uint8 {want}")
        return images

    def with_overlay(self, overlay: LabelOverlay) -> Store:
        """This store with ``overlay``'s label columns after its own (replacing any earlier overlay)."""
        if overlay.values.shape != (len(self), len(overlay.specs)):
            raise StoreError(f"{self.path}: an overlay of shape {overlay.values.shape} does not fit {len(self)} rows "
                             f"and {len(overlay.specs)} labels")
        return Store(path=self.path, manifest=self.manifest, overlay=overlay)

    @cached_property
    def labels(self) -> np.ndarray:
        """(N, L) int32 label table, columns ordered as :attr:`label_specs`."""
        stored = self._stored_labels()
        if self.overlay is None:
            return stored
        return np.concatenate([stored, self.overlay.values.astype(np.int32)], axis=1)

    def _stored_labels(self) -> np.ndarray:
        try:
            labels = np.load(self.path / "labels.npy")
        except (OSError, ValueError, EOFError) as e:
            raise self._damaged("labels.npy", f"cannot be read ({e})") from None
        if labels.shape != (len(self), len(self.manifest.labels)):
            raise self._damaged("labels.npy", f"has shape {labels.shape}, the manifest says "
                                              f"{(len(self), len(self.manifest.labels))}")
        return labels

    @cached_property
    def _index(self) -> dict[str, np.ndarray]:
        try:
            with np.load(self.path / "index.npz", allow_pickle=False) as z:
                index = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
            raise self._damaged("index.npz", f"cannot be read ({e})") from None
        wrong = [k for k, v in index.items() if len(v) != len(self)]
        if wrong or "key" not in index:
            raise self._damaged("index.npz", f"its columns {wrong or ['key']} do not have the manifest's {len(self)} rows")
        return index

    @property
    def keys(self) -> np.ndarray:
        return self._index["key"]

    @property
    def identities(self) -> np.ndarray:
        return self._index["identity"]

    @property
    def partitions(self) -> np.ndarray:
        return self._index["partition"]

    @property
    def landmarks(self) -> np.ndarray | None:
        return self._index.get("landmarks")

    # ---- metadata -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.manifest.count

    @property
    def image_size(self) -> int:
        return self.manifest.image_size

    @cached_property
    def label_specs(self) -> list[LabelSpec]:
        stored = [LabelSpec.from_dict(d) for d in self.manifest.labels]
        return stored + list(self.overlay.specs if self.overlay else ())

    @property
    def label_names(self) -> list[str]:
        return [s.name for s in self.label_specs]

    @property
    def source(self) -> str:
        return self.manifest.source

    @property
    def content_hash(self) -> str:
        return self.manifest.content_hash

    @property
    def aligned(self) -> bool:
        """Whether the images are faces re-detected and aligned at build time (``prepare --align``)."""
        return self.manifest.align is not None

    @property
    def has_identities(self) -> bool:
        return self.manifest.has_identities

    @property
    def has_partitions(self) -> bool:
        return self.manifest.has_partitions

    def spec(self, name: str) -> LabelSpec:
        """The LabelSpec called ``name``; StoreError listing the available labels otherwise."""
        for s in self.label_specs:
            if s.name == name:
                return s
        raise StoreError(f"{self.path}: no label {name!r}; labels are: {', '.join(self.label_names)}")

    def label_index(self, name: str) -> int:
        self.spec(name)
        return self.label_names.index(name)

    def column(self, name: str) -> np.ndarray:
        """(N,) values of label ``name``."""
        return self.labels[:, self.label_index(name)]

    def binary_labels(self) -> list[str]:
        return [s.name for s in self.label_specs if s.kind is LabelKind.BINARY]

    def partition_indices(self, partition: Partition) -> np.ndarray:
        return np.flatnonzero(self.partitions == int(partition))
