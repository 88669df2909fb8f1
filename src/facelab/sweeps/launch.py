"""Local workers: N processes ``facelab sweep worker`` on one study, watched until they end.

Each worker is a separate process (its own torch threads, its own CPU time, killable on its own) that could as
well run on another machine; its output goes to ``<sweep folder>/workers/worker-<i>.log``. The storage URL
reaches it through the environment, so a password never shows in the process list. The workers stop when the
launcher ends, however it ends (:mod:`facelab.sweeps.stopping`), and one sweep folder has one launcher at a time
(:func:`launcher_lock`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import facelab
from facelab.errors import FacelabError
from facelab.sweeps.stopping import LAUNCHER_FD_ENV, launcher_pipe
from facelab.sweeps.storage import STORAGE_ENV, open_storage

if TYPE_CHECKING:
    import optuna

LOGS = "workers"
LOCK = "launcher.lock"  # in workers/: held by the facelab sweep that runs this folder's workers
STOP_GRACE_S = 30.0  # after SIGTERM (Ctrl-C), how long a worker gets to record its trial as FAILED


@dataclass(frozen=True)
class WorkerExit:
    """How one local worker ended."""

    index: int
    returncode: int
    log: str
    last_line: str  # the last line of its log (its error, when it failed)


@dataclass(frozen=True)
class LaunchResult:
    workers: list[WorkerExit]
    cpu_seconds: float  # CPU time of all worker processes together, start-up included
    wall_seconds: float


def default_threads(workers: int) -> int:
    """Torch threads per worker: the cores shared out (2 cores, 2 workers: 1 each)."""
    return max(1, (os.cpu_count() or 1) // workers)


def worker_argv(study: str, sweep_dir: Path, threads: int) -> list[str]:
    """A worker's command line (what ``ps`` shows): the storage URL is not on it."""
    return [sys.executable, "-m", "facelab.cli", "sweep", "worker", "--study", study, "--dir", str(sweep_dir),
            "--threads", str(threads)]


def _env(storage_url: str, threads: int, watch_fd: int) -> dict[str, str]:
    src = str(Path(facelab.__file__).resolve().parents[1])  # the workers run this very facelab
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, STORAGE_ENV: storage_url, LAUNCHER_FD_ENV: str(watch_fd), "OMP_NUM_THREADS": str(threads),
            "PYTHONPATH": src + (os.pathsep + path if path else "")}


_held_locks: dict[Path, int] = {}  # lock file -> how many times this process holds it


@contextlib.contextmanager
def launcher_lock(sweep_dir: str | Path) -> Iterator[None]:
    """Hold the sweep folder's launcher lock: a second ``facelab sweep`` on the same folder (a second ``--resume``
    while the first runs) is refused instead of starting more workers and writing the same report. The lock
    goes with the process that holds it, however it ends; this process may take it again inside.

    Raises:
        FacelabError: another process holds it, naming that process.
    """
    path = (Path(sweep_dir) / LOGS / LOCK).resolve()
    if path in _held_locks:
        _held_locks[path] += 1
        try:
            yield
        finally:
            _held_locks[path] -= 1
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise FacelabError(f"{path}: cannot write the sweep's launcher lock ({e.strerror}); the sweep folder must be "
                           "writable, with space left") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise FacelabError(f"{Path(sweep_dir)}: another facelab sweep ({holder}) is running this sweep's workers; "
                               "wait for it to end, or add workers to it with facelab sweep worker --study NAME "
                               "(docs/sweeps.md)") from None
        try:  # who holds it, for the message above (the lock itself needs no space)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        except OSError:
            pass
        _held_locks[path] = 1
        try:
            yield
        finally:
            del _held_locks[path]
    finally:
        os.close(fd)  # (releases the lock)


def _last_line(path: Path) -> str:
    """The worker's error line (``error: ...``, as facelab prints user errors), else its log's last line."""
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    errors = [ln for ln in lines if ln.startswith("error:")]
    return (errors or lines or [""])[-1]


def launch_workers(storage_url: str, study: str, sweep_dir: Path, *, workers: int, threads: int | None = None,
                   on_trial: Callable[[optuna.trial.FrozenTrial], None] | None = None,
                   poll_s: float = 1.0) -> LaunchResult:
    """Start ``workers`` worker processes on ``study`` and wait for all of them; ``on_trial`` hears of every trial
    that finishes meanwhile (in any worker, here or elsewhere). Ctrl-C or SIGTERM stops the workers (their trials
    FAILED, interrupted); so does the end of this process, however it ends.
    """
    import optuna

    threads = threads or default_threads(workers)
    logs = Path(sweep_dir) / LOGS
    logs.mkdir(parents=True, exist_ok=True)
    watch, alive = launcher_pipe()  # the workers read `watch`; `alive` closes when this process ends
    env = _env(storage_url, threads, watch)
    cpu0, t0 = _children_cpu(), time.monotonic()
    procs: list[tuple[int, subprocess.Popen, Path]] = []
    try:
        for i in range(workers):
            log = logs / f"worker-{i}.log"
            with open(log, "ab") as f:
                procs.append((i, subprocess.Popen(worker_argv(study, sweep_dir, threads), env=env, stdout=f,
                                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                  pass_fds=(watch,)), log))
        os.close(watch)
        watch = -1
        watched = optuna.load_study(study_name=study, storage=open_storage(storage_url),
                                    sampler=optuna.samplers.RandomSampler())
        seen: set[int] = {t.number for t in watched.get_trials(deepcopy=False) if t.state.is_finished()}
        while any(p.poll() is None for _, p, _ in procs):
            time.sleep(poll_s)
            _report_new(watched, seen, on_trial)
        _report_new(watched, seen, on_trial)
    except BaseException:  # Ctrl-C, SIGTERM (facelab.sweeps.stopping), or an error here: the workers stop too
        _stop(procs)
        raise
    finally:
        for fd in (watch, alive):
            if fd >= 0:
                os.close(fd)
    exits = [WorkerExit(i, p.returncode, str(log), _last_line(log)) for i, p, log in procs]
    return LaunchResult(exits, round(_children_cpu() - cpu0, 3), round(time.monotonic() - t0, 3))


def _report_new(study: optuna.Study, seen: set[int], on_trial: Callable | None) -> None:
    for t in study.get_trials(deepcopy=False):
        if t.state.is_finished() and t.number not in seen:
            seen.add(t.number)
            if on_trial is not None:
                on_trial(t)


def _stop(procs: list[tuple[int, subprocess.Popen, Path]]) -> None:
    for _, p, _ in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for _, p, _ in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime
