"""BatchLoader: coverage, determinism, resume, tensors, synthetic rows, sampling, prefetch thread."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from facelab.data.augment import AugmentConfig, BatchAugment
from facelab.data.loader import SYNTHETIC_ROW, Batch, BatchLoader
from facelab.data.schema import LabelKind, LabelSpec
from facelab.errors import ConfigError, StoreError
from tests.helpers import decode_index_images, index_images, make_store

N, SIZE = 300, 8


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("loader") / "s", images=index_images(N, SIZE))


def _rows_of(batch: Batch) -> np.ndarray:
    """The rows encoded in the batch's pixels (mean = std = 0.5 undone)."""
    pixels = ((batch.x * 0.5 + 0.5) * 255).round().to(torch.uint8).numpy()
    return decode_index_images(pixels)


def _epoch(loader: BatchLoader) -> list[Batch]:
    return list(loader)


def test_every_index_exactly_once_per_epoch(store):
    idx = np.arange(5, N, 2)
    loader = BatchLoader(store, idx, batch_size=32, seed=3)
    assert len(loader) == -(-idx.size // 32)
    for _ in range(2):
        batches = _epoch(loader)
        assert [len(b) for b in batches] == [32] * (len(batches) - 1) + [idx.size - 32 * (len(batches) - 1)]
        seen = np.concatenate([b.index.numpy() for b in batches])
        assert np.array_equal(np.sort(seen), idx)
        for b in batches:  # the pixels really are those rows
            assert np.array_equal(_rows_of(b), b.index.numpy())


def test_order_depends_only_on_seed_and_epoch(store):
    def order(seed: int, epoch: int) -> np.ndarray:
        loader = BatchLoader(store, np.arange(N), batch_size=64, seed=seed)
        loader.set_epoch(epoch)
        return np.concatenate([b.index.numpy() for b in loader])

    assert np.array_equal(order(1, 0), order(1, 0)) and np.array_equal(order(1, 4), order(1, 4))
    assert not np.array_equal(order(1, 0), order(1, 1)) and not np.array_equal(order(1, 0), order(2, 0))
    loader = BatchLoader(store, np.arange(N), batch_size=64, seed=1)
    _epoch(loader)  # finishing an epoch moves to the next one
    assert loader.epoch == 1 and np.array_equal(np.concatenate([b.index.numpy() for b in loader]), order(1, 1))


def test_unshuffled_keeps_given_order_and_drop_last(store):
    idx = np.array([9, 3, 250, 7, 1])
    got = np.concatenate([b.index.numpy() for b in BatchLoader(store, idx, batch_size=2, shuffle=False)])
    assert np.array_equal(got, idx)
    dropped = BatchLoader(store, idx, batch_size=2, shuffle=False, drop_last=True)
    assert len(dropped) == 2 and [len(b) for b in dropped] == [2, 2]


def test_resume_mid_epoch_matches_uninterrupted_run(store):
    aug = BatchAugment(AugmentConfig.preset("standard"))

    def make() -> BatchLoader:
        return BatchLoader(store, np.arange(N), batch_size=40, seed=7, augment=aug)

    full = make()
    full.set_epoch(2)
    reference = _epoch(full)
    first = make()
    first.set_epoch(2)
    it = iter(first)
    for _ in range(3):
        next(it)
    state = first.state_dict()
    assert state["epoch"] == 2 and state["batches_consumed"] == 3
    it.close()
    torch.manual_seed(123)  # the global RNG state must not matter
    resumed = make()
    resumed.load_state_dict(state)
    rest = _epoch(resumed)
    assert len(rest) == len(reference) - 3
    for a, b in zip(rest, reference[3:], strict=True):
        assert torch.equal(a.index, b.index) and torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert resumed.state_dict()["epoch"] == 3


def test_load_state_dict_checks_the_data(store):
    state = BatchLoader(store, np.arange(N), seed=1).state_dict()
    with pytest.raises(ConfigError, match="same data and seed"):
        BatchLoader(store, np.arange(N - 1), seed=1).load_state_dict(state)
    with pytest.raises(ConfigError, match="same data and seed"):
        BatchLoader(store, np.arange(N), seed=2).load_state_dict(state)


def test_tensors_shapes_dtypes_labels_and_normalisation(store):
    loader = BatchLoader(store, np.arange(N), batch_size=50, labels=["hair_color", "Male"], mean=(0.2, 0.4, 0.6),
                         std=(0.5, 0.25, 2.0), shuffle=False)
    b = next(iter(loader))
    assert b.x.shape == (50, 3, SIZE, SIZE) and b.x.dtype == torch.float32 and b.x.is_contiguous()
    assert b.y.shape == (50, 2) and b.y.dtype == torch.int64
    assert b.index.dtype == torch.int64 and b.synthetic.dtype == torch.bool and not b.synthetic.any()
    rows = b.index.numpy()
    expected_y = np.stack([store.column("hair_color")[rows], store.column("Male")[rows]], axis=1)
    assert np.array_equal(b.y.numpy(), expected_y)
    raw = torch.from_numpy(np.asarray(store.images[rows])).permute(0, 3, 1, 2).float() / 255
    mean, std = torch.tensor([0.2, 0.4, 0.6]).view(1, 3, 1, 1), torch.tensor([0.5, 0.25, 2.0]).view(1, 3, 1, 1)
    assert torch.allclose(b.x, (raw - mean) / std, atol=1e-6)


def test_channels_last(store):
    b = next(iter(BatchLoader(store, np.arange(N), batch_size=16, channels_last=True)))
    assert b.x.is_contiguous(memory_format=torch.channels_last) and b.x.shape == (16, 3, SIZE, SIZE)
    aug = BatchAugment(AugmentConfig.preset("strong"))
    b = next(iter(BatchLoader(store, np.arange(N), batch_size=16, channels_last=True, augment=aug)))
    assert b.x.is_contiguous(memory_format=torch.channels_last)


def test_synthetic_extra_rows_are_tagged(store):
    m = 20
    images = np.full((m, SIZE, SIZE, 3), 255, np.uint8)
    labels = np.tile([[1, 0, 3]], (m, 1))
    loader = BatchLoader(store, np.arange(100), batch_size=32, extra=(images, labels), seed=0)
    assert loader.num_items == 120 and len(loader) == 4
    batches = _epoch(loader)
    synthetic = torch.cat([b.synthetic for b in batches])
    index = torch.cat([b.index for b in batches])
    assert synthetic.sum() == m and torch.equal(index[synthetic], torch.full((m,), SYNTHETIC_ROW))
    assert torch.equal(torch.sort(index[~synthetic]).values, torch.arange(100))
    for b in batches:
        if b.synthetic.any():
            assert torch.all(b.x[b.synthetic] == 1.0)  # white images, normalised with mean = std = 0.5
            assert torch.equal(b.y[b.synthetic], torch.tensor([[1, 0, 3]]).expand(int(b.synthetic.sum()), 3))


def test_extra_rows_rejected_for_evaluation_or_bad_shapes(store):
    images, labels = np.zeros((4, SIZE, SIZE, 3), np.uint8), np.zeros((4, 3), np.int64)
    with pytest.raises(ConfigError, match="training loaders only"):
        BatchLoader(store, np.arange(10), shuffle=False, extra=(images, labels))
    with pytest.raises(ConfigError, match=r"\(M, 8, 8, 3\) uint8"):
        BatchLoader(store, np.arange(10), extra=(np.zeros((4, 4, 4, 3), np.uint8), labels))
    with pytest.raises(ConfigError, match=r"\(M=4, 1\)"):
        BatchLoader(store, np.arange(10), labels=["Male"], extra=(images, labels))


def test_sampler_weights_draw_with_replacement(store):
    idx = np.arange(100)
    weights = np.where(idx < 10, 1.0, 0.0)
    loader = BatchLoader(store, idx, batch_size=25, sampler_weights=weights, seed=0)
    drawn = np.concatenate([b.index.numpy() for b in loader])
    assert drawn.size == 100 and set(drawn.tolist()) <= set(range(10))
    with pytest.raises(ConfigError, match="one per row"):
        BatchLoader(store, idx, sampler_weights=np.ones(99))
    with pytest.raises(ConfigError, match="shuffle=True"):
        BatchLoader(store, idx, sampler_weights=np.ones(100), shuffle=False)


def test_prefetch_thread_matches_inline_and_stops_on_break(store):
    a = [b.index for b in BatchLoader(store, np.arange(N), batch_size=30, prefetch=0, seed=5)]
    b = [b.index for b in BatchLoader(store, np.arange(N), batch_size=30, prefetch=3, seed=5)]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    loader = BatchLoader(store, np.arange(N), batch_size=10, prefetch=2)
    for i, _ in enumerate(loader):
        if i == 1:
            break
    assert loader.state_dict()["batches_consumed"] == 2
    assert not [t for t in threading.enumerate() if t.name == "facelab-prefetch"]


def test_reader_errors_reach_the_caller(store, monkeypatch):
    loader = BatchLoader(store, np.arange(N), batch_size=30)

    def broken(positions):
        raise OSError("disk on fire")

    monkeypatch.setattr(loader, "_gather", broken)
    with pytest.raises(OSError, match="disk on fire"):
        next(iter(loader))


def test_flip_map_must_match_loader_labels(store):
    specs = [store.spec("hair_color")]
    aug = BatchAugment(AugmentConfig(hflip=0.5, label_flip_map={"hair_color": {"black": "blond"}}), label_specs=specs)
    BatchLoader(store, np.arange(N), labels=["hair_color"], augment=aug)
    with pytest.raises(ConfigError, match="label specs"):
        BatchLoader(store, np.arange(N), augment=aug)


def test_argument_errors(store):
    with pytest.raises(ConfigError, match="batch_size"):
        BatchLoader(store, np.arange(N), batch_size=0)
    with pytest.raises(StoreError, match="out of range"):
        BatchLoader(store, [N])
    with pytest.raises(StoreError, match="no label"):
        BatchLoader(store, np.arange(N), labels=["Bald"])
    with pytest.raises(ConfigError, match="std must be 3 numbers"):
        BatchLoader(store, np.arange(N), std=(0.5, 0.0, 0.5))


def test_labels_of_any_kind(tmp_path):
    specs = [LabelSpec("age", LabelKind.NUMERIC), LabelSpec("yaw", LabelKind.CATEGORICAL, ("left", "front", "right"))]
    labels = np.stack([np.arange(12) * 5, np.arange(12) % 3], axis=1)
    s = make_store(tmp_path / "s", n=12, size=4, label_specs=specs, labels=labels)
    b = next(iter(BatchLoader(s, np.arange(12), batch_size=12, shuffle=False)))
    assert np.array_equal(b.y.numpy(), labels)
