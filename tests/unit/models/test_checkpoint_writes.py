"""Checkpoint writes: complete or absent, never a temporary folder left behind, an OSError naming the checkpoint;
what writers that died left behind is cleaned up (or put back) before a run goes on."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest
import torch

from facelab.models import checkpoint as ckpt
from facelab.models.checkpoint import (CheckpointMeta, clean_checkpoints, read_training_state, read_weights,
                                       save_checkpoint)


def _model(value: float) -> torch.nn.Module:
    m = torch.nn.Linear(4, 2)
    with torch.no_grad():
        for p in m.parameters():
            p.fill_(value)
    return m


META = CheckpointMeta(kind="test", arch="mlp", arch_kwargs={})


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES, errno.EDQUOT])
@pytest.mark.parametrize("failing", [ckpt.WEIGHTS, ckpt.STATE])
def test_a_failed_write_leaves_the_previous_checkpoint_and_no_temporary_folder(tmp_path, monkeypatch, code, failing):
    last = tmp_path / "checkpoints" / "last"
    save_checkpoint(last, model=_model(1.0), meta=META, training_state={"epoch": 1})
    real = ckpt._write_synced

    def full_disk(path, data):
        if path.name == failing:
            with open(path, "wb") as f:
                f.write(data[: len(data) // 2])  # half of it reached the disk
            raise OSError(code, os.strerror(code))
        real(path, data)

    monkeypatch.setattr(ckpt, "_write_synced", full_disk)
    with pytest.raises(OSError) as info:
        save_checkpoint(last, model=_model(2.0), meta=META, training_state={"epoch": 2})
    assert info.value.errno == code and info.value.filename == str(last)
    assert "the previous one is kept" in str(info.value)
    assert _leftovers(last.parent) == []
    assert torch.equal(read_weights(last)["weight"], torch.ones(2, 4))
    assert read_training_state(last) == {"epoch": 1}


def test_a_failed_rename_puts_the_previous_checkpoint_back(tmp_path, monkeypatch):
    last = tmp_path / "last"
    save_checkpoint(last, model=_model(1.0), meta=META)
    real = os.replace

    def refuse_the_new_one(src, dst):
        if ".tmp-" in str(src):
            raise PermissionError(errno.EACCES, "Permission denied")
        real(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", refuse_the_new_one)
    with pytest.raises(PermissionError) as info:
        save_checkpoint(last, model=_model(2.0), meta=META)
    assert info.value.filename == str(last)
    assert _leftovers(tmp_path) == [] and torch.equal(read_weights(last)["weight"], torch.ones(2, 4))


def test_writing_twice_replaces_the_checkpoint_and_leaves_nothing_else(tmp_path):
    last = tmp_path / "last"
    save_checkpoint(last, model=_model(1.0), meta=META, training_state={"epoch": 1})
    save_checkpoint(last, model=_model(3.0), meta=META, training_state={"epoch": 2})
    assert read_training_state(last) == {"epoch": 2} and torch.equal(read_weights(last)["bias"], torch.full((2,), 3.0))
    assert [p.name for p in tmp_path.iterdir()] == ["last"]


def test_leftovers_of_dead_writers_are_removed_or_put_back(tmp_path):
    folder = tmp_path / "checkpoints"
    save_checkpoint(folder / "best", model=_model(1.0), meta=META)
    save_checkpoint(folder / "last", model=_model(1.0), meta=META)
    dead = _dead_pid()
    # a kill between the two renames of `last`: the previous one moved aside, the new one not yet in place
    os.replace(folder / "last", folder / f".last.old-{dead}")
    (folder / f".best.tmp-{dead}").mkdir()  # a write of `best` that died half-way
    (folder / f".best.tmp-{dead}" / ckpt.WEIGHTS).write_bytes(b"half")
    save_checkpoint(folder / "side", model=_model(1.0), meta=META)
    os.replace(folder / "side", folder / f".best.old-{dead}")  # `best` exists: this copy is stale
    alive = os.getppid()
    (folder / f".best.tmp-{alive}").mkdir()  # a writer still at work: left alone
    (folder / "notes.tmp-1").mkdir()  # not facelab's naming: left alone
    clean_checkpoints(folder)
    assert sorted(p.name for p in folder.iterdir()) == sorted([f".best.tmp-{alive}", "best", "last", "notes.tmp-1"])
    assert torch.equal(read_weights(folder / "last")["weight"], torch.ones(2, 4))
