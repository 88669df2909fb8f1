"""Labels files: auto-labelling every image of a store, and the CSV both the labelers and the review page write.

One row per store image, keyed by the store's ``key``; per task ``<task>`` (the class, empty when the image
could not be labelled), ``<task>_<value name>`` (``orientation_yaw``, ``light_contrast``), ``<task>_confidence``
and ``<task>_reviewed`` (1 once a person confirmed or corrected the class on the review page); ``note`` says
why an image has no label. Writes are atomic (a temporary file, then a rename).
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facelab.data.store import Store
from facelab.errors import ConfigError, DataError
from facelab.labelers.base import LABELERS, create_labeler
from facelab.utils.io import atomic_write_text

#: the column of the continuous value each labeler writes, by task
VALUE_COLUMN = {"orientation": "yaw", "light": "contrast"}
#: extra columns written by a labeler beyond class, value and confidence, by task
EXTRA_COLUMNS = {"orientation": ("pitch", "roll"), "light": ()}
NO_LANDMARKS = "no landmarks (no face was found in this image)"


def parse_tasks(tasks: str | Sequence[str]) -> list[str]:
    names = [t.strip() for t in tasks.split(",")] if isinstance(tasks, str) else list(tasks)
    names = [t for t in names if t]
    unknown = [t for t in names if t not in LABELERS]
    if unknown or not names:
        raise ConfigError(f"--task {','.join(names) or '(none)'}: choose among {', '.join(LABELERS.names())}")
    return names


def columns(tasks: Sequence[str]) -> list[str]:
    cols = ["key"]
    for t in tasks:
        cols += [t, f"{t}_{VALUE_COLUMN[t]}", f"{t}_confidence", *(f"{t}_{e}" for e in EXTRA_COLUMNS[t]),
                 f"{t}_reviewed"]
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
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            rows = list(reader)
        tasks = [c for c in header if c in LABELERS]
        missing = [c for t in tasks for c in columns([t])[1:-1] if c not in header]
        if "key" not in header or not tasks or missing:
            raise DataError(f"{path}: not a facelab labels file (columns {header}; it needs key, one of "
                            f"{', '.join(LABELERS.names())}{', and ' + ', '.join(missing) if missing else ''})")
        seen: dict[str, int] = {}
        for line, row in enumerate(rows, start=2):
            key = row["key"]
            if key in seen:
                raise DataError(f"{path}:{line}: key {key!r} appears twice (first on line {seen[key]}); keys must be "
                                "unique")
            seen[key] = line
            for t in tasks:
                classes = create_labeler(t).classes
                if row.get(t) and row[t] not in classes:
                    raise DataError(f"{path}:{line}: {t} {row[t]!r} is not a class of {t} ({', '.join(classes)})")
        if store is not None:
            keys = {str(k) for k in store.keys}
            stray = [k for k in seen if k not in keys]
            if stray:
                raise DataError(f"{path}: {len(stray)} key(s) are not images of {store.path}, e.g. {stray[0]!r} "
                                f"(line {seen[stray[0]]}); the labels belong to another store")
        return cls(path, tasks, rows)


def auto_label(store: Store, tasks: Sequence[str], out: str | Path, *, progress: bool = True) -> dict[str, Any]:
    """Label every image of ``store`` with each task's labeler; write ``out``; return the counts.

    Raises:
        DataError: the store carries no landmarks (build it with ``--align``, or from a source with them).
    """
    tasks = parse_tasks(tasks)
    if store.landmarks is None:
        raise DataError(f"{store.path} carries no face landmarks, which the labelers need; build the store with "
                        "`facelab data prepare SOURCE ROOT --align ...` (or from a dataset that ships landmarks)")
    out = Path(out)
    if out.exists() and not out.is_file():
        raise ConfigError(f"{out} is not a file; --out names the labels CSV to write")
    labelers = {t: create_labeler(t) for t in tasks}
    rows, t0 = [], time.perf_counter()
    from rich.console import Console
    from rich.progress import Progress

    with Progress(disable=not progress, transient=True, console=Console(stderr=True)) as prog:
        bar = prog.add_task("labelling", total=len(store))
        for start in range(0, len(store), 512):
            images = np.asarray(store.images[start:start + 512])
            points = store.landmarks[start:start + 512].reshape(-1, 5, 2)
            for j in range(len(images)):
                rows.append(_row(str(store.keys[start + j]), images[j], points[j], labelers))
            prog.advance(bar, len(images))
    seconds = time.perf_counter() - t0
    LabelsFile(out, tasks, rows).save()
    counts = {t: {c: sum(r[t] == c for r in rows) for c in labelers[t].classes} for t in tasks}
    return {"out": str(out), "store": str(store.path), "images": len(rows), "tasks": tasks, "counts": counts,
            "unlabelled": sum(bool(r["note"]) for r in rows), "seconds": round(seconds, 2),
            "images_per_s": round(len(rows) / max(seconds, 1e-9), 1),
            "labelers": {t: labelers[t].describe() for t in tasks}}


def _row(key: str, image: np.ndarray, points: np.ndarray, labelers: dict[str, Any]) -> dict[str, str]:
    row = {"key": key, "note": ""}
    if not np.isfinite(points).all():
        row["note"] = NO_LANDMARKS
        for t in labelers:
            row.update({t: "", f"{t}_{VALUE_COLUMN[t]}": "", f"{t}_confidence": "", f"{t}_reviewed": "0",
                        **{f"{t}_{e}": "" for e in EXTRA_COLUMNS[t]}})
        return row
    for t, labeler in labelers.items():
        lab = labeler.label(image, points)
        row[t] = lab.cls or ""
        row[f"{t}_{VALUE_COLUMN[t]}"] = _fmt(lab.value)
        row[f"{t}_confidence"] = _fmt(lab.confidence)
        row[f"{t}_reviewed"] = "0"
        for e in EXTRA_COLUMNS[t]:
            row[f"{t}_{e}"] = _fmt(lab.extra.get(e, math.nan))
        if lab.cls is None:
            row["note"] = f"{t}: the face could not be measured"
    return row


def _fmt(v: float) -> str:
    return "" if not math.isfinite(v) else f"{v:.4f}"
