"""The generic Trainer: steps, schedules, early stopping, divergence guard, exact resume."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from facelab.models.checkpoint import CheckpointMeta, read_meta, read_weights
from facelab.utils import progress
from facelab.train.trainer import DivergenceError, StepOutput, Trainer, TrainerConfig


@dataclass
class _Batch:
    x: torch.Tensor
    y: torch.Tensor


class _Loader:
    """In-memory loader with the BatchLoader protocol (set_epoch / state_dict / len)."""

    def __init__(self, x, y, batch_size=8, seed=0):
        self.x, self.y, self.bs, self.seed = x, y, batch_size, seed
        self.epoch, self.skip = 0, 0

    def set_epoch(self, e):
        self.epoch, self.skip = e, 0

    def state_dict(self):
        return {"epoch": self.epoch, "batches_consumed": self.skip}

    def load_state_dict(self, d):
        self.epoch, self.skip = d["epoch"], d["batches_consumed"]

    def __len__(self):
        return (len(self.x) + self.bs - 1) // self.bs

    def __iter__(self):
        order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.x))
        for b in range(self.skip, len(self)):
            idx = order[b * self.bs:(b + 1) * self.bs]
            yield _Batch(self.x[idx], self.y[idx])
        self.skip = 0


class _Objective:
    def __init__(self, lr_bomb=False):
        torch.manual_seed(0)
        self.model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.2), torch.nn.Linear(8, 1))
        self.bomb = lr_bomb

    def parameter_groups(self):
        return {"model": list(self.model.parameters())}

    def step_schedule(self):
        return [("model", 1)]

    def loss(self, group, batch):
        out = self.model(batch.x).squeeze(1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(out, batch.y)
        if self.bomb:
            loss = loss * float("nan")
        return StepOutput(loss, {"loss": loss.item()})

    def evaluate(self, loader):
        losses = [self.loss("model", b).loss.item() for b in loader]
        return {"loss": float(np.mean(losses))}

    def checkpoint_meta(self):
        return CheckpointMeta(kind="test", arch="mlp", arch_kwargs={})


def _data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 4, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).float()
    return x, y


def _trainer(tmp_path, epochs=4, **kw):
    x, y = _data()
    cfg = TrainerConfig(epochs=epochs, precision="fp32", channels_last=False, progress=False, **kw)
    obj = _Objective()
    return Trainer(obj, _Loader(x, y), _Loader(x, y), config=cfg, run_dir=tmp_path)


def test_fit_lowers_loss_and_writes_metrics_and_checkpoints(tmp_path):
    tr = _trainer(tmp_path, epochs=6)
    summary = tr.fit()
    hist = tr.history
    assert summary["epochs"] == 6 and len(hist) == 6
    assert hist[-1]["val_loss"] < hist[0]["val_loss"]
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 6
    assert read_meta(tmp_path / "checkpoints" / "best").metrics["val_loss"] == pytest.approx(summary["best"])
    assert read_meta(tmp_path / "checkpoints" / "last").epoch == 6


def test_resume_after_interruption_matches_uninterrupted_run(tmp_path):
    torch.manual_seed(123)
    full = _trainer(tmp_path / "a")
    full.fit()
    torch.manual_seed(123)
    part = _trainer(tmp_path / "b", epochs=4)
    part.cfg.epochs = 2  # stop after 2 epochs, as if killed after the epoch-2 checkpoint
    part.fit()
    torch.manual_seed(999)  # a different process state must not matter
    resumed = _trainer(tmp_path / "b", epochs=4)
    resumed.fit(resume=True)
    wa, wb = read_weights(tmp_path / "a" / "checkpoints" / "last"), read_weights(tmp_path / "b" / "checkpoints" / "last")
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    assert [h["val_loss"] for h in full.history] == pytest.approx([h["val_loss"] for h in resumed.history])


def test_mid_epoch_resume_matches(tmp_path):
    torch.manual_seed(5)
    full = _trainer(tmp_path / "a", epochs=2)
    full.fit()
    torch.manual_seed(5)
    part = _trainer(tmp_path / "b", epochs=2)
    # run 3 batches of epoch 1 then save a mid-epoch checkpoint, as the timer would
    part.model.train()
    part.train_loader.set_epoch(0)
    for i, batch in enumerate(part.train_loader):
        part.train_step(batch)
        part.batches_done += 1
        if i == 2:
            break
    part.save("last")
    resumed = _trainer(tmp_path / "b", epochs=2)
    resumed.fit(resume=True)
    wa, wb = read_weights(tmp_path / "a" / "checkpoints" / "last"), read_weights(tmp_path / "b" / "checkpoints" / "last")
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def test_early_stopping(tmp_path):
    tr = _trainer(tmp_path, epochs=50, early_stopping_patience=2)
    tr.optimizers["model"].param_groups[0]["lr"] = 0.0
    tr.base_lrs["model"] = [0.0]  # nothing improves after epoch 1
    out = tr.fit()
    assert out["epochs"] == 3 and out["stop_reason"].startswith("early stopping")


def test_time_budget_ends_the_epoch_early_and_survives_resume(tmp_path, monkeypatch):
    import facelab.train.trainer as trainer_mod

    clock = {"t": 0.0}

    def fake_monotonic():
        clock["t"] += 1.0  # every call advances one second
        return clock["t"]

    monkeypatch.setattr(trainer_mod.time, "monotonic", fake_monotonic)
    tr = _trainer(tmp_path, epochs=50, time_budget_minutes=0.5)
    out = tr.fit()
    assert out["stop_reason"].startswith("time budget") and out["epochs"] < 50
    assert 30 <= tr.train_seconds < 40
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == out["epochs"]  # the cut epoch was evaluated and logged
    again = _trainer(tmp_path, epochs=50, time_budget_minutes=0.5)
    again.load_state()
    assert again.train_seconds == tr.train_seconds and again.stop_reason == tr.stop_reason


def test_divergence_guard_keeps_last_good_checkpoint(tmp_path):
    tr = _trainer(tmp_path, epochs=3)
    tr.fit()
    before = read_weights(tmp_path / "checkpoints" / "last")
    bad = _trainer(tmp_path, epochs=5)
    bad.obj.bomb = True
    with pytest.raises(DivergenceError, match="last good checkpoint"):
        bad.fit(resume=True)
    after = read_weights(tmp_path / "checkpoints" / "last")
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_step_schedule_every_k(tmp_path):
    class TwoPlayer(_Objective):
        def parameter_groups(self):
            return {"d": list(self.model[0].parameters()), "g": list(self.model[2].parameters())}

        def step_schedule(self):
            return [("d", 5), ("g", 1)]

    x, y = _data()
    calls = []
    obj = TwoPlayer()
    orig = obj.loss
    obj.loss = lambda g, b: (calls.append(g), orig(g, b))[1]
    cfg = TrainerConfig(epochs=1, precision="fp32", channels_last=False, progress=False)
    Trainer(obj, _Loader(x, y, batch_size=4), None, config=cfg, run_dir=tmp_path).fit()
    assert calls.count("d") == 16 and calls.count("g") == 4


def test_ema_warms_up_so_a_short_run_is_not_its_initialisation():
    from facelab.train.trainer import ema_multi_avg_fn

    model = torch.nn.Linear(3, 1)
    ema = torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=ema_multi_avg_fn(0.999), use_buffers=True)
    ema.update_parameters(model)  # the first update copies
    with torch.no_grad():
        model.weight.fill_(1.0)
    for _ in range(200):
        ema.update_parameters(model)
    # a fixed 0.999 would still hold 0.999**200 = 82% of the initial weights; the ramp keeps under 5%
    assert torch.allclose(ema.module.weight, torch.ones_like(model.weight), atol=0.05)
    w = ema_multi_avg_fn(0.9)
    avg, cur = [torch.zeros(2)], [torch.ones(2)]
    w(avg, cur, 10_000)  # long after the warm-up the configured decay applies
    assert torch.allclose(avg[0], torch.full((2,), 0.1))
    counters = [torch.tensor(3)]
    w(counters, [torch.tensor(7)], 5)
    assert counters[0].item() == 7


def test_progress_off_a_terminal_is_plain_lines(tmp_path, capfd, monkeypatch):
    """Redirected to a log (nohup, a scheduler) a bar cannot redraw: one line per epoch with its figures,
    mid-epoch lines at most every LOG_EVERY_SECONDS, never the blank lines a transient bar leaves."""
    tr = _trainer(tmp_path, epochs=2)
    tr.cfg.progress = True
    monkeypatch.setattr(progress, "LOG_EVERY_SECONDS", 0.0)
    tr.fit()
    out, err = capfd.readouterr()
    assert out == ""  # stdout stays free for --json
    lines = err.splitlines()
    assert lines and all(line.strip() for line in lines)
    epoch_lines = [line for line in lines if line.startswith(("epoch 1/2 (", "epoch 2/2 ("))]
    assert len(epoch_lines) == 2
    assert "img/s" in epoch_lines[0] and "train_loss=" in epoch_lines[0] and "val_loss=" in epoch_lines[0]
    assert any(line.startswith("epoch 1/2: 3/8 batches") for line in lines)  # 64 rows / batch 8
