"""stats: hand-counted prevalence and phi correlations on a tiny store, figures and the rich table."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from facelab.data.schema import LabelKind, LabelSpec
from facelab.data.stats import (
    correlation_matrix,
    dataset_stats,
    format_stats_table,
    plot_correlation,
    plot_prevalence,
)
from tests.helpers import make_store

SPECS = [
    LabelSpec("Male", LabelKind.BINARY),
    LabelSpec("Smiling", LabelKind.BINARY),
    LabelSpec("hair", LabelKind.CATEGORICAL, ("black", "blond", "brown")),
    LabelSpec("age", LabelKind.NUMERIC),
]
#            Male Smiling hair age   identity partition
ROWS = [
    (1, 1, 0, 20, 0, 0),
    (1, 0, 1, 30, 0, 0),
    (0, 1, 2, 40, 1, 0),
    (0, 1, 2, 25, 1, 0),
    (1, 1, 0, 60, 2, 1),
    (0, 0, 1, 35, 3, 2),
    (0, 0, 2, 50, 3, 2),
    (1, 0, 0, 10, 4, 2),
]


@pytest.fixture
def tiny(tmp_path):
    t = np.array(ROWS)
    return make_store(tmp_path / "tiny", n=len(ROWS), size=4, label_specs=SPECS, labels=t[:, :4],
                      identities=t[:, 4], partitions=t[:, 5])


def test_prevalence_matches_hand_count(tiny):
    stats = dataset_stats(tiny)
    assert list(stats["splits"]) == ["all", "train", "val", "test"]
    assert stats["num_images"] == 8 and stats["num_identities"] == 5
    every, train, val, test = (stats["splits"][k] for k in ["all", "train", "val", "test"])
    assert [every["count"], train["count"], val["count"], test["count"]] == [8, 4, 1, 3]
    assert [train["identities"], val["identities"], test["identities"]] == [2, 1, 2]
    assert every["labels"]["Male"] == {"positives": 4, "prevalence": 0.5}
    assert train["labels"]["Smiling"] == {"positives": 3, "prevalence": 0.75}
    assert test["labels"]["Male"]["prevalence"] == pytest.approx(1 / 3)
    assert every["labels"]["hair"]["counts"] == {"black": 3, "blond": 2, "brown": 3}
    assert train["labels"]["hair"]["shares"] == {"black": 0.25, "blond": 0.25, "brown": 0.5}
    ages = [20, 30, 40, 25, 60, 35, 50, 10]
    mean = sum(ages) / 8
    std = math.sqrt(sum((a - mean) ** 2 for a in ages) / 8)
    assert every["labels"]["age"] == {"mean": pytest.approx(mean), "std": pytest.approx(std), "min": 10, "max": 60}
    json.dumps(stats)  # serialisable as is


def test_custom_splits_empty_split_and_no_partitions(tmp_path, tiny):
    stats = dataset_stats(tiny, {"mine": np.array([0, 1]), "none": np.array([], dtype=np.int64)})
    assert list(stats["splits"]) == ["all", "mine", "none"]
    assert stats["splits"]["mine"]["labels"]["Male"]["prevalence"] == 1.0
    assert stats["splits"]["none"]["labels"]["Male"]["prevalence"] is None
    assert stats["splits"]["none"]["labels"]["age"]["mean"] is None
    bare = make_store(tmp_path / "bare", n=10, size=4)
    stats = dataset_stats(bare)
    assert list(stats["splits"]) == ["all"] and stats["num_identities"] is None


def _phi(a: np.ndarray, b: np.ndarray) -> float:
    n11, n10 = np.sum((a == 1) & (b == 1)), np.sum((a == 1) & (b == 0))
    n01, n00 = np.sum((a == 0) & (b == 1)), np.sum((a == 0) & (b == 0))
    return (n11 * n00 - n10 * n01) / math.sqrt((n11 + n10) * (n01 + n00) * (n11 + n01) * (n10 + n00))


def test_correlation_is_phi_of_binary_labels(tiny):
    names, m = correlation_matrix(tiny)
    assert names == ["Male", "Smiling"]
    t = np.array(ROWS)
    assert m[0, 1] == pytest.approx(_phi(t[:, 0], t[:, 1])) and m[0, 1] == pytest.approx(0.0)
    assert np.allclose(np.diag(m), 1.0) and np.allclose(m, m.T)
    names, m = correlation_matrix(tiny, one_hot_categorical=True)
    assert names == ["Male", "Smiling", "hair=black", "hair=blond", "hair=brown"]
    assert m[0, 2] == pytest.approx(_phi(t[:, 0], (t[:, 2] == 0).astype(int)))
    assert m[1, 4] == pytest.approx(_phi(t[:, 1], (t[:, 2] == 2).astype(int)))


def test_correlation_on_rows_and_constant_columns(tiny):
    names, m = correlation_matrix(tiny, ["Male", "Smiling", "age"], indices=[0, 1, 4, 7])
    assert names == ["Male", "Smiling", "age"]
    assert np.isnan(m[0]).all() and np.isnan(m[:, 0]).all()  # Male is constant on these rows
    ages, smiling = np.array([20, 30, 60, 10]), np.array([1, 0, 1, 0])
    assert m[1, 2] == pytest.approx(np.corrcoef(smiling, ages)[0, 1])


def test_figures_are_written(tmp_path):
    specs = [LabelSpec(f"Attribute_Number_{i}", LabelKind.BINARY) for i in range(40)]
    store = make_store(tmp_path / "forty", n=50, size=4, label_specs=specs, partitions=np.arange(50) % 3)
    names, m = correlation_matrix(store)
    out = plot_correlation(tmp_path / "figs" / "corr.png", names, m)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_prevalence(tmp_path / "prev.png", dataset_stats(store)).read_bytes()[:4] == b"\x89PNG"
    assert not list((tmp_path / "figs").glob(".*tmp"))  # atomic write left no temp file


def test_table_lists_counts_and_prevalence(tiny):
    console = Console(record=True, width=200)
    console.print(format_stats_table(dataset_stats(tiny)))
    text = console.export_text()
    assert "8 images, 5 identities" in text
    for cell in ["Male", "50.0%", "75.0%", "hair=brown", "33.8 ± 15.2 [10-60]", "identities"]:
        assert cell in text


@pytest.mark.realdata
def test_celeba_prevalence_equals_hand_count_of_annotation_file(tmp_path):
    """Stats over CelebA's real label table equal a plain token count of list_attr_celeba.txt."""
    root = Path(os.environ.get("FACELAB_DATA", "~/facelab-data")).expanduser() / "celeba"
    if not (root / "list_attr_celeba.txt").is_file():
        pytest.skip(f"{root} has no list_attr_celeba.txt")
    lines = (root / "list_attr_celeba.txt").read_text().splitlines()
    names, rows = lines[1].split(), [line.split()[1:] for line in lines[2:] if line.strip()]
    hand = {name: sum(r[j] == "1" for r in rows) for j, name in enumerate(names)}  # count "1" tokens
    partition_lines = (root / "list_eval_partition.txt").read_text().splitlines()
    parts = [int(line.split()[1]) for line in partition_lines if line.strip()]
    labels = (np.array(rows, dtype=np.int32) == 1).astype(np.int32)
    store = make_store(tmp_path / "celeba", images=np.zeros((len(rows), 1, 1, 3), np.uint8),
                       label_specs=[LabelSpec(n, LabelKind.BINARY) for n in names], labels=labels, partitions=parts)
    stats = dataset_stats(store)
    assert stats["num_images"] == 202_599
    assert [stats["splits"][s]["count"] for s in ("train", "val", "test")] == [162_770, 19_867, 19_962]
    for name in names:
        assert stats["splits"]["all"]["labels"][name]["positives"] == hand[name]
        assert stats["splits"]["all"]["labels"][name]["prevalence"] == hand[name] / 202_599
    corr_names, m = correlation_matrix(store)
    assert corr_names == names and m.shape == (40, 40)
    j, k = names.index("Male"), names.index("Heavy_Makeup")
    assert m[j, k] < -0.5  # men rarely wear heavy makeup in CelebA
