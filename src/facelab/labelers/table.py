"""Auto-labelling every image of a store into a labels file (the format: :mod:`facelab.data.labels_file`)."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facelab.data.labels_file import (LABEL_TASKS, LabelsFile, check_can_save, keep_decisions, labels_lock,
                                      parse_tasks, path_kind, value_column)
from facelab.data.store import Store
from facelab.errors import ConfigError, DataError
from facelab.labelers.base import Labeler, create_labeler
from facelab.labelers.report import check_report_path

NO_LANDMARKS = "no landmarks (no face was found in this image)"


def auto_label(store: Store, tasks: Sequence[str], out: str | Path, *, options: dict[str, dict[str, Any]] | None = None,
               progress: bool = True) -> dict[str, Any]:
    """Label every image of ``store`` with each task's labeler; write ``out``; return the counts.

    ``options`` are each task's labeler options, e.g. ``{"orientation": {"threshold": 20}}``. An existing
    labels file at ``out`` keeps what a person decided: every reviewed class stays (with its review flag) and
    the tasks not labelled now stay as they were; the result says how many. ``out`` is locked
    (:func:`~facelab.data.labels_file.labels_lock`) from the moment it is read until it is written, so a review
    server on it refuses to start meanwhile, and a running one makes this refuse.

    Raises:
        DataError: the store carries no landmarks (build it with ``--align``, or from a source with them);
            ``out`` is something other than a labels file of this store, read-only, in a folder that cannot
            be written, or locked by another writer.
        ConfigError: options for a task not labelled, or an option its labeler does not take.
    """
    tasks = parse_tasks(tasks)
    options = options or {}
    stray = [t for t in options if t not in tasks]
    if stray:
        raise ConfigError(f"options for {', '.join(stray)}, which is not labelled (--task {','.join(tasks)})")
    labelers = {t: create_labeler(t, **_options(t, options.get(t))) for t in tasks}
    if store.landmarks is None:
        raise DataError(f"{store.path} carries no face landmarks, which the labelers need; build the store with "
                        "`facelab data prepare SOURCE ROOT --align ...` (or from a dataset that ships landmarks)")
    out = Path(out)
    _check_out(out)
    previous = _previous(out, store)  # a file that is not one to carry over is refused before any work
    with labels_lock(out, activity="labelled by `facelab label auto`"):
        if previous is None or previous.changed_on_disk():
            previous = _previous(out, store)
        rows, seconds = _label_rows(store, labelers, progress)
        labels = LabelsFile(out, tasks, rows)
        kept = keep_decisions(labels, previous) if previous is not None else {"reviewed": {}, "tasks": []}
        labels.save(activity="labelled by `facelab label auto`")
    counts = {t: {c: sum(r[t] == c for r in rows) for c in labelers[t].classes} for t in tasks}
    return {"out": str(out), "store": str(store.path), "images": len(rows), "tasks": tasks, "counts": counts,
            "unlabelled": sum(bool(r["note"]) for r in rows), "seconds": round(seconds, 2),
            "images_per_s": round(len(rows) / max(seconds, 1e-9), 1), "kept_reviewed": kept["reviewed"],
            "kept_tasks": kept["tasks"], "labelers": {t: labelers[t].describe() for t in tasks}}


def _options(task: str, given: Any) -> dict[str, Any]:
    if given is None:
        return {}
    if not isinstance(given, dict):
        raise ConfigError(f"-o {task}={given!r}: give the {task} labeler's options by name, e.g. "
                          f"-o {task}.threshold=...")
    return given


def _check_out(out: Path) -> None:
    """Refuse an ``--out`` that would overwrite its own report, or that cannot be written, before any work."""
    if path_kind(out) in ("folder", "other"):
        raise ConfigError(f"{out} is not a file; --out names the labels CSV to write")
    check_report_path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create the folder {out.parent} ({e.strerror}); choose another --out") from None
    check_can_save(out)


def _previous(out: Path, store: Store) -> LabelsFile | None:
    """The labels file already at ``out`` (whose decisions must be kept), or None; DataError for a file that
    is not a labels file of ``store`` (label auto replaces only what it can carry over)."""
    if path_kind(out) == "missing":
        return None
    try:
        return LabelsFile.read(out, store=store)
    except DataError as e:
        raise DataError(f"--out {out} exists and is not a labels file of {store.path} ({e}); `facelab label auto` "
                        "does not replace it: choose another --out") from None


def _label_rows(store: Store, labelers: dict[str, Labeler], progress: bool) -> tuple[list[dict[str, str]], float]:
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
    return rows, time.perf_counter() - t0


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
            row["note"] = "; ".join(filter(None, [row["note"], f"{t}: the face could not be measured"]))
    return row


def _fmt(v: float) -> str:
    return "" if not math.isfinite(v) else f"{v:.4f}"
