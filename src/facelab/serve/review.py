"""The review page's back end: faces least-confident first, one decision per key press, written at once.

Every decision (a class, or an undo) rewrites the labels file atomically before it is answered, so a closed
browser or a killed server loses nothing, and a reopened page continues with the faces not yet reviewed.
Decisions are also appended to ``<labels>.review.jsonl`` (the undo history, kept across restarts). A lock file
(``<labels>.lock``, held while the server runs) refuses a second review server on the same labels file.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel

from facelab.data.store import Store
from facelab.errors import DataError
from facelab.data.labels_file import LabelsFile
from facelab.utils.io import append_jsonl, read_jsonl

STATIC = Path(__file__).with_name("static")
ZOOM = 4  # the face is shown this many times larger than the store image


@contextlib.contextmanager
def review_lock(labels: Path) -> Iterator[None]:
    """Hold ``<labels>.lock`` exclusively; DataError when another review server holds it."""
    import fcntl

    lock = labels.with_name(labels.name + ".lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise DataError(f"{labels} is being reviewed by another `facelab label review` (it holds {lock}); close "
                        "that one first: two review pages on one labels file would overwrite each other") from None
    try:
        yield
    finally:  # the file stays: unlinking it would let a server that opened it meanwhile lock a dead inode
        os.close(fd)


class Decision(BaseModel):
    key: str
    task: str
    cls: str | None = None  # a class, or None to skip the face for now


class ReviewSession:
    """The labels under review, the order faces are shown in, and the undo history."""

    def __init__(self, store: Store, labels: LabelsFile) -> None:
        self.store, self.labels = store, labels
        self.row_of = {str(k): i for i, k in enumerate(store.keys)}
        self.journal = labels.path.with_name(labels.path.name + ".review.jsonl")
        self.history = _replay(read_jsonl(self.journal))  # earlier sessions' decisions too: undo reaches them
        self.skipped: dict[str, set[str]] = {t: set() for t in labels.tasks}
        self.lock = threading.Lock()

    def classes(self, task: str) -> tuple[str, ...]:
        self._check_task(task)
        return self.labels.classes(task)

    def _check_task(self, task: str) -> None:
        if task not in self.labels.tasks:
            raise HTTPException(404, f"the labels file has no task {task!r}; its tasks: {', '.join(self.labels.tasks)}")

    def next_face(self, task: str) -> dict[str, Any] | None:
        """The least confident face of ``task`` not reviewed (nor skipped in this session), or None."""
        self._check_task(task)
        best, best_conf = None, 2.0
        for r in self.labels.rows:
            if r[f"{task}_reviewed"] == "1" or r["key"] in self.skipped[task] or r["key"] not in self.row_of:
                continue
            conf = float(r[f"{task}_confidence"]) if r[f"{task}_confidence"] else -1.0  # unlabelled first
            if conf < best_conf:
                best, best_conf = r, conf
        return None if best is None else self.describe(task, best)

    def describe(self, task: str, row: dict[str, str]) -> dict[str, Any]:
        return {"key": row["key"], "task": task, "auto": row[task] or None,
                "confidence": float(row[f"{task}_confidence"]) if row[f"{task}_confidence"] else None,
                "image": f"/v1/review/image?key={row['key']}", "progress": self.progress(task)}

    def progress(self, task: str) -> dict[str, int]:
        rows = self.labels.rows
        return {"reviewed": sum(r[f"{task}_reviewed"] == "1" for r in rows), "total": len(rows),
                "skipped": len(self.skipped[task])}

    def decide(self, d: Decision) -> dict[str, Any]:
        """Record a decision (written to the labels file before this returns); the next face."""
        classes = self.classes(d.task)
        with self.lock:
            i = self.labels.index.get(d.key)
            if i is None:
                raise HTTPException(404, f"no face {d.key!r} in {self.labels.path.name}")
            if d.cls is None:
                self.skipped[d.task].add(d.key)
            else:
                if d.cls not in classes:
                    raise HTTPException(422, f"{d.cls!r} is not a class of {d.task} ({', '.join(classes)})")
                row = self.labels.rows[i]
                entry = {"key": d.key, "task": d.task, "before": row[d.task],
                         "before_reviewed": row[f"{d.task}_reviewed"], "after": d.cls, "time": time.time()}
                row[d.task], row[f"{d.task}_reviewed"] = d.cls, "1"
                self.labels.save()  # atomic: the file holds every decision made so far
                append_jsonl(self.journal, entry)
                self.history.append(entry)
        return {"saved": d.cls is not None, "next": self.next_face(d.task)}

    def undo(self, task: str) -> dict[str, Any]:
        """Take back the last decision of ``task`` (of this session or an earlier one); the face comes back."""
        self._check_task(task)
        with self.lock:
            for j in range(len(self.history) - 1, -1, -1):
                entry = self.history[j]
                if entry["task"] == task and not entry.get("undone"):
                    break
            else:
                raise HTTPException(409, "nothing to undo")
            row = self.labels.rows[self.labels.index[entry["key"]]]
            row[task], row[f"{task}_reviewed"] = entry["before"], entry["before_reviewed"]
            self.labels.save()
            entry["undone"] = True
            append_jsonl(self.journal, {"undo": entry["key"], "task": task, "time": time.time()})
        return {"undone": entry["key"], "next": self.describe(task, row)}

    def image_png(self, key: str) -> bytes:
        i = self.row_of.get(key)
        if i is None:
            raise HTTPException(404, f"no image {key!r} in {self.store.path}")
        img = np.asarray(self.store.images[i])
        big = cv2.resize(img, None, fx=ZOOM, fy=ZOOM, interpolation=cv2.INTER_NEAREST)
        ok, buf = cv2.imencode(".png", cv2.cvtColor(big, cv2.COLOR_RGB2BGR))
        return buf.tobytes()


def _replay(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The decisions of a review journal, each undo marking the last decision of its task not yet undone."""
    decisions: list[dict[str, Any]] = []
    for rec in records:
        if "undo" not in rec:
            decisions.append(dict(rec))
            continue
        for entry in reversed(decisions):
            if entry["task"] == rec["task"] and not entry.get("undone"):
                entry["undone"] = True
                break
    return decisions


def review_router(session: ReviewSession) -> APIRouter:
    """The review page (``/review``) and its API (``/v1/review/...``)."""
    router = APIRouter()

    @router.get("/review", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "review.html")

    @router.get("/v1/review/tasks")
    def tasks() -> dict[str, Any]:
        return {"tasks": {t: list(session.classes(t)) for t in session.labels.tasks},
                "labels": str(session.labels.path), "store": str(session.store.path)}

    @router.get("/v1/review/next")
    def next_face(task: str) -> dict[str, Any]:
        return {"next": session.next_face(task), "progress": session.progress(task)}

    @router.post("/v1/review/decision")
    def decision(d: Decision) -> dict[str, Any]:
        return session.decide(d)

    @router.post("/v1/review/undo")
    def undo(task: str) -> dict[str, Any]:
        return session.undo(task)

    @router.get("/v1/review/image")
    def image(key: str) -> Response:
        return Response(session.image_png(key), media_type="image/png")

    return router
