"""BatchLoader shared by several processes: each serves its share of the single-process loader's global batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facelab.data.augment import AugmentConfig, BatchAugment
from facelab.data.loader import BatchLoader
from facelab.errors import ConfigError
from tests.helpers import index_images, make_store

N, SIZE = 203, 8


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("shards") / "s", images=index_images(N, SIZE))


def _steps(store, world: int, batch: int, **kw) -> list[list]:
    """Per step, the batches of every rank (rank order), from ``world`` loaders of per-rank ``batch``."""
    rows = kw.pop("rows", np.arange(N))
    loaders = [BatchLoader(store, rows, batch_size=batch, rank=r, world_size=world, **kw) for r in range(world)]
    assert len({len(lo) for lo in loaders}) == 1  # every rank runs the same number of steps
    return [list(step) for step in zip(*(list(lo) for lo in loaders), strict=True)]


@pytest.mark.parametrize("drop_last", [True, False])
@pytest.mark.parametrize("world", [2, 3])
def test_shards_of_a_step_are_the_single_process_batch(store, world, drop_last):
    single = list(BatchLoader(store, np.arange(N), batch_size=4 * world, seed=3, drop_last=drop_last))
    steps = _steps(store, world, 4, seed=3, drop_last=drop_last)
    # the last partial global batch of 203 % 8 = 3 or 203 % 12 = 11 rows: served when every rank gets a row
    assert len(steps) == len(single)
    for one, shares in zip(single, steps, strict=True):
        rows = np.concatenate([b.index.numpy() for b in shares])
        assert np.array_equal(rows, one.index.numpy())  # the same rows, in the same order, split by rank
        assert max(len(b) for b in shares) - min(len(b) for b in shares) <= 1
        assert all(b.global_rows == len(one) for b in shares) and one.global_rows == len(one)


def test_a_last_batch_smaller_than_the_processes_is_served_by_none(store):
    rows = np.arange(10)  # 10 = 2 global batches of 4 + 2 rows; 3 ranks cannot each get a row of 2
    steps = _steps(store, 3, 1, rows=rows, seed=0)
    assert len(steps) == 3 and [sum(len(b) for b in s) for s in steps] == [3, 3, 3]
    one = _steps(store, 1, 3, rows=rows, seed=0)
    assert len(one) == 4  # one process keeps its partial batch (ceil), as before


def test_shards_are_disjoint_and_cover_the_epoch(store):
    steps = _steps(store, 2, 10, seed=1)
    seen = np.concatenate([b.index.numpy() for s in steps for b in s])
    assert np.array_equal(np.sort(seen), np.arange(N))


def test_sampler_weights_and_extra_rows_are_shared_out_of_one_global_draw(store):
    rows = np.arange(100)
    images = np.full((20, SIZE, SIZE, 3), 255, np.uint8)
    labels = np.zeros((20, 3), np.int64)
    weights = np.linspace(0.1, 1.0, 120)
    kw = dict(seed=4, sampler_weights=weights, extra=(images, labels), drop_last=True, rows=rows)
    single = list(BatchLoader(store, rows, batch_size=24, seed=4, sampler_weights=weights, extra=(images, labels),
                              drop_last=True))
    steps = _steps(store, 2, 12, **kw)
    assert len(steps) == len(single) == 120 // 24
    for one, shares in zip(single, steps, strict=True):
        assert torch.equal(torch.cat([b.index for b in shares]), one.index)
        assert torch.equal(torch.cat([b.synthetic for b in shares]), one.synthetic)
        assert torch.equal(torch.cat([b.x for b in shares]), one.x)  # synthetic pixels come along


def test_ranks_augment_their_shares_with_their_own_seeds(store):
    aug = BatchAugment(AugmentConfig.preset("standard"))
    loaders = [BatchLoader(store, np.arange(N), batch_size=8, seed=2, rank=r, world_size=2, augment=aug)
               for r in range(2)]
    a, b = (next(iter(lo)) for lo in loaders)
    plain = [next(iter(BatchLoader(store, np.arange(N), batch_size=8, seed=2, rank=r, world_size=2)))
             for r in range(2)]
    # rank 1 does not repeat rank 0's draws, and its own are seeded (a resumed run sees them again)
    assert not torch.equal(a.x - plain[0].x, b.x - plain[1].x)
    again = next(iter(BatchLoader(store, np.arange(N), batch_size=8, seed=2, rank=1, world_size=2, augment=aug)))
    assert torch.equal(again.x, b.x)


def test_mid_epoch_state_needs_the_same_number_of_processes(store):
    lo = BatchLoader(store, np.arange(N), batch_size=8, rank=1, world_size=2)
    it = iter(lo)
    next(it)
    state = lo.state_dict()
    it.close()
    assert state["world_size"] == 2 and state["batches_consumed"] == 1
    resumed = BatchLoader(store, np.arange(N), batch_size=8, rank=1, world_size=2)
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert len(rest) == len(lo) - 1
    with pytest.raises(ConfigError, match="same number of processes"):
        BatchLoader(store, np.arange(N), batch_size=16).load_state_dict(state)


@pytest.mark.parametrize("rank, world", [(2, 2), (-1, 2), (0, 0)])
def test_bad_rank_or_world_size_is_a_clear_error(store, rank, world):
    with pytest.raises(ConfigError, match=f"rank {rank} of world_size {world}"):
        BatchLoader(store, np.arange(N), rank=rank, world_size=world)
