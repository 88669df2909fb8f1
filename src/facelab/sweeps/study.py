"""The Optuna study of a sweep: made once with the resolved spec in its user attributes (so a worker that joins
from another machine needs only the storage URL and the study name), then loaded by every worker and report.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import facelab
from facelab.errors import ConfigError, FacelabError, StoreError
from facelab.sweeps.failures import ERROR, INTERRUPTED, SKIPPED, failure_of
from facelab.sweeps.space import stored_params
from facelab.sweeps.spec import SweepSpec
from facelab.sweeps.storage import StorageError, without_password

if TYPE_CHECKING:
    import optuna

SPEC_ATTR = "facelab_spec"  # study user attribute: the resolved spec (a mapping)
DIR_ATTR = "facelab_sweep_dir"  # study user attribute: the sweep folder, on the machine that made it
VERSION_ATTR = "facelab_version"
INPUTS_ATTR = "facelab_inputs"  # study user attribute: store path -> its content hash when the study was made
#: what cannot change within a study: another value makes earlier trials incomparable (a new sweep instead)
FIXED_KEYS = ("command", "space", "metric", "direction", "study_name", "enqueue")


@dataclass(frozen=True)
class TrialCounts:
    """Trials of a study by state; FAILED ones by why (facelab.sweeps.failures): ``failed`` counts those whose
    training failed, the ones ``max_failed`` limits."""

    complete: int = 0
    pruned: int = 0
    failed: int = 0
    interrupted: int = 0
    skipped: int = 0
    running: int = 0
    waiting: int = 0

    @property
    def done(self) -> int:
        """Trials that count towards ``n_trials``: COMPLETE or PRUNED."""
        return self.complete + self.pruned


def count_trials(study: optuna.Study) -> TrialCounts:
    trials = study.get_trials(deepcopy=False)
    states = Counter(t.state.name for t in trials)
    failures = Counter(failure_of(t) for t in trials)
    return TrialCounts(complete=states["COMPLETE"], pruned=states["PRUNED"], failed=failures[ERROR],
                       interrupted=failures[INTERRUPTED], skipped=failures[SKIPPED], running=states["RUNNING"],
                       waiting=states["WAITING"])


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
    study.set_user_attr(INPUTS_ATTR, input_hashes(spec))
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


def load_study(storage: Any, spec: SweepSpec) -> optuna.Study:
    """The study of ``spec`` with the sampler (every trial drawing a point of its own: facelab.sweeps.distinct)
    and the pruner it names."""
    import optuna

    from facelab.sweeps.distinct import DistinctSampler
    from facelab.sweeps.validate import max_epochs

    sampler = DistinctSampler(spec, None if spec.sampler.walks else spec.sampler.build)
    return optuna.load_study(study_name=spec.study_name, storage=storage, sampler=sampler,
                             pruner=spec.pruner.build(epochs=max_epochs(spec)))


def store_paths(spec: SweepSpec) -> list[str]:
    """The stores the trials of ``spec`` read: the base's, and each choice when the space varies ``store``."""
    paths = [spec.base.get("store")]
    if "store" in spec.space:
        paths += list(getattr(spec.space["store"], "choices", []))
    return sorted({p for p in paths if isinstance(p, str)})


def input_hashes(spec: SweepSpec) -> dict[str, str]:
    """Store path -> its content hash, for each store of ``spec`` that opens here."""
    from facelab.data.store import Store

    out = {}
    for path in store_paths(spec):
        try:
            out[path] = Store.open(path).content_hash
        except FacelabError:
            continue  # not on this machine: its trials report that themselves
    return out


def input_changes(study: optuna.Study, spec: SweepSpec) -> list[str]:
    """The stores of ``spec`` whose content differs here from when the study was made, in words."""
    recorded = study.user_attrs.get(INPUTS_ATTR) or {}
    now = input_hashes(spec)
    return [f"store {path} (content hash {recorded[path][:12]} when the study was made, {now[path][:12]} here)"
            for path in sorted(set(recorded) & set(now)) if recorded[path] != now[path]]


def check_inputs(study: optuna.Study, spec: SweepSpec) -> None:
    """Trials train on the data the study started with, or not at all.

    Raises:
        StoreError: a store changed since the study was made, naming it.
    """
    changes = input_changes(study, spec)
    if changes:
        raise StoreError(f"study {spec.study_name}: {'; '.join(changes)} changed since the sweep started, so new "
                         "trials would not be comparable with the earlier ones; put the store back, or accept it "
                         "knowingly with facelab sweep --resume DIR --accept-changes (on the machine that holds "
                         "the sweep folder), or start a new sweep")


def record_inputs(study: optuna.Study, spec: SweepSpec) -> None:
    """Take the stores as they are now as the study's (a change accepted with ``--accept-changes``)."""
    study.set_user_attr(INPUTS_ATTR, {**(study.user_attrs.get(INPUTS_ATTR) or {}), **input_hashes(spec)})


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict) and data:
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): data}


def spec_changes(old: SweepSpec, new: SweepSpec) -> tuple[list[str], list[str]]:
    """How ``new`` differs from ``old`` (the storage URL aside), in words: (changes to :data:`FIXED_KEYS`, which no
    study can take; the other changes)."""
    a, b = _flat(old.model_dump(mode="json")), _flat(new.model_dump(mode="json"))
    fixed, other = [], []
    for key in sorted(set(a) | set(b)):
        if key == "storage" or a.get(key, "(none)") == b.get(key, "(none)"):
            continue
        text = f"{key}: {a.get(key, '(none)')} there, {b.get(key, '(none)')} here"
        (fixed if key.split(".")[0] in FIXED_KEYS else other).append(text)
    return fixed, other


def update_spec(study: optuna.Study, spec: SweepSpec) -> None:
    """Record a changed spec (``--resume --n-trials``) for every worker that loads the study after this."""
    study.set_user_attr(SPEC_ATTR, spec.model_dump(mode="json"))
