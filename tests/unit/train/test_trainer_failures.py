"""A run that fails (a full disk, a kill) and is resumed ends as the uninterrupted run: every epoch once in
metrics.jsonl, each epoch's figures over all of its batches, no temporary checkpoint left behind."""

from __future__ import annotations

import errno
import json
import os

import pytest
import torch

import facelab.train.trainer as trainer_mod
from facelab.models.checkpoint import read_training_state, read_weights, save_checkpoint
from facelab.runs.folder import read_metrics
from facelab.train.trainer import Callback
from tests.unit.train.test_trainer import _trainer


def _fill_disk_at(monkeypatch, *, name: str, epoch: int) -> None:
    """Checkpoint ``name`` written at the end of ``epoch`` fails as on a full disk (the others are written)."""
    def save(path, *, model, meta, training_state=None):
        if path.name == name and meta.epoch == epoch and not (training_state or {}).get("batches_done"):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return save_checkpoint(path, model=model, meta=meta, training_state=training_state)

    monkeypatch.setattr(trainer_mod, "save_checkpoint", save)


def _records(run) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "train_seconds" and k != "train_images_per_s"} for r in read_metrics(run)]


def test_resume_after_a_full_disk_logs_each_epoch_once_and_matches_the_uninterrupted_run(tmp_path, monkeypatch):
    torch.manual_seed(3)
    _trainer(tmp_path / "a", epochs=4).fit()
    torch.manual_seed(3)
    with monkeypatch.context() as m:
        _fill_disk_at(m, name="last", epoch=2)  # metrics.jsonl already holds epoch 2, `last` is epoch 1's
        with pytest.raises(OSError) as info:
            _trainer(tmp_path / "b", epochs=4).fit()
    assert info.value.errno == errno.ENOSPC and info.value.filename.endswith("last")
    assert [r["epoch"] for r in read_metrics(tmp_path / "b")] == [1, 2]
    assert read_training_state(tmp_path / "b" / "checkpoints" / "last")["epoch"] == 1
    torch.manual_seed(77)
    _trainer(tmp_path / "b", epochs=4).fit(resume=True)
    assert [r["epoch"] for r in read_metrics(tmp_path / "b")] == [1, 2, 3, 4]
    for ra, rb in zip(_records(tmp_path / "a"), _records(tmp_path / "b"), strict=True):
        assert rb == pytest.approx(ra)
    wa, wb = (read_weights(tmp_path / r / "checkpoints" / "last") for r in "ab")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not [p for p in (tmp_path / "b" / "checkpoints").iterdir() if p.name.startswith(".")]


def test_a_resume_goes_on_from_a_checkpoint_a_kill_left_moved_aside(tmp_path):
    """Killed between the two renames of a checkpoint write: `last` is missing, the previous one lies beside it."""
    import subprocess
    import sys

    torch.manual_seed(3)
    _trainer(tmp_path / "a", epochs=3).fit()
    torch.manual_seed(3)
    part = _trainer(tmp_path / "b", epochs=3)
    part.cfg.epochs = 2
    part.fit()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folder = tmp_path / "b" / "checkpoints"
    os.replace(folder / "last", folder / f".last.old-{dead.pid}")
    (folder / f".last.tmp-{dead.pid}").mkdir()
    _trainer(tmp_path / "b", epochs=3).fit(resume=True)
    assert [r["epoch"] for r in read_metrics(tmp_path / "b")] == [1, 2, 3]
    wa, wb = (read_weights(tmp_path / r / "checkpoints" / "last") for r in "ab")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert sorted(p.name for p in folder.iterdir()) == ["best", "last"]


class _KillAtStep(Callback):
    def __init__(self, step: int) -> None:
        self.at = step

    def on_step_end(self, trainer, logs):
        if trainer.step == self.at:
            raise KeyboardInterrupt  # killed; the mid-epoch checkpoint of the step before is on disk


def test_an_epoch_resumed_mid_way_reports_figures_over_all_of_its_batches(tmp_path, monkeypatch):
    clock = {"t": 0.0}

    def fake_monotonic():  # every call advances one second: time is counted in calls, the same in both runs
        clock["t"] += 1.0
        return clock["t"]

    monkeypatch.setattr(trainer_mod.time, "monotonic", fake_monotonic)
    torch.manual_seed(5)
    full = _trainer(tmp_path / "a", epochs=1)
    full.fit()
    torch.manual_seed(5)
    part = _trainer(tmp_path / "b", epochs=1, checkpoint_every_minutes=1e-9)
    part.callbacks.append(_KillAtStep(7))  # 8 batches an epoch: the checkpoint after batch 6 is the last one
    with pytest.raises(KeyboardInterrupt):
        part.fit()
    saved = read_training_state(tmp_path / "b" / "checkpoints" / "last")
    assert saved["batches_done"] == 6 and saved["epoch_partial"]["count"] == 6
    resumed = _trainer(tmp_path / "b", epochs=1)
    resumed.fit(resume=True)
    a, b = full.history[0], resumed.history[0]
    assert b["train_loss"] == pytest.approx(a["train_loss"])  # the mean over the 8 batches, not the last 2
    assert b["train_seconds"] > saved["epoch_partial"]["seconds"]  # the epoch's time before the kill counts
    assert resumed.train_seconds == pytest.approx(b["train_seconds"])  # and so does the run's training time
    assert json.loads((tmp_path / "b" / "metrics.jsonl").read_text().splitlines()[0])["epoch"] == 1


def test_a_second_process_cannot_train_in_a_run_folder_being_trained(tmp_path):
    """Two --resume of one run at once would both write its checkpoints and metrics: the second is refused."""
    from facelab.runs.lock import RunBusyError, exclusive_run

    tr = _trainer(tmp_path, epochs=1)
    with exclusive_run(tmp_path), pytest.raises(RunBusyError, match="another process is training in this run folder"):
        tr.fit()
    assert not (tmp_path / "metrics.jsonl").exists()
    tr.fit()  # once it is free
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [1]


def test_a_full_disk_at_the_metrics_log_is_an_oserror_naming_it(tmp_path, monkeypatch):
    def full(path, rec):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(trainer_mod, "append_jsonl", full)
    with pytest.raises(OSError) as info:
        _trainer(tmp_path, epochs=1).fit()
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(tmp_path / "metrics.jsonl")
