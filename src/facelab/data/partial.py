"""The ``<out>.partial/`` folder of a store build: its parameters, working arrays, journal and lock.

build.json holds the build parameters (a resumed build must match them); decoded.npy / landmarks.npy are
the working arrays, written in place by the workers; progress.jsonl is the journal of finished chunks,
appended only after their pixels were fsynced, so a kill loses at most ``CHECKPOINT_SECONDS`` of work.
"""

from __future__ import annotations

import contextlib
import errno
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
from facelab.utils.io import atomic_write_json, foreign_entries, naming

BUILD_FILE = "build.json"
PROGRESS_FILE = "progress.jsonl"
DECODED_FILE = "decoded.npy"
LANDMARKS_FILE = "landmarks.npy"
#: the files of a build in progress (anything else in a .partial folder is not facelab's)
PARTIAL_FILES = frozenset({BUILD_FILE, PROGRESS_FILE, DECODED_FILE, LANDMARKS_FILE, "images.npy", "images.tmp.npy",
                           "labels.npy", "index.npz", MANIFEST})
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
        try:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write("".join(self.pending))
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise naming(e, self.path) from None
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
    """Prepare ``partial`` for ``params``; return "fresh", "resume" or "finished" (manifest written).

    Raises:
        StoreError: ``partial`` holds files a build did not make (no build.json of a store build, or other
            files beside its working files): facelab neither uses nor deletes them.
    """
    bpath = partial / BUILD_FILE
    if not bpath.is_file():
        if any(partial.iterdir()):
            raise StoreError(f"{partial} exists, is not empty and was not made by facelab ({BUILD_FILE} "
                             f"missing; it holds {', '.join(foreign_entries(partial, ()))}); move it away or "
                             "choose another --out")
        atomic_write_json(bpath, params)
        return "fresh"
    try:
        old = json.loads(bpath.read_text())
    except ValueError:
        old = {}
    _check_ours(partial, old)
    diffs = differences(params, old)
    if not diffs:
        return "finished" if (partial / MANIFEST).is_file() else "resume"
    notes.append(f"discarded the interrupted build in {partial} (it was made with other parameters: "
                 f"{'; '.join(diffs)}) and started over")
    clear_folder(partial)
    atomic_write_json(bpath, params)
    return "fresh"


def _is_build_params(params: Any) -> bool:
    return isinstance(params, dict) and isinstance(params.get("format_version"), int) and "source" in params


def made_by_a_build(partial: Path) -> bool:
    """Whether ``partial`` holds nothing facelab did not make: empty, or a build.json of a store build and
    only the build's own files beside it."""
    if not partial.is_dir():
        return False
    if not (partial / BUILD_FILE).is_file():
        return not any(partial.iterdir())
    try:
        params = json.loads((partial / BUILD_FILE).read_text())
    except (OSError, ValueError):
        return False
    return _is_build_params(params) and not foreign_entries(partial, PARTIAL_FILES)


def _check_ours(partial: Path, params: Any) -> None:
    """StoreError unless ``partial`` is an interrupted store build: a build.json facelab wrote (its format
    field and the source it names) and nothing beside the build's own files."""
    if not _is_build_params(params):
        raise StoreError(f"{partial / BUILD_FILE} was not written by a facelab store build; facelab neither "
                         f"uses nor deletes {partial}: move it away or choose another --out")
    foreign = foreign_entries(partial, PARTIAL_FILES)
    if foreign:
        raise StoreError(f"{partial} holds an interrupted store build and files facelab did not make: "
                         f"{', '.join(foreign)}; move them out (then re-run to finish the build) or choose "
                         "another --out")


def allocate(partial: Path, n: int, size: int, with_landmarks: bool) -> None:
    """Create the working arrays (sparse files: nothing is written until the workers fill rows)."""
    np.lib.format.open_memmap(partial / DECODED_FILE, mode="w+", dtype=np.uint8, shape=(n, size, size, 3))
    if with_landmarks:
        np.lib.format.open_memmap(partial / LANDMARKS_FILE, mode="w+", dtype=np.float32, shape=(n, 10))


def reserve(paths: list[Path]) -> None:
    """Reserve the disk blocks of the memory-mapped working arrays before anything writes them.

    A process writing a page of a sparse memory map that the disk has no room for is killed (SIGBUS), not
    told: reserving first turns a full disk into an OSError (ENOSPC, naming the file) before any decoding.
    Where the system cannot reserve, the free space is compared with what the files need.

    Raises:
        OSError: ENOSPC (or EDQUOT) naming the file that does not fit.
    """
    for path in paths:
        fd = os.open(path, os.O_RDWR)
        try:
            size = os.fstat(fd).st_size
            if hasattr(os, "posix_fallocate"):
                try:
                    os.posix_fallocate(fd, 0, size)
                    continue
                except OSError as e:
                    if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                        raise naming(e, path) from None
            need = size - os.fstat(fd).st_blocks * 512
            st = os.statvfs(path)
            if need > st.f_bavail * st.f_frsize:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        finally:
            os.close(fd)


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
