"""views: splits (fractions, identities, stratification, determinism), subsets, filters, saved views."""

from __future__ import annotations

import json

import numpy as np
import pytest

from facelab.data import views
from facelab.data.schema import LabelKind, LabelSpec
from facelab.errors import ConfigError, DataError, StoreError
from tests.helpers import make_store

SPECS = [
    LabelSpec("Male", LabelKind.BINARY),
    LabelSpec("Smiling", LabelKind.BINARY),
    LabelSpec("hair_color", LabelKind.CATEGORICAL, ("black", "blond", "brown")),
    LabelSpec("age", LabelKind.NUMERIC),
]


def _labels(n: int, seed: int, identities: np.ndarray | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    male = rng.random(n) < 0.4
    if identities is not None:  # sex is a property of the identity, as in CelebA
        male = (identities * 2654435761 % 97) < 40
    smiling = rng.random(n) < 0.2
    hair = rng.choice(3, size=n, p=[0.5, 0.15, 0.35])
    age = rng.integers(1, 90, size=n)
    return np.stack([male, smiling, hair, age], axis=1).astype(np.int32)


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """1,000 rows, no identities, no partitions."""
    folder = tmp_path_factory.mktemp("plain")
    return make_store(folder / "s", n=1000, size=4, label_specs=SPECS, labels=_labels(1000, 1))


@pytest.fixture(scope="module")
def people(tmp_path_factory):
    """1,200 rows of 150 identities (1-15 images each), with official partitions."""
    rng = np.random.default_rng(2)
    ids = np.repeat(np.arange(150), rng.integers(1, 16, size=150))[:1200]
    ids = np.concatenate([ids, rng.integers(0, 150, size=1200 - ids.size)])
    parts = rng.choice(3, size=ids.size, p=[0.8, 0.1, 0.1])
    return make_store(
        tmp_path_factory.mktemp("people") / "s", n=ids.size, size=4, label_specs=SPECS,
        labels=_labels(ids.size, 3, ids), identities=ids, partitions=parts,
    )


def _check_partition_of(splits: dict[str, np.ndarray], rows: np.ndarray) -> None:
    assert list(splits) == ["train", "val", "test"]
    for r in splits.values():
        assert r.dtype == np.int64 and np.all(np.diff(r) > 0)  # sorted, unique
    allrows = np.concatenate(list(splits.values()))
    assert allrows.size == rows.size and np.array_equal(np.sort(allrows), np.sort(rows))


# ---- official / policies --------------------------------------------------------------------------
def test_official_splits_follow_partition_column(people):
    s = views.official_splits(people)
    for code, name in enumerate(["train", "val", "test"]):
        assert np.array_equal(s[name], np.flatnonzero(people.partitions == code))


def test_official_splits_without_partitions_suggests_split(plain):
    with pytest.raises(StoreError, match=r"no official partitions.*split\("):
        views.official_splits(plain)


def test_splits_for_policies(plain, people):
    assert np.array_equal(views.splits_for(people, policy="auto")["val"], views.official_splits(people)["val"])
    auto = views.splits_for(plain, policy="auto", seed=3)
    rand = views.split(plain, seed=3)
    assert all(np.array_equal(auto[k], rand[k]) for k in rand)
    random_people = views.splits_for(people, policy="random", seed=0)
    assert not np.array_equal(random_people["test"], views.official_splits(people)["test"])
    with pytest.raises(ConfigError, match="official, random"):
        views.splits_for(plain, policy="bogus")


# ---- random splits --------------------------------------------------------------------------------
@pytest.mark.parametrize("fractions", [(0.7, 0.15, 0.15), (0.8, 0.2, 0.0), (0.5, 0.25, 0.25)])
def test_split_honours_fractions_exactly_without_identities(plain, fractions):
    s = views.split(plain, fractions=fractions, seed=0, stratify="hair_color")
    _check_partition_of(s, np.arange(len(plain)))
    for name, f in zip(s, fractions, strict=True):
        assert abs(s[name].size - f * len(plain)) <= 1


def test_split_stratifies_joint_labels(plain):
    s = views.split(plain, seed=5, stratify=["Male", "hair_color"])
    male, hair = plain.column("Male"), plain.column("hair_color")
    for m in (0, 1):
        for h in range(3):
            stratum = (male == m) & (hair == h)
            for name, f in zip(s, (0.7, 0.15, 0.15), strict=True):
                assert abs(stratum[s[name]].sum() - f * stratum.sum()) <= 2


def test_split_is_deterministic_and_seeded(plain, people):
    for store in (plain, people):
        a, b = views.split(store, seed=11, stratify="Male"), views.split(store, seed=11, stratify="Male")
        c = views.split(store, seed=12, stratify="Male")
        assert all(np.array_equal(a[k], b[k]) for k in a)
        assert not np.array_equal(a["train"], c["train"])


def test_split_keeps_identities_disjoint_and_close_to_fractions(people):
    s = views.split(people, seed=0, stratify="Smiling")
    _check_partition_of(s, np.arange(len(people)))
    ids = {k: set(people.identities[r].tolist()) for k, r in s.items()}
    assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"] and not ids["val"] & ids["test"]
    for name, f in zip(s, (0.7, 0.15, 0.15), strict=True):
        assert abs(s[name].size / len(people) - f) < 0.04
    overall = people.column("Smiling").mean()
    for rows in s.values():
        assert abs(people.column("Smiling")[rows].mean() - overall) < 0.05


def test_split_unknown_identities_are_singletons(tmp_path):
    ids = np.where(np.arange(300) % 3 == 0, -1, np.arange(300) // 10)
    store = make_store(tmp_path / "s", n=300, size=4, identities=ids)
    s = views.split(store, seed=1)
    _check_partition_of(s, np.arange(300))
    known = {k: set(ids[r][ids[r] >= 0].tolist()) for k, r in s.items()}
    assert not known["train"] & known["val"] and not known["val"] & known["test"]


def test_split_can_ignore_identities_and_split_a_subset(people):
    rows = views.official_splits(people)["train"]
    s = views.split(people, indices=rows, fractions=(0.9, 0.1, 0.0), group_by_identity=False, seed=0)
    _check_partition_of(s, rows)
    assert s["test"].size == 0 and abs(s["val"].size - 0.1 * rows.size) <= 1


def test_split_errors(plain, tmp_path):
    with pytest.raises(ConfigError, match="summing to 1"):
        views.split(plain, fractions=(0.7, 0.2, 0.2))
    with pytest.raises(ConfigError, match="summing to 1"):
        views.split(plain, fractions=(0.5, 0.5))
    with pytest.raises(ConfigError, match="numeric"):
        views.split(plain, stratify="age")
    with pytest.raises(StoreError, match="no label 'Bald'.*Male"):
        views.split(plain, stratify="Bald")
    two = make_store(tmp_path / "two", n=10, size=4, identities=[0] * 5 + [1] * 5)
    with pytest.raises(DataError, match="only 2 identities"):
        views.split(two)


# ---- subsets --------------------------------------------------------------------------------------
def test_balanced_subset_has_equal_counts_of_every_combination(plain):
    rows = views.split(plain, seed=0)["train"]
    sub = views.balanced_subset(plain, rows, targets=["Male", "hair_color"], seed=0)
    assert np.all(np.diff(sub) > 0) and np.isin(sub, rows).all()
    combos = plain.column("Male")[sub] * 3 + plain.column("hair_color")[sub]
    counts = np.bincount(combos, minlength=6)
    full = np.bincount(plain.column("Male")[rows] * 3 + plain.column("hair_color")[rows], minlength=6)
    assert np.all(counts == full.min())
    again = views.balanced_subset(plain, rows, targets=["Male", "hair_color"], seed=0)
    other = views.balanced_subset(plain, rows, targets=["Male", "hair_color"], seed=1)
    assert np.array_equal(sub, again) and not np.array_equal(sub, other)
    eight = views.balanced_subset(plain, rows, targets=["Smiling"], per_group=8)
    assert np.bincount(plain.column("Smiling")[eight]).tolist() == [8, 8]


def test_balanced_subset_names_the_empty_combination(plain):
    rows = np.flatnonzero((plain.column("Male") == 0) | (plain.column("hair_color") != 1))
    with pytest.raises(DataError, match="Male=yes, hair_color=blond"):
        views.balanced_subset(plain, rows, targets=["Male", "hair_color"])
    with pytest.raises(DataError, match="only"):
        views.balanced_subset(plain, np.arange(len(plain)), targets=["Male"], per_group=10_000)


@pytest.mark.parametrize("keep", [0.1, 0.37, 1.0])
def test_simulate_imbalance_keeps_exact_minority_count_and_all_majority(plain, keep):
    rows = views.split(plain, seed=0)["train"]
    male = plain.column("Male")[rows]
    assert male.mean() < 0.5  # males are the minority
    out = views.simulate_imbalance(plain, rows, target="Male", keep=keep, seed=4)
    assert np.all(np.diff(out) > 0) and np.isin(out, rows).all()
    assert (plain.column("Male")[out] == 1).sum() == int(np.floor(keep * male.sum() + 0.5))
    assert np.isin(rows[male == 0], out).all()


def test_simulate_imbalance_explicit_minority_and_errors(plain):
    rows = np.arange(len(plain))
    out = views.simulate_imbalance(plain, rows, target="Male", keep=0.5, minority="no", seed=0)
    n_female = (plain.column("Male") == 0).sum()
    assert (plain.column("Male")[out] == 0).sum() == int(np.floor(0.5 * n_female + 0.5))
    for keep in (0.0, -0.1, 1.5):
        with pytest.raises(ConfigError, match=r"keep must be in \(0, 1\]"):
            views.simulate_imbalance(plain, rows, target="Male", keep=keep)
    with pytest.raises(ConfigError, match="binary"):
        views.simulate_imbalance(plain, rows, target="hair_color", keep=0.5)


def test_filter_by_class_names_values_and_lists(plain):
    rows = np.arange(len(plain))
    male, hair = plain.column("Male"), plain.column("hair_color")
    expected = np.flatnonzero((male == 1) & (hair == 1))
    assert np.array_equal(views.filter_by(plain, rows, Male=1, hair_color="blond"), expected)
    assert np.array_equal(views.filter_by(plain, rows, {"Male": "yes", "hair_color": 1}), expected)
    either = views.filter_by(plain, rows[::-1], hair_color=["black", "blond"])
    assert np.array_equal(either, np.flatnonzero(hair != 2))
    assert np.array_equal(views.filter_by(plain, rows, age=30), np.flatnonzero(plain.column("age") == 30))


def test_filter_by_unknown_label_or_value_lists_valid_ones(plain):
    rows = np.arange(10)
    with pytest.raises(StoreError, match="labels are: Male, Smiling, hair_color, age"):
        views.filter_by(plain, rows, Blond=1)
    with pytest.raises(StoreError, match=r"'red' is not a value of label 'hair_color'.*'black' \(0\), 'blond' \(1\)"):
        views.filter_by(plain, rows, hair_color="red")
    with pytest.raises(StoreError, match="valid values: 'no' \\(0\\), 'yes' \\(1\\)"):
        views.filter_by(plain, rows, Male=2)
    with pytest.raises(StoreError, match="out of range"):
        views.filter_by(plain, [0, len(plain)], Male=1)
    with pytest.raises(ConfigError, match="boolean mask"):
        views.filter_by(plain, plain.column("Male") == 1, Smiling=1)


# ---- saved views ----------------------------------------------------------------------------------
def test_save_and_load_view_round_trip(plain, tmp_path):
    s = views.split(plain, seed=2)
    views.save_view(tmp_path / "view.json", s, plain, note="seed 2")
    doc = json.loads((tmp_path / "view.json").read_text())
    assert doc["store"]["content_hash"] == plain.content_hash and doc["counts"]["train"] == s["train"].size
    back = views.load_view(tmp_path / "view.json", plain)
    assert all(np.array_equal(back[k], s[k]) and back[k].dtype == np.int64 for k in s)


def test_load_view_refuses_another_store(plain, tmp_path):
    other = make_store(tmp_path / "other", n=1000, size=4, label_specs=SPECS, labels=_labels(1000, 99))
    views.save_view(tmp_path / "view.json", views.split(plain), plain)
    with pytest.raises(StoreError, match="content hash"):
        views.load_view(tmp_path / "view.json", other)
    with pytest.raises(DataError, match="does not exist"):
        views.load_view(tmp_path / "missing.json", plain)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="line 1"):
        views.load_view(tmp_path / "bad.json", plain)


# ---- run_splits / complete_splits: the one place runs and studies make their rows --------------------
def _partitioned(tmp_path, parts, *, identities=None):
    from facelab.data.schema import LabelKind, LabelSpec

    n = len(parts)
    spec = [LabelSpec("y", LabelKind.BINARY)]
    return make_store(tmp_path / "p", n=n, size=8, label_specs=spec, labels=(np.arange(n) % 2)[:, None],
                      partitions=parts, identities=identities)


def test_complete_splits_moves_val_to_test_only_when_a_test_set_is_needed(tmp_path):
    from facelab.data.views import complete_splits

    st = _partitioned(tmp_path, [0] * 80 + [1] * 20)
    s = {"train": np.arange(80), "val": np.arange(80, 100), "test": np.zeros(0, np.int64)}
    same, notes = complete_splits(st, s)
    assert notes == [] and np.array_equal(same["val"], np.arange(80, 100)) and same["test"].size == 0
    moved, notes = complete_splits(st, s, need_test=True, stratify=["y"], val_share=0.25)
    assert np.array_equal(moved["test"], np.arange(80, 100)) and len(notes) == 2
    assert moved["val"].size == 20 and moved["train"].size == 60 and moved["val"].max() < 80
    assert not set(moved["val"]) & set(moved["train"])
    assert np.bincount(st.column("y")[moved["val"]]).tolist() == [10, 10]  # stratified
    kept, notes = complete_splits(st, {"train": np.arange(80)}, hold_out_val=False)
    assert kept["val"].size == 0 and notes == []


def test_run_splits_hold_out_is_identity_disjoint_and_seeded(tmp_path):
    from facelab.data.views import run_splits

    parts = [0] * 90 + [2] * 30
    st = _partitioned(tmp_path, parts, identities=np.arange(120) // 3)
    a, how = run_splits(st, seed=1, stratify="y")
    assert how.startswith("official partitions") and "identity-disjoint" in how
    assert np.array_equal(a["test"], np.arange(90, 120))
    ids = st.identities
    assert not set(ids[a["val"]]) & set(ids[a["train"]])
    b, _ = run_splits(st, seed=1, stratify="y")
    c, _ = run_splits(st, seed=2, stratify="y")
    assert all(np.array_equal(a[k], b[k]) for k in a) and not np.array_equal(a["val"], c["val"])
    few, how = run_splits(_partitioned(tmp_path / "few", [0] * 10 + [2] * 5))
    assert few["val"].size == 0 and how == "official partitions"  # too few rows to hold any out
