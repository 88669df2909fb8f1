"""Hyperparameter sweeps on Optuna with a database: ``facelab sweep SPEC.yaml``.

A spec (:class:`SweepSpec`) names a training command, its base config, a search space over config fields, the
metric and direction, a sampler and a pruner; :func:`create_sweep` checks it all, makes the sweep folder and an
Optuna study (SQLite in the folder by default, any SQLAlchemy URL to share it between machines);
:func:`run_sweep` runs local worker processes (:func:`run_worker` is one worker, on any machine); every trial is
an ordinary run folder on a point of the space no other trial holds; :func:`resume_sweep` continues a sweep;
:func:`sweep_report` writes best.yaml and report.html.

    >>> spec = load_spec("sweep.yaml")                         # doctest: +SKIP
    >>> sweep = create_sweep(spec, out="runs", name="lr")      # doctest: +SKIP
    >>> run_sweep(sweep, workers=2)["best_value"]              # doctest: +SKIP
"""

from facelab.sweeps.commands import COMMANDS, SweepCommand
from facelab.sweeps.folder import Sweep, create_sweep, open_sweep, raise_n_trials, resume_sweep
from facelab.sweeps.launch import launcher_lock
from facelab.sweeps.report import dashboard_command, sweep_report
from facelab.sweeps.run import run_sweep
from facelab.sweeps.spec import SweepSpec, load_spec
from facelab.sweeps.stopping import stop_on_signals
from facelab.sweeps.storage import STORAGE_ENV, StorageError
from facelab.sweeps.validate import prepare_spec
from facelab.sweeps.worker import PruningCallback, SweepError, run_worker

__all__ = [
    "COMMANDS",
    "STORAGE_ENV",
    "PruningCallback",
    "StorageError",
    "Sweep",
    "SweepCommand",
    "SweepError",
    "SweepSpec",
    "create_sweep",
    "dashboard_command",
    "launcher_lock",
    "load_spec",
    "open_sweep",
    "prepare_spec",
    "raise_n_trials",
    "resume_sweep",
    "run_sweep",
    "run_worker",
    "stop_on_signals",
    "sweep_report",
]
