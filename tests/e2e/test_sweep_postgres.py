"""A sweep on a real PostgreSQL server (started by the test on a free port): two local workers, then a worker
that joins the study the way one on another machine would (storage URL and study name only, its own folder)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from facelab.sweeps import open_sweep, raise_n_trials
from tests.e2e.conftest import cli, cli_json, write_sweep_spec
from tests.fixtures.postgres import postgres_server

DONE = ("COMPLETE", "PRUNED")


@pytest.fixture(scope="module")
def postgres_url():
    with postgres_server() as url:
        yield url


def test_workers_on_postgresql_share_one_study_and_another_machine_joins(postgres_url: str, store: Path,
                                                                         tmp_path: Path) -> None:
    spec = write_sweep_spec(tmp_path / "spec.yaml", store, n_trials=3, storage=postgres_url, study_name="pg-lr")
    result = cli_json("sweep", spec, "--workers", 2, "--out", tmp_path / "runs", "--name", "pg")
    sweep_dir = Path(result["run_dir"])
    assert [w["returncode"] for w in result["launch"]["workers"]] == [0, 0]
    assert result["storage"] == postgres_url and result["study_name"] == "pg-lr"
    assert len([t for t in result["trials"] if t["state"] in DONE]) == 3
    assert not (sweep_dir / "study.db").exists()  # the study lives in the server, not in the folder

    # a worker elsewhere: the URL and the study name are all it needs; its trial folders go where it says
    raise_n_trials(open_sweep(sweep_dir), 4)
    elsewhere = tmp_path / "other-machine"
    cli("sweep", "worker", "--storage", postgres_url, "--study", "pg-lr", "--dir", elsewhere, "--worker-index", 5)
    done = [t for t in optuna.load_study(study_name="pg-lr", storage=postgres_url).trials if t.state.name in DONE]
    assert len(done) == 4
    folders = [Path(t.user_attrs["run_dir"]) for t in done]
    joined = [f for f in folders if f.parent == elsewhere.resolve()]
    assert len(joined) == 1 and (joined[0] / "summary.json").is_file() and (joined[0] / "trial.json").is_file()
