"""Dataset views: official and seeded splits, balanced subsets, simulated imbalance, filters, saved views.

Every view is a sorted ``int64`` array of store row indices; every random choice takes a ``seed``, so the
same call on the same store always returns the same rows. A set of views (``{"train": ..., "val": ...}``)
can be saved as JSON together with the store's content hash, so an experiment records exactly which rows
it used and refuses to reuse them against a different store.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from facelab.data.schema import LabelKind, LabelSpec, Partition
from facelab.data.store import Store
from facelab.errors import ConfigError, DataError, StoreError
from facelab.registry import Registry
from facelab.utils.io import atomic_write_json

SPLIT_NAMES = ("train", "val", "test")
VIEW_FORMAT = "facelab-view"
VIEW_VERSION = 1
Policy = Literal["official", "random", "auto"]
LabelValue = int | str | bool

SPLIT_POLICIES: Registry[dict[str, np.ndarray]] = Registry("split policy")


# ---- helpers shared by the views ------------------------------------------------------------------
def as_indices(store: Store, indices: Sequence[int] | np.ndarray) -> np.ndarray:
    """``indices`` as a 1-D int64 array, checked to be valid rows of ``store`` (StoreError otherwise)."""
    arr = np.asarray(indices)
    if arr.dtype == np.bool_:
        raise ConfigError("expected row indices, got a boolean mask; pass np.flatnonzero(mask)")
    rows = arr.astype(np.int64, copy=False).reshape(-1)
    if rows.size and (rows.min() < 0 or rows.max() >= len(store)):
        bad = rows[(rows < 0) | (rows >= len(store))][0]
        raise StoreError(f"{store.path}: row index {bad} is out of range; the store has {len(store)} rows")
    return rows


def resolve_value(store: Store, spec: LabelSpec, value: LabelValue) -> int:
    """The stored integer for ``value`` of label ``spec``: a class name (``"blond"``) or the value itself."""
    classes = spec.classes if spec.kind is not LabelKind.NUMERIC else None
    if isinstance(value, (bool, np.bool_)):
        value = int(value)
    if isinstance(value, str) and classes and value in classes:
        return classes.index(value)
    if isinstance(value, str) and value.lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, (int, np.integer)) and (classes is None or 0 <= value < len(classes)):
        return int(value)
    valid = "any integer" if classes is None else ", ".join(f"{c!r} ({i})" for i, c in enumerate(classes))
    raise StoreError(f"{store.path}: {value!r} is not a value of label {spec.name!r}; valid values: {valid}")


def _class_spec(store: Store, name: str) -> LabelSpec:
    spec = store.spec(name)
    if spec.kind is LabelKind.NUMERIC:
        raise ConfigError(
            f"label {name!r} is numeric; stratify/balance on binary or categorical labels "
            "(derive a categorical label, e.g. age groups, first)"
        )
    return spec


def _joint_codes(store: Store, rows: np.ndarray, names: Sequence[str]) -> tuple[np.ndarray, list[LabelSpec]]:
    """(n,) int64 code of the joint class combination of labels ``names`` for each row, and their specs.

    A row with an unknown value (-1) of any of the labels (an image a labels file gives no class) gets the
    code -1: a stratum of its own, which a split deals out like any other and a balanced subset leaves out.
    """
    specs = [_class_spec(store, name) for name in names]
    if not specs:
        return np.zeros(rows.size, np.int64), specs
    cols = store.labels[np.ix_(rows, [store.label_index(s.name) for s in specs])].astype(np.int64)
    dims = tuple(int(s.num_classes) for s in specs)
    known = (cols >= 0).all(axis=1)
    codes = np.full(rows.size, -1, np.int64)
    codes[known] = np.ravel_multi_index(tuple(cols[known].T), dims)
    return codes, specs


def _describe_combo(code: int, specs: Sequence[LabelSpec]) -> str:
    values = np.unravel_index(code, tuple(int(s.num_classes) for s in specs))
    return ", ".join(f"{s.name}={s.classes[int(v)]}" for s, v in zip(specs, values, strict=True))


def _check_fractions(fractions: Sequence[float]) -> np.ndarray:
    fr = np.asarray(fractions, dtype=np.float64)
    if fr.shape != (len(SPLIT_NAMES),) or (fr < 0).any() or fr[0] <= 0 or not math.isclose(fr.sum(), 1.0, abs_tol=1e-6):
        raise ConfigError(
            f"split fractions must be {len(SPLIT_NAMES)} non-negative numbers for {'/'.join(SPLIT_NAMES)} "
            f"summing to 1 with train > 0, e.g. (0.7, 0.15, 0.15); got {tuple(fractions)}"
        )
    return fr / fr.sum()


# ---- splits ---------------------------------------------------------------------------------------
def official_splits(store: Store) -> dict[str, np.ndarray]:
    """The official train/val/test partitions recorded in the store (e.g. CelebA's list_eval_partition).

    Raises:
        StoreError: the store has no official partitions.
    """
    if not store.has_partitions:
        raise StoreError(
            f"{store.path}: source {store.source!r} has no official partitions; make a seeded split instead "
            "with views.split(store, fractions=..., seed=...) (or split policy 'random' / 'auto')"
        )
    return {name: store.partition_indices(Partition[name.upper()]).astype(np.int64) for name in SPLIT_NAMES}


def split(
    store: Store,
    *,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    stratify: str | Sequence[str] | None = None,
    group_by_identity: bool = True,
    indices: Sequence[int] | np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Seeded random train/val/test split, stratified and identity-disjoint.

    Without identities (or with ``group_by_identity=False``) rows are ordered by stratum and dealt to the
    splits in proportion, so each split's size is within one row of ``fraction * n`` and every stratum
    (joint combination of the ``stratify`` labels) is split in the same proportions (within one row).
    With identities, whole identities are dealt to the splits by the greedy of scikit-learn's
    ``StratifiedGroupKFold`` adapted to unequal targets (largest identities first, each to the split
    furthest below its per-stratum targets), so no identity appears in two splits and fractions and strata
    hold to within about one identity's images. (``StratifiedGroupKFold`` itself plus fold assignment
    took 25-45 s at CelebA's 10,177 identities; this takes under a second.) Images with an unknown
    identity (-1) are treated as singletons.

    Args:
        store: the store.
        fractions: shares of train/val/test; they must sum to 1 (val/test may be 0).
        seed: random seed; same seed, same split.
        stratify: a binary/categorical label, or several (stratified on their joint combination).
        group_by_identity: keep each identity inside one split when the store has identities.
        indices: split only these rows (default: the whole store).

    Returns:
        ``{"train", "val", "test"}`` -> sorted int64 row indices, disjoint, together covering the input rows.
    """
    fr = _check_fractions(fractions)
    rows = np.arange(len(store), dtype=np.int64) if indices is None else np.unique(as_indices(store, indices))
    names = [stratify] if isinstance(stratify, str) else list(stratify or [])
    strata, _ = _joint_codes(store, rows, names)
    if group_by_identity and store.has_identities:
        assign = _assign_groups(strata, _groups(store.identities[rows]), fr, seed)
    else:
        assign = _assign_rows(strata, fr, seed)
    return {name: rows[assign == k] for k, name in enumerate(SPLIT_NAMES)}


def _deal(n: int, fractions: np.ndarray) -> np.ndarray:
    """(n,) split id per position, interleaved so that every contiguous run has the fractions (within 1).

    Split k "fires" at times (m + 0.5) / fraction_k; positions take the splits in order of firing time.
    """
    times, ids = [], []
    for k, f in enumerate(fractions):
        if f > 0:
            m = np.arange(math.ceil(f * n) + 1)
            times.append((m + 0.5) / f)
            ids.append(np.full(m.size, k, np.int8))
    order = np.argsort(np.concatenate(times), kind="stable")[:n]
    return np.concatenate(ids)[order]


def _assign_rows(strata: np.ndarray, fractions: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(strata.size), strata))  # by stratum, random inside a stratum
    assign = np.empty(strata.size, np.int8)
    assign[order] = _deal(strata.size, fractions)
    return assign


def _groups(identities: np.ndarray) -> np.ndarray:
    groups = identities.astype(np.int64).copy()
    unknown = groups < 0
    groups[unknown] = -1 - np.arange(int(unknown.sum()))  # each unknown identity is its own group
    return groups


def _assign_groups(strata: np.ndarray, groups: np.ndarray, fractions: np.ndarray, seed: int) -> np.ndarray:
    """Deal whole groups to the splits, stratified: the greedy of scikit-learn's ``StratifiedGroupKFold``
    with unequal split targets.

    Groups go largest first (random order among equal sizes); each goes to the split whose class counts
    are furthest below target, measured relative to each class's total, for the classes in that group.
    """
    _, g = np.unique(groups, return_inverse=True)  # (n,) group number
    _, c = np.unique(strata, return_inverse=True)  # (n,) class number
    n_groups, n_classes = int(g.max()) + 1, int(c.max()) + 1
    active = np.flatnonzero(fractions > 0)
    if n_groups < active.size:
        raise DataError(
            f"only {n_groups} identities for {active.size} identity-disjoint splits; "
            "use group_by_identity=False or fewer non-zero fractions"
        )
    pairs, pair_counts = np.unique(g * n_classes + c, return_counts=True)  # sorted by group, then class
    pair_class = pairs % n_classes
    bounds = np.searchsorted(pairs // n_classes, np.arange(n_groups + 1))
    sizes = np.bincount(g)
    order = np.random.default_rng(seed).permutation(n_groups)
    order = order[np.argsort(-sizes[order], kind="stable")]
    totals = np.bincount(c).astype(np.float64)
    deviation = -fractions[active, None] * totals[None, :]  # (K, C) assigned minus target
    weighted = pair_counts / totals[pair_class]
    taken = np.zeros(active.size, np.int64)  # groups per split, to give every split at least one
    split_of_group = np.empty(n_groups, np.int8)
    for rank, gi in enumerate(order):
        lo, hi = bounds[gi], bounds[gi + 1]
        cls = pair_class[lo:hi]
        score = deviation[:, cls] @ weighted[lo:hi]  # (K,) lower = further below target
        if (taken == 0).sum() >= n_groups - rank:
            score[taken > 0] = np.inf
        k = int(np.argmin(score))
        deviation[k, cls] += pair_counts[lo:hi]
        taken[k] += 1
        split_of_group[gi] = active[k]
    return split_of_group[g]


@SPLIT_POLICIES.register("official")
def _official_policy(store: Store, **_: Any) -> dict[str, np.ndarray]:
    return official_splits(store)


@SPLIT_POLICIES.register("random")
def _random_policy(store: Store, **kwargs: Any) -> dict[str, np.ndarray]:
    return split(store, **kwargs)


@SPLIT_POLICIES.register("auto")
def _auto_policy(store: Store, **kwargs: Any) -> dict[str, np.ndarray]:
    return official_splits(store) if store.has_partitions else split(store, **kwargs)


def splits_for(
    store: Store,
    *,
    policy: Policy = "auto",
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    stratify: str | Sequence[str] | None = None,
    group_by_identity: bool = True,
) -> dict[str, np.ndarray]:
    """Train/val/test rows by policy: ``official`` partitions, a ``random`` :func:`split`, or ``auto``
    (official when the store has partitions, else random). The split options apply to random splits."""
    kwargs = {"fractions": fractions, "seed": seed, "stratify": stratify, "group_by_identity": group_by_identity}
    return SPLIT_POLICIES.get(policy)(store, **kwargs)


# ---- subsets --------------------------------------------------------------------------------------
def balanced_subset(
    store: Store,
    indices: Sequence[int] | np.ndarray,
    *,
    targets: Sequence[str],
    seed: int = 0,
    per_group: int | None = None,
) -> np.ndarray:
    """Rows with equal counts of every combination of the ``targets`` labels, by random undersampling (rows
    with an unknown value of a target are left out).

    Args:
        store: the store.
        indices: the rows to choose from (e.g. a training split).
        targets: binary/categorical labels whose joint combinations are balanced.
        seed: random seed.
        per_group: rows per combination; default the size of the smallest combination.

    Raises:
        DataError: a combination has no row (named in the message) or fewer than ``per_group`` rows.
    """
    if not targets:
        raise ConfigError("balanced_subset needs at least one target label")
    rows = as_indices(store, indices)
    codes, specs = _joint_codes(store, rows, list(targets))
    rows, codes = rows[codes >= 0], codes[codes >= 0]  # an unknown value belongs to no combination
    counts = np.bincount(codes, minlength=math.prod(int(s.num_classes) for s in specs))
    if (counts == 0).any():
        empty = [_describe_combo(c, specs) for c in np.flatnonzero(counts == 0)]
        raise DataError(
            f"cannot balance {', '.join(targets)}: no image has {empty[0]}"
            + (f" (nor {len(empty) - 1} other combinations)" if len(empty) > 1 else "")
            + "; balance on fewer labels or choose other rows"
        )
    take = int(counts.min()) if per_group is None else int(per_group)
    if take < 1 or take > counts.min():
        small = int(np.argmin(counts))
        raise DataError(
            f"per_group={per_group} but combination {_describe_combo(small, specs)} has only {counts[small]} rows"
        )
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(rows.size), codes))  # by combination, random inside each
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    picked = order[(starts[:, None] + np.arange(take)[None, :]).reshape(-1)]
    return np.sort(rows[picked])


def simulate_imbalance(
    store: Store,
    indices: Sequence[int] | np.ndarray,
    *,
    target: str,
    keep: float,
    minority: LabelValue | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Keep only a ``keep`` share of the minority class of a binary label, and every other row.

    Meant for the training split only: evaluation must stay on the untouched val/test rows, otherwise
    the metrics measure the simulated distribution rather than the real one.

    Args:
        store: the store.
        indices: the rows to thin (a training split).
        target: a binary label.
        keep: share of minority rows kept, 0 < keep <= 1; exactly ``floor(keep * n_minority + 0.5)`` rows.
        minority: the minority value (0/1 or class name); default the rarer value among ``indices``
            (1 on a tie).
        seed: random seed of the kept minority rows.
    """
    spec = store.spec(target)
    if spec.kind is not LabelKind.BINARY:
        raise ConfigError(f"simulate_imbalance needs a binary target; {target!r} is {spec.kind.value}")
    if not 0 < keep <= 1:
        raise ConfigError(f"keep must be in (0, 1] (the share of minority rows kept); got {keep}")
    rows = as_indices(store, indices)
    values = store.column(target)[rows]
    if minority is None:
        minority = 1 if (values == 1).sum() <= (values == 0).sum() else 0
    minority = resolve_value(store, spec, minority)
    minor = rows[values == minority]
    n_keep = math.floor(keep * minor.size + 0.5)
    kept = np.random.default_rng(seed).choice(minor, size=n_keep, replace=False)
    return np.sort(np.concatenate([rows[values != minority], kept]))


def filter_by(
    store: Store,
    indices: Sequence[int] | np.ndarray,
    conditions: Mapping[str, LabelValue | Sequence[LabelValue]] | None = None,
    /,
    **more: LabelValue | Sequence[LabelValue],
) -> np.ndarray:
    """Rows whose labels match every condition: ``filter_by(store, rows, Male=1, hair_color="blond")``.

    A condition's value is a class name or stored value, or a list of them (any of). Conditions may be
    given as a mapping (for names that are not identifiers) and/or as keywords.

    Raises:
        StoreError: unknown label or value (the message lists the valid ones).
    """
    rows = np.sort(as_indices(store, indices))
    keep = np.ones(rows.size, dtype=bool)
    for name, wanted in {**(conditions or {}), **more}.items():
        spec = store.spec(name)
        choices = wanted if isinstance(wanted, (list, tuple, set, np.ndarray)) else [wanted]
        values = [resolve_value(store, spec, v) for v in choices]
        keep &= np.isin(store.column(name)[rows], values)
    return rows[keep]


# ---- saved views ----------------------------------------------------------------------------------
def save_view(
    path: str | Path, splits: Mapping[str, np.ndarray], store: Store, *, note: str | None = None
) -> None:
    """Write ``splits`` (name -> rows) as JSON with the store's identity and content hash, atomically."""
    doc = {
        "format": VIEW_FORMAT,
        "version": VIEW_VERSION,
        "store": {
            "path": str(store.path),
            "source": store.source,
            "count": len(store),
            "content_hash": store.content_hash,
        },
        "note": note,
        "counts": {name: int(np.size(rows)) for name, rows in splits.items()},
        "splits": {name: as_indices(store, rows).tolist() for name, rows in splits.items()},
    }
    atomic_write_json(Path(path), doc)


def load_view(path: str | Path, store: Store) -> dict[str, np.ndarray]:
    """Read a view written by :func:`save_view`, checking it was made from this very store.

    Raises:
        DataError: the file is missing or not a view.
        StoreError: the view was saved for a store with different content (hash mismatch).
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: view file does not exist") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not a valid view file (JSON error at line {e.lineno}: {e.msg})") from None
    if not isinstance(doc, dict) or doc.get("format") != VIEW_FORMAT or "splits" not in doc:
        raise DataError(f"{path}: not a facelab view file (written by facelab.data.views.save_view)")
    saved = doc.get("store", {}).get("content_hash")
    if saved != store.content_hash:
        raise StoreError(
            f"{path}: view was made for a store with content hash {saved} (source "
            f"{doc.get('store', {}).get('source')!r}, {doc.get('store', {}).get('path')}), but {store.path} has "
            f"{store.content_hash}; use the matching store or recreate the view"
        )
    return {name: np.asarray(rows, dtype=np.int64) for name, rows in doc["splits"].items()}


#: smallest training split a validation set is held out of
MIN_ROWS_FOR_HOLDOUT = 20


def run_splits(
    store: Store,
    *,
    policy: Policy = "auto",
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    stratify: str | Sequence[str] | None = None,
    val_share: float | None = None,
    need_test: bool = False,
    hold_out_val: bool = True,
) -> tuple[dict[str, np.ndarray], str]:
    """The train/val/test rows of a run (the one place where runs and studies make their splits), and how.

    :func:`splits_for` completed by :func:`complete_splits` (a test set from val when the caller needs one
    and there is none, a validation hold-out from train when there is no val split).

    Args:
        store, policy, fractions, seed, stratify: as :func:`splits_for`.
        val_share: share of train held out when there is no val split (default: ``fractions``' val share of
            train + val, or 0.1).
        need_test: whether the caller scores a test split itself (studies); a run that only trains does not.
        hold_out_val: hold a val split out of train when there is none (False: generative models, which
            would rather train on every row than report a validation loss).

    Returns:
        ({"train", "val", "test"} -> sorted rows, a sentence saying how they were chosen).
    """
    names = [stratify] if isinstance(stratify, str) else list(stratify or [])
    s = splits_for(store, policy=policy, fractions=fractions, seed=seed, stratify=names)
    official = policy == "official" or (policy == "auto" and store.has_partitions)
    how = "official partitions" if official else f"seeded random split (seed {seed}, fractions {tuple(fractions)})"
    if val_share is None:
        val_share = (fractions[1] / (fractions[0] + fractions[1]) if fractions[1] else 0.0) or 0.1
    s, notes = complete_splits(store, s, seed=seed, stratify=names, val_share=val_share, need_test=need_test,
                               hold_out_val=hold_out_val)
    return s, "; ".join([how, *notes])


def complete_splits(
    store: Store,
    splits: Mapping[str, np.ndarray],
    *,
    seed: int = 0,
    stratify: Sequence[str] = (),
    val_share: float = 0.15,
    need_test: bool = False,
    hold_out_val: bool = True,
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Fill in what a split lacks for the caller's purpose; returns the splits and notes on what was done.

    - ``need_test`` and no test rows (the CelebA subset ships train and val only): the val rows become the
      test set;
    - ``hold_out_val`` and no val rows (CIFAR-10 ships train and test; or after the move above): a
      ``val_share`` of train, identity-disjoint and stratified on ``stratify``, is held out for validation
      (model selection), never the test rows.
    """
    empty = np.zeros(0, np.int64)
    train, val, test = (np.asarray(splits.get(k, empty), dtype=np.int64) for k in SPLIT_NAMES)
    notes = []
    if need_test and test.size == 0 and val.size:
        test, val = val, empty
        notes.append("the val rows are the test set (there is no test partition)")
    if hold_out_val and val.size == 0 and train.size >= MIN_ROWS_FOR_HOLDOUT:
        held = split(store, indices=train, fractions=(1 - val_share, val_share, 0.0), seed=seed, stratify=list(stratify))
        train, val = held["train"], held["val"]
        on = f", stratified on {', '.join(stratify)}" if stratify else ""
        notes.append(f"val is {val_share:.0%} of train (seed {seed}, identity-disjoint{on})")
    return {"train": train, "val": val, "test": test}, notes
