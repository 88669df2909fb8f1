"""A sweep folder and its study: made once the spec checks out (:func:`create_sweep`), opened again to continue it,
join it or report on it (:func:`open_sweep`).

The sweep folder ``runs/sweep-<name>`` holds config.yaml (the resolved spec), study.db (the default storage),
one run folder per trial (``trial-0000`` ...), workers/ (their logs, and the launcher's lock), plots/, best.yaml,
summary.json and report.html.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from facelab.config import read_yaml
from facelab.errors import ConfigError
from facelab.runs.folder import check_run_name, create_run_dir
from facelab.sweeps.launch import launcher_lock
from facelab.sweeps.spec import SweepSpec, is_plain_name
from facelab.sweeps.storage import default_storage, open_storage, strip_password, without_password
from facelab.sweeps.study import (check_inputs, check_new_study, create_study, read_spec, record_inputs, spec_changes,
                                  update_spec)
from facelab.sweeps.validate import check_algorithms, prepare_spec

KIND = "sweep"  # run folders are sweep-<name>


@dataclass(frozen=True)
class Sweep:
    """A sweep folder with its resolved spec and the URL its study is reached at (with a password, if given)."""

    dir: Path
    spec: SweepSpec
    url: str

    @property
    def study_name(self) -> str:
        assert self.spec.study_name is not None
        return self.spec.study_name


def create_sweep(spec: SweepSpec, *, out: str | Path = "runs", name: str | None = None) -> Sweep:
    """Check ``spec`` (every parameter against its field, the database, the study name) and only then make the
    sweep folder ``<out>/sweep-<name>`` and its study.

    Raises:
        ConfigError: a bad spec, or a study name the database already holds (see :func:`check_new_study`).
        StorageError: a database that cannot be reached.
        FacelabError: the folder already holds a run.
    """
    name = check_run_name(name) if name is not None else time.strftime("%Y%m%d-%H%M%S")
    resolved = prepare_spec(spec)
    resolved = resolved.model_copy(update={"study_name": resolved.study_name or f"{KIND}-{name}"})
    if not is_plain_name(resolved.study_name):
        raise ConfigError(f"--name {name!r}: the study would be named {resolved.study_name!r}, which is not a plain "
                          "folder name of at most 200 characters; give a shorter --name or a study_name")
    explicit = resolved.storage
    if explicit is not None:  # a shared database: reachable, and the name free, before any folder is made
        check_new_study(open_storage(explicit), resolved, explicit)
    sweep_dir = create_run_dir(KIND, name=name, root=out)
    # Two launchers that name the same folder at the same moment: one holds the lock, the other is refused
    # before it writes or removes anything.
    with launcher_lock(sweep_dir):
        try:
            url = explicit or default_storage(sweep_dir)
            recorded = resolved.model_copy(update={"storage": strip_password(explicit) if explicit else None})
            recorded.save(sweep_dir / "config.yaml")
            create_study(open_storage(url), recorded, sweep_dir)
        except BaseException:
            shutil.rmtree(sweep_dir, ignore_errors=True)  # nothing ran in it
            raise
    return Sweep(sweep_dir, recorded, url)


def open_sweep(sweep_dir: str | Path, *, storage: str | None = None) -> Sweep:
    """The sweep in ``sweep_dir``, with the spec its study records; ``storage`` gives the database URL with its
    password when the recorded one (which has none) is not enough.

    Raises:
        ConfigError: not a sweep folder.
        StorageError: its database cannot be reached, or holds no such study.
    """
    sweep_dir = Path(sweep_dir)
    spec = _folder_spec(sweep_dir)
    url = storage or spec.storage or default_storage(sweep_dir)
    stored, _ = read_spec(open_storage(url), spec.study_name or sweep_dir.name, url)
    return Sweep(sweep_dir, stored, url)


def _folder_spec(sweep_dir: Path) -> SweepSpec:
    path = sweep_dir / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{sweep_dir}: no config.yaml, so not a sweep folder (facelab sweep makes runs/sweep-NAME)")
    data = read_yaml(path)
    if "space" not in data:
        raise ConfigError(f"{sweep_dir}: its config.yaml is not a sweep spec (no space:); give a sweep folder")
    return SweepSpec.from_dict(data, where=str(path))


def resume_sweep(sweep_dir: str | Path, *, storage: str | None = None, n_trials: int | None = None,
                 accept_changes: bool = False) -> Sweep:
    """The sweep in ``sweep_dir``, to be continued: its config.yaml must still be the spec its study records, and
    its stores hold the data they held, unless ``accept_changes`` (then the study takes them as they are now);
    ``n_trials`` raises the target.

    Raises:
        ConfigError: config.yaml changed (naming each difference): a change of the command, space, metric,
            direction, study name or enqueued trials always, any other without ``accept_changes``.
        StoreError: a store changed, without ``accept_changes``.
    """
    import optuna

    sweep = open_sweep(sweep_dir, storage=storage)
    path = sweep.dir / "config.yaml"
    edited = _folder_spec(sweep.dir)
    fixed, other = spec_changes(sweep.spec, edited)
    if fixed:
        raise ConfigError(f"{path} changed since the sweep started ({'; '.join(fixed)}), and a study cannot take "
                          "that change (its earlier trials would not be comparable); put config.yaml back, or start a "
                          "new sweep with the changed spec")
    if other and not accept_changes:
        raise ConfigError(f"{path} differs from the spec its study records ({'; '.join(other)}); put it back, or "
                          f"continue with the changed spec knowingly: facelab sweep --resume {sweep.dir} "
                          "--accept-changes")
    study = optuna.load_study(study_name=sweep.study_name, storage=open_storage(sweep.url),
                              sampler=optuna.samplers.RandomSampler())
    if other:
        spec = prepare_spec(edited.model_copy(update={"storage": sweep.spec.storage}))
        update_spec(study, spec)
        spec.save(path)
        sweep = Sweep(sweep.dir, spec, sweep.url)
    if accept_changes:
        record_inputs(study, sweep.spec)
    else:
        check_inputs(study, sweep.spec)
    if n_trials is not None and n_trials != sweep.spec.n_trials:
        sweep = raise_n_trials(sweep, n_trials)
    return sweep


def raise_n_trials(sweep: Sweep, n_trials: int) -> Sweep:
    """Continue to ``n_trials`` (COMPLETE or PRUNED) in all; recorded in the study and config.yaml.

    Raises:
        ConfigError: fewer than the sweep's, or more than a finite space has points.
    """
    import optuna

    if n_trials < sweep.spec.n_trials:
        raise ConfigError(f"--n-trials {n_trials}: the sweep already aims at {sweep.spec.n_trials}; give more")
    spec = sweep.spec.model_copy(update={"n_trials": n_trials})
    check_algorithms(spec)
    study = optuna.load_study(study_name=sweep.study_name, storage=open_storage(sweep.url),
                              sampler=optuna.samplers.RandomSampler())
    update_spec(study, spec)
    spec.save(sweep.dir / "config.yaml")
    return Sweep(sweep.dir, spec, sweep.url)


def describe_storage(sweep: Sweep) -> str:
    """The study's database, as messages show it (no password)."""
    return without_password(sweep.url)
