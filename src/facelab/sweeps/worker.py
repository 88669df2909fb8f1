"""A sweep worker: trials one after another on a shared study until ``n_trials`` are COMPLETE or PRUNED.

Each trial is an ordinary run folder ``<sweep folder>/trial-NNNN`` made by the command the spec names, with
``trial.json`` linking it to the study; the trial's user attributes link the study to the folder. Pruning goes
through the trainer's own per-epoch validation (:class:`PruningCallback`): a pruned run ends after the epoch,
is saved like any run (``stop_reason: pruned``), and only then is the trial told it was pruned.

Any number of workers, on any machines that reach the storage, can run one study. A worker that is killed
stops sending heartbeats; the next worker that looks marks its trial FAILED and runs another in its place.
"""

from __future__ import annotations

import logging
import math
import os
import resource
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from facelab.errors import FacelabError
from facelab.runs.folder import create_run_dir
from facelab.sweeps.commands import COMMANDS
from facelab.sweeps.space import suggest, trial_config
from facelab.sweeps.spec import SweepSpec
from facelab.sweeps.storage import open_storage, strip_password
from facelab.sweeps.study import count_trials, load_study, read_spec
from facelab.train.trainer import Callback, DivergenceError, Trainer
from facelab.utils.io import atomic_write_json, os_error_message

if TYPE_CHECKING:
    import optuna

log = logging.getLogger("facelab")
PRUNED = "pruned"  # the stop_reason of a pruned trial's run
TRIAL_FILE = "trial.json"  # in a trial's run folder: its study, trial number and params
SURPLUS = "not run: n_trials were already complete or running when this worker asked for a trial"


class SweepError(FacelabError):
    """A sweep cannot go on (too many failed trials, a metric the runs do not report)."""


class SurplusTrial(Exception):
    """Two workers asked for the last trial at once; the later one gives its trial up (FAIL, noted)."""


class NoValue(Exception):
    """The run finished without a finite value of the metric (e.g. every epoch's was NaN)."""


def cpu_seconds() -> float:
    """CPU time (user + system) of this process, all its threads, and its finished child processes."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class PruningCallback(Callback):
    """Report the sweep's metric to the trial after every epoch; when the pruner says so, end the run after this
    epoch with stop_reason "pruned" (the trainer saves it as usual). After the last epoch nothing is left to
    save, so the trial completes with its value whatever the pruner says."""

    def __init__(self, trial: optuna.Trial, metric: str) -> None:
        self.trial, self.metric = trial, metric
        self.pruned_at: int | None = None

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        if self.metric not in metrics:
            raise SweepError(f"metric {self.metric!r} is not among the metrics the runs report after an epoch "
                             f"({', '.join(sorted(metrics))}); fix metric: in the spec")
        value = metrics[self.metric]
        if value is None or not math.isfinite(value):
            return
        self.trial.report(float(value), epoch)
        if epoch < trainer.cfg.epochs and self.trial.should_prune():
            trainer.stop_reason = PRUNED
            self.pruned_at = epoch


@dataclass
class TrialRunner:
    """The objective: one trial = one run folder trained by the spec's command."""

    spec: SweepSpec
    study: optuna.Study
    sweep_dir: Path
    storage_url: str
    worker: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    fatal: FacelabError | None = None  # a user error: the worker stops after the trial is recorded
    ran: list[int] = field(default_factory=list)  # numbers of the trials this runner ran

    def __call__(self, trial: optuna.Trial) -> float:
        import optuna

        trial.set_user_attr("worker", self.worker)
        trial.set_user_attr("pid", os.getpid())
        self._claim(trial)
        self.ran.append(trial.number)
        try:
            return self._run(trial)
        except (optuna.TrialPruned, NoValue):
            raise  # noted already
        except DivergenceError as e:
            trial.set_user_attr("note", str(e).split(";")[0])
            raise
        except FacelabError as e:
            trial.set_user_attr("note", str(e))
            self.fatal = e
            raise
        except Exception as e:
            message = os_error_message(e)  # no space, no permission: every next trial would fail the same way
            trial.set_user_attr("note", message or f"{type(e).__name__}: {e}")
            if message is not None:
                self.fatal = FacelabError(message)
            raise
        except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (stop_on_sigterm)
            trial.set_user_attr("note", f"stopped ({e or 'interrupted'})")
            raise

    def _claim(self, trial: optuna.Trial) -> None:
        import optuna

        trials = self.study.get_trials(deepcopy=False)
        done = sum(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in trials)
        ahead = sum(t.state == optuna.trial.TrialState.RUNNING and t.number < trial.number for t in trials)
        if done + ahead >= self.spec.n_trials:
            trial.set_user_attr("note", SURPLUS)
            raise SurplusTrial(SURPLUS)

    def _run(self, trial: optuna.Trial) -> float:
        import optuna

        values = suggest(trial, self.spec)
        cfg = trial_config(self.spec, values, where=f"trial {trial.number}")
        run_dir = create_run_dir("trial", name=f"{trial.number:04d}", root=self.sweep_dir, config=cfg)
        trial.set_user_attr("run_dir", str(run_dir.resolve()))
        atomic_write_json(run_dir / TRIAL_FILE, {
            "study": self.spec.study_name, "storage": strip_password(self.storage_url), "trial": trial.number,
            "params": values, "metric": self.spec.metric, "direction": self.spec.direction,
            "sweep_dir": str(self.sweep_dir.resolve()), "worker": self.worker})
        pruning = PruningCallback(trial, self.spec.metric or "")
        cpu0, t0 = cpu_seconds(), time.monotonic()
        try:
            summary = COMMANDS.get(self.spec.command).train(cfg, run_dir=run_dir, callbacks=[pruning])
        finally:
            trial.set_user_attr("cpu_seconds", round(cpu_seconds() - cpu0, 3))
            trial.set_user_attr("wall_seconds", round(time.monotonic() - t0, 3))
        trial.set_user_attr("epochs", int(summary["epochs"]))
        if pruning.pruned_at is not None:
            note = f"pruned after epoch {pruning.pruned_at} of {cfg.trainer.epochs}"
            trial.set_user_attr("note", note)
            raise optuna.TrialPruned(note)
        best = summary.get("best")
        if best is None or not math.isfinite(best):
            trial.set_user_attr("note", f"the run reported no finite {self.spec.metric}")
            raise NoValue(f"trial {trial.number}: the run reported no finite {self.spec.metric}")
        return float(best)


@dataclass(frozen=True)
class WorkerReport:
    """What one worker did."""

    study: str
    sweep_dir: str
    trials: list[int]  # the numbers of the trials it ran
    worker: str


def _sweep_dir(given: str | Path | None, recorded: str | None, study: str) -> Path:
    """Where this worker's trial folders go: ``--dir``, else the folder recorded in the study when it exists on
    this machine (same machine, or a shared file system), else ``runs/<study>`` here."""
    if given is not None:
        path = Path(given)
    elif recorded is not None and Path(recorded).is_dir():
        path = Path(recorded)
    else:
        from facelab.runs.folder import DEFAULT_RUNS_ROOT

        path = DEFAULT_RUNS_ROOT / study
        log.info(f"the sweep folder {recorded} is not on this machine: this worker's trials go to {path}")
    path.mkdir(parents=True, exist_ok=True)
    return path


def stop_on_sigterm() -> None:
    """SIGTERM (the launcher stopping its workers) ends the trial in progress as FAILED, not silently RUNNING."""
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    if threading.current_thread() is threading.main_thread():  # (only the main thread may set handlers)
        signal.signal(signal.SIGTERM, handler)


def run_worker(storage_url: str, study_name: str, *, sweep_dir: str | Path | None = None, worker: int = 0,
               threads: int | None = None) -> WorkerReport:
    """Run trials of study ``study_name`` until ``n_trials`` are COMPLETE or PRUNED.

    While the last trials run in other workers, this one waits: if one of them fails (its worker killed, its
    heartbeat stale), this worker runs a trial in its place.

    Args:
        storage_url: the study database (the spec is read from the study).
        sweep_dir: where trial folders go (default: the sweep folder recorded in the study, when it is here).
        worker: this worker's index: its sampler is seeded with the spec's seed + ``worker``.
        threads: torch threads for training (default: torch's).

    Raises:
        SweepError: ``max_failed`` trials failed, or a user error in a trial (named), which stops the worker.
        StorageError: the database cannot be reached.
    """
    import optuna
    import torch

    if threads:
        torch.set_num_threads(threads)
    spec, recorded = read_spec(open_storage(storage_url), study_name, storage_url)
    storage = open_storage(storage_url, heartbeat_interval=spec.heartbeat_interval, grace_period=spec.grace_seconds)
    folder = _sweep_dir(sweep_dir, recorded, study_name)
    study = load_study(storage, spec, worker=worker)
    runner = TrialRunner(spec, study, folder, storage_url)
    poll = min(2.0, float(spec.heartbeat_interval))
    while True:
        optuna.storages.fail_stale_trials(study)
        counts = count_trials(study)
        if counts.done >= spec.n_trials:
            break
        if counts.failed >= spec.max_failures:
            raise SweepError(f"study {study_name}: {counts.failed} trials failed (max_failed {spec.max_failures}); "
                             "their notes are in facelab sweep report, their logs in the workers' logs")
        if counts.done + counts.running >= spec.n_trials:
            time.sleep(poll)  # the last trials run elsewhere; take over if one of them fails
            continue
        study.optimize(runner, n_trials=1, catch=(Exception,), gc_after_trial=True)
        if runner.fatal is not None:
            raise runner.fatal
    return WorkerReport(study=study_name, sweep_dir=str(folder), trials=runner.ran, worker=runner.worker)
