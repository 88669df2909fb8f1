"""The Optuna study of a sweep: made once with the resolved spec in its user attributes (so a worker that joins
from another machine needs only the storage URL and the study name), then loaded by every worker and report.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import facelab
from facelab.errors import ConfigError, FacelabError
from facelab.sweeps.space import stored_params
from facelab.sweeps.spec import SweepSpec
from facelab.sweeps.storage import StorageError, without_password

if TYPE_CHECKING:
    import optuna

SPEC_ATTR = "facelab_spec"  # study user attribute: the resolved spec (a mapping)
DIR_ATTR = "facelab_sweep_dir"  # study user attribute: the sweep folder, on the machine that made it
VERSION_ATTR = "facelab_version"


@dataclass(frozen=True)
class TrialCounts:
    """Trials of a study by state."""

    complete: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0
    waiting: int = 0

    @property
    def done(self) -> int:
        """Trials that count towards ``n_trials``: COMPLETE or PRUNED."""
        return self.complete + self.pruned


def count_trials(study: optuna.Study) -> TrialCounts:
    states = Counter(t.state.name for t in study.get_trials(deepcopy=False))
    return TrialCounts(complete=states["COMPLETE"], pruned=states["PRUNED"], failed=states["FAIL"],
                       running=states["RUNNING"], waiting=states["WAITING"])


def _names(storage: Any) -> list[str]:
    import optuna

    return optuna.get_all_study_names(storage)


def check_new_study(storage: Any, spec: SweepSpec, url: str) -> None:
    """Refuse a study name that the database already holds: with another search space it is another experiment;
    with the same one it is this sweep, continued with ``--resume`` (or joined with ``facelab sweep worker``).

    Raises:
        ConfigError: the name exists, saying how its space differs.
    """
    name = spec.study_name
    if name not in _names(storage):
        return
    try:
        stored, _ = read_spec(storage, name, url)
    except FacelabError:
        raise ConfigError(f"study {name!r} already exists in {without_password(url)} and was not made by facelab "
                          "sweep; choose another study_name") from None
    diff = space_difference(stored, spec)
    if diff:
        raise ConfigError(f"study {name!r} already exists in {without_password(url)} with another search space "
                          f"({diff}); choose another study_name (or --name), or continue that sweep as it is with "
                          "facelab sweep --resume DIR")
    raise ConfigError(f"study {name!r} already exists in {without_password(url)} with this search space; continue it "
                      "with facelab sweep --resume DIR, or join it with facelab sweep worker --storage URL --study "
                      f"{name}, or choose another study_name")


def space_difference(old: SweepSpec, new: SweepSpec) -> str:
    """How two search spaces differ, in words ('' when they are the same)."""
    a = {k: p.model_dump() for k, p in old.space.items()}
    b = {k: p.model_dump() for k, p in new.space.items()}
    parts = []
    if sorted(set(a) - set(b)):
        parts.append(f"it also varies {', '.join(sorted(set(a) - set(b)))}")
    if sorted(set(b) - set(a)):
        parts.append(f"it does not vary {', '.join(sorted(set(b) - set(a)))}")
    changed = [k for k in a if k in b and a[k] != b[k]]
    parts += [f"{k}: {a[k]} there, {b[k]} here" for k in changed]
    return "; ".join(parts)


def create_study(storage: Any, spec: SweepSpec, sweep_dir: Path) -> optuna.Study:
    """A new study for the resolved ``spec``, recording the spec and the sweep folder; ``enqueue`` trials first."""
    import optuna

    study = optuna.create_study(storage=storage, study_name=spec.study_name, direction=spec.direction,
                                sampler=optuna.samplers.RandomSampler())
    study.set_user_attr(SPEC_ATTR, spec.model_dump(mode="json"))
    study.set_user_attr(DIR_ATTR, str(Path(sweep_dir).resolve()))
    study.set_user_attr(VERSION_ATTR, facelab.__version__)
    for values in spec.enqueue:
        study.enqueue_trial(stored_params(spec, values))
    return study


def read_spec(storage: Any, name: str, url: str) -> tuple[SweepSpec, str | None]:
    """The spec and the sweep folder recorded in study ``name``.

    Raises:
        StorageError: no such study (listing those there are), or one not made by facelab sweep.
    """
    import optuna

    try:
        study = optuna.load_study(study_name=name, storage=storage, sampler=optuna.samplers.RandomSampler())
    except KeyError:
        names = _names(storage)
        raise StorageError(f"no study {name!r} in {without_password(url)}; studies there: "
                           f"{', '.join(names) or '(none)'}") from None
    attrs = study.user_attrs
    if SPEC_ATTR not in attrs:
        raise StorageError(f"study {name!r} in {without_password(url)} was not made by facelab sweep (it has no "
                           f"{SPEC_ATTR} user attribute)")
    return SweepSpec.from_dict(attrs[SPEC_ATTR], where=f"the spec recorded in study {name!r}"), attrs.get(DIR_ATTR)


def load_study(storage: Any, spec: SweepSpec, *, worker: int = 0) -> optuna.Study:
    """The study of ``spec`` with the sampler (seeded for ``worker``) and pruner it names."""
    import optuna

    from facelab.sweeps.space import grid
    from facelab.sweeps.validate import max_epochs

    sampler = spec.sampler.build(worker=worker, grid=grid(spec) if spec.sampler.name == "grid" else None)
    return optuna.load_study(study_name=spec.study_name, storage=storage, sampler=sampler,
                             pruner=spec.pruner.build(epochs=max_epochs(spec)))


def update_spec(study: optuna.Study, spec: SweepSpec) -> None:
    """Record a changed spec (``--resume --n-trials``) for every worker that loads the study after this."""
    study.set_user_attr(SPEC_ATTR, spec.model_dump(mode="json"))
