"""Labels files: per-image classes made outside the store (the auto-labelers, the review page), and the store
view that trains and evaluates on them.

A labels file is a CSV with one row per store image, keyed by the store's ``key``; per task ``<task>`` (the
class, empty when the image could not be labelled), ``<task>_<value>`` (``orientation_yaw``,
``light_contrast``), ``<task>_confidence``, the task's extra measurements, and ``<task>_reviewed`` (1 once a
person confirmed or corrected the class on the review page); ``note`` says why an image has no label. Writes
are atomic (a temporary file, then a rename). Classes are in image coordinates: ``left`` is the image's left
(the viewer's), never the subject's.

:func:`with_labels_file` lays a labels file's tasks over a store as categorical label columns, so that
``facelab train STORE --labels-file labels.csv --labels orientation`` trains on them like on any stored label
(unlabelled images are unknown, -1, and left out of losses and metrics).
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facelab.data.schema import LabelKind, LabelSpec
from facelab.data.store import LabelOverlay, Store
from facelab.errors import ConfigError, DataError
from facelab.utils.io import atomic_write_text

#: the three classes of a direction, in image coordinates
DIRECTIONS = ("left", "center", "right")


@dataclass(frozen=True)
class TaskColumns:
    """The columns a task writes beyond ``<task>``, ``<task>_confidence`` and ``<task>_reviewed``."""

    value: str  # the continuous value the class was derived from
    extra: tuple[str, ...] = ()
    classes: tuple[str, ...] = DIRECTIONS


#: the tasks a labels file can hold (each one a labeler of :mod:`facelab.labelers`, which a contract test checks)
LABEL_TASKS: dict[str, TaskColumns] = {
    "orientation": TaskColumns("yaw", ("pitch", "roll")),
    "light": TaskColumns("contrast"),
}


def parse_tasks(tasks: str | Sequence[str]) -> list[str]:
    """Task names from ``"orientation,light"`` or a list; ConfigError for an unknown or empty one."""
    names = [t.strip() for t in tasks.split(",")] if isinstance(tasks, str) else [str(t).strip() for t in tasks]
    names = [t for t in names if t]
    unknown = [t for t in names if t not in LABEL_TASKS]
    if unknown or not names:
        raise ConfigError(f"--task {','.join(names) or '(none)'}: choose among {', '.join(LABEL_TASKS)}")
    return names


def value_column(task: str) -> str:
    return f"{task}_{LABEL_TASKS[task].value}"


def columns(tasks: Sequence[str]) -> list[str]:
    cols = ["key"]
    for t in tasks:
        spec = LABEL_TASKS[t]
        cols += [t, value_column(t), f"{t}_confidence", *(f"{t}_{e}" for e in spec.extra), f"{t}_reviewed"]
    return cols + ["note"]


@dataclass
class LabelsFile:
    """The rows of a labels file (dicts of column -> text) with its tasks, in store order."""

    path: Path
    tasks: list[str]
    rows: list[dict[str, str]]
    index: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.index = {r["key"]: i for i, r in enumerate(self.rows)}

    def save(self) -> None:
        """Write the file atomically: a crash or a closed browser never leaves half a file."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns(self.tasks), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.path, buf.getvalue())

    def classes(self, task: str) -> tuple[str, ...]:
        return LABEL_TASKS[task].classes

    def reviewed(self, task: str) -> np.ndarray:
        """(rows,) bool: which rows a person reviewed for ``task``."""
        return np.array([r.get(f"{task}_reviewed", "0") == "1" for r in self.rows], dtype=bool)

    @classmethod
    def read(cls, path: str | Path, *, store: Store | None = None) -> LabelsFile:
        """Read and check a labels file: its columns, unique keys, known classes and (with ``store``) that every
        key is a row of that store.

        Raises:
            DataError: missing file or columns, duplicate or unknown keys, an unknown class (naming the line).
        """
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: no labels file here; make one with `facelab label auto STORE --out {path}`")
        try:
            with open(path, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                header = list(reader.fieldnames or [])
                rows = list(reader)
        except (UnicodeDecodeError, csv.Error) as e:
            raise DataError(f"{path}: not a readable CSV ({e})") from None
        tasks = [c for c in header if c in LABEL_TASKS]
        missing = [c for t in tasks for c in columns([t])[1:-1] if c not in header]
        if "key" not in header or not tasks or missing:
            raise DataError(f"{path}: not a facelab labels file (columns {header}; it needs key, one of "
                            f"{', '.join(LABEL_TASKS)}{', and ' + ', '.join(missing) if missing else ''})")
        seen: dict[str, int] = {}
        for line, row in enumerate(rows, start=2):
            if None in row or any(v is None for v in row.values()):
                raise DataError(f"{path}:{line}: {len(header)} columns expected; the row has another number")
            key = row["key"]
            if key in seen:
                raise DataError(f"{path}:{line}: key {key!r} appears twice (first on line {seen[key]}); keys must be "
                                "unique")
            seen[key] = line
            for t in tasks:
                classes = LABEL_TASKS[t].classes
                if row.get(t) and row[t] not in classes:
                    raise DataError(f"{path}:{line}: {t} {row[t]!r} is not a class of {t} ({', '.join(classes)})")
        if store is not None:
            keys = {str(k) for k in store.keys}
            stray = [k for k in seen if k not in keys]
            if stray:
                raise DataError(f"{path}: {len(stray)} key(s) are not images of {store.path}, e.g. {stray[0]!r} "
                                f"(line {seen[stray[0]]}); the labels belong to another store")
        return cls(path, tasks, rows)


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def with_labels_file(store: Store, path: str | Path, *, tasks: Sequence[str] | None = None,
                     reviewed_only: bool = False) -> Store:
    """``store`` with the tasks of the labels file at ``path`` as categorical label columns (classes
    :data:`DIRECTIONS`); images without a class in the file (or, with ``reviewed_only``, not reviewed by a
    person) get -1, unknown.

    Raises:
        DataError: the file is malformed or its keys are not the store's (:meth:`LabelsFile.read`); a task is
            already a label of the store.
        ConfigError: ``tasks`` names a task the file does not hold.
    """
    labels = LabelsFile.read(path, store=store)
    names = labels.tasks if tasks is None else list(tasks)
    absent = [t for t in names if t not in labels.tasks]
    if absent:
        raise ConfigError(f"{path}: no task {', '.join(absent)} in this labels file (it holds {', '.join(labels.tasks)})")
    clash = [t for t in names if t in store.label_names]
    if clash:
        raise DataError(f"{store.path} already has a label {', '.join(clash)}; a labels file cannot replace it")
    row_of = {str(k): i for i, k in enumerate(store.keys)}
    rows = np.array([row_of[r["key"]] for r in labels.rows], dtype=np.int64)
    values = np.full((len(store), len(names)), -1, dtype=np.int32)
    for j, t in enumerate(names):
        classes = LABEL_TASKS[t].classes
        code = {c: i for i, c in enumerate(classes)}
        col = np.array([code.get(r[t], -1) for r in labels.rows], dtype=np.int32)
        if reviewed_only:
            col[~labels.reviewed(t)] = -1
        values[rows, j] = col
    specs = tuple(LabelSpec(t, LabelKind.CATEGORICAL, LABEL_TASKS[t].classes) for t in names)
    return store.with_overlay(LabelOverlay(source=str(Path(path).resolve()), sha256=file_sha256(path), specs=specs,
                                           values=values, reviewed_only=reviewed_only))


def open_store(path: str | Path, labels_file: str | Path | None = None, *, tasks: Sequence[str] | None = None,
               reviewed_only: bool = False) -> Store:
    """:meth:`Store.open`, with the labels file's tasks laid over it when one is given."""
    store = Store.open(path)
    return store if labels_file is None else with_labels_file(store, labels_file, tasks=tasks,
                                                              reviewed_only=reviewed_only)
