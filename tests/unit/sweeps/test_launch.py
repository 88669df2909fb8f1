"""The launcher's side: its workers' command lines carry no storage URL, and its lock on the sweep folder."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from facelab.errors import FacelabError
from facelab.sweeps import launch
from facelab.sweeps.launch import launcher_lock, worker_argv


def test_a_workers_command_line_names_no_database() -> None:
    argv = worker_argv("lr", Path("/runs/sweep-lr"), 1)
    assert argv[-8:] == ["sweep", "worker", "--study", "lr", "--dir", "/runs/sweep-lr", "--threads", "1"]
    assert not [a for a in argv if "://" in a or a == "--storage"]


def test_the_lock_names_its_holder_and_may_be_taken_again_inside(tmp_path: Path) -> None:
    with launcher_lock(tmp_path), launcher_lock(tmp_path):  # (facelab sweep --resume, then run_sweep)
        assert (tmp_path / "workers" / "launcher.lock").read_text().startswith(f"pid {os.getpid()} on ")


def test_a_folder_where_no_lock_can_be_written_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(launch.os, "open", read_only)
    with pytest.raises(FacelabError, match="cannot write the sweep's launcher lock \\(Read-only file system\\)"):
        with launcher_lock(tmp_path):
            pass
