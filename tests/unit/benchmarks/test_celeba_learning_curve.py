"""benchmarks/celeba_learning_curve.py: the power-law fit and the subset stores it trains on."""

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from facelab.data.augment import AUGMENT_PRESETS
from facelab.data.schema import LabelKind, LabelSpec, Partition
from facelab.data.write import write_store_arrays

BENCH = Path(__file__).resolve().parents[3] / "benchmarks"


@pytest.fixture(scope="module")
def curve():
    sys.path.insert(0, str(BENCH))  # the script imports its sibling celeba_common, as when run from benchmarks/
    try:
        spec = importlib.util.spec_from_file_location("celeba_learning_curve", BENCH / "celeba_learning_curve.py")
        module = importlib.util.module_from_spec(spec)
        presets = set(AUGMENT_PRESETS.names())
        spec.loader.exec_module(module)
        assert set(AUGMENT_PRESETS.names()) == presets, "importing the script must not change facelab's registries"
        yield module
    finally:
        sys.path.remove(str(BENCH))


def test_fit_recovers_an_exact_power_law_and_the_size_for_the_target(curve):
    sizes = [500, 1000, 2000, 4000]
    acc = [1 - 0.9 * n ** -0.25 for n in sizes]
    fit = curve.fit_power_law(sizes, acc)
    assert fit["b"] == pytest.approx(0.9) and fit["c"] == pytest.approx(0.25)
    assert 1 - 0.9 * fit["images_for_target"] ** -0.25 == pytest.approx(curve.TARGET)


def test_fit_of_a_flat_or_worsening_curve_never_reaches_the_target(curve):
    assert math.isinf(curve.fit_power_law([1000, 2000], [0.90, 0.89])["images_for_target"])


def test_subset_runs_are_facelabs_own_train_limit_and_train_identities(curve, tmp_path):
    """The script trains on a share of the people (or photos) through the library's own options, so the run
    records exactly which rows it kept."""
    from facelab.train.classifier import build_task, make_splits

    n = 60
    images = np.arange(n, dtype=np.uint8)[:, None, None, None].repeat(4, 1).repeat(4, 2).repeat(3, 3)
    labels = (np.arange(n) % 2)[:, None]
    parts = np.where(np.arange(n) < 40, int(Partition.TRAIN), int(Partition.VAL))
    store = write_store_arrays(tmp_path / "full", images, labels, [LabelSpec("Male", LabelKind.BINARY)], parts,
                               source="x")
    cfg = curve.subset_config(store, by="images", fraction=0.5, seed=0, epochs=2)
    assert cfg.train_limit == 20 and cfg.train_identities is None and cfg.trainer.epochs == 2
    splits, how = make_splits(cfg, store, build_task(store, None))
    assert len(splits["train"]) == 20 and set(splits["train"]) <= set(range(40))
    assert list(splits["val"]) == list(range(40, 60)) and "20 random rows" in how  # every val row, always
    with pytest.raises(SystemExit, match="no identities"):
        curve.subset_config(store, by="identities", fraction=0.5, seed=0, epochs=2)
