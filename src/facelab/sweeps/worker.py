"""A sweep worker: trials one after another on a shared study until ``n_trials`` are COMPLETE or PRUNED.

Each trial is an ordinary run folder ``<sweep folder>/trial-NNNN`` made by the command the spec names, with
``trial.json`` linking it to the study; the trial's user attributes link the study to the folder. Pruning goes
through the trainer's own per-epoch validation (:class:`PruningCallback`): a pruned run ends after the epoch,
is saved like any run (``stop_reason: pruned``), and only then is the trial told it was pruned.

Any number of workers, on any machines that reach the storage, can run one study. A worker that is killed
stops sending heartbeats; the next worker that looks marks its trial FAILED and runs another in its place.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import resource
import socket
import threading
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from facelab.errors import FacelabError
from facelab.runs.folder import create_run_dir
from facelab.sweeps.commands import COMMANDS
from facelab.sweeps.failures import ERROR, INTERRUPTED, SKIPPED, fail_stale_trials, note_trial
from facelab.sweeps.space import suggest, trial_config
from facelab.sweeps.spec import SweepSpec, is_plain_name
from facelab.sweeps.stopping import raise_pending, stops_held
from facelab.sweeps.storage import open_storage, strip_password
from facelab.sweeps.study import check_inputs, count_trials, load_study, read_spec
from facelab.train.trainer import Callback, DivergenceError, Trainer
from facelab.utils.io import atomic_write_json, os_error_message
from facelab.utils.secrets import mask_secrets

if TYPE_CHECKING:
    import optuna

log = logging.getLogger("facelab")
PRUNED = "pruned"  # the stop_reason of a pruned trial's run
TRIAL_FILE = "trial.json"  # in a trial's run folder: its study, trial number and params
SURPLUS = "not run: n_trials were already complete or running when this worker asked for a trial"


class SweepError(FacelabError):
    """A sweep cannot go on (too many failed trials, a metric the runs do not report, no untried point left)."""


class Skipped(Exception):
    """The trial is given up before training (FAIL, ``skipped``, noted): ``n_trials`` were reached meanwhile (two
    workers asked for the last trial at once), or its point is another trial's."""


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
    exhausted: bool = False  # no untried point was left: the worker stops after the trial is recorded
    ran: list[int] = field(default_factory=list)  # numbers of the trials this runner ran

    def __call__(self, trial: optuna.Trial) -> float:
        import optuna

        try:
            raise_pending()  # a stop that came while the trial was being made: it ends here, noted
            trial.set_user_attr("worker", self.worker)
            trial.set_user_attr("pid", os.getpid())
            self._claim(trial)
            values = self._draw(trial)
            self.ran.append(trial.number)
            return self._run(trial, values)
        except (optuna.TrialPruned, NoValue, Skipped):
            raise  # noted already
        except DivergenceError as e:
            note_trial(trial, str(e).split(";")[0], ERROR)
            raise
        except FacelabError as e:
            note_trial(trial, str(e), ERROR)
            self.fatal = e
            raise
        except Exception as e:
            message = os_error_message(e)  # no space, no permission: every next trial would fail the same way
            note_trial(trial, message or f"{type(e).__name__}: {e}", ERROR)
            if message is not None:
                self.fatal = FacelabError(mask_secrets(message))
            raise
        except KeyboardInterrupt as e:  # Ctrl-C, SIGTERM, the launcher gone (facelab.sweeps.stopping)
            with stops_held():
                note_trial(trial, f"stopped: {e or 'interrupted'}", INTERRUPTED)
            raise

    def _claim(self, trial: optuna.Trial) -> None:
        import optuna

        trials = self.study.get_trials(deepcopy=False)
        done = sum(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in trials)
        ahead = sum(t.state == optuna.trial.TrialState.RUNNING and t.number < trial.number for t in trials)
        if done + ahead >= self.spec.n_trials:
            note_trial(trial, SURPLUS, SKIPPED)
            raise Skipped(SURPLUS)

    def _draw(self, trial: optuna.Trial) -> dict[str, Any]:
        """The trial's parameters (as config values), a point no other trial holds (facelab.sweeps.distinct)."""
        from facelab.sweeps.distinct import DistinctSampler, repeat_of

        values = suggest(trial, self.spec)
        sampler = self.study.sampler
        if not isinstance(sampler, DistinctSampler) or trial.number not in sampler.drawn:
            return values  # enqueued: run as given
        if trial.number in sampler.exhausted:
            self.exhausted = True
            note = (f"not run: all {sampler.space.size} points of the search space are tried or being tried "
                    f"(this one is trial {repeat_of(self.study, sampler.space, trial)}'s)")
            note_trial(trial, note, SKIPPED)
            raise Skipped(note)
        other = repeat_of(self.study, sampler.space, trial)
        if other is not None:  # another worker drew the same point at the same moment
            note = f"not run: trial {other} has the same parameters (drawn at the same moment in another worker)"
            note_trial(trial, note, SKIPPED)
            raise Skipped(note)
        return values

    def _run(self, trial: optuna.Trial, values: dict[str, Any]) -> float:
        import optuna

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
            with stops_held():
                trial.set_user_attr("cpu_seconds", round(cpu_seconds() - cpu0, 3))
                trial.set_user_attr("wall_seconds", round(time.monotonic() - t0, 3))
        trial.set_user_attr("epochs", int(summary["epochs"]))
        if pruning.pruned_at is not None:
            note = f"pruned after epoch {pruning.pruned_at} of {cfg.trainer.epochs}"
            note_trial(trial, note)
            raise optuna.TrialPruned(note)
        best = summary.get("best")
        if best is None or not math.isfinite(best):
            note_trial(trial, f"the run reported no finite {self.spec.metric}", ERROR)
            raise NoValue(f"trial {trial.number}: the run reported no finite {self.spec.metric}")
        return float(best)


class Heartbeat:
    """Marks a trial alive every ``interval`` seconds from a thread, as Optuna's own heartbeat does; a write
    that fails (the database busy for a moment) is tried again at the next beat instead of ending the beats."""

    def __init__(self, storage: Any, trial_id: int, interval: float) -> None:
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="facelab-heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        self.storage.record_heartbeat(self.trial_id)  # the first beat before anything can interrupt the trial
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception as e:  # noqa: BLE001 (a beat missed; the grace period covers several)
                log.warning(mask_secrets(f"heartbeat of trial {self.trial_id} not recorded: {e}"))


def run_trial(study: optuna.Study, storage: Any, runner: TrialRunner, *, heartbeat_s: int) -> None:
    """Ask the study for a trial, run it with heartbeats, and tell the study how it ended. A stop (Ctrl-C,
    SIGTERM, the launcher gone) ends it FAILED (interrupted, noted) and is raised again."""
    import optuna

    state = optuna.trial.TrialState
    study_id = storage.get_study_id_from_name(study.study_name)
    with stops_held(defer=True), warnings.catch_warnings():  # never a RUNNING trial without a heartbeat
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        trial = study.ask()
        beat = Heartbeat(storage, storage.get_trial_id_from_study_id_trial_number(study_id, trial.number),
                         heartbeat_s).start()
    value: float | None = None
    try:
        value = runner(trial)
        ended = state.COMPLETE
    except optuna.TrialPruned:
        ended = state.PRUNED
    except Exception as e:
        ended = state.FAIL
        if not isinstance(e, (FacelabError, Skipped, NoValue, DivergenceError)) and os_error_message(e) is None:
            log.warning(mask_secrets(f"trial {trial.number} failed:\n{traceback.format_exc()}"))
    except BaseException:
        beat.stop()
        _tell(study, trial, state.FAIL, None)
        raise
    beat.stop()
    _tell(study, trial, ended, value)
    gc.collect()


def _tell(study: optuna.Study, trial: optuna.Trial, state: Any, value: float | None) -> None:
    import optuna

    with stops_held():
        try:
            study.tell(trial, value, state=state)
        except optuna.exceptions.UpdateFinishedTrialError:  # failed as stale meanwhile (its beats were late)
            log.warning(f"trial {trial.number} was failed by another worker before it ended here "
                        f"(its heartbeats were late); ended {state.name} here")


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

        if not is_plain_name(study):
            raise SweepError(f"study {study!r} cannot name a folder under {DEFAULT_RUNS_ROOT}; give this worker's "
                             "folder with --dir")
        path = DEFAULT_RUNS_ROOT / study
        log.info(f"the sweep folder {recorded} is not on this machine: this worker's trials go to {path}")
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_worker(storage_url: str, study_name: str, *, sweep_dir: str | Path | None = None,
               threads: int | None = None) -> WorkerReport:
    """Run trials of study ``study_name`` until ``n_trials`` are COMPLETE or PRUNED.

    While the last trials run in other workers, this one waits: if one of them fails (its worker killed, its
    heartbeat stale), this worker runs a trial in its place. Every trial draws its point with a seed of its own
    (the spec's seed and the trial's number), so any number of workers, started any number of times, never
    spend a trial on a point the study holds (:mod:`facelab.sweeps.distinct`).

    Args:
        storage_url: the study database (the spec is read from the study).
        sweep_dir: where trial folders go (default: the sweep folder recorded in the study, when it is here).
        threads: torch threads for training (default: torch's).

    Raises:
        SweepError: ``max_failed`` trials failed, no untried point is left, or a user error in a trial (named),
            which stops the worker.
        StorageError: the database cannot be reached.
        StoreError: a store of the sweep changed since the study was made.
    """
    import torch

    if threads:
        torch.set_num_threads(threads)
    spec, recorded = read_spec(open_storage(storage_url), study_name, storage_url)
    storage = open_storage(storage_url, heartbeat_interval=spec.heartbeat_interval, grace_period=spec.grace_seconds)
    study = load_study(storage, spec)
    check_inputs(study, spec)
    folder = _sweep_dir(sweep_dir, recorded, study_name)
    runner = TrialRunner(spec, study, folder, storage_url)
    poll = min(2.0, float(spec.heartbeat_interval))
    while True:
        fail_stale_trials(study, storage, grace_s=spec.grace_seconds)
        counts = count_trials(study)
        if counts.done >= spec.n_trials:
            break
        if counts.failed >= spec.max_failures:
            raise SweepError(f"study {study_name}: {counts.failed} trials failed (max_failed {spec.max_failures}); "
                             "their notes are in facelab sweep report, their logs in the workers' logs")
        if counts.done + counts.running >= spec.n_trials:
            time.sleep(poll)  # the last trials run elsewhere; take over if one of them fails
            continue
        run_trial(study, storage, runner, heartbeat_s=spec.heartbeat_interval)
        if runner.fatal is not None:
            raise runner.fatal
        if runner.exhausted:
            raise SweepError(f"study {study_name}: every point of the search space is tried or being tried "
                             f"({counts.done} complete or pruned, {counts.failed} failed, {counts.running} running), "
                             f"so n_trials {spec.n_trials} cannot be reached without repeating one; widen the space "
                             "(a new sweep), or stop here: facelab sweep report shows what was found")
    return WorkerReport(study=study_name, sweep_dir=str(folder), trials=runner.ran, worker=runner.worker)
