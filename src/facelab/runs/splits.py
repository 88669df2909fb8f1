"""``splits.json``: the store rows a run trained, validated and would be tested on, written once.

A run decides its rows once (split policy, a validation hold-out, ``train_limit``, ``train_identities``, an
experiment's reduced training rows) and records them here with the store's content hash
(:func:`facelab.data.views.save_view`). Resuming, ``facelab eval RUN --split val``, the generative metrics and
the studies read them back instead of re-deriving them from a seed, so they score exactly the rows the run
held out, on any store with the same content.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facelab.data.store import Store
from facelab.data.views import load_view, save_view
from facelab.errors import FacelabError

SPLITS = "splits.json"


@dataclass(frozen=True)
class RunSplits:
    """A run's recorded rows: ``splits`` name -> sorted store rows, and how they were chosen."""

    splits: dict[str, np.ndarray]
    how: str

    def rows(self, name: str) -> np.ndarray:
        """The rows of split ``name`` (empty when the run had none)."""
        return self.splits.get(name, np.zeros(0, np.int64))


def save_run_splits(run_dir: str | Path, splits: Mapping[str, np.ndarray], store: Store, *, how: str) -> None:
    """Record ``splits`` (train/val/test rows of ``store``) in ``run_dir/splits.json``, atomically."""
    save_view(Path(run_dir) / SPLITS, {k: np.sort(np.asarray(v, dtype=np.int64)) for k, v in splits.items()},
              store, note=how)


def recorded_store_hash(run_dir: str | Path) -> str | None:
    """The content hash of the store a run's splits.json refers to (None when the run records no splits)."""
    path = Path(run_dir) / SPLITS
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())["store"]["content_hash"]
    except (OSError, ValueError, KeyError, TypeError):
        raise FacelabError(f"{path}: damaged (not a facelab splits file); it records the rows the run used, "
                           "so the run cannot be scored on its own splits without it") from None


def load_run_splits(run_dir: str | Path, store: Store) -> RunSplits | None:
    """The rows recorded by the run in ``run_dir`` for ``store`` (None when the run records none: runs made
    before facelab recorded splits). A store with other content is a StoreError naming both hashes."""
    path = Path(run_dir) / SPLITS
    if not path.is_file():
        return None
    splits = load_view(path, store)
    note = json.loads(path.read_text()).get("note") or "recorded by the run"
    return RunSplits(splits, note)
