"""``facelab train / train-gen --nproc N`` and the commands as torchrun runs them: one run folder made by rank 0
alone, one JSON document, clear refusals before any process starts.

The processes of a launch are forked here with torchrun's variables set (RANK, WORLD_SIZE, ..., MASTER_PORT: a
free port), each running the command in-process; the real torchrun launch (``python -m facelab ... --nproc 2``:
three more interpreters importing torch, ~25 s on 2 cores) is a slow test.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from facelab.cli import app
from facelab.runs.splits import PRETRAIN_SPLITS
from facelab.train import launch
from facelab.train.classifier import ClassifierConfig
from tests.e2e.conftest import TINY_CLASSIFIER, TINY_GEN, TINY_SSL, cli, cli_error
from tests.helpers import run_processes

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_worker(rank: int, nprocs: int, port: int, root: Path, args: list[str]) -> None:
    """One process as torchrun starts it: its variables set, in its own folder ``root/rank{rank}``, running
    ``facelab ARGS``; what it printed and how it ended go to ``root/rank{rank}.json``."""
    os.chdir(root / f"rank{rank}")
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(nprocs), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(nprocs),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    result = CliRunner().invoke(app, args)
    (root / f"rank{rank}.json").write_text(json.dumps({
        "exit": result.exit_code, "stdout": result.stdout, "error": None if result.exception is None else str(result.exception)}))


def as_torchrun(root: Path, *args: object) -> list[dict]:
    """Run ``facelab ARGS`` in 2 processes, each in its own empty folder under ``root``; their records."""
    for r in (0, 1):
        (root / f"rank{r}").mkdir(parents=True, exist_ok=True)
    run_processes(torchrun_worker, 2, free_port(), root, [str(a) for a in args])
    return [json.loads((root / f"rank{r}.json").read_text()) for r in (0, 1)]


@pytest.mark.parametrize("command, tiny", [("train", TINY_CLASSIFIER), ("train-gen", TINY_GEN),
                                           ("pretrain", TINY_SSL)])
def test_rank_0_alone_makes_the_run_folder_and_prints(store, tmp_path, command, tiny):
    ranks = as_torchrun(tmp_path, command, store.resolve(), "--epochs", 1, *tiny, "--batch-size", 16,
                        "--out", "runs", "--name", "x", "--json")
    assert [r["exit"] for r in ranks] == [0, 0], ranks
    summary = json.loads(ranks[0]["stdout"])  # one JSON document, rank 0's
    run = tmp_path / "rank0" / summary["run_dir"]
    assert summary["processes"] == 2 and summary["steps"] == summary["train_rows"] // 32
    splits = PRETRAIN_SPLITS if command == "pretrain" else "splits.json"
    assert {"config.yaml", splits, "metrics.jsonl", "summary.json", "report.html"} <= {p.name for p in run.iterdir()}
    assert ranks[1]["stdout"] == "" and not list((tmp_path / "rank1").iterdir())  # rank 1 wrote nothing anywhere


def test_a_run_folder_rank_0_cannot_make_stops_every_process(store, tmp_path):
    taken = tmp_path / "rank0" / "runs" / "train-taken"
    taken.mkdir(parents=True)
    (taken / "metrics.jsonl").write_text('{"epoch": 1}\n')  # a run that trained: not to be reused
    ranks = as_torchrun(tmp_path, "train", store.resolve(), *TINY_CLASSIFIER, "--out", "runs", "--name", "taken")
    assert ranks[0]["exit"] != 0 and "train-taken" in ranks[0]["error"]
    assert ranks[1]["exit"] != 0 and "rank 0 could not make the run folder" in ranks[1]["error"]


# ---- --nproc: torchrun started once, with the resolved config ----------------------------------------
def test_nproc_starts_torchrun_with_the_resolved_config(store, tmp_path, monkeypatch):
    seen = {}

    def fake_run(cmd, **kw):
        path = cmd[cmd.index("--config") + 1]
        seen.update(cmd=cmd, config=yaml.safe_load(Path(path).read_text()), path=path)
        return subprocess.CompletedProcess(cmd, 3, stdout='{"from": "rank 0"}\n')

    monkeypatch.setattr(launch.subprocess, "run", fake_run)
    result = cli("train", store, *TINY_CLASSIFIER, "--sync-bn", "--nproc", 2, "--out", tmp_path, "--name", "n",
                 "--json", ok=False)
    assert result.exit_code == 3 and result.stdout == '{"from": "rank 0"}\n'  # torchrun's status and rank 0's JSON
    assert seen["cmd"][:8] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                               "-m", "facelab", "train"]
    assert seen["cmd"][-5:] == ["--out", str(tmp_path), "--name", "n", "--json"]
    cfg = ClassifierConfig.model_validate(seen["config"])
    assert cfg.batch_size == 32 and cfg.trainer.sync_batchnorm and cfg.store == str(store)
    assert not Path(seen["path"]).exists() and not list(tmp_path.iterdir())  # nothing left, no folder made here


def test_resume_with_nproc_starts_torchrun_on_the_run(tmp_path, clf_run, monkeypatch):
    seen = []
    monkeypatch.setattr(launch.subprocess, "run",
                        lambda cmd, **kw: seen.append(cmd) or subprocess.CompletedProcess(cmd, 0, stdout=""))
    cli("train", "--resume", clf_run[0], "--nproc", 2, ok=False)
    assert seen[0][-3:] == ["train", "--resume", str(clf_run[0])]


@pytest.mark.parametrize("args, match", [
    (("--nproc", 0), "--nproc 0: give the number of training processes"),
    (("--nproc", -1), "--nproc -1"),
    (("--nproc", 2, "--device", "cuda:0"), "each process takes its own GPU|no CUDA GPU"),
])
def test_nonsense_nproc_is_refused_before_anything_starts(store, tmp_path, monkeypatch, args, match):
    monkeypatch.setattr(launch.subprocess, "run", lambda *a, **k: pytest.fail("torchrun was started"))
    for command, tiny in (("train", TINY_CLASSIFIER), ("train-gen", TINY_GEN), ("pretrain", TINY_SSL)):
        err = cli_error(command, store, *tiny, *args, "--out", tmp_path)
        assert re.search(match, str(err)), str(err)
    assert not list(tmp_path.iterdir())


def test_more_processes_than_gpus_is_refused_before_anything_starts(store, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(launch.subprocess, "run", lambda *a, **k: pytest.fail("torchrun was started"))
    err = cli_error("train", store, *TINY_CLASSIFIER, "--nproc", 2, "--device", "cuda", "--out", tmp_path)
    assert "this machine has 1 CUDA GPU(s)" in str(err) and "--nproc 1 or fewer" in str(err)


def test_nproc_under_torchrun_must_match_it(store, tmp_path, monkeypatch):
    for name, value in zip(TORCHRUN_VARS, ("0", "2", "0", "2", "127.0.0.1", "1")):
        monkeypatch.setenv(name, value)
    err = cli_error("train", store, *TINY_CLASSIFIER, "--nproc", 4, "--out", tmp_path)
    assert "torchrun started with 2 process(es)" in str(err)


# ---- the real launch ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_python_m_facelab_nproc_2_trains_and_resumes_through_torchrun(store, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_VARS}
    base = [sys.executable, "-m", "facelab"]
    args = ["train", store, "--epochs", 1, *TINY_CLASSIFIER, "--out", tmp_path, "--name", "t", "--nproc", 2, "--json"]
    first = subprocess.run([*base, *map(str, args)], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert summary["processes"] == 2 and [p.name for p in tmp_path.iterdir()] == ["train-t"]
    again = subprocess.run([*base, "train", "--resume", summary["run_dir"], "--epochs", "2", "--nproc", "2", "--json"],
                           capture_output=True, text=True, env=env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["epochs"] == 2
