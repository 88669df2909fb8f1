"""The ``<out>.partial/`` folder of a store build: its parameters, working arrays, journal and lock.

build.json holds the build parameters (a resumed build must match them); decoded.npy / landmarks.npy are
the working arrays, written in place by the workers; progress.jsonl is the journal of finished chunks,
appended only after their pixels were fsynced, so a kill loses at most ``CHECKPOINT_SECONDS`` of work.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from facelab.data.store import MANIFEST
from facelab.errors import StoreError
from facelab.utils.io import atomic_write_json

BUILD_FILE = "build.json"
PROGRESS_FILE = "progress.jsonl"
DECODED_FILE = "decoded.npy"
LANDMARKS_FILE = "landmarks.npy"
CHECKPOINT_SECONDS = 2.0  # fsync the pixels and append finished chunks to progress.jsonl this often
LOCK_ATTEMPTS = 3  # tries to lock a .partial that other builds keep renaming into place


def differences(wanted: dict[str, Any], found: dict[str, Any]) -> list[str]:
    def short(v: Any) -> str:
        r = repr(v)
        return r if len(r) <= 60 else r[:57] + "..."

    return [f"{k}: {short(found.get(k))} there, {short(v)} asked" for k, v in wanted.items() if found.get(k) != v]



class Journal:
    """progress.jsonl: finished chunks, appended after the pixels they name were fsynced."""

    def __init__(self, partial: Path, data_files: list[Path]) -> None:
        self.path = partial / PROGRESS_FILE
        self.data_files = data_files
        self.pending: list[str] = []
        self.last = time.monotonic()

    def read(self, n: int) -> tuple[np.ndarray, dict[int, str]]:
        """(n,) bool done mask and {position: reason} of failed decodes, from the complete lines."""
        done, failed = np.zeros(n, dtype=bool), {}
        if not self.path.exists():
            return done, failed
        data = self.path.read_bytes()
        if not data.endswith(b"\n"):  # a line torn by a kill: drop it (that chunk is decoded again)
            data = data[:data.rfind(b"\n") + 1]
            os.truncate(self.path, len(data))
        for line in data.decode("utf-8", errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if not 0 <= entry["start"] <= entry["stop"] <= n:
                continue
            done[entry["start"]:entry["stop"]] = True
            failed.update({int(i): str(r) for i, r in entry["failed"]})
        return done, failed

    def add(self, start: int, stop: int, failed: list[tuple[int, str]]) -> None:
        self.pending.append(json.dumps({"start": start, "stop": stop, "failed": failed}) + "\n")
        if time.monotonic() - self.last >= CHECKPOINT_SECONDS:
            self.flush()

    def flush(self) -> None:
        """fsync the pixel files (all processes' writes), then append and fsync the finished chunks."""
        self.last = time.monotonic()
        if not self.pending:
            return
        for path in self.data_files:
            if path.exists():  # decoded.npy is gone once compacted (nothing is pending then)
                fsync_path(path)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write("".join(self.pending))
            f.flush()
            os.fsync(f.fileno())
        self.pending.clear()


def fsync_path(path: Path, *, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY if directory else os.O_RDWR)
    try:
        os.fsync(fd)
    except OSError:
        if not directory:  # some platforms/filesystems cannot fsync a directory; files must succeed
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def locked(partial: Path) -> Iterator[None]:
    """Create ``partial`` if needed and hold an exclusive lock on it, so two builds never write the same one.

    A build that finishes renames its ``.partial`` to the store. A lock won on a folder that was renamed
    (or removed) meanwhile protects nothing, so it is dropped and taken again on the folder now at ``partial``.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no locking
        partial.mkdir(parents=True, exist_ok=True)
        yield
        return
    for _ in range(LOCK_ATTEMPTS):
        partial.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(partial, os.O_RDONLY)
        except FileNotFoundError:  # renamed between mkdir and open
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise StoreError(f"{partial} is being written by another `facelab data prepare`; wait for it "
                             "to finish (or stop it) and re-run") from None
        if _same_folder(fd, partial):
            try:
                yield
            finally:
                os.close(fd)
            return
        os.close(fd)
    raise StoreError(f"{partial} kept being renamed or removed while this build tried to lock it "
                     f"({LOCK_ATTEMPTS} attempts); is another `facelab data prepare` running into the same --out?")


def _same_folder(fd: int, path: Path) -> bool:
    """Whether the open folder ``fd`` is still the one at ``path``."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def clear_folder(folder: Path) -> None:
    for child in folder.iterdir():
        shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()


def open_partial(partial: Path, params: dict[str, Any], notes: list[str]) -> str:
    """Prepare ``partial`` for ``params``; return "fresh", "resume" or "finished" (manifest written)."""
    bpath = partial / BUILD_FILE
    if not bpath.is_file():
        if any(partial.iterdir()):
            raise StoreError(f"{partial} exists, is not empty and was not made by facelab ({BUILD_FILE} "
                             "missing); move it away or choose another --out")
        atomic_write_json(bpath, params)
        return "fresh"
    try:
        old = json.loads(bpath.read_text())
    except ValueError:
        old = {}
    diffs = differences(params, old)
    if not diffs:
        return "finished" if (partial / MANIFEST).is_file() else "resume"
    notes.append(f"discarded the interrupted build in {partial} (it was made with other parameters: "
                 f"{'; '.join(diffs)}) and started over")
    clear_folder(partial)
    atomic_write_json(bpath, params)
    return "fresh"


def allocate(partial: Path, n: int, size: int, with_landmarks: bool) -> None:
    """Create the working arrays (sparse files: nothing is written until the workers fill rows)."""
    np.lib.format.open_memmap(partial / DECODED_FILE, mode="w+", dtype=np.uint8, shape=(n, size, size, 3))
    if with_landmarks:
        np.lib.format.open_memmap(partial / LANDMARKS_FILE, mode="w+", dtype=np.float32, shape=(n, 10))


def pending_spans(done: np.ndarray, chunk_size: int) -> list[tuple[int, int]]:
    """Split the not-done positions into (start, stop) chunks of at most ``chunk_size``."""
    todo = np.flatnonzero(~done)
    if todo.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(todo) != 1) + 1
    spans = []
    for run in np.split(todo, breaks):
        lo, hi = int(run[0]), int(run[-1]) + 1
        spans.extend((s, min(s + chunk_size, hi)) for s in range(lo, hi, chunk_size))
    return spans


def arrays_ok(partial: Path, n: int, size: int, with_landmarks: bool) -> bool:
    """Whether the working arrays of a resumed build exist with the expected shapes."""
    try:
        ok = np.load(partial / DECODED_FILE, mmap_mode="r").shape == (n, size, size, 3)
        if with_landmarks:
            ok = ok and np.load(partial / LANDMARKS_FILE, mmap_mode="r").shape == (n, 10)
        return ok
    except (OSError, ValueError):
        return False
