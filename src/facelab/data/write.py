"""Write in-memory arrays as a facelab store: generated images for the CAS score, mixed training sets.

``facelab data prepare`` builds stores from dataset files (:mod:`facelab.data.build`, resumable, with a
decode journal); this writes arrays that already sit in memory, in the same format, atomically.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import facelab
from facelab.data.build import content_hash
from facelab.data.schema import NO_IDENTITY, NO_PARTITION, CropSpec, LabelSpec, Partition
from facelab.data.store import FORMAT_VERSION, MANIFEST, Store
from facelab.errors import FacelabError
from facelab.utils.io import atomic_write_json, naming, temporary_sibling_dir


def write_store_arrays(path: str | Path, images: np.ndarray, labels: np.ndarray, specs: Sequence[LabelSpec],
                       partitions: np.ndarray, *, source: str, crop: CropSpec | dict[str, Any] | None = None) -> Store:
    """Write arrays as a facelab store (format of :mod:`facelab.data.store`), atomically, and open it.

    Args:
        path: the store folder; must not exist yet.
        images: (N, S, S, 3) uint8.
        labels: (N, len(specs)) label values.
        specs: the label columns.
        partitions: (N,) partition codes (:class:`~facelab.data.schema.Partition`).
        source: the manifest's source name.
        crop: the crop the images were made with (recorded only).

    Raises:
        FacelabError: ``path`` exists; images that are not (N, S, S, 3) uint8; labels or partitions of another
            length or shape; a label value outside its column's classes; an unknown partition code.
    """
    path = Path(path)
    if path.exists():
        raise FacelabError(f"{path} already exists; remove it or choose another folder")
    images, labels, partitions = _checked(images, labels, specs, partitions)
    crop = CropSpec.from_dict(crop, where="crop") if isinstance(crop, dict) else crop
    n = images.shape[0]
    keys = np.array([f"row{i:07d}" for i in range(n)], dtype=str)
    partial = temporary_sibling_dir(path)
    try:
        _write(partial, images, labels, specs, partitions, keys, source=source, crop=crop)
        os.replace(partial, path)
    except BaseException as e:
        shutil.rmtree(partial, ignore_errors=True)  # a folder of this call's own, hidden: nothing else is in it
        if isinstance(e, FileExistsError) or (isinstance(e, OSError) and e.errno == errno.ENOTEMPTY):
            raise FacelabError(f"{path} appeared while its store was written; remove it or choose another "
                               "folder") from None
        raise
    return Store.open(path)


def _write(partial: Path, images: np.ndarray, labels: np.ndarray, specs: Sequence[LabelSpec],
           partitions: np.ndarray, keys: np.ndarray, *, source: str, crop: CropSpec | None) -> None:
    """The store's files in ``partial``, manifest.json last (each OSError names its file)."""
    n = images.shape[0]
    for name, save in (("images.npy", lambda f: np.save(f, images)), ("labels.npy", lambda f: np.save(f, labels)),
                       ("index.npz", lambda f: np.savez(f, key=keys, identity=np.full(n, NO_IDENTITY, np.int64),
                                                        partition=partitions))):
        try:
            with open(partial / name, "wb") as f:
                save(f)
        except OSError as e:
            raise naming(e, partial / name) from None
    counts = {p.name.lower(): int((partitions == p.value).sum()) for p in Partition}
    manifest = {
        "format_version": FORMAT_VERSION, "source": source, "root": None, "options": {},
        "image_size": int(images.shape[1]),
        "crop": crop.model_dump(mode="json") if crop is not None else None, "facelab_version": facelab.__version__, "count": n, "indexed": n,
        "labels": [s.to_dict() for s in specs], "has_identities": False, "has_partitions": True,
        "has_landmarks": False, "partitions": {**counts, "none": int((partitions < 0).sum())}, "skipped": [],
        "notes": [], "content_hash": content_hash(images, labels, keys),
    }
    atomic_write_json(partial / MANIFEST, manifest)


def _checked(images: np.ndarray, labels: np.ndarray, specs: Sequence[LabelSpec],
             partitions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three arrays in store dtypes, or a FacelabError saying what is wrong with them."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[3] != 3 or images.shape[1] != images.shape[2] or images.dtype != np.uint8:
        raise FacelabError(f"images must be (N, S, S, 3) uint8; got {images.shape} {images.dtype}")
    n = images.shape[0]
    labels = np.asarray(labels)
    if labels.ndim == 1 and len(specs) == 1:
        labels = labels[:, None]
    if labels.shape != (n, len(specs)):
        raise FacelabError(f"labels must be (N, labels) = ({n}, {len(specs)}); got {labels.shape}")
    if labels.size and not np.array_equal(labels, np.round(labels)):
        raise FacelabError("labels must be whole numbers (class codes)")
    labels = labels.astype(np.int32)
    for j, spec in enumerate(specs):
        k = spec.num_classes
        bad = (labels[:, j] < -1) | (labels[:, j] >= k) if k is not None else np.zeros(n, bool)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise FacelabError(f"label {spec.name!r}: row {i} has value {labels[i, j]}, outside 0..{k - 1} (-1: unknown)")
    partitions = np.asarray(partitions)
    if partitions.shape != (n,):
        raise FacelabError(f"partitions must be ({n},); got {partitions.shape}")
    known = {int(p) for p in Partition} | {NO_PARTITION}
    unknown = sorted(set(np.unique(partitions).tolist()) - known)
    if unknown:
        raise FacelabError(f"unknown partition codes {unknown}; known: {sorted(known)}")
    return np.ascontiguousarray(images), labels, partitions.astype(np.int8)
