"""Workers stop with the ``facelab sweep`` that started them, however it ends (SIGTERM, SIGINT, SIGKILL): their
trials end FAILED (interrupted) with a note saying so, and the sweep is resumed from there."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest

import facelab
from tests.e2e.conftest import TINY_SWEEP, cli_json, write_sweep_spec

WAIT_S = 300.0  # generous bounds on waiting for processes on a busy machine (not speed assertions)


def _wait(ready: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not ready():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.2)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, which nobody has reaped yet, has ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _trial(url: str, study: str) -> optuna.trial.FrozenTrial | None:
    try:
        trials = optuna.load_study(study_name=study, storage=url).trials
    except Exception:  # noqa: BLE001 (the launcher is still making the study)
        return None
    return trials[0] if trials else None


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL], ids=lambda s: s.name)
def test_workers_stop_with_their_launcher(sig: signal.Signals, store: Path, tmp_path: Path) -> None:
    spec = write_sweep_spec(tmp_path / "spec.yaml", store, n_trials=1, pruner={"name": "none"},
                            base={**TINY_SWEEP["base"], "trainer": {"epochs": 1, "progress": False}},
                            space={"trainer.epochs": [1000, 999]})  # trials that run until they are stopped
    src = str(Path(facelab.__file__).resolve().parents[1])
    command = [sys.executable, "-m", "facelab.cli", "sweep", str(spec), "--out", str(tmp_path / "runs"), "--name", "l",
               "--workers", "1"]
    launcher = subprocess.Popen(command, env={**os.environ, "PYTHONPATH": src}, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    sweep_dir = tmp_path / "runs" / "sweep-l"
    url, study = f"sqlite:///{sweep_dir / 'study.db'}", "sweep-l"
    try:
        _wait(lambda: (t := _trial(url, study)) is not None and bool(t.intermediate_values), "an epoch of trial 0")
        worker = _trial(url, study).user_attrs["pid"]
        os.kill(launcher.pid, sig)
        launcher.wait(WAIT_S)
        _wait(lambda: not _alive(worker), f"the worker (pid {worker}) to stop after its launcher")
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    trial = _trial(url, study)
    assert trial.state.name == "FAIL" and trial.user_attrs["failure"] == "interrupted"
    why = "the facelab sweep that started this worker ended" if sig == signal.SIGKILL else "SIGTERM"
    assert trial.user_attrs["note"] == f"stopped: {why}"

    if sig != signal.SIGKILL:
        return
    # resumable: its place is taken by another trial (here given a 2 s budget, knowingly, to end soon)
    config = sweep_dir / "config.yaml"
    config.write_text(config.read_text().replace("timeout: null", "timeout: 2"))
    result = cli_json("sweep", "--resume", sweep_dir, "--accept-changes")
    assert result["states"] == {"FAIL": 1, "COMPLETE": 1}
    assert result["trials"][0]["note"] == f"stopped: {why}"
