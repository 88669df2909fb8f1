"""Local workers: N processes ``facelab sweep worker`` on one study, watched until they end.

Each worker is a separate process (its own torch threads, its own CPU time, killable on its own) that could as
well run on another machine; its output goes to ``<sweep folder>/workers/worker-<i>.log``. The storage URL
reaches it through the environment, so a password never shows in the process list.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import facelab
from facelab.sweeps.storage import STORAGE_ENV, open_storage

if TYPE_CHECKING:
    import optuna

LOGS = "workers"
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


def worker_argv(study: str, sweep_dir: Path, index: int, threads: int) -> list[str]:
    return [sys.executable, "-m", "facelab.cli", "sweep", "worker", "--study", study, "--dir", str(sweep_dir),
            "--worker-index", str(index), "--threads", str(threads)]


def _env(storage_url: str, threads: int) -> dict[str, str]:
    src = str(Path(facelab.__file__).resolve().parents[1])  # the workers run this very facelab
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, STORAGE_ENV: storage_url, "OMP_NUM_THREADS": str(threads),
            "PYTHONPATH": src + (os.pathsep + path if path else "")}


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
    that finishes meanwhile (in any worker, here or elsewhere). Ctrl-C stops the workers (their trials FAILED).
    """
    import optuna

    threads = threads or default_threads(workers)
    logs = Path(sweep_dir) / LOGS
    logs.mkdir(parents=True, exist_ok=True)
    env = _env(storage_url, threads)
    cpu0, t0 = _children_cpu(), time.monotonic()
    procs: list[tuple[int, subprocess.Popen, Path]] = []
    for i in range(workers):
        log = logs / f"worker-{i}.log"
        with open(log, "ab") as f:
            procs.append((i, subprocess.Popen(worker_argv(study, sweep_dir, i, threads), env=env, stdout=f,
                                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL), log))
    watched = optuna.load_study(study_name=study, storage=open_storage(storage_url),
                                sampler=optuna.samplers.RandomSampler())
    seen: set[int] = {t.number for t in watched.get_trials(deepcopy=False) if t.state.is_finished()}
    try:
        while any(p.poll() is None for _, p, _ in procs):
            time.sleep(poll_s)
            _report_new(watched, seen, on_trial)
    except KeyboardInterrupt:
        _stop(procs)
        raise
    _report_new(watched, seen, on_trial)
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
