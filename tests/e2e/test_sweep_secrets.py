"""A password in the study URL is used to connect and nowhere else: not in any file of the sweep folder (env.json
of the sweep and of every trial, config.yaml, trial.json, summary.json, report.html, the workers' logs), not in
what facelab prints (progress, the dashboard command, --dry-run, errors), not on a worker's command line.

The test server trusts every local connection, so it accepts the URL whatever password it carries."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import facelab
from facelab.sweeps import open_sweep, raise_n_trials
from tests.e2e.conftest import TINY_SWEEP, write_sweep_spec
from tests.fixtures.postgres import postgres_server

SECRET = "Sup3r-S3cret"


@pytest.fixture(scope="module")
def postgres_url():
    with postgres_server() as url:
        yield url


def _facelab(*args: object, watch: list[str] | None = None) -> subprocess.CompletedProcess:
    """``facelab ARGS`` as a person runs it (its own process, its own command line); ``watch`` collects the command
    lines of the other processes that run meanwhile and name a sweep worker."""
    src = str(Path(facelab.__file__).resolve().parents[1])
    proc = subprocess.Popen([sys.executable, "-m", "facelab.cli", *map(str, args)], text=True,
                            env={**os.environ, "PYTHONPATH": src}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    done = threading.Event()

    def scan() -> None:
        while not done.wait(0.2):
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    argv = cmdline.read_bytes().decode(errors="replace").replace("\0", " ")
                except OSError:
                    continue
                if cmdline.parent.name != str(proc.pid) and "sweep worker" in argv:
                    watch.append(argv)

    scanner = threading.Thread(target=scan, daemon=True)
    if watch is not None:
        scanner.start()
    out, err = proc.communicate(timeout=900)
    done.set()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_a_password_in_the_storage_url_is_never_written_or_printed(postgres_url: str, store: Path,
                                                                   tmp_path: Path) -> None:
    url = postgres_url.replace("facelab@", f"facelab:{SECRET}@")
    spec = write_sweep_spec(tmp_path / "spec.yaml", store, n_trials=2, study_name="pw", pruner={"name": "none"},
                            base={**TINY_SWEEP["base"], "trainer": {"epochs": 1, "progress": False}})
    runs = tmp_path / "runs"
    printed: list[str] = []

    dry = _facelab("sweep", spec, "--storage", url, "--dry-run")
    assert dry.returncode == 0 and "facelab:***@" in dry.stdout
    workers: list[str] = []
    run = _facelab("sweep", spec, "--storage", url, "--workers", 2, "--out", runs, "--name", "pw", watch=workers)
    assert run.returncode == 0, run.stderr
    assert "dashboard: optuna-dashboard postgresql+psycopg://facelab@127.0.0.1" in run.stderr
    assert any("sweep worker --study pw" in w for w in workers), workers  # the scan saw the workers run
    assert not [w for w in workers if SECRET in w]  # the URL reaches them through the environment
    # a worker joined by hand, the URL on its command line (its trials' env.json record that command line)
    sweep_dir = runs / "sweep-pw"
    raise_n_trials(open_sweep(sweep_dir, storage=url), 3)
    joined = _facelab("sweep", "worker", "--storage", url, "--study", "pw", "--dir", sweep_dir)
    assert joined.returncode == 0, joined.stderr
    report = _facelab("sweep", "report", sweep_dir, "--storage", url)
    assert report.returncode == 0, report.stderr
    assert "storage postgresql+psycopg://facelab:***@" in (sweep_dir / "report.html").read_text()
    again = _facelab("sweep", spec, "--storage", url, "--out", runs, "--name", "again")  # a user error quoting it
    assert again.returncode == 2
    assert "study 'pw' already exists in postgresql+psycopg://facelab:***@" in " ".join(again.stderr.split())
    printed += [dry.stdout, dry.stderr, run.stdout, run.stderr, joined.stdout, joined.stderr, report.stdout,
                report.stderr, again.stdout, again.stderr]

    assert not [i for i, text in enumerate(printed) if SECRET in "".join(text.split())]  # (lines wrap anywhere)
    files = [p for p in runs.rglob("*") if p.is_file()]
    trial_envs = [p for p in files if p.name == "env.json" and p.parent.name.startswith("trial-")]
    assert len(trial_envs) == 3 and (sweep_dir / "env.json") in files and (sweep_dir / "report.html") in files
    assert any(p.parent.name == "workers" for p in files)
    assert not [p for p in files if SECRET.encode() in p.read_bytes()]
