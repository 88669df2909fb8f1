"""A worker killed mid-trial (SIGKILL: no handler runs) stops sending heartbeats; another worker marks its trial
FAILED through Optuna's own stale-trial check and runs one in its place, so the study still finishes."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

import optuna

from facelab.sweeps import create_sweep, load_spec, run_worker, sweep_report
from tests.e2e.conftest import write_sweep_spec

WAIT_S = 120.0  # a generous bound on waiting for the victim to start training (not a speed assertion)


def _victim(url: str, study: str, sweep_dir: str) -> None:
    try:
        run_worker(url, study, sweep_dir=sweep_dir, threads=1)
    finally:
        os._exit(0)  # never run the parent's (pytest's) exit handlers in this forked child


def _first_epoch_reported(study: optuna.Study) -> bool:
    trials = study.get_trials(deepcopy=False)
    return bool(trials) and trials[0].state.name == "RUNNING" and bool(trials[0].intermediate_values)


def test_a_killed_workers_trial_ends_failed_and_the_study_finishes(store: Path, tmp_path: Path) -> None:
    # trial 0 trains 1000 epochs (it is killed after its first); the next three train 1 epoch each, at learning
    # rates of their own
    space = {"trainer.epochs": [1000, 1], "trainer.optim.lr": {"type": "float", "low": 1.0e-3, "high": 1.0e-2}}
    spec_file = write_sweep_spec(tmp_path / "spec.yaml", store, n_trials=3, pruner={"name": "none"}, grace_period=3,
                                 space=space, enqueue=[{"trainer.epochs": 1000}, *[{"trainer.epochs": 1}] * 3])
    sweep = create_sweep(load_spec(spec_file), out=tmp_path / "runs", name="kill")
    victim = multiprocessing.get_context("fork").Process(target=_victim,
                                                         args=(sweep.url, sweep.study_name, str(sweep.dir)))
    victim.start()
    study = optuna.load_study(study_name=sweep.study_name, storage=sweep.url)
    deadline = time.monotonic() + WAIT_S
    while not _first_epoch_reported(study) and victim.is_alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _first_epoch_reported(study), "the victim worker never reported an epoch of trial 0"
    os.kill(victim.pid, signal.SIGKILL)
    victim.join()
    assert victim.exitcode == -signal.SIGKILL

    # the survivor runs trials 1 and 2, waits while trial 0 still looks alive, then fails it and runs trial 3
    report = run_worker(sweep.url, sweep.study_name, threads=1)
    assert report.trials == [1, 2, 3]
    states = {t.number: t.state.name for t in study.get_trials()}
    assert states == {0: "FAIL", 1: "COMPLETE", 2: "COMPLETE", 3: "COMPLETE"}
    killed = study.trials[0]
    # it says why: its worker died (the note names that worker), and its point may be drawn again
    assert killed.user_attrs["failure"] == "interrupted"
    assert f":{victim.pid} sent no heartbeat for over 3 s" in killed.user_attrs["note"]
    figures = sweep_report(sweep.dir)
    assert figures["states"] == {"FAIL": 1, "COMPLETE": 3} and figures["trials"][0]["epochs"] is None
    assert figures["trials"][0]["note"] == killed.user_attrs["note"]
    assert killed.user_attrs["note"] in (sweep.dir / "report.html").read_text()
