"""Continuing a sweep: ``--resume`` and a second worker never spend a trial on a point the study holds; a spec or a
store changed since the sweep started is refused, naming the change (or taken knowingly with --accept-changes);
one launcher per sweep folder."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from facelab.errors import ConfigError, FacelabError, StoreError
from facelab.sweeps import create_sweep, load_spec, open_sweep, raise_n_trials, resume_sweep, run_worker
from tests.e2e.conftest import cli, cli_error, cli_json, write_sweep_spec

DONE = ("COMPLETE", "PRUNED")
ONE_EPOCH = {"trainer": {"epochs": 1, "progress": False}}


def _points(study_name: str, url: str) -> list[str]:
    trials = optuna.load_study(study_name=study_name, storage=url).trials
    assert all(t.state.name in DONE for t in trials), [(t.number, t.state.name, t.user_attrs) for t in trials]
    return [json.dumps(t.params, sort_keys=True) for t in trials]


def _tiny(store: Path, tmp_path: Path, **changes) -> Path:
    from tests.e2e.conftest import TINY_SWEEP

    base = {**TINY_SWEEP["base"], **ONE_EPOCH}
    return write_sweep_spec(tmp_path / "spec.yaml", store, base=base, pruner={"name": "none"}, **changes)


def test_resume_and_a_second_worker_never_repeat_a_trial(store: Path, tmp_path: Path) -> None:
    # the random sampler: a resumed worker seeded as the first one was drew trials 0 and 1 again as 2 and 3
    spec = _tiny(store, tmp_path, n_trials=2)
    sweep_dir = Path(cli_json("sweep", spec, "--out", tmp_path / "runs", "--name", "r")["run_dir"])
    cli_json("sweep", "--resume", sweep_dir, "--n-trials", 4)
    sweep = raise_n_trials(open_sweep(sweep_dir), 5)
    cli("sweep", "worker", "--storage", sweep.url, "--study", sweep.study_name)  # as docs/sweeps.md shows it
    points = _points(sweep.study_name, sweep.url)
    assert len(points) == 5 and len(set(points)) == 5, points


@pytest.mark.parametrize("sampler", [{"name": "tpe", "seed": 0, "n_startup_trials": 2}, {"name": "grid", "seed": 0}])
def test_workers_started_again_never_repeat_a_trial(store: Path, tmp_path: Path, sampler: dict) -> None:
    # TPE: its first trials are random draws, seeded alike in every worker; the grid: 3 x 2 points
    space = {"trainer.optim.lr": [1.0e-3, 3.0e-3, 1.0e-2], "augment": ["flip", "geometric"]}
    sweep = create_sweep(load_spec(_tiny(store, tmp_path, n_trials=2, sampler=sampler, space=space)),
                         out=tmp_path / "runs", name="t")
    run_worker(sweep.url, sweep.study_name, threads=1)
    for n in (4, 6):  # killed and resumed, or a second worker joining: a worker process that starts afresh
        sweep = raise_n_trials(sweep, n)
        run_worker(sweep.url, sweep.study_name, threads=1)
    points = _points(sweep.study_name, sweep.url)
    assert len(points) == 6 and len(set(points)) == 6, points


def _edit(sweep_dir: Path, old: str, new: str) -> None:
    path = sweep_dir / "config.yaml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_a_spec_changed_before_resume_is_refused_naming_the_change(store: Path, tmp_path: Path) -> None:
    sweep = create_sweep(load_spec(_tiny(store, tmp_path, n_trials=4)), out=tmp_path / "runs", name="c")
    _edit(sweep.dir, "n_trials: 4", "n_trials: 6")
    _edit(sweep.dir, "name: none", "name: median")
    error = cli_error("sweep", "--resume", sweep.dir)
    assert isinstance(error, ConfigError) and "differs from the spec its study records" in str(error)
    assert "n_trials: 4 there, 6 here" in str(error) and "pruner.name: none there, median here" in str(error)
    assert "--accept-changes" in str(error)
    assert open_sweep(sweep.dir).spec.n_trials == 4 and not list(sweep.dir.glob("trial-*"))  # nothing changed

    resumed = resume_sweep(sweep.dir, accept_changes=True)  # knowingly: the study takes the spec as it is now
    assert resumed.spec.n_trials == 6 and resumed.spec.pruner.name == "median"
    assert open_sweep(sweep.dir).spec.n_trials == 6


def test_a_changed_search_space_is_refused_even_knowingly(store: Path, tmp_path: Path) -> None:
    sweep = create_sweep(load_spec(_tiny(store, tmp_path)), out=tmp_path / "runs", name="s")
    _edit(sweep.dir, "high: 0.01", "high: 0.02")
    for flags in ((), ("--accept-changes",)):
        error = cli_error("sweep", "--resume", sweep.dir, *flags)
        assert isinstance(error, ConfigError) and "space.trainer.optim.lr.high: 0.01 there, 0.02 here" in str(error)
        assert "a study cannot take that change" in str(error)


def test_a_store_changed_since_the_sweep_started_is_refused(store: Path, tmp_path: Path) -> None:
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    sweep = create_sweep(load_spec(_tiny(copy, tmp_path, n_trials=1)), out=tmp_path / "runs", name="d")
    manifest = copy / "manifest.json"
    data = json.loads(manifest.read_text())
    data["content_hash"] = "0" * 64  # the store rebuilt from other images, at the same path
    manifest.write_text(json.dumps(data))
    for attempt in (lambda: resume_sweep(sweep.dir), lambda: run_worker(sweep.url, sweep.study_name, threads=1)):
        with pytest.raises(StoreError, match=f"store {copy.resolve()} \\(content hash .* when the study was made, "
                                             "000000000000 here\\) changed since the sweep started"):
            attempt()
    assert not list(sweep.dir.glob("trial-*"))
    resume_sweep(sweep.dir, accept_changes=True)
    run_worker(sweep.url, sweep.study_name, threads=1)  # taken as it is now
    assert len(list(sweep.dir.glob("trial-*"))) == 1


def test_a_second_launcher_on_one_sweep_folder_is_refused(store: Path, tmp_path: Path) -> None:
    sweep = create_sweep(load_spec(_tiny(store, tmp_path, n_trials=1)), out=tmp_path / "runs", name="l")
    holder = subprocess.Popen(  # a facelab sweep that runs this folder's workers
        [sys.executable, "-c", "import sys; from facelab.sweeps import launcher_lock\n"
         f"with launcher_lock({str(sweep.dir)!r}):\n    print('held', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        error = cli_error("sweep", "--resume", sweep.dir, "--n-trials", 3)
        assert isinstance(error, FacelabError)
        assert f"another facelab sweep (pid {holder.pid} on " in str(error) and "facelab sweep worker" in str(error)
        assert open_sweep(sweep.dir).spec.n_trials == 1  # it changed nothing
    finally:
        holder.communicate("")
    assert holder.returncode == 0
