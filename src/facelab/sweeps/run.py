"""A sweep from its folder to its report: local worker processes until ``n_trials`` are COMPLETE or PRUNED."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from facelab.errors import ConfigError
from facelab.sweeps.folder import Sweep
from facelab.sweeps.launch import LaunchResult, launch_workers, launcher_lock
from facelab.sweeps.report import sweep_report
from facelab.sweeps.storage import open_storage
from facelab.sweeps.study import count_trials
from facelab.sweeps.worker import SweepError

if TYPE_CHECKING:
    import optuna


def run_sweep(sweep: Sweep, *, workers: int = 1, threads: int | None = None,
              on_trial: Callable[[optuna.trial.FrozenTrial], None] | None = None) -> dict[str, Any]:
    """Run ``workers`` local worker processes until the study has ``n_trials`` COMPLETE or PRUNED, then write
    the report; returns the report's figures plus what the workers did.

    Raises:
        SweepError: the workers ended before ``n_trials`` (after the report is written), naming their logs.
        FacelabError: another ``facelab sweep`` runs this folder's workers (:func:`launcher_lock`).
    """
    import optuna

    if workers < 1:
        raise ConfigError(f"--workers {workers}: give 1 or more")
    with launcher_lock(sweep.dir):
        launch = launch_workers(sweep.url, sweep.study_name, sweep.dir, workers=workers, threads=threads,
                                on_trial=on_trial)
        result = {**sweep_report(sweep.dir, storage=sweep.url), "launch": _launch_dict(launch)}
    study = optuna.load_study(study_name=sweep.study_name, storage=open_storage(sweep.url),
                              sampler=optuna.samplers.RandomSampler())
    counts = count_trials(study)
    if counts.done < sweep.spec.n_trials:
        failed = [w for w in launch.workers if w.returncode != 0]
        why = "; ".join(f"worker {w.index} exited with {w.returncode}: {w.last_line} (log {w.log})" for w in failed)
        raise SweepError(f"the sweep stopped with {counts.done} of {sweep.spec.n_trials} trials complete or pruned"
                         f"{': ' + why if why else ''}; report: {result['report']}; continue with facelab sweep "
                         f"--resume {sweep.dir}")
    return result


def _launch_dict(launch: LaunchResult) -> dict[str, Any]:
    return {"workers": [w.__dict__ for w in launch.workers], "cpu_seconds": launch.cpu_seconds,
            "wall_seconds": launch.wall_seconds}
