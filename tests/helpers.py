"""Test helpers shared across the suite: build small, valid stores directly with numpy.

``make_store`` writes the on-disk layout documented in :mod:`facelab.data.store` (images.npy, labels.npy,
index.npz, manifest.json written last) without going through a source or the store builder, so tests of
views, stats, loaders, trainers and experiments can make exactly the data they need in milliseconds. The
manifest has the builder's fields and its content hash (:func:`facelab.data.build.content_hash`).
``run_processes`` and ``join_processes`` run a function in several processes that train together (DDP).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import facelab
from facelab.data.build import content_hash
from facelab.data.schema import NO_IDENTITY, NO_PARTITION, LabelKind, LabelSpec, Partition
from facelab.data.store import FORMAT_VERSION, MANIFEST, Store
from facelab.train.trainer import Callback

DEFAULT_LABEL_SPECS: tuple[LabelSpec, ...] = (
    LabelSpec("Male", LabelKind.BINARY),
    LabelSpec("Smiling", LabelKind.BINARY),
    LabelSpec("hair_color", LabelKind.CATEGORICAL, ("black", "blond", "brown", "gray")),
)
NUMERIC_RANGE = (0, 100)  # random numeric labels are drawn from [0, 100)


def random_labels(specs: Sequence[LabelSpec], n: int, *, seed: int = 0) -> np.ndarray:
    """(n, L) int32 random label values valid for ``specs`` (binary 0/1, categorical 0..K-1, numeric 0..99)."""
    rng = np.random.default_rng(seed)
    cols = [rng.integers(0, s.num_classes or NUMERIC_RANGE[1], size=n) for s in specs]
    return np.stack(cols, axis=1).astype(np.int32) if cols else np.zeros((n, 0), np.int32)


def index_images(n: int, size: int) -> np.ndarray:
    """(n, size, size, 3) uint8 images that encode their row: pixel (0, 0) holds (i % 256, i // 256 % 256, 7)."""
    images = np.zeros((n, size, size, 3), np.uint8)
    rows = np.arange(n)
    images[:, 0, 0, 0] = rows % 256
    images[:, 0, 0, 1] = rows // 256 % 256
    images[:, 0, 0, 2] = 7
    return images


def decode_index_images(x: np.ndarray) -> np.ndarray:
    """Inverse of :func:`index_images` for (B, S, S, 3) or (B, 3, S, S) uint8 arrays: the encoded rows."""
    px = x[:, 0, 0, :] if x.shape[-1] == 3 else x[:, :, 0, 0]
    return px[:, 0].astype(np.int64) + 256 * px[:, 1].astype(np.int64)


def make_store(
    path: str | Path,
    *,
    images: np.ndarray | None = None,
    n: int = 64,
    size: int = 16,
    label_specs: Sequence[LabelSpec] | None = None,
    labels: np.ndarray | Sequence[Sequence[int]] | None = None,
    identities: np.ndarray | Sequence[int] | None = None,
    partitions: np.ndarray | Sequence[int] | None = None,
    landmarks: np.ndarray | None = None,
    keys: Sequence[str] | None = None,
    source: str = "test",
    seed: int = 0,
) -> Store:
    """Write a valid store folder at ``path`` and open it.

    Args:
        path: the store folder (created; must not already hold a store).
        images: (N, S, S, 3) uint8 images; random noise of ``n`` x ``size`` x ``size`` when omitted.
        n: number of rows when ``images`` is omitted.
        size: image side when ``images`` is omitted.
        label_specs: label columns; :data:`DEFAULT_LABEL_SPECS` (Male, Smiling, hair_color) when omitted.
        labels: (N, L) label values; random valid values (see :func:`random_labels`) when omitted.
        identities: (N,) identity ids (-1 unknown); the store has no identities when omitted.
        partitions: (N,) official partition codes 0/1/2 (-1 none); no partitions when omitted.
        landmarks: (N, 10) float32 landmarks in store pixels; none when omitted.
        keys: (N,) unique row keys; ``"img{i:06d}"`` when omitted.
        source: the manifest's source name.
        seed: seed of the random images and labels.

    Returns:
        The opened :class:`Store`.
    """
    path = Path(path)
    if (path / MANIFEST).exists():
        raise FileExistsError(f"{path} already holds a store")
    rng = np.random.default_rng(seed)
    if images is None:
        images = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    images = np.ascontiguousarray(images, dtype=np.uint8)
    if images.ndim != 4 or images.shape[1] != images.shape[2] or images.shape[3] != 3:
        raise ValueError(f"images must be (N, S, S, 3) uint8, got {images.shape}")
    n = images.shape[0]
    specs = list(DEFAULT_LABEL_SPECS if label_specs is None else label_specs)
    label_arr = random_labels(specs, n, seed=seed + 1) if labels is None else np.asarray(labels, dtype=np.int32)
    label_arr = label_arr.reshape(n, len(specs))
    index = {
        "key": np.asarray(keys if keys is not None else [f"img{i:06d}" for i in range(n)], dtype=str),
        "identity": _column(identities, n, NO_IDENTITY, np.int64),
        "partition": _column(partitions, n, NO_PARTITION, np.int8),
    }
    if landmarks is not None:
        index["landmarks"] = np.asarray(landmarks, dtype=np.float32).reshape(n, 10)
    manifest = {
        "format_version": FORMAT_VERSION,
        "source": source,
        "root": None,
        "options": {},
        "image_size": int(images.shape[1]),
        "crop": {"mode": "none", "scale": 1.0, "offset_y": 0.0, "box": None},
        "facelab_version": facelab.__version__,
        "created": "2024-01-01T00:00:00+00:00",
        "count": n,
        "indexed": n,
        "labels": [s.to_dict() for s in specs],
        "has_identities": identities is not None,
        "has_partitions": partitions is not None,
        "has_landmarks": landmarks is not None,
        "partitions": _partition_counts(index["partition"]),
        "skipped": [],
        "notes": [],
        "content_hash": content_hash(images, label_arr, index["key"]),
    }
    path.mkdir(parents=True, exist_ok=True)
    np.save(path / "images.npy", images)
    np.save(path / "labels.npy", label_arr)
    np.savez(path / "index.npz", **index)
    (path / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return Store.open(path)


def _column(values, n: int, default: int, dtype) -> np.ndarray:
    if values is None:
        return np.full(n, default, dtype=dtype)
    arr = np.asarray(values, dtype=dtype)
    if arr.shape != (n,):
        raise ValueError(f"expected {n} values, got shape {arr.shape}")
    return arr


def _partition_counts(partitions: np.ndarray) -> dict[str, int]:
    counts = {p.name.lower(): int((partitions == p.value).sum()) for p in Partition}
    counts["none"] = int((partitions == NO_PARTITION).sum())
    return counts


def near_decision_boundary(probs: np.ndarray | Sequence[float], margin: float) -> np.ndarray:
    """Which decisions another code path may take the other way: (N,) bool for (N,) binary probabilities
    within ``margin`` of the 0.5 threshold, or (N, K) class probabilities whose two largest are within
    ``margin`` of each other (a batch size, memory layout or CPU that changes the last float bits of a
    logit can flip exactly these, and only these)."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 1:
        return np.abs(p - 0.5) <= margin
    top2 = np.sort(p, axis=-1)[..., -2:]
    return top2[..., 1] - top2[..., 0] <= margin


def set_alignment(store: Store, spec: object | None) -> Store:
    """Rewrite ``store``'s manifest so that it records the AlignSpec ``spec`` (None: not aligned), as
    ``prepare --align`` would (the content hash does not cover the manifest), and reopen it."""
    m = json.loads((store.path / MANIFEST).read_text())
    m["align"] = None if spec is None else spec.model_dump(mode="json")  # type: ignore[attr-defined]
    (store.path / MANIFEST).write_text(json.dumps(m))
    return Store.open(store.path)


def run_processes(fn: Callable[..., None], nprocs: int, *args: Any) -> None:
    """Run ``fn(rank, nprocs, *args)`` in ``nprocs`` forked processes and wait; an exception in any is raised here.

    Forked, not spawned: the children inherit the imported modules (a spawned process spends ~5 s importing
    torch, sklearn and facelab again; torch imports its compiler, ~4 s more, when the first optimizer is made,
    so that is imported here first). The processes meet through a file, not a port (see
    :func:`join_processes`).
    """
    import torch._dynamo  # noqa: F401 - what creating an optimizer imports: once here, not in every child
    import torch.multiprocessing as mp

    mp.start_processes(fn, args=(nprocs, *args), nprocs=nprocs, join=True, start_method="fork")


def join_processes(rank: int, nprocs: int, rendezvous: Path, device: str = "cpu") -> Any:
    """In a process of :func:`run_processes`: join the group of ``nprocs`` (gloo on the CPU) through the
    ``rendezvous`` file, which must be new for every group; returns the ``Distributed`` the trainers take."""
    from facelab.train.distributed import TorchrunEnv, init_distributed

    env = TorchrunEnv(rank=rank, world_size=nprocs, local_rank=rank, local_world_size=nprocs)
    return init_distributed(env, device, init_method=f"file://{rendezvous}")


# ---- kills: a callback that stops training where a SIGKILL would -------------------------------------
class Killed(RuntimeError):
    """Stands in for SIGKILL: raised from a callback, after the checkpoint we want to resume from."""


class KillAtStep(Callback):
    """Stop training after optimisation step ``step`` by raising ``exc`` (default :class:`Killed`)."""

    def __init__(self, step: int, exc: type[BaseException] = Killed) -> None:
        self.step, self.exc = step, exc

    def on_step_end(self, trainer, logs) -> None:
        if trainer.step == self.step:
            raise self.exc(f"killed after step {self.step}")


class KillAtEpochStart(Callback):
    """Stop training as epoch ``epoch`` starts."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_start(self, trainer, epoch: int) -> None:
        if epoch == self.epoch:
            raise Killed(f"killed at the start of epoch {epoch}")
