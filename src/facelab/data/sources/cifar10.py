"""CIFAR-10: the official python batches or a ``{train,test}/<class>/`` image-folder export.

Layouts (``ROOT`` may also be the folder that contains ``cifar-10-batches-py/`` or ``cifar10/``)::

    ROOT/cifar-10-batches-py/data_batch_1 .. data_batch_5, test_batch, batches.meta
    ROOT/cifar10/{train,test}/<class>/*.jpg|png

The batches are Python pickles (the official distribution format). They are read with an unpickler that
only accepts the handful of globals a CIFAR batch needs (numpy arrays and bytes), so a foreign pickle
cannot run code. Batch records are ``(batch_path, row)`` pairs; each worker process keeps the batches
it has opened in a module-level cache (instances stay small and picklable).
"""

from __future__ import annotations

import importlib
import pickle
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import field_validator

from facelab.data.schema import CropSpec, LabelKind, LabelSpec, Partition, Record, SourceIndex
from facelab.data.sources.base import SOURCES, Source, SourceOptions, comma_list
from facelab.data.sources.folder import scan_class_tree
from facelab.errors import DataError

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
BATCH_DIR = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
ALL_BATCHES = (*TRAIN_BATCHES, TEST_BATCH)
META = "batches.meta"
IMAGE_SIDE = 32
DOWNLOAD = "https://www.cs.toronto.edu/~kriz/cifar.html (CIFAR-10 python version)"

_BATCH_CACHE: dict[str, np.ndarray] = {}  # batch path -> (N, 3072) uint8, per process

# The only globals an official CIFAR batch (pickled by Python 2 numpy, or re-pickled by Python 3) uses.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"): ("numpy._core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"): ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
    ("_codecs", "encode"): ("_codecs", "encode"),
}


class _BatchUnpickler(pickle.Unpickler):
    """Unpickler for CIFAR batches: refuses every global outside :data:`_ALLOWED_GLOBALS`."""

    def find_class(self, module: str, name: str) -> Any:
        target = _ALLOWED_GLOBALS.get((module, name))
        if target is None:
            raise pickle.UnpicklingError(f"refusing global {module}.{name} (not part of a CIFAR batch)")
        return getattr(importlib.import_module(target[0]), target[1])


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _BatchUnpickler(f, encoding="bytes").load()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    except Exception as e:  # noqa: BLE001 - any unpickling failure means "not a CIFAR batch"
        raise DataError(
            f"{path}: not a CIFAR-10 python batch ({e.__class__.__name__}: {e}); download it again from {DOWNLOAD}"
        ) from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: not a CIFAR-10 python batch (holds a {type(obj).__name__}, not a dict)")
    return obj


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one official batch: (N, 3072) uint8 pixels (R, G, B planes of 32x32) and (N,) labels.

    Raises:
        DataError: the file is not a CIFAR-10 batch, or a label is outside 0-9 (naming the row).
    """
    obj = _unpickle(path)
    data, labels = obj.get(b"data"), obj.get(b"labels")
    if not isinstance(data, np.ndarray) or labels is None:
        raise DataError(f"{path}: not a CIFAR-10 python batch (no b'data' array and b'labels' list)")
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * IMAGE_SIDE**2:
        raise DataError(f"{path}: b'data' is {data.dtype} {data.shape}, expected uint8 (N, 3072)")
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (len(data),):
        raise DataError(f"{path}: {labels.size} labels for {len(data)} images")
    bad = np.flatnonzero((labels < 0) | (labels >= len(CLASSES)))
    if bad.size:
        raise DataError(f"{path}: row {bad[0]} has label {labels[bad[0]]}, expected 0-9")
    return data, labels


def _check_meta(folder: Path) -> None:
    """If ``batches.meta`` is present, its label names must be the official ten in official order."""
    path = folder / META
    if not path.is_file():
        return
    names = _unpickle(path).get(b"label_names")
    decoded = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names or ())
    if decoded != CLASSES:
        raise DataError(f"{path}: label names {list(decoded)} differ from the CIFAR-10 classes {list(CLASSES)}")


def batch_image(path: str, row: int) -> np.ndarray:
    """Image ``row`` of the batch at ``path`` as (32, 32, 3) RGB uint8 (the batch is cached per process)."""
    data = _BATCH_CACHE.get(path)
    if data is None:
        data = _BATCH_CACHE[path] = read_batch(Path(path))[0]
    return np.ascontiguousarray(data[row].reshape(3, IMAGE_SIDE, IMAGE_SIDE).transpose(1, 2, 0))  # (32, 32, 3)


def clear_batch_cache() -> None:
    """Forget the batches this process has opened (frees their memory)."""
    _BATCH_CACHE.clear()


def _find_batch_dir(root: Path) -> Path | None:
    for d in (root, root / BATCH_DIR, root / "cifar10" / BATCH_DIR):
        if any((d / n).is_file() for n in ALL_BATCHES):
            return d
    return None


def _find_folder_dir(root: Path) -> Path | None:
    for d in (root, root / "cifar10", root / "CIFAR10", root / "cifar-10"):
        if (d / "train").is_dir() or (d / "test").is_dir():
            return d
    return None


class Cifar10Options(SourceOptions):
    """Options of the ``cifar10`` source."""

    layout: Literal["auto", "batches", "folders"] = "auto"  # auto: batches when both are present
    # Keep only these classes, in this label order (e.g. ``bird,horse`` for a pegasus); default: all ten.
    classes: list[str] | None = None

    _split_classes = field_validator("classes", mode="before")(comma_list)

    @field_validator("classes")
    @classmethod
    def _known_classes(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        unknown = [c for c in v if c not in CLASSES]
        dup = sorted({c for c in v if v.count(c) > 1})
        if unknown or dup or not v:
            why = (f"unknown class(es) {', '.join(unknown)}" if unknown else
                   f"{', '.join(dup)} listed more than once" if dup else "no class listed")
            raise ValueError(f"{why}; classes must be some of {', '.join(CLASSES)}")
        return v


@SOURCES.register("cifar10")
class Cifar10Source(Source):
    """CIFAR-10 with one categorical ``label`` (the ten classes in official order) and the official
    train/test partitions. Images are 32x32; the default crop keeps the whole image.
    """

    name = "cifar10"
    Options = Cifar10Options
    default_crop = CropSpec(mode="none")

    def index(self) -> SourceIndex:
        assert self.root is not None
        layout = self.options.layout  # type: ignore[attr-defined]
        batches = _find_batch_dir(self.root) if layout in ("auto", "batches") else None
        folders = _find_folder_dir(self.root) if layout in ("auto", "folders") and batches is None else None
        if batches is not None:
            records, skipped = self._batch_records(batches), []
            missing = [n for n in ALL_BATCHES if not (batches / n).is_file()]
            notes = [f"{batches / n} is missing (partial download?)" for n in missing]
        elif folders is not None:
            scan = scan_class_tree(folders, classes=CLASSES, layout="splits", what="CIFAR-10 image folders")
            records, skipped, notes = scan.records, scan.skipped, scan.notes
        else:
            raise DataError(self._missing_message(layout))
        classes = tuple(self.options.classes or CLASSES)  # type: ignore[attr-defined]
        if classes != CLASSES:
            kept = self._keep_classes(records, classes)
            notes = [*notes, f"kept the classes {', '.join(classes)} (labels 0-{len(classes) - 1}): "
                             f"{len(kept):,} of {len(records):,} images"]
            records = kept
        return SourceIndex(
            source=self.name,
            root=str(self.root),
            labels=[LabelSpec("label", LabelKind.CATEGORICAL, classes)],
            records=records,
            skipped=skipped,
            notes=notes,
            has_partitions=True,
        )

    @staticmethod
    def _keep_classes(records: list[Record], classes: tuple[str, ...]) -> list[Record]:
        """The records of ``classes``, relabelled to their index in ``classes``."""
        new_label = {CLASSES.index(c): i for i, c in enumerate(classes)}
        return [replace(r, labels=(new_label[r.labels[0]],)) for r in records if r.labels[0] in new_label]

    @staticmethod
    def _batch_records(folder: Path) -> list[Record]:
        """One record per image of the batches present; ref = (batch path, row)."""
        _check_meta(folder)
        records = []
        for name in ALL_BATCHES:
            path = folder / name
            if path.is_file():
                partition = int(Partition.TEST if name == TEST_BATCH else Partition.TRAIN)
                _, labels = read_batch(path)
                records += [
                    Record(key=f"{name}/{row:05d}", ref=(str(path), row), labels=(label,), partition=partition)
                    for row, label in enumerate(labels.tolist())
                ]
        return records

    def _missing_message(self, layout: str) -> str:
        root = self.root
        assert root is not None
        tarballs = [d / "cifar-10-python.tar.gz" for d in (root, root / "cifar10")]
        tarball = next((p for p in tarballs if p.is_file()), None)
        hint = f"; extract {tarball} first (tar xzf)" if tarball else f"; download it from {DOWNLOAD}"
        return (
            f"{root}: no CIFAR-10 data for layout={layout!r}; expected {root}/{BATCH_DIR}/"
            f"{{data_batch_1..5,test_batch}} or {root}/cifar10/{{train,test}}/<class>/<image>{hint}"
        )

    def load(self, record: Record, *, min_side: int | None = None) -> np.ndarray:
        """(32, 32, 3) RGB uint8: from the cached batch for batch records, else decoded from the file."""
        if isinstance(record.ref, tuple):
            path, row = record.ref
            return batch_image(path, row)
        return super().load(record, min_side=min_side)
