"""One training loop for every model: classifiers and generative models alike.

The loop knows nothing about the task. An :class:`Objective` says which parameter groups exist, how
often each group steps, what the loss of a group is on a batch, and how to evaluate; the
:class:`Trainer` does the rest: optimizers, lr schedule (over fractional epochs), mixed precision,
progress, metrics JSONL, checkpoints, resume, early stopping, EMA, divergence guard and callbacks.

Several processes (``dist``: a :class:`~facelab.train.distributed.Distributed` of a torchrun launch): the
objective's loss runs behind DistributedDataParallel (gradients averaged over processes in backward), each
process trains its loader's share of every batch, and rank 0 alone validates (the figures are broadcast, so
every process takes the same lr, early-stopping and checkpoint decisions) and writes metrics.jsonl, the
checkpoints (the unwrapped model: the format does not change) and the progress. Stops that one process could
take alone (a time budget, a NaN loss, a mid-epoch checkpoint due) are agreed after every step by one
all-reduce of flags, so no process is ever left waiting in a collective the others have left.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
from pydantic import Field

from facelab.config import StrictConfig
from facelab.errors import ConfigError, FacelabError
from facelab.models.checkpoint import (CheckpointMeta, clean_checkpoints, read_training_state, read_weights,
                                       save_checkpoint)
from facelab.runs.lock import exclusive_run
from facelab.train.distributed import Distributed, LossModule
from facelab.train.optim import OptimConfig, create_optimizer
from facelab.train.precision import autocast_context
from facelab.train.progress import epoch_progress, print_epoch
from facelab.train.schedules import PlateauTracker, ScheduleConfig, lr_factor_fn
from facelab.train.sync_batchnorm import convert_sync_batchnorm
from facelab.utils.io import append_jsonl, atomic_write_text

log = logging.getLogger("facelab")
BUDGET_STOP = "time budget"  # how stop_reason starts when time_budget_minutes stopped training


class DivergenceError(FacelabError):
    """The loss became NaN/inf; the last good checkpoint is kept."""


@dataclass
class StepOutput:
    """Loss of one group on one batch plus scalar logs (already detached floats)."""

    loss: torch.Tensor
    logs: dict[str, float] = field(default_factory=dict)


class Objective(Protocol):
    """What a Trainer optimises. Classifiers and generative models each provide one."""

    model: torch.nn.Module

    def parameter_groups(self) -> dict[str, list[torch.nn.Parameter]]: ...

    def step_schedule(self) -> list[tuple[str, int]]: ...

    def loss(self, group: str, batch: Any) -> StepOutput: ...

    def evaluate(self, loader: Any) -> dict[str, float]: ...

    def checkpoint_meta(self) -> CheckpointMeta: ...


class TrainerConfig(StrictConfig):
    """Loop settings shared by every model kind."""

    epochs: int = Field(10, ge=1)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    channels_last: bool = True
    monitor: str = "val_loss"  # metric used for best checkpoint, early stopping and plateau
    monitor_mode: Literal["min", "max"] = "min"
    early_stopping_patience: int | None = Field(None, ge=1)
    checkpoint_every_minutes: float = Field(5.0, gt=0)  # mid-epoch checkpoints for resume after a kill
    ema_decay: float | None = Field(None, gt=0, lt=1)
    # stop when this much training time (summed over resumes, evaluation excluded) is spent: the epoch in
    # progress ends early and is evaluated and saved as usual; for equal-budget comparisons of models whose
    # steps cost differently (a WGAN-GP iteration is 5 critic steps). Schedules still run over ``epochs``.
    time_budget_minutes: float | None = Field(None, gt=0)
    progress: bool = True
    # several processes (--nproc): batch-norm statistics over the whole step (every process's share) instead of
    # each share; then N processes of batch B train as one process of batch N*B. No effect on one process.
    sync_batchnorm: bool = False


class Callback:
    """Hooks called by the Trainer; override what you need.

    With several processes every process calls every hook (a callback that changes the model, e.g. unfreezing,
    must run everywhere); a callback that writes files or reports somewhere does so only where
    ``trainer.is_main``.
    """

    def on_resume(self, trainer: Trainer, state: dict[str, Any]) -> None:
        """After the model weights of a resume are loaded, before the optimizer state is (``state``: the
        saved training state): redo what the interrupted run had changed, e.g. param groups it added."""

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None: ...

    def on_step_end(self, trainer: Trainer, logs: dict[str, float]) -> None: ...

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None: ...

    def on_fit_end(self, trainer: Trainer) -> None: ...


def ema_multi_avg_fn(decay: float):
    """EMA update with a warm-up: the decay after n updates is ``min(decay, (1 + n) / (10 + n))``.

    A fixed decay of 0.999 keeps 37% of the *initial* weights after 1,000 steps, so a short run's EMA
    model is still mostly its random initialisation (a GAN's EMA generator then draws flat grey images);
    the ramp (as in timm's ModelEmaV3 warm-up and stylegan2's ema_rampup) lets it follow the first steps.
    """
    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor | int) -> None:
        n = float(num_averaged)
        d = min(decay, (1.0 + n) / (10.0 + n))
        if torch.is_floating_point(averaged[0]) or torch.is_complex(averaged[0]):  # lists share one dtype
            torch._foreach_lerp_(averaged, current, 1.0 - d)
        else:  # integer buffers (batch-norm counters) follow the model
            for a, c in zip(averaged, current):
                a.copy_(c)

    return update


class Trainer:
    """Fit an Objective on a training loader, validating each epoch, writing into ``run_dir``.

    Args:
        objective: provides parameter groups, losses and evaluation.
        train_loader: iterable of batches with ``set_epoch``, ``state_dict``/``load_state_dict``, ``len``.
        val_loader: iterable for ``objective.evaluate`` (or None).
        config: TrainerConfig.
        run_dir: folder for metrics.jsonl and checkpoints/.
        device: where the model lives (the loader must yield batches on it).
        callbacks: extra hooks (sample grids, batch-size schedules, ...).
        dist: the processes training together (default: this one alone); the loaders must serve this
            process's share of each batch (``BatchLoader(rank=, world_size=)``).
    """

    def __init__(
        self,
        objective: Objective,
        train_loader: Any,
        val_loader: Any | None,
        *,
        config: TrainerConfig,
        run_dir: str | Path,
        device: str | torch.device = "cpu",
        callbacks: list[Callback] | None = None,
        dist: Distributed | None = None,
    ) -> None:
        self.obj, self.train_loader, self.val_loader = objective, train_loader, val_loader
        self.cfg, self.run_dir, self.device = config, Path(run_dir), torch.device(device)
        self.callbacks = callbacks or []
        self.dist = dist or Distributed()
        self.model = objective.model.to(self.device)
        if config.sync_batchnorm and self.dist.active:
            convert_sync_batchnorm(self.model, self.device)
        if config.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.optimizers = self._build_optimizers()
        self.base_lrs = {g: [pg["lr"] for pg in o.param_groups] for g, o in self.optimizers.items()}
        self.lr_fn = lr_factor_fn(config.schedule, epochs=config.epochs)
        self.plateau = PlateauTracker(config.schedule, mode=config.monitor_mode)
        self.schedule = self._normalise_schedule(objective.step_schedule())
        self.ema = self._build_ema()
        self.epoch, self.step, self.batches_done = 0, 0, 0
        self.best: float | None = None
        self.bad_epochs = 0
        self.stop_reason: str | None = None
        self.train_seconds = 0.0  # training time of the finished epochs, summed over resumes (time_budget_minutes)
        self.partial = EpochSums()  # this process's figures of the epoch in progress (kept by mid-epoch checkpoints)
        self.history: list[dict[str, Any]] = []
        self._last_ckpt_time = time.monotonic()
        self._ddp: torch.nn.Module | None = None  # the loss behind DistributedDataParallel (several processes)
        self._ddp_params: tuple[int, ...] = ()
        self._due = _Due()
        self._epoch_start = time.monotonic()
        if self.is_main:
            (self.run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run folder (always, on one process)."""
        return self.dist.is_main

    # ---- construction -----------------------------------------------------------------------
    def _build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """One optimizer per parameter group, built with :meth:`OptimConfig.settings` (recorded in
        ``optimizer_settings`` and in every checkpoint's training state).

        Raises:
            ConfigError: ``optim.groups`` names a group the objective does not have (its settings would reach
                no optimizer).
        """
        o = self.cfg.optim
        groups = self.obj.parameter_groups()
        unknown = sorted(set(o.groups) - set(groups))
        if unknown:
            raise ConfigError(f"trainer.optim.groups: {', '.join(map(repr, unknown))} is not a parameter group of "
                              f"this model; its groups are {', '.join(groups)}")
        opts = {}
        self.optimizer_settings: dict[str, dict[str, Any]] = {}
        for group, params in groups.items():
            kw = o.settings(group)
            self.optimizer_settings[group] = dict(kw)
            name = kw.pop("name")
            opts[group] = create_optimizer(name, _trainable(params), **kw)
        return opts

    @staticmethod
    def _normalise_schedule(schedule: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """Turn per-iteration step counts into 'every k batches': the most frequent group steps every batch."""
        most = max(n for _, n in schedule)
        return [(g, max(1, most // n)) for g, n in schedule]

    def _build_ema(self) -> torch.optim.swa_utils.AveragedModel | None:
        if self.cfg.ema_decay is None:
            return None
        return torch.optim.swa_utils.AveragedModel(self.model, multi_avg_fn=ema_multi_avg_fn(self.cfg.ema_decay),
                                                   use_buffers=True)

    # ---- the loop ---------------------------------------------------------------------------
    def fit(self, *, resume: bool = False) -> dict[str, Any]:
        """Train until ``epochs`` or early stopping; return the final summary.

        ``resume`` continues from ``checkpoints/last``; a run stopped before its first checkpoint has nothing
        to continue from, so it starts from the beginning (with a notice), as a fresh start would. The writing
        process holds the run folder's lock throughout (RunBusyError when another one trains in it).
        """
        with exclusive_run(self.run_dir) if self.is_main else contextlib.nullcontext():
            return self._fit(resume=resume)

    def _fit(self, *, resume: bool) -> dict[str, Any]:
        if self.is_main:
            clean_checkpoints(self.run_dir / "checkpoints")  # what a killed or failed writer left behind
        if resume and read_training_state(self.run_dir / "checkpoints" / "last") is None:
            if self.is_main:
                log.warning(f"{self.run_dir}: the run stopped before its first checkpoint, so there is nothing to "
                            "continue from: training starts from the beginning with its saved config")
            resume = False
        if resume:
            self.load_state()
        else:
            if self.is_main:  # a fresh start in a folder that an interrupted attempt left behind: a fresh log
                (self.run_dir / "metrics.jsonl").unlink(missing_ok=True)
            if self.dist.rank:  # rank 0 keeps a 1-process run's stream; the others draw their own noise
                torch.manual_seed(self.dist.rank_seed(torch.initial_seed()))
        start = time.monotonic()
        while self.epoch < self.cfg.epochs and self.stop_reason is None:
            for cb in self.callbacks:
                cb.on_epoch_start(self, self.epoch)
            train_logs = self.train_epoch()
            metrics = {**train_logs, **self.validate()}
            self._end_epoch(metrics)
        for cb in self.callbacks:
            cb.on_fit_end(self)
        self._ddp = None  # DDP holds the process group: let it go before the caller leaves the group
        return {"epochs": self.epoch, "steps": self.step, "best": self.best, "monitor": self.cfg.monitor,
                "stop_reason": self.stop_reason or "completed", "seconds": time.monotonic() - start,
                "train_seconds": self.train_seconds}  # the training loop's time, summed over resumes

    def train_epoch(self) -> dict[str, float]:
        """One pass over the training loader (continuing mid-epoch after a resume: the epoch's figures then
        cover its batches before the resume too, carried in the checkpoint)."""
        self.model.train()
        self._wrap_for_processes()
        loader = self.train_loader
        loader.set_epoch(self.epoch)
        if self.batches_done:  # resuming mid-epoch: skip the batches already trained on
            loader.load_state_dict({**loader.state_dict(), "epoch": self.epoch, "batches_consumed": self.batches_done})
        else:
            self.partial = EpochSums()
        part = self.partial
        start = time.monotonic()
        self._epoch_start = start - part.seconds  # the epoch's clock counts its time before a resume
        n_batches = len(loader)
        with epoch_progress(enabled=self.cfg.progress and self.is_main, epoch=self.epoch, epochs=self.cfg.epochs,
                            total=n_batches, done=self.batches_done) as advance:
            for batch in loader:
                logs = self.train_step(batch)
                self.batches_done += 1
                part.add(logs, int(getattr(batch, "global_rows", 0) or batch.x.shape[0] * self.dist.world_size))
                advance(logs)
                if self._due.checkpoint:  # mid-epoch checkpoint for a resume after a kill
                    self.save("last")
                if self._due.stop:
                    self.stop_reason = f"{BUDGET_STOP} of {self.cfg.time_budget_minutes:g} min spent"
                    break
        secs = time.monotonic() - self._epoch_start
        self.train_seconds += secs
        out = self.dist.mean({f"train_{k}": v / max(1, part.count) for k, v in part.sums.items()})  # over every share
        out.update({"train_seconds": secs, "train_images_per_s": part.images / max(secs, 1e-9)})
        return out

    def _wrap_for_processes(self) -> None:
        """With several processes: the objective's loss behind DistributedDataParallel, rebuilt when the set of
        trainable parameters changed (DDP syncs the parameters that required grad when it was built, so a
        backbone unfrozen since would otherwise train apart on each process)."""
        if not self.dist.active:
            return
        trainable = tuple(id(p) for p in self.model.parameters() if p.requires_grad)
        if self._ddp is None or trainable != self._ddp_params:
            # several players (a GAN's generator and discriminator) step in turn, each leaving the others'
            # parameters without a gradient: DDP must look for the unused ones after every forward
            self._ddp = self.dist.wrap(LossModule(self.obj.loss, self.model),
                                       find_unused_parameters=len(self.schedule) > 1)
            self._ddp_params = trainable

    def _budget_spent(self, epoch_seconds: float) -> bool:
        budget = self.cfg.time_budget_minutes
        return budget is not None and self.train_seconds + epoch_seconds >= budget * 60

    def train_step(self, batch: Any) -> dict[str, float]:
        """Step every group due on this batch; return the batch's logs.

        With several processes a non-finite loss cannot stop one process before its backward (the others would
        wait in that backward's all-reduce for ever): every process finishes the step, then all raise together.
        """
        t = self.epoch + self.batches_done / max(1, len(self.train_loader))
        self._set_lr(t)
        logs: dict[str, float] = {}
        share = self._loss_share(batch)
        diverged: str | None = None
        for group, every in self.schedule:
            if self.step % every:
                continue
            opt = self.optimizers[group]
            opt.zero_grad(set_to_none=True)
            with autocast_context(self.device, self.cfg.precision):
                out = self._group_loss(group, batch)
            if not torch.isfinite(out.loss.detach()).all():
                diverged = f"loss of {group!r} became {out.loss.item()}"
                if not self.dist.active:
                    raise self._divergence(diverged)
            (out.loss * share if share != 1.0 else out.loss).backward()
            if self.cfg.optim.grad_clip:
                torch.nn.utils.clip_grad_norm_([p for pg in opt.param_groups for p in pg["params"]], self.cfg.optim.grad_clip)
            opt.step()
            logs.update(out.logs)
        self._agree_after_step(diverged)
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        self.step += 1
        for cb in self.callbacks:
            cb.on_step_end(self, logs)
        return logs

    def _group_loss(self, group: str, batch: Any) -> StepOutput:
        if self._ddp is None:
            return self.obj.loss(group, batch)
        loss, logs = self._ddp(group, batch)
        return StepOutput(loss, logs)

    def _loss_share(self, batch: Any) -> float:
        """The factor of this process's loss so that DDP's average over processes is the mean over the step's
        rows: 1 when every process holds the same number of rows, ``len * N / global_rows`` for the uneven
        shares of a partial last batch."""
        global_rows = getattr(batch, "global_rows", 0)
        if not self.dist.active or not global_rows:
            return 1.0
        return len(batch) * self.dist.world_size / global_rows

    def _agree_after_step(self, diverged: str | None) -> None:
        """Decide, together with every other process, whether training diverged, a mid-epoch checkpoint is due
        and the time budget is spent (one all-reduce of three flags); sets ``self._due``."""
        now = time.monotonic()
        checkpoint = now - self._last_ckpt_time >= self.cfg.checkpoint_every_minutes * 60
        spent = self._budget_spent(now - self._epoch_start)
        any_diverged, checkpoint, spent = self.dist.any(diverged is not None, checkpoint, spent)
        if any_diverged:
            where = diverged or f"the loss became NaN or infinite in another of the {self.dist.world_size} processes"
            raise self._divergence(where)
        self._due = _Due(checkpoint=checkpoint, stop=spent)

    def _divergence(self, what: str) -> DivergenceError:
        return DivergenceError(
            f"{what} at step {self.step} (epoch {self.epoch}); the last good checkpoint is kept in "
            f"{self.run_dir / 'checkpoints'}. Lower the learning rate or use --precision fp32, then resume or restart."
        )

    def _set_lr(self, t: float) -> None:
        f = self.lr_fn(t) * self.plateau.factor
        for g, opt in self.optimizers.items():
            for pg, base in zip(opt.param_groups, self.base_lrs[g]):
                pg["lr"] = base * f

    def current_lr(self) -> float:
        opt = next(iter(self.optimizers.values()))
        return float(opt.param_groups[-1]["lr"])

    def validate(self) -> dict[str, float]:
        """Evaluate on the validation loader; with several processes rank 0 evaluates (every row, the unwrapped
        model: the figures equal `facelab eval` of the checkpoint) and the others receive its figures."""
        if self.val_loader is None:
            return {}
        figures = None
        if self.is_main:
            model = self.eval_model()
            # fp32 even when training runs under bf16 autocast: the figures then equal what `facelab eval`,
            # `predict` and the ONNX export compute from the same checkpoint (bf16 flipped about 10 of 31,200
            # CelebA val decisions), for about 0.3 s per epoch on 780 images at 64 px on 2 CPU threads.
            with torch.no_grad():
                metrics = self.obj.evaluate(self.val_loader, model=model) if _accepts_model(self.obj.evaluate) else self.obj.evaluate(self.val_loader)
            self.model.train()
            figures = {f"val_{k}" if not k.startswith("val_") else k: float(v) for k, v in metrics.items()}
        return self.dist.broadcast(figures)

    def eval_model(self) -> torch.nn.Module:
        """The model to evaluate and sample from: the EMA copy when there is one."""
        m = self.ema.module if self.ema is not None else self.model
        m.eval()
        return m

    def _end_epoch(self, metrics: dict[str, float]) -> None:
        self.epoch += 1
        self.batches_done = 0
        self.partial = EpochSums()
        rec = {"epoch": self.epoch, "step": self.step, "lr": self.current_lr(), **metrics}
        self.history.append(rec)
        if self.is_main:
            with _naming(self.run_dir / "metrics.jsonl") as path:
                append_jsonl(path, rec)
            print_epoch(rec, epochs=self.cfg.epochs, monitor=self.cfg.monitor, enabled=self.cfg.progress)
        value = metrics.get(self.cfg.monitor)
        if value is None:
            self.save("best", metrics)  # nothing to monitor (e.g. GANs): the latest (EMA) model is the one to use
        elif math.isfinite(value):
            self.plateau.update(value)
            improved = self.best is None or (value > self.best if self.cfg.monitor_mode == "max" else value < self.best)
            if improved:
                self.best, self.bad_epochs = value, 0
                self.save("best", metrics)
            else:
                self.bad_epochs += 1
                if self.cfg.early_stopping_patience and self.bad_epochs >= self.cfg.early_stopping_patience:
                    self.stop_reason = f"early stopping: {self.cfg.monitor} did not improve for {self.bad_epochs} epochs"
        for cb in self.callbacks:
            cb.on_epoch_end(self, self.epoch, metrics)
        self.save("last", metrics)

    # ---- checkpoints ------------------------------------------------------------------------
    def training_state(self) -> dict[str, Any]:
        """What a resume needs; with several processes every process must call it together (it gathers each
        process's random-number state: ``rank_rng``, in rank order)."""
        state = {
            "epoch": self.epoch, "step": self.step, "batches_done": self.batches_done,
            "best": self.best, "bad_epochs": self.bad_epochs, "stop_reason": self.stop_reason,
            "train_seconds": self.train_seconds, "optimizers": {g: o.state_dict() for g, o in self.optimizers.items()},
            "optimizer_settings": self.optimizer_settings,
            "epoch_partial": self._partial_state(),
            "plateau": self.plateau.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy_rng": _np_rng_state(),
            "history": json.dumps(self.history),
            "world_size": self.dist.world_size,
        }
        if self.dist.active:
            state["rank_rng"] = self.dist.gather(self._rank_rng_state())
        return state

    def _rank_rng_state(self) -> dict[str, Any]:
        cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        return {"torch": torch.get_rng_state(), "cuda": cuda, "numpy": _np_rng_state(), "partial": self._partial_state()}

    def _partial_state(self) -> dict[str, Any]:
        """The figures of the epoch in progress, up to now (empty at an epoch's end)."""
        if not self.batches_done:
            return {}
        return {**self.partial.state_dict(), "seconds": time.monotonic() - self._epoch_start}

    def save(self, name: str, metrics: dict[str, float] | None = None) -> Path | None:
        """Write checkpoint ``name`` (``last`` with the training state); with several processes every process
        calls it together and rank 0 writes (returns None elsewhere)."""
        state = self.training_state() if name == "last" else None
        self._last_ckpt_time = time.monotonic()
        if not self.is_main:
            return None
        meta = self.obj.checkpoint_meta()
        meta.step, meta.epoch = self.step, self.epoch
        meta.metrics = {k: float(v) for k, v in (metrics or {}).items() if isinstance(v, (int, float))}
        model = self.ema.module if (self.ema is not None and name == "best") else self.model
        return save_checkpoint(self.run_dir / "checkpoints" / name, model=model, meta=meta, training_state=state)

    def load_state(self) -> None:
        """Restore model and training state from ``checkpoints/last`` (FacelabError if there is none)."""
        last = self.run_dir / "checkpoints" / "last"
        state = read_training_state(last)
        if state is None:
            raise FacelabError(f"{self.run_dir}: nothing to resume (no checkpoints/last with training state)")
        self._check_resumed_processes(state)
        self.model.load_state_dict(read_weights(last))
        for cb in self.callbacks:
            cb.on_resume(self, state)
        for g, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][g])
        self.epoch, self.step, self.batches_done = state["epoch"], state["step"], state["batches_done"]
        self.best, self.bad_epochs, self.stop_reason = state["best"], state["bad_epochs"], state["stop_reason"]
        self.plateau.load_state_dict(state["plateau"])
        self.train_seconds = float(state.get("train_seconds", 0.0))
        if (self.stop_reason or "").startswith(BUDGET_STOP) and not self._budget_spent(0.0):
            self.stop_reason = None  # the time budget was raised (``--resume RUN --minutes M``): train on
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        self._load_rng(state)
        self.history = json.loads(state["history"])
        if self.is_main:  # the log holds the checkpoint's epochs: one the interrupted attempt logged after it is redone
            with _naming(self.run_dir / "metrics.jsonl") as path:
                atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in self.history))

    def _check_resumed_processes(self, state: dict[str, Any]) -> None:
        """Mid-epoch, a checkpoint counts the batches of the number of processes that wrote it; at an epoch's
        end any number may continue (the step's batch, N * batch_size, changes with it)."""
        saved, now = int(state.get("world_size", 1)), self.dist.world_size
        if saved == now:
            return
        if state["batches_done"]:
            raise FacelabError(f"{self.run_dir}: the run was saved mid-epoch by {saved} process(es); resume it with "
                               f"--nproc {saved} (batches of a step are counted for that many)")
        if self.is_main:
            log.warning(f"{self.run_dir}: the run trained with {saved} process(es) and continues with {now}: each step "
                        f"now holds {now} x batch_size rows instead of {saved} x batch_size")

    def _load_rng(self, state: dict[str, Any]) -> None:
        """Each process continues its own random stream: rank r takes ``rank_rng[r]`` when the run had as many
        processes; otherwise rank 0 takes the saved main stream and the others derive theirs from it."""
        ranks = state.get("rank_rng")
        self.partial = EpochSums.from_state(state.get("epoch_partial") if self.batches_done else None)
        if ranks is not None and len(ranks) == self.dist.world_size:
            mine = ranks[self.dist.rank]
            torch.set_rng_state(mine["torch"])
            if mine["cuda"] is not None and self.device.type == "cuda":
                torch.cuda.set_rng_state(mine["cuda"], self.device)
            _set_np_rng_state(mine["numpy"])
            if self.batches_done:
                self.partial = EpochSums.from_state(mine.get("partial"))
            return
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and not self.dist.active:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        _set_np_rng_state(state["numpy_rng"])
        if self.dist.rank:
            torch.manual_seed(self.dist.rank_seed(torch.initial_seed() + self.step))


@dataclass
class EpochSums:
    """One process's running figures of the epoch in progress: summed step logs, steps, images, seconds."""

    sums: dict[str, float] = field(default_factory=dict)
    count: int = 0
    images: int = 0
    seconds: float = 0.0

    def add(self, logs: dict[str, float], images: int) -> None:
        for k, v in logs.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += 1
        self.images += images

    def state_dict(self) -> dict[str, Any]:
        return {"sums": dict(self.sums), "count": self.count, "images": self.images, "seconds": self.seconds}

    @classmethod
    def from_state(cls, d: dict[str, Any] | None) -> EpochSums:
        """The sums a checkpoint saved (none from a checkpoint written before they were saved: the epoch's
        figures then cover the batches after the resume only)."""
        if not d:
            return cls()
        return cls({k: float(v) for k, v in d["sums"].items()}, int(d["count"]), int(d["images"]), float(d["seconds"]))


@dataclass(frozen=True)
class _Due:
    """What every process agreed after the last step: a mid-epoch checkpoint is due; the time budget is spent."""

    checkpoint: bool = False
    stop: bool = False


@contextlib.contextmanager
def _naming(path: Path) -> Iterator[Path]:
    """An OSError (a full disk) of writing ``path`` in the block names ``path``."""
    try:
        yield path
    except OSError as e:
        raise OSError(e.errno, e.strerror or str(e), str(path)) from None


def _trainable(params: list) -> list:
    """Drop frozen parameters (plain lists) or frozen members of param-group dicts."""
    if params and isinstance(params[0], dict):
        return [{**g, "params": [p for p in g["params"] if p.requires_grad]} for g in params]
    return [p for p in params if p.requires_grad]


def _accepts_model(fn: Callable) -> bool:
    import inspect

    return "model" in inspect.signature(fn).parameters


def _np_rng_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "has_gauss": has_gauss, "cached": cached}


def _set_np_rng_state(d: dict[str, Any]) -> None:
    np.random.set_state(("MT19937", d["keys"].numpy().astype(np.uint32), d["pos"], d["has_gauss"], d["cached"]))
