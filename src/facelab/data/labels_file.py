"""Labels files: per-image classes made outside the store (the auto-labelers, the review page), and the store
view that trains and evaluates on them.

A labels file is a CSV with one row per store image, keyed by the store's ``key``; per task ``<task>`` (the
class, empty when the image could not be labelled), ``<task>_<value>`` (``orientation_yaw``,
``light_contrast``), ``<task>_confidence``, the task's extra measurements, and ``<task>_reviewed`` (1 once a
person confirmed or corrected the class on the review page); ``note`` says why an image has no label. Classes
are in image coordinates: ``left`` is the image's left (the viewer's), never the subject's.

A person's decisions (the reviewed rows) are never overwritten by a machine. Every writer of a labels file
holds the same inter-process lock (:func:`labels_lock`, ``<labels>.lock`` beside the file), and
:meth:`LabelsFile.save` writes only over the very content the rows were read from: a file that changed on disk
since (another program, a spreadsheet) is refused with :class:`LabelsChanged`, never silently replaced. Writes
are atomic (a temporary file, then a rename) and keep the file's mode and owner; a file its owner made
read-only is never replaced.

:func:`with_labels_file` lays a labels file's tasks over a store as categorical label columns, so that
``facelab train STORE --labels-file labels.csv --labels orientation`` trains on them like on any stored label
(unlabelled images are unknown, -1, and left out of losses, metrics and splits).
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import hashlib
import io
import math
import os
import stat
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facelab.data.schema import LabelKind, LabelSpec
from facelab.data.store import LabelOverlay, Store
from facelab.errors import ConfigError, DataError
from facelab.utils.io import atomic_write_bytes, naming, os_error_message

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


def task_columns(task: str) -> list[str]:
    """The columns of one task, in file order."""
    spec = LABEL_TASKS[task]
    return [task, value_column(task), f"{task}_confidence", *(f"{task}_{e}" for e in spec.extra), f"{task}_reviewed"]


def columns(tasks: Sequence[str]) -> list[str]:
    return ["key", *(c for t in tasks for c in task_columns(t)), "note"]


def _number_columns(task: str) -> list[str]:
    return task_columns(task)[1:-1]


class LabelsChanged(DataError):
    """The labels file on disk is no longer the content these rows were read from (or last written as)."""


class LabelsLocked(DataError):
    """Another writer holds the labels file's lock."""


# ---- the lock every writer holds ------------------------------------------------------------------
@dataclass
class _Hold:
    fd: int
    depth: int
    activity: str


_HELD: dict[str, _Hold] = {}  # lock file (resolved) -> this process's hold on it
_HELD_GUARD = threading.Lock()


def lock_path(path: str | Path) -> Path:
    """``<labels>.lock`` beside the labels file (beside its target when ``path`` is a symbolic link)."""
    real = Path(os.path.realpath(path))
    return real.with_name(real.name + ".lock")


@contextlib.contextmanager
def labels_lock(path: str | Path, *, activity: str = "written by facelab", exclusive: bool = False) -> Iterator[None]:
    """Hold ``<labels>.lock``: an exclusive ``flock``, which the operating system releases when the process
    ends (a killed writer never leaves a stale lock); the file is removed when the lock is let go. Every writer
    of a labels file holds it while it reads, checks and writes: ``facelab label auto`` for its whole run, a
    review server for its whole life.

    Within one process the lock is re-entrant (a review server's own decisions write under the hold the
    server took), unless ``exclusive``: then any other hold, in this process or another, refuses it.

    Args:
        path: the labels file.
        activity: what the holder does, for the message another writer gets ("reviewed by `facelab label
            review`").
        exclusive: refuse a hold this process already has too (one review server per labels file).

    Raises:
        DataError: another process (or, with ``exclusive``, this one) holds the lock, naming what it does and
            its pid; the folder cannot hold the lock file (read-only, missing, name too long).
    """
    lock = lock_path(path)
    key = str(lock)
    with _HELD_GUARD:
        hold = _HELD.get(key)
        if hold is not None:
            if exclusive:
                raise _busy(path, lock, f"pid {os.getpid()}: {hold.activity}")
            hold.depth += 1
        else:
            fd = _acquire(lock, path)
            with contextlib.suppress(OSError):  # a lock file opened read-only still locks; it just names no holder
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"pid {os.getpid()}: {activity}\n".encode(), 0)
            hold = _HELD[key] = _Hold(fd, 1, activity)
    try:
        yield
    finally:
        with _HELD_GUARD:
            hold.depth -= 1
            if hold.depth == 0:
                del _HELD[key]
                with contextlib.suppress(OSError):  # removed while still locked: see _acquire
                    lock.unlink()
                os.close(hold.fd)


def _acquire(lock: Path, path: str | Path) -> int:
    """An fd of ``lock`` holding its flock. The holder removes the file before it lets go, so a writer that
    opened the file meanwhile may lock a file no longer there: it checks, after locking, that the path still
    names the file it locked, and starts again when not."""
    while True:
        fd = _open_lock(lock, path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read_holder(fd)
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise _busy(path, lock, holder) from None
            raise DataError(f"cannot lock {lock} ({e.strerror}); facelab writes a labels file only under its "
                            "lock") from None
        try:
            now, mine = os.stat(lock), os.fstat(fd)
            same = (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino)
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def _open_lock(lock: Path, path: str | Path) -> int:
    try:
        return os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        if path_kind(lock) == "file":
            with contextlib.suppress(OSError):
                return os.open(lock, os.O_RDONLY)
        raise DataError(f"cannot write beside {path}: {lock.parent} does not take the lock file {lock.name} "
                        f"({e.strerror}); put the labels file in a folder you can write") from None


def _read_holder(fd: int) -> str:
    with contextlib.suppress(OSError):
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
        if text:
            return text
    return "another facelab process"


def _busy(path: str | Path, lock: Path, holder: str) -> LabelsLocked:
    pid, _, activity = holder.partition(": ")
    what = f"being {activity} ({pid})" if activity else f"in use by {holder}"
    return LabelsLocked(f"{path} is {what}, which holds {lock}; wait for it to finish or stop it first: two writers "
                     "of one labels file would overwrite each other's rows")


def path_kind(path: str | Path) -> str:
    """``"file"``, ``"folder"``, ``"other"`` or ``"missing"``; DataError when the path cannot even be looked up
    (a name too long, a folder on the way that cannot be entered)."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return "missing"
    except OSError as e:
        said = os_error_message(naming(e, path))
        raise DataError(said or f"{path}: cannot look it up ({e.strerror}); choose another name") from None
    return "file" if stat.S_ISREG(mode) else "folder" if stat.S_ISDIR(mode) else "other"


def check_can_save(path: str | Path) -> None:
    """DataError unless a labels file can be written at ``path``: a file there that its owner made read-only is
    never replaced, and the folder must take new files (a real write, so that it holds for root too)."""
    path = Path(path)
    kind = path_kind(path)
    if kind in ("folder", "other"):
        raise DataError(f"{path} is not a file; name the labels CSV file, e.g. {path / 'labels.csv'}")
    real = Path(os.path.realpath(path))
    _refuse_read_only(path, real)
    folder = real.parent
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=f".{path.name[:100]}.", suffix=".probe")
    except OSError as e:
        raise DataError(f"cannot write {path}: {folder} does not take new files ({e.strerror}); put the labels "
                        "file in a folder you can write") from None
    os.close(fd)
    os.unlink(probe)


def _refuse_read_only(path: Path, real: Path) -> None:
    with contextlib.suppress(OSError):
        mode = real.stat().st_mode
        if not mode & 0o222:
            raise DataError(f"{path} is read-only (mode {mode & 0o777:o}); facelab does not replace a file made "
                            f"read-only: make it writable (chmod u+w {path}) or use a copy")


# ---- the file -------------------------------------------------------------------------------------
def _stat_sig(path: Path) -> tuple[int, int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _disk_sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise DataError(f"{path}: cannot read it ({e.strerror})") from None


@dataclass
class LabelsFile:
    """The rows of a labels file (dicts of column -> text) with its tasks, in store order.

    ``sha256`` is the content on disk these rows were read from or last saved as (None: a new file, none on
    disk); :meth:`save` refuses to write over anything else. ``own_columns`` are columns a person added (a
    comment, a second opinion): kept, after facelab's, in every write.
    """

    path: Path
    tasks: list[str]
    rows: list[dict[str, str]]
    sha256: str | None = None
    own_columns: list[str] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)
    _sig: tuple[int, int, int, int] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.index = {r["key"]: i for i, r in enumerate(self.rows)}

    def to_csv(self) -> bytes:
        cols = columns(self.tasks) + [c for c in self.own_columns if c not in columns(self.tasks)]
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(cols)
        writer.writerows([[r.get(c, "") for c in cols] for r in self.rows])
        return buf.getvalue().encode("utf-8")

    def changed_on_disk(self) -> bool:
        """Whether the file on disk is no longer what these rows were read from or last saved as (its size, time
        and inode first, then its content)."""
        real = Path(os.path.realpath(self.path))
        sig = _stat_sig(real)
        if sig is not None and sig == self._sig:
            return False
        if _disk_sha256(real) != self.sha256:
            return True
        self._sig = sig
        return False

    def save(self, *, activity: str = "written by facelab") -> None:
        """Write the file atomically under :func:`labels_lock`, keeping its mode and owner.

        Raises:
            LabelsChanged: the file on disk is not the content these rows came from (another program wrote
                it since): nothing is written.
            DataError: the lock is held by another process; the file is read-only; the folder cannot be
                written (read-only, full, name too long).
        """
        real = Path(os.path.realpath(self.path))  # a symbolic link keeps pointing at the file it named
        data = self.to_csv()
        with labels_lock(self.path, activity=activity):
            on_disk = _disk_sha256(real)
            if on_disk != self.sha256:
                raise LabelsChanged(
                    f"{self.path} " + ("appeared" if self.sha256 is None else "was removed" if on_disk is None
                                       else "changed on disk") + " since facelab read it (another program wrote "
                    "it); nothing was written over it")
            _refuse_read_only(self.path, real)
            try:
                atomic_write_bytes(real, data, keep_mode=True)
            except OSError as e:
                said = os_error_message(naming(e, self.path)) or f"cannot write {self.path} ({e.strerror})"
                raise DataError(f"{said}; nothing was changed in it") from None
        self.sha256 = hashlib.sha256(data).hexdigest()
        self._sig = _stat_sig(real)

    def classes(self, task: str) -> tuple[str, ...]:
        return LABEL_TASKS[task].classes

    def reviewed(self, task: str) -> np.ndarray:
        """(rows,) bool: which rows a person reviewed for ``task``."""
        return np.array([r.get(f"{task}_reviewed", "0") == "1" for r in self.rows], dtype=bool)

    def reviewed_counts(self) -> dict[str, int]:
        return {t: int(self.reviewed(t).sum()) for t in self.tasks}

    @classmethod
    def read(cls, path: str | Path, *, store: Store | None = None) -> LabelsFile:
        """Read and check a labels file: its columns, unique keys, known classes, numbers where numbers belong,
        0/1 review flags and (with ``store``) that every key is a row of that store. A byte-order mark (as
        spreadsheets save) is allowed.

        Raises:
            DataError: missing or unreadable file, missing or repeated columns, a ragged row, an empty, repeated
                or unknown key, an unknown class, a value that is not a number: each naming the line.
        """
        path = Path(path)
        if path_kind(path) != "file":
            raise DataError(f"{path}: no labels file here; make one with `facelab label auto STORE --out {path}`")
        real = Path(os.path.realpath(path))
        sig = _stat_sig(real)
        try:
            data = real.read_bytes()
        except OSError as e:
            raise DataError(f"{path}: cannot read it ({e.strerror})") from None
        try:
            reader = csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline=""))
            header = list(reader.fieldnames or [])
            rows = list(reader)
        except (UnicodeDecodeError, csv.Error) as e:
            raise DataError(f"{path}: not a readable CSV ({e})") from None
        tasks = _check_header(path, header)
        seen: dict[str, int] = {}
        for line, row in enumerate(rows, start=2):
            _check_row(path, line, row, header, tasks, seen)
        if store is not None:
            keys = {str(k) for k in store.keys}
            stray = [k for k in seen if k not in keys]
            if stray:
                raise DataError(f"{path}: {len(stray)} key(s) are not images of {store.path}, e.g. {stray[0]!r} "
                                f"(line {seen[stray[0]]}); the labels belong to another store")
        own = [c for c in header if c not in columns(tasks)]
        labels = cls(path, tasks, rows, sha256=hashlib.sha256(data).hexdigest(), own_columns=own)
        labels._sig = sig
        return labels


def _check_header(path: Path, header: list[str]) -> list[str]:
    twice = sorted({c for c in header if header.count(c) > 1})
    if twice:
        raise DataError(f"{path}:1: column {twice[0]!r} appears twice; each column once")
    tasks = [c for c in header if c in LABEL_TASKS]
    missing = [c for t in tasks for c in task_columns(t) if c not in header]
    if "key" not in header or not tasks or missing:
        raise DataError(f"{path}: not a facelab labels file (columns {header[:20]}; it needs key, one of "
                        f"{', '.join(LABEL_TASKS)}{', and ' + ', '.join(missing) if missing else ''})")
    return tasks


def _check_row(path: Path, line: int, row: dict[str, str], header: list[str], tasks: list[str],
               seen: dict[str, int]) -> None:
    if None in row or any(v is None for v in row.values()):
        raise DataError(f"{path}:{line}: {len(header)} columns expected; the row has another number")
    key = row["key"]
    if not key:
        raise DataError(f"{path}:{line}: the key is empty; every row names its image")
    if key in seen:
        raise DataError(f"{path}:{line}: key {key!r} appears twice (first on line {seen[key]}); keys must be unique")
    seen[key] = line
    for t in tasks:
        classes = LABEL_TASKS[t].classes
        if row[t] and row[t] not in classes:
            raise DataError(f"{path}:{line}: {t} {row[t]!r} is not a class of {t} ({', '.join(classes)})")
        flag = f"{t}_reviewed"
        if row[flag] == "":
            row[flag] = "0"
        elif row[flag] not in ("0", "1"):
            raise DataError(f"{path}:{line}: {flag} {row[flag]!r} is neither 0 nor 1 (1: a person reviewed it)")
        for c in _number_columns(t):
            if row[c] and not _is_number(row[c], unit=c.endswith("_confidence")):
                what = "a number from 0 to 1" if c.endswith("_confidence") else "a finite number"
                raise DataError(f"{path}:{line}: {c} {row[c]!r} is not {what}; leave it empty when unknown")


def _is_number(text: str, *, unit: bool) -> bool:
    try:
        v = float(text)
    except ValueError:
        return False
    return math.isfinite(v) and (not unit or 0.0 <= v <= 1.0)


# ---- a new labelling over an older file -----------------------------------------------------------
def keep_decisions(new: LabelsFile, previous: LabelsFile) -> dict[str, dict[str, int] | list[str]]:
    """Carry what ``previous`` holds that a new machine labelling must not lose into ``new``, in place: for
    every task a person reviewed, the person's class and review flag (the machine's value and confidence are
    the new ones); every task of ``previous`` that ``new`` does not label, whole (its columns as they were);
    the notes of those tasks; the columns a person added. ``new`` is then written over ``previous`` (its
    sha256 taken).

    Returns:
        ``{"reviewed": {task: rows kept}, "tasks": [tasks carried unchanged]}``.
    """
    carried = [t for t in previous.tasks if t not in new.tasks]
    kept = {t: 0 for t in new.tasks if t in previous.tasks}
    own = [c for c in previous.own_columns if c not in columns(new.tasks + carried)]
    empty = ({c: "" for t in carried for c in task_columns(t)} | {f"{t}_reviewed": "0" for t in carried}
             | {c: "" for c in own})
    for row in new.rows:
        i = previous.index.get(row["key"])
        old = previous.rows[i] if i is not None else None
        row.update(empty)
        if old is None:
            continue
        for t in kept:
            if old[f"{t}_reviewed"] == "1":
                row[t], row[f"{t}_reviewed"] = old[t], "1"
                kept[t] += 1
        for t in carried:
            row.update({c: old[c] for c in task_columns(t)})
        row.update({c: old[c] for c in own})
        if carried and old.get("note"):
            parts = [p for p in row["note"].split("; ") if p]
            parts += [p for p in old["note"].split("; ") if p and p not in parts
                      and not any(p.startswith(f"{t}:") for t in new.tasks)]
            row["note"] = "; ".join(parts)
    new.tasks = new.tasks + carried
    new.own_columns = own
    new.sha256 = previous.sha256
    return {"reviewed": kept, "tasks": carried}


# ---- the store view -------------------------------------------------------------------------------
def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def with_labels_file(store: Store, path: str | Path, *, tasks: Sequence[str] | None = None,
                     reviewed_only: bool = False) -> Store:
    """``store`` with the tasks of the labels file at ``path`` as categorical label columns (classes
    :data:`DIRECTIONS`); images without a class in the file (no row, an empty class, or, with
    ``reviewed_only``, not reviewed by a person) get -1, unknown, which splits, losses and metrics leave out.

    Raises:
        DataError: the file is malformed or its keys are not the store's (:meth:`LabelsFile.read`); a task is
            already a label of the store; a task has no class for any image (without ``reviewed_only``).
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
    empty = [t for j, t in enumerate(names) if not (values[:, j] >= 0).any()]
    if empty and not reviewed_only:
        raise DataError(f"{path}: no image of {store.path} has a class of {', '.join(empty)} in it ({len(labels.rows)} "
                        "rows, every class empty); label them (`facelab label auto`, `facelab label review`) or "
                        "train on another task")
    specs = tuple(LabelSpec(t, LabelKind.CATEGORICAL, LABEL_TASKS[t].classes) for t in names)
    return store.with_overlay(LabelOverlay(source=str(Path(path).resolve()), sha256=labels.sha256 or "",
                                           specs=specs, values=values, reviewed_only=reviewed_only))


def open_store(path: str | Path, labels_file: str | Path | None = None, *, tasks: Sequence[str] | None = None,
               reviewed_only: bool = False) -> Store:
    """:meth:`Store.open`, with the labels file's tasks laid over it when one is given."""
    store = Store.open(path)
    return store if labels_file is None else with_labels_file(store, labels_file, tasks=tasks,
                                                              reviewed_only=reviewed_only)
