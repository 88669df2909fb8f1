"""Batches straight from the store's memory map: gather, transfer uint8, convert/augment/normalise on device.

A background thread gathers the next ``prefetch`` batches (sorted memmap reads; numpy copies release the
GIL) into (pinned, when the device is CUDA) host memory; the iterating thread moves each batch to the
device as uint8 and converts it there, so the expensive float work runs where training runs.

The order of an epoch depends only on ``(seed, epoch)``, and the augmentation of a batch only on
``(seed, epoch, batch number)``, so a run resumed from :meth:`BatchLoader.state_dict` sees exactly the
batches an uninterrupted run would have seen.

Distributed training (``rank``/``world_size``): every process computes the same epoch order and takes its
share of each *global* batch of ``world_size * batch_size`` positions, so N processes with batch B serve,
step by step, exactly the rows one process with batch N*B serves (a 1-process loader is the special case).
A partial last global batch (``drop_last=False``) is split as evenly as possible (shares differ by at most
one row; ``Batch.global_rows`` says how many rows the step holds over all processes); when it holds fewer
rows than there are processes, no process serves it, so every process runs the same number of steps.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from facelab.data.augment import BatchAugment
from facelab.data.store import Store
from facelab.data.views import as_indices
from facelab.errors import ConfigError

SYNTHETIC_ROW = -1  # Batch.index of rows that come from ``extra`` (not from the store)


@dataclass
class Batch:
    """One batch. ``x``, ``y`` and ``synthetic`` are on the loader's device; ``index`` stays on the CPU."""

    x: torch.Tensor  # (B, 3, H, W) float32, augmented then normalised
    y: torch.Tensor  # (B, L) int64 raw label values (binary 0/1, categorical class index, numeric value)
    index: torch.Tensor  # (B,) int64 store rows; SYNTHETIC_ROW (-1) for synthetic rows
    synthetic: torch.Tensor  # (B,) bool, True for rows from ``extra``
    #: rows of this step over every process (== len(self) on one process): a distributed trainer weights
    #: its share of the loss by ``len / global_rows`` so that a partial batch counts each row once
    global_rows: int = 0

    def __post_init__(self) -> None:
        self.global_rows = self.global_rows or len(self)

    def __len__(self) -> int:
        return int(self.x.shape[0])


@dataclass
class _HostBatch:
    images: torch.Tensor  # (B, S, S, 3) uint8 on the CPU (pinned for CUDA)
    y: torch.Tensor  # (B, L) int64
    rows: torch.Tensor  # (B,) int64
    global_rows: int  # rows of the global batch this share belongs to


class BatchLoader:
    """Iterate batches of ``indices`` (store rows), optionally with synthetic ``extra`` rows appended.

    Args:
        store: the store to read.
        indices: store rows to serve (e.g. a training split).
        batch_size: rows per batch.
        labels: label columns of ``y`` (default all, in store order).
        shuffle: a new random order every epoch; ``False`` serves rows in the given order (evaluation).
        seed: seed of the order, the weighted sampling and the augmentation.
        drop_last: drop the last incomplete batch.
        augment: batch augmentation applied on device to [0, 1] images before normalisation.
        mean: per-channel mean subtracted after scaling to [0, 1].
        std: per-channel std divided by.
        device: where batches go (the caller's choice, e.g. ``"cuda:0"``).
        channels_last: return ``x`` in channels-last memory format.
        sampler_weights: (num_items,) non-negative weights: each epoch draws ``num_items`` rows with
            replacement with these probabilities (a balanced sampler) instead of a permutation.
        prefetch: batches gathered ahead by the background thread (0: read in the iterating thread).
        extra: ``(images (M, S, S, 3) uint8, labels (M, L))`` synthetic rows appended after ``indices``
            and tagged ``synthetic=True``; training loaders (``shuffle=True``) only.
        rank: this process's share of every global batch (0 .. world_size - 1), for distributed training.
        world_size: processes that share the epoch; ``len(loader)`` counts global batches of
            ``world_size * batch_size`` rows, the same on every process.
    """

    def __init__(
        self,
        store: Store,
        indices: Sequence[int] | np.ndarray,
        *,
        batch_size: int = 256,
        labels: Sequence[str] | None = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        augment: BatchAugment | None = None,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
        device: str | torch.device = "cpu",
        channels_last: bool = False,
        sampler_weights: np.ndarray | None = None,
        prefetch: int = 2,
        extra: tuple[np.ndarray, np.ndarray] | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1 or prefetch < 0:
            raise ConfigError(f"batch_size must be >= 1 and prefetch >= 0; got {batch_size} and {prefetch}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} of world_size {world_size}: need world_size >= 1 and 0 <= rank < world_size")
        self.rank, self.world_size = int(rank), int(world_size)
        self.store = store
        self.indices = as_indices(store, indices)
        self.label_names = list(store.label_names if labels is None else labels)
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, int(seed), drop_last
        self.device = torch.device(device)
        self.channels_last, self.prefetch = channels_last, prefetch
        self.augment = augment
        self._check_augment()
        cols = [store.label_index(name) for name in self.label_names]
        self._extra_images, extra_labels = self._check_extra(extra)
        self._item_labels = np.concatenate([store.labels[self.indices][:, cols].astype(np.int64), extra_labels])
        self._item_rows = np.concatenate([self.indices, np.full(len(extra_labels), SYNTHETIC_ROW, np.int64)])
        self._weights = self._check_weights(sampler_weights)
        self._mean, self._std = self._stat_tensor(mean, "mean"), self._stat_tensor(std, "std")
        self.epoch, self._consumed = 0, 0

    # ---- validation -------------------------------------------------------------------------------
    def _check_augment(self) -> None:
        if self.augment is not None and self.augment.flips_labels and self.augment.label_names != self.label_names:
            raise ConfigError(
                f"the augmentation's label_flip_map was built for labels {self.augment.label_names} but the loader "
                f"serves {self.label_names}; build BatchAugment with the loader's label specs"
            )

    def _check_extra(self, extra: tuple[np.ndarray, np.ndarray] | None) -> tuple[np.ndarray, np.ndarray]:
        s, n_labels = self.store.image_size, len(self.label_names)
        if extra is None:
            return np.zeros((0, s, s, 3), np.uint8), np.zeros((0, n_labels), np.int64)
        if not self.shuffle:
            raise ConfigError(
                "synthetic extra rows are for training loaders only (shuffle=True); evaluate on real data"
            )
        images, labels = np.asarray(extra[0]), np.asarray(extra[1])
        if images.dtype != np.uint8 or images.shape[1:] != (s, s, 3):
            raise ConfigError(
                f"extra images must be (M, {s}, {s}, 3) uint8 like the store; got {images.shape} {images.dtype}"
            )
        if labels.shape != (images.shape[0], n_labels):
            raise ConfigError(
                f"extra labels must be (M={images.shape[0]}, {n_labels}) for labels {self.label_names}; "
                f"got {labels.shape}"
            )
        return np.ascontiguousarray(images), labels.astype(np.int64)

    def _check_weights(self, weights: np.ndarray | None) -> np.ndarray | None:
        if weights is None:
            return None
        w = np.asarray(weights, dtype=np.float64)
        if not self.shuffle:
            raise ConfigError("sampler_weights draw random rows; use them with shuffle=True (training loaders)")
        if w.shape != (self.num_items,) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise ConfigError(
                f"sampler_weights must be {self.num_items} finite non-negative numbers (one per row, extra rows "
                f"last) with a positive sum; got shape {w.shape}"
            )
        return w / w.sum()

    def _stat_tensor(self, values: Sequence[float], name: str) -> torch.Tensor:
        t = torch.tensor([float(v) for v in values], dtype=torch.float32)
        if t.shape != (3,) or (name == "std" and (t <= 0).any()):
            positive = ", all > 0" if name == "std" else ""
            raise ConfigError(f"{name} must be 3 numbers (one per RGB channel){positive}; got {values}")
        return t.view(1, 3, 1, 1).to(self.device)

    # ---- order and state --------------------------------------------------------------------------
    @property
    def num_items(self) -> int:
        """Rows served per epoch: the store rows plus the synthetic extra rows."""
        return int(self._item_rows.size)

    @property
    def global_batch_size(self) -> int:
        """Rows of one step over every process: ``world_size * batch_size``."""
        return self.world_size * self.batch_size

    def __len__(self) -> int:
        """Steps per epoch, the same on every process (global batches; see the module docstring)."""
        n, g = self.num_items, self.global_batch_size
        full, rest = divmod(n, g)
        return full + int(not self.drop_last and rest >= self.world_size)

    def step_positions(self, order: np.ndarray, number: int) -> tuple[np.ndarray, int]:
        """This process's item positions of step ``number`` of an epoch ``order``, and the step's global rows."""
        g = self.global_batch_size
        rows = order[number * g : (number + 1) * g]
        if self.world_size == 1:
            return rows, int(rows.size)
        return np.array_split(rows, self.world_size)[self.rank], int(rows.size)

    def epoch_order(self, epoch: int) -> np.ndarray:
        """(num_items,) item positions of ``epoch`` in serving order (store rows first, then extra rows)."""
        rng = np.random.default_rng([self.seed, epoch])
        if self._weights is not None:
            return rng.choice(self.num_items, size=self.num_items, replace=True, p=self._weights)
        return rng.permutation(self.num_items) if self.shuffle else np.arange(self.num_items)

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its first batch at the next iteration."""
        self.epoch, self._consumed = int(epoch), 0

    def state_dict(self) -> dict[str, int]:
        """Where the loader is: the epoch and the number of its batches already handed out."""
        return {"epoch": self.epoch, "batches_consumed": self._consumed, "seed": self.seed, "num_items": self.num_items,
                "world_size": self.world_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict`: the next iteration serves the remaining batches of that epoch."""
        if state.get("seed") != self.seed or state.get("num_items") != self.num_items:
            raise ConfigError(
                f"loader state is for seed {state.get('seed')} and {state.get('num_items')} rows, but this loader has "
                f"seed {self.seed} and {self.num_items} rows; resume with the same data and seed"
            )
        if int(state.get("world_size", 1)) != self.world_size:
            raise ConfigError(
                f"loader state counts batches of {state.get('world_size', 1)} process(es), but this loader is shared by "
                f"{self.world_size}: resume mid-epoch with the same number of processes (--nproc)"
            )
        consumed = int(state["batches_consumed"])
        if not 0 <= consumed <= len(self):
            raise ConfigError(f"loader state: batches_consumed={consumed} is outside 0..{len(self)}")
        self.epoch, self._consumed = int(state["epoch"]), consumed
        if consumed == len(self):
            self.set_epoch(self.epoch + 1)

    # ---- iteration --------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Batch]:
        """Serve the remaining batches of the current epoch; after the last one, move to the next epoch."""
        epoch, start = self.epoch, self._consumed
        order = self.epoch_order(epoch)
        steps = [self.step_positions(order, i) for i in range(start, len(self))]
        host = _prefetch(self._gather, steps, self.prefetch)
        try:
            for number, hb in enumerate(host, start):
                batch = self._to_device(hb, epoch, number)
                self._consumed = number + 1
                yield batch
        finally:
            host.close()
        self.set_epoch(epoch + 1)

    def _gather(self, step: tuple[np.ndarray, int]) -> _HostBatch:
        """Read one batch into host memory: store rows in sorted order (sequential memmap access)."""
        positions, global_rows = step
        n_real, s = self.indices.size, self.store.image_size
        pin = self.device.type == "cuda"
        images = torch.empty((positions.size, s, s, 3), dtype=torch.uint8, pin_memory=pin)  # (B, S, S, 3)
        out = images.numpy()
        real = np.flatnonzero(positions < n_real)
        if real.size:
            rows = self.indices[positions[real]]
            order = np.argsort(rows, kind="stable")
            out[real[order]] = self.store.images[rows[order]]
        fake = np.flatnonzero(positions >= n_real)
        if fake.size:
            out[fake] = self._extra_images[positions[fake] - n_real]
        y = torch.from_numpy(self._item_labels[positions])
        rows_t = torch.from_numpy(self._item_rows[positions])
        return _HostBatch(images=images, y=y.pin_memory() if pin else y, rows=rows_t, global_rows=global_rows)

    def _to_device(self, hb: _HostBatch, epoch: int, number: int) -> Batch:
        x = hb.images.to(self.device, non_blocking=True)  # (B, S, S, 3) uint8
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        x = x.permute(0, 3, 1, 2).contiguous(memory_format=fmt)  # (B, 3, S, S) uint8 (NHWC is channels-last)
        x = x.float().div_(255.0)  # (B, 3, S, S) in [0, 1]
        y = hb.y.to(self.device, non_blocking=True)  # (B, L)
        if self.augment is not None:
            x, y = self.augment(x, y, seed=_batch_seed(self.seed, epoch, number, self.rank))
        x = x.sub_(self._mean).div_(self._std)
        x = x.contiguous(memory_format=fmt)  # kornia ops may return another layout
        synthetic = (hb.rows == SYNTHETIC_ROW).to(self.device, non_blocking=True)
        return Batch(x=x, y=y, index=hb.rows, synthetic=synthetic, global_rows=hb.global_rows)


def _batch_seed(seed: int, epoch: int, number: int, rank: int = 0) -> int:
    """The augmentation seed of a batch; each process's share of a global batch draws its own (rank 0 the
    single-process one), so shares are not augmented alike."""
    entropy = [seed, epoch, number] + ([rank] if rank else [])
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> 1)


# ---- background prefetching -----------------------------------------------------------------------
class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_END = object()


class _Prefetcher:
    """Runs ``fn`` over ``items`` in a daemon thread, ``depth`` results ahead of the consumer."""

    def __init__(self, fn: Callable[[Any], Any], items: Iterable[Any], depth: int) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(fn, items), daemon=True, name="facelab-prefetch")
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> None:
        try:
            for item in items:
                if self._stop.is_set() or not self._put(fn(item)):
                    return
        except BaseException as e:  # handed to the consumer, re-raised there
            self._put(_Failure(e))
            return
        self._put(_END)

    def __iter__(self) -> Iterator[Any]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)


class _Inline:
    """The same interface as :class:`_Prefetcher`, reading in the consumer's thread (``prefetch=0``)."""

    def __init__(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> None:
        self._fn, self._items = fn, items

    def __iter__(self) -> Iterator[Any]:
        return map(self._fn, self._items)

    def close(self) -> None:
        pass


def _prefetch(fn: Callable[[Any], Any], items: Sequence[Any], depth: int) -> _Prefetcher | _Inline:
    return _Prefetcher(fn, items, depth) if depth > 0 and len(items) > 0 else _Inline(fn, items)
