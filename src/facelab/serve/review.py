"""The review page's back end: faces least-confident first, one decision per key press, written at once.

Every decision (a class, or an undo) rewrites the labels file atomically before it is answered, so a closed
browser or a killed server loses nothing, and a reopened page continues with the faces not yet reviewed.
Decisions are also appended to ``<labels>.review.jsonl`` (the undo history, kept across restarts).

The labels file's lock (:func:`~facelab.data.labels_file.labels_lock`, ``<labels>.lock``) is held while the
server runs (:func:`review_lock`): a second review server or a ``facelab label auto`` on the same file is
refused meanwhile. A file changed on disk by anything else is noticed before each answer and each write: the
session reads it again, a decision on a face whose row did not change is written into the file as it is now,
and a decision or an undo on a row that changed is refused with a message the page shows (HTTP 409). The
session never writes rows older than the file.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import cv2
import numpy as np
from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel

from facelab.data.labels_file import LabelsChanged, LabelsFile, LabelsLocked, check_can_save, labels_lock
from facelab.data.store import Store
from facelab.errors import DataError
from facelab.utils.io import append_jsonl, read_jsonl

STATIC = Path(__file__).with_name("static")
ZOOM = 4  # the face is shown this many times larger than the store image
REVIEWING = "reviewed by `facelab label review`"


@contextlib.contextmanager
def review_lock(labels: Path) -> Iterator[None]:
    """Hold the labels file's lock for a review server's life; DataError when another review server, a
    ``facelab label auto`` or any other writer holds it."""
    with labels_lock(labels, activity=REVIEWING, exclusive=True):
        yield


def journal_path(labels: Path) -> Path:
    return labels.with_name(labels.name + ".review.jsonl")


class Decision(BaseModel):
    key: str
    task: str
    cls: str | None = None  # a class, or None to skip the face for now


class ReviewSession:
    """The labels under review, the order faces are shown in, and the undo history.

    Raises (on creation):
        DataError: the labels file cannot be saved (read-only file or folder), so no decision could be kept.
    """

    def __init__(self, store: Store, labels: LabelsFile) -> None:
        check_can_save(labels.path)
        self.store, self.labels = store, labels
        self.row_of = {str(k): i for i, k in enumerate(store.keys)}
        self.journal = journal_path(labels.path)
        # earlier sessions' decisions too (undo reaches them); records of another file's keys or tasks are left out
        self.history, self.foreign = _replay(read_jsonl(self.journal), labels)
        self.skipped: dict[str, set[str]] = {t: set() for t in labels.tasks}
        self.lock = threading.Lock()

    def classes(self, task: str) -> tuple[str, ...]:
        self._check_task(task)
        return self.labels.classes(task)

    def _check_task(self, task: str) -> None:
        if task not in self.labels.tasks:
            raise HTTPException(404, f"the labels file has no task {task!r}; its tasks: {', '.join(self.labels.tasks)}")

    def refresh(self) -> str | None:
        """Read the labels file again when it changed on disk since this session read or wrote it; the notice
        for the page, None when nothing changed. HTTP 409 when the file is now unreadable or of another form."""
        try:
            if not self.labels.changed_on_disk():
                return None
            fresh = LabelsFile.read(self.labels.path, store=self.store)
        except DataError as e:
            raise HTTPException(409, f"{e}; nothing was saved: restore the file, then reload the page") from None
        self.labels = fresh
        for t in fresh.tasks:
            self.skipped.setdefault(t, set())
        return (f"{fresh.path.name} changed on disk (another program wrote it): the page now shows it as it is, "
                f"{sum(fresh.reviewed_counts().values())} decisions in it")

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

    def next_answer(self, task: str) -> dict[str, Any]:
        """What ``GET /v1/review/next`` answers: the next face, the progress and a notice if the file changed."""
        with self.lock:
            notice = self.refresh()
            self._check_task(task)
            return {"next": self.next_face(task), "progress": self.progress(task), "notice": notice}

    def describe(self, task: str, row: dict[str, str]) -> dict[str, Any]:
        return {"key": row["key"], "task": task, "auto": row[task] or None,
                "confidence": float(row[f"{task}_confidence"]) if row[f"{task}_confidence"] else None,
                "image": "/v1/review/image?" + urlencode({"key": row["key"]}), "progress": self.progress(task)}

    def progress(self, task: str) -> dict[str, int]:
        rows = self.labels.rows
        return {"reviewed": sum(r[f"{task}_reviewed"] == "1" for r in rows), "total": len(rows),
                "skipped": len(self.skipped[task])}

    def decide(self, d: Decision) -> dict[str, Any]:
        """Record a decision (written to the labels file before this returns); the next face."""
        classes = self.classes(d.task)
        if d.cls is not None and d.cls not in classes:
            raise HTTPException(422, f"{d.cls!r} is not a class of {d.task} ({', '.join(classes)})")
        with self.lock:
            i = self.labels.index.get(d.key)
            if i is None:
                raise HTTPException(404, f"no face {d.key!r} in {self.labels.path.name}")
            shown = _state(self.labels.rows[i], d.task)
            notice = self.refresh()
            self._check_task(d.task)
            i = self.labels.index.get(d.key)
            row = self.labels.rows[i] if i is not None else None
            if row is None or (row[f"{d.task}_reviewed"] == "1" and _state(row, d.task) != shown):
                now = "no row" if row is None else _describe_state(row, d.task)  # a person's decision stays
                raise HTTPException(409, f"{self.labels.path.name} changed on disk and now holds {now} for "
                                         f"{d.key}; your decision was not saved: the page shows the file as it is now")
            warning = None
            if d.cls is None:
                self.skipped[d.task].add(d.key)
            else:
                entry = {"key": d.key, "task": d.task, "before": row[d.task],
                         "before_reviewed": row[f"{d.task}_reviewed"], "after": d.cls, "time": time.time()}
                self._write(row, {d.task: d.cls, f"{d.task}_reviewed": "1"})
                warning = self._journal(entry)
                self.history.append(entry)
        nxt = self.next_face(d.task)
        return {"saved": d.cls is not None, "next": nxt, "progress": nxt["progress"] if nxt else self.progress(d.task),
                "notice": notice, "warning": warning}

    def undo(self, task: str) -> dict[str, Any]:
        """Take back the last decision of ``task`` (of this session or an earlier one); the face comes back.
        A decision whose row no longer holds what was decided (the file changed since) is not undone: HTTP 409,
        and the next undo reaches the decision before it."""
        self._check_task(task)
        with self.lock:
            notice = self.refresh()
            self._check_task(task)
            for j in range(len(self.history) - 1, -1, -1):
                entry = self.history[j]
                if entry["task"] == task and not entry.get("undone") and not entry.get("stale"):
                    break
            else:
                raise HTTPException(409, "nothing to undo")
            i = self.labels.index.get(entry["key"])
            row = self.labels.rows[i] if i is not None else None
            if row is None or _state(row, task) != (entry["after"], "1"):
                entry["stale"] = True
                now = "no row" if row is None else _describe_state(row, task)
                raise HTTPException(409, f"cannot undo {entry['key']}: {self.labels.path.name} holds {now} for it, "
                                         f"not the {entry['after']} decided then (the file changed since); press u "
                                         "again to undo the decision before it")
            self._write(row, {task: entry["before"], f"{task}_reviewed": entry["before_reviewed"]})
            entry["undone"] = True
            warning = self._journal({"undo": entry["key"], "task": task, "time": time.time()})
        return {"undone": entry["key"], "next": self.describe(task, row), "notice": notice, "warning": warning}

    def _write(self, row: dict[str, str], changes: dict[str, str]) -> None:
        """Apply ``changes`` to ``row`` and save the file; on failure the row is as before (the session stays
        what the file holds) and the page gets the reason."""
        before = {k: row[k] for k in changes}
        row.update(changes)
        try:
            self.labels.save(activity=REVIEWING)
        except LabelsChanged as e:
            row.update(before)
            raise HTTPException(409, f"{e}; press the key again to decide on the file as it is now") from None
        except LabelsLocked as e:
            row.update(before)
            raise HTTPException(409, f"not saved: {e}") from None
        except DataError as e:
            row.update(before)
            raise HTTPException(507, f"not saved: {e}") from None

    def _journal(self, record: dict[str, Any]) -> str | None:
        try:
            append_jsonl(self.journal, record)
        except OSError as e:
            return (f"saved in {self.labels.path.name}, but the undo history {self.journal.name} could not be "
                    f"written ({e.strerror}): undo reaches this decision only until the server stops")
        return None

    def image_png(self, key: str) -> bytes:
        i = self.row_of.get(key)
        if i is None:
            raise HTTPException(404, f"no image {key!r} in {self.store.path}")
        img = np.asarray(self.store.images[i])
        big = cv2.resize(img, None, fx=ZOOM, fy=ZOOM, interpolation=cv2.INTER_NEAREST)
        ok, buf = cv2.imencode(".png", cv2.cvtColor(big, cv2.COLOR_RGB2BGR))
        return buf.tobytes()


def _state(row: dict[str, str], task: str) -> tuple[str, str]:
    return row[task], row[f"{task}_reviewed"]


def _describe_state(row: dict[str, str], task: str) -> str:
    cls, reviewed = _state(row, task)
    return f"{task} {cls or '(none)'}" + (" (reviewed)" if reviewed == "1" else "")


def _replay(records: list[Any], labels: LabelsFile) -> tuple[list[dict[str, Any]], int]:
    """The decisions of a review journal, each undo marking the last decision of its task and key not yet
    undone; and how many records were left out (not a decision of this file's keys, tasks and classes)."""
    decisions: list[dict[str, Any]] = []
    foreign = 0
    for rec in records:
        if _is_undo(rec, labels):
            for entry in reversed(decisions):
                if entry["task"] == rec["task"] and entry["key"] == rec["undo"] and not entry.get("undone"):
                    entry["undone"] = True
                    break
        elif _is_decision(rec, labels):
            decisions.append(dict(rec))
        else:
            foreign += 1
    return decisions, foreign


def _is_undo(rec: Any, labels: LabelsFile) -> bool:
    return isinstance(rec, dict) and rec.get("undo") in labels.index and rec.get("task") in labels.tasks


def _is_decision(rec: Any, labels: LabelsFile) -> bool:
    if not isinstance(rec, dict) or rec.get("key") not in labels.index or rec.get("task") not in labels.tasks:
        return False
    classes = labels.classes(rec["task"])
    return (rec.get("after") in classes and rec.get("before") in (*classes, "")
            and rec.get("before_reviewed") in ("0", "1"))


def review_router(session: ReviewSession) -> APIRouter:
    """The review page (``/review``) and its API (``/v1/review/...``)."""
    router = APIRouter()

    @router.get("/review", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "review.html")

    @router.get("/v1/review/tasks")
    def tasks() -> dict[str, Any]:
        with session.lock:
            notice = session.refresh()
        return {"tasks": {t: list(session.classes(t)) for t in session.labels.tasks},
                "labels": str(session.labels.path), "store": str(session.store.path), "notice": notice,
                "foreign_journal_records": session.foreign}

    @router.get("/v1/review/next")
    def next_face(task: str) -> dict[str, Any]:
        return session.next_answer(task)

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
