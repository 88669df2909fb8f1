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
from facelab.data.views import as_indices, load_view, save_view
from facelab.errors import FacelabError, StoreError
from facelab.utils.io import atomic_write_json

SPLITS = "splits.json"
PRETRAIN_SPLITS = "pretrain_splits.json"  # the rows of a pretraining run, per store (several stores)
PRETRAIN_FORMAT = "facelab-pretrain-splits"


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


def save_pretrain_splits(run_dir: str | Path, stores: list[Store], splits: list[Mapping[str, np.ndarray]], *,
                         how: str) -> None:
    """Record a pretraining run's rows: for each store its content hash and its train/val rows, atomically."""
    doc = {"format": PRETRAIN_FORMAT, "version": 1, "note": how, "stores": [
        {"path": str(s.path), "source": s.source, "count": len(s), "content_hash": s.content_hash,
         "counts": {k: int(np.size(v)) for k, v in sp.items()},
         "splits": {k: np.sort(as_indices(s, v)).tolist() for k, v in sp.items()}}
        for s, sp in zip(stores, splits, strict=True)]}
    atomic_write_json(Path(run_dir) / PRETRAIN_SPLITS, doc)


def load_pretrain_splits(run_dir: str | Path, stores: list[Store]) -> tuple[list[dict[str, np.ndarray]], str] | None:
    """The rows a pretraining run recorded, per store, and how they were chosen (None: none recorded yet).

    Raises:
        FacelabError: the file is damaged or records other stores; StoreError: a store's content changed.
    """
    path = Path(run_dir) / PRETRAIN_SPLITS
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
        recorded = doc["stores"] if doc.get("format") == PRETRAIN_FORMAT else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        recorded = None
    if not isinstance(recorded, list):
        raise FacelabError(f"{path}: damaged (not a facelab pretraining splits file); it records the rows the run "
                           "used, so it cannot be resumed without it: start a new run")
    if len(recorded) != len(stores):
        raise FacelabError(f"{path} records {len(recorded)} stores, the run's config names {len(stores)}")
    for rec, s in zip(recorded, stores):
        if rec["content_hash"] != s.content_hash:
            raise StoreError(f"{path}: the run pretrained on {rec['path']} with content hash {rec['content_hash'][:12]}, "
                             f"but {s.path} now has {s.content_hash[:12]}: resume with the stores it used")
    rows = [{k: np.asarray(v, dtype=np.int64) for k, v in rec["splits"].items()} for rec in recorded]
    return rows, doc.get("note") or "recorded by the run"


def adopt_run_splits(run_dir: str | Path, store: Store, *, note: str) -> None:
    """Record the rows of ``run_dir/splits.json`` again for ``store``, a changed version of the run's store that
    the run goes on with (``--accept-changed-inputs``): the same rows, the new content hash, ``note`` added to how
    they were chosen.

    Raises:
        StoreError: a recorded row does not exist in ``store``.
    """
    path = Path(run_dir) / SPLITS
    doc = json.loads(path.read_text())
    try:
        rows = {k: as_indices(store, v) for k, v in doc["splits"].items()}
    except StoreError as e:
        raise StoreError(f"{path}: the run's rows cannot be read from the changed store ({e}); resume with the "
                         "store it recorded") from None
    save_run_splits(run_dir, rows, store, how=f"{doc.get('note') or 'recorded by the run'}; {note}")


def adopt_pretrain_store(run_dir: str | Path, index: int, store: Store, *, note: str) -> None:
    """:func:`adopt_run_splits` for the ``index``-th store of a pretraining run's pretrain_splits.json."""
    path = Path(run_dir) / PRETRAIN_SPLITS
    doc = json.loads(path.read_text())
    rec = doc["stores"][index]
    try:
        rec["splits"] = {k: np.sort(as_indices(store, v)).tolist() for k, v in rec["splits"].items()}
    except StoreError as e:
        raise StoreError(f"{path}: the run's rows cannot be read from the changed store ({e}); resume with the "
                         "store it recorded") from None
    rec.update({"path": str(store.path), "source": store.source, "count": len(store),
                "content_hash": store.content_hash})
    doc["note"] = f"{doc.get('note') or 'recorded by the run'}; {store.path.name}: {note}"
    atomic_write_json(path, doc)
