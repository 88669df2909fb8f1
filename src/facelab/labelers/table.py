"""Auto-labelling every image of a store into a labels file (the format: :mod:`facelab.data.labels_file`)."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facelab.data.labels_file import LABEL_TASKS, LabelsFile, parse_tasks, value_column
from facelab.data.store import Store
from facelab.errors import ConfigError, DataError
from facelab.labelers.base import create_labeler

NO_LANDMARKS = "no landmarks (no face was found in this image)"


def auto_label(store: Store, tasks: Sequence[str], out: str | Path, *, options: dict[str, dict[str, Any]] | None = None,
               progress: bool = True) -> dict[str, Any]:
    """Label every image of ``store`` with each task's labeler; write ``out``; return the counts.

    ``options`` are each task's labeler options, e.g. ``{"orientation": {"threshold": 20}}``.

    Raises:
        DataError: the store carries no landmarks (build it with ``--align``, or from a source with them).
        ConfigError: options for a task not labelled, or an option its labeler does not take.
    """
    tasks = parse_tasks(tasks)
    options = options or {}
    stray = [t for t in options if t not in tasks]
    if stray:
        raise ConfigError(f"options for {', '.join(stray)}, which is not labelled (--task {','.join(tasks)})")
    if store.landmarks is None:
        raise DataError(f"{store.path} carries no face landmarks, which the labelers need; build the store with "
                        "`facelab data prepare SOURCE ROOT --align ...` (or from a dataset that ships landmarks)")
    out = Path(out)
    if out.exists() and not out.is_file():
        raise ConfigError(f"{out} is not a file; --out names the labels CSV to write")
    labelers = {}
    for t in tasks:
        try:
            labelers[t] = create_labeler(t, **(options.get(t) or {}))
        except TypeError as e:
            raise ConfigError(f"-o {t}.*: {e}") from None
    rows, t0 = [], time.perf_counter()
    from facelab.utils.progress import progress_bar

    with progress_bar(enabled=progress) as prog:
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
            row.update({t: "", value_column(t): "", f"{t}_confidence": "", f"{t}_reviewed": "0",
                        **{f"{t}_{e}": "" for e in LABEL_TASKS[t].extra}})
        return row
    for t, labeler in labelers.items():
        lab = labeler.label(image, points)
        row[t] = lab.cls or ""
        row[value_column(t)] = _fmt(lab.value)
        row[f"{t}_confidence"] = _fmt(lab.confidence)
        row[f"{t}_reviewed"] = "0"
        for e in LABEL_TASKS[t].extra:
            row[f"{t}_{e}"] = _fmt(lab.extra.get(e, math.nan))
        if lab.cls is None:
            row["note"] = f"{t}: the face could not be measured"
    return row


def _fmt(v: float) -> str:
    return "" if not math.isfinite(v) else f"{v:.4f}"
