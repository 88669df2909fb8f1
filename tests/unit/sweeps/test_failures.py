"""Every FAILED trial says why (user attributes ``note`` and ``failure``), and only failures of training count
towards ``max_failed`` (the training command is a stub: no store, no model)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna
import pytest

from facelab.sweeps import worker as worker_module
from facelab.sweeps.commands import COMMANDS
from facelab.sweeps.stopping import Stopped
from facelab.sweeps.storage import open_storage
from facelab.sweeps.study import count_trials, create_study
from facelab.sweeps.worker import SweepError, run_worker
from tests.unit.sweeps.test_distinct import make_spec

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _with_training(monkeypatch: pytest.MonkeyPatch, train: Any) -> None:
    stub = replace(COMMANDS.get("train"), train=train)
    monkeypatch.setattr(worker_module, "COMMANDS", type("Commands", (), {"get": staticmethod(lambda name: stub)}))


def _study(tmp_path: Path, *, n_trials: int, max_failed: int | None = None) -> tuple[str, optuna.Study]:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    spec = make_spec("random", space={"trainer.optim.lr": {"type": "float", "low": 1e-3, "high": 1e-2}},
                     n_trials=n_trials).model_copy(update={"max_failed": max_failed})
    return url, create_study(open_storage(url), spec, tmp_path)


def test_a_stopped_worker_notes_its_trial_interrupted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def stopped(cfg: Any, **kw: Any) -> dict:
        raise Stopped("the facelab sweep that started this worker ended")

    _with_training(monkeypatch, stopped)
    url, study = _study(tmp_path, n_trials=2)
    with pytest.raises(Stopped):
        run_worker(url, "s")
    (trial,) = study.trials
    assert trial.state.name == "FAIL" and trial.user_attrs["failure"] == "interrupted"
    assert trial.user_attrs["note"] == "stopped: the facelab sweep that started this worker ended"
    assert count_trials(study).failed == 0 and count_trials(study).interrupted == 1


def test_failures_of_training_are_noted_and_counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(cfg: Any, **kw: Any) -> dict:
        raise RuntimeError("CUDA out of memory (a stand-in)")

    _with_training(monkeypatch, broken)
    url, study = _study(tmp_path, n_trials=4, max_failed=2)
    with pytest.raises(SweepError, match="2 trials failed \\(max_failed 2\\)"):
        run_worker(url, "s")
    assert [t.state.name for t in study.trials] == ["FAIL", "FAIL"]
    assert all(t.user_attrs["failure"] == "error" for t in study.trials)
    assert study.trials[0].user_attrs["note"] == "RuntimeError: CUDA out of memory (a stand-in)"


def test_a_note_never_holds_a_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def quoting(cfg: Any, **kw: Any) -> dict:
        raise ValueError("could not open postgresql://ann:hunter2@db/sweeps")

    _with_training(monkeypatch, quoting)
    url, study = _study(tmp_path, n_trials=1, max_failed=1)
    with pytest.raises(SweepError):
        run_worker(url, "s")
    assert study.trials[0].user_attrs["note"] == "ValueError: could not open postgresql://ann:***@db/sweeps"
