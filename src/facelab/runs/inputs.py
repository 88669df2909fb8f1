"""A run's inputs: recorded by hash when the run starts, checked whenever the run is read again.

A run reads files that are not part of it: the store(s) it trains on, a labels file laid over the store, the
YAML files given with ``--config``, a ``--pretrained`` checkpoint, the teachers of distillation. Each is
recorded once, where the run already keeps it:

- a store: its content hash in ``splits.json`` (``pretrain_splits.json``: one per store), beside its rows;
- any other input: its sha256 in ``inputs.json`` (a run made before inputs.json: the labels file's sha256 in
  ``summary.json``).

``--resume`` (train, train-gen, pretrain, the experiments), ``eval`` and ``predict`` of a run on its own store
compare them with the inputs as they are now (:func:`check_inputs`). A changed or missing input is a
:class:`ChangedInputError` naming it, the recorded and the current hash and ``--accept-changed-inputs``; with
that flag the command goes on, and ``inputs.json`` records what was accepted, when and by which command. A
resume also makes the changed inputs the run's own from then on (a changed store keeps the run's rows, which
must exist in it); ``eval`` and ``predict`` change nothing but that record.

    >>> RunInput("labels_file", "labels file", "/data/labels.csv", None).describe_missing()
    'the labels file /data/labels.csv is missing'
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from facelab.data.store import Store
from facelab.errors import FacelabError
from facelab.runs.splits import PRETRAIN_SPLITS, SPLITS, adopt_pretrain_store, adopt_run_splits
from facelab.runs.summary import SUMMARY
from facelab.utils.io import atomic_write_json, sha256_file

log = logging.getLogger("facelab")
INPUTS = "inputs.json"
FORMAT = "facelab-run-inputs"
ACCEPT_FLAG = "--accept-changed-inputs"


@dataclass(frozen=True)
class RunInput:
    """One input of a run.

    Attributes:
        key: its name in the run, one per input: ``store`` (``store:K``: the K-th of several), ``labels_file``,
            ``config:K``, ``pretrained``, ``teacher:K``, ``eval_data``.
        what: what messages call it ("store", "labels file", "config file", "pretrained checkpoint", "teacher").
        path: where it was read (absolute for files).
        digest: a store's content hash, a file's sha256; None when the file is missing.
        store: the opened store (a store input of the command now), so that an accepted change of it can
            re-record the run's rows.
    """

    key: str
    what: str
    path: str
    digest: str | None
    store: Store | None = field(default=None, compare=False, repr=False)

    @property
    def hash_name(self) -> str:
        return "content hash" if self.what == "store" else "sha256"

    def describe_missing(self) -> str:
        return f"the {self.what} {self.path} is missing"

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "store"}


def file_input(key: str, what: str, path: str | Path) -> RunInput:
    """The input at ``path`` as it is now (its sha256; None when there is no file)."""
    p = Path(path).expanduser().resolve()
    return RunInput(key, what, str(p), sha256_file(p) if p.is_file() else None)


def store_input(store: Store, key: str = "store") -> RunInput:
    """The store input ``key`` as it is now (its content hash)."""
    return RunInput(key, "store", str(store.path), store.content_hash, store)


@dataclass(frozen=True)
class InputChange:
    """An input whose current hash is not the one the run recorded."""

    recorded: RunInput
    current: RunInput

    def describe(self) -> str:
        r, c = self.recorded, self.current
        if c.digest is None:
            return f"{c.describe_missing()} (recorded {r.hash_name} {r.digest[:12] if r.digest else '-'})"
        where = c.path if Path(c.path) == Path(r.path) else f"{c.path} (recorded at {r.path})"
        return (f"the {c.what} {where} changed since the run recorded it ({c.hash_name} "
                f"{(r.digest or '-')[:12]} recorded, {c.digest[:12]} now)")

    def to_dict(self) -> dict[str, Any]:
        return {"input": self.current.key, "what": self.current.what, "path": self.current.path,
                "recorded": self.recorded.digest, "current": self.current.digest}


class ChangedInputError(FacelabError):
    """An input of a run changed (or went missing) since the run recorded it."""

    def __init__(self, run_dir: Path, changes: Sequence[InputChange], *, doing: str) -> None:
        self.changes = list(changes)
        what = "; ".join(c.describe() for c in changes)
        super().__init__(f"{run_dir}: {what}. Put back the input{'s' if len(changes) > 1 else ''} the run recorded, "
                         f"or pass {ACCEPT_FLAG} to {doing} with {'them' if len(changes) > 1 else 'it'} as "
                         f"{'they are' if len(changes) > 1 else 'it is'} now (recorded in {run_dir / INPUTS})")


# ---- the record -------------------------------------------------------------------------------------
def _read_doc(run_dir: Path) -> dict[str, Any]:
    path = run_dir / INPUTS
    if not path.is_file():
        return {"format": FORMAT, "version": 1, "inputs": [], "accepted": []}
    try:
        doc = json.loads(path.read_text())
        if doc.get("format") != FORMAT or not isinstance(doc.get("inputs"), list):
            raise ValueError("not a facelab inputs record")
    except (OSError, ValueError, AttributeError) as e:
        raise FacelabError(f"{path}: damaged ({e}); it records the hashes of the run's inputs. Move it away to "
                           "go on without the check (the inputs as they are now are recorded again)") from None
    doc.setdefault("accepted", [])
    return doc


def recorded_inputs(run_dir: str | Path) -> dict[str, RunInput]:
    """The inputs the run in ``run_dir`` recorded, by key (empty for a run that recorded none)."""
    run_dir = Path(run_dir)
    out = {d["key"]: RunInput(d["key"], d["what"], d["path"], d["digest"]) for d in _read_doc(run_dir)["inputs"]}
    if "labels_file" not in out:
        legacy = _summary_labels_file(run_dir)
        if legacy is not None:
            out["labels_file"] = legacy
    out.update(_recorded_stores(run_dir))
    return out


def _summary_labels_file(run_dir: Path) -> RunInput | None:
    """The labels file a run made before inputs.json recorded in its summary.json."""
    try:
        lf = json.loads((run_dir / SUMMARY).read_text()).get("labels_file")
        return RunInput("labels_file", "labels file", lf["labels_file"], lf["sha256"]) if lf else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _recorded_stores(run_dir: Path) -> dict[str, RunInput]:
    """The store(s) of splits.json / pretrain_splits.json, with the content hash recorded beside the rows."""
    out: dict[str, RunInput] = {}
    for name, key in ((SPLITS, None), (PRETRAIN_SPLITS, "store:{}")):
        path = run_dir / name
        if not path.is_file():
            continue
        try:
            doc = json.loads(path.read_text())
            stores = [doc["store"]] if key is None else doc["stores"]
            for k, s in enumerate(stores):
                out["store" if key is None else key.format(k)] = RunInput(
                    "store" if key is None else key.format(k), "store", s["path"], s["content_hash"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise FacelabError(f"{path}: damaged ({e}); it records the rows the run used and its store's hash") from None
    return out


def _kept_in_splits(key: str) -> bool:
    """Whether the input ``key`` is recorded in splits.json (``store``) or pretrain_splits.json (``store:K``)."""
    return key == "store" or (key.startswith("store:") and key[6:].isdigit())


def record_inputs(run_dir: str | Path, inputs: Sequence[RunInput]) -> None:
    """Record ``inputs`` in ``run_dir/inputs.json`` (replacing those of the same key), atomically. The stores a
    run trains on are left to splits.json / pretrain_splits.json, which record them with the rows."""
    run_dir = Path(run_dir)
    doc = _read_doc(run_dir)
    entries = {d["key"]: d for d in doc["inputs"]}
    for i in inputs:
        if not _kept_in_splits(i.key):
            entries[i.key] = i.to_dict()
    doc["inputs"] = list(entries.values())
    atomic_write_json(run_dir / INPUTS, doc)


# ---- the check --------------------------------------------------------------------------------------
def check_inputs(run_dir: str | Path, current: Sequence[RunInput], *, accept: bool = False, doing: str,
                 command: str, adopt: bool, recheck: bool = True, write: bool = True) -> list[InputChange]:
    """Compare the inputs a command uses now with those the run recorded; returns the changes accepted.

    Args:
        current: the inputs the command uses, as they are now (a store, the labels file, ...).
        accept: go on when some changed (``--accept-changed-inputs``); the acceptance is recorded.
        doing: what the command does, for the message ("resume", "evaluate the run", "predict").
        command: the command line's verb, recorded with an acceptance (e.g. "train --resume").
        adopt: the run goes on with these inputs (a resume): inputs not recorded yet are recorded, accepted
            changes become the run's record (a changed store's rows are re-recorded for it).
        recheck: also re-hash the recorded files the command does not use itself (config files, teachers).
        write: whether this process writes the run folder (rank 0 of several).

    Raises:
        ChangedInputError: an input changed or is missing and ``accept`` is false.
    """
    run_dir = Path(run_dir)
    recorded = recorded_inputs(run_dir)
    now = {i.key: i for i in current}
    if recheck:
        for key, r in recorded.items():
            if key not in now and r.what != "store":
                now[key] = file_input(key, r.what, r.path)
    changes = [InputChange(recorded[k], i) for k, i in now.items() if k in recorded and recorded[k].digest != i.digest]
    if changes and not accept:
        raise ChangedInputError(run_dir, changes, doing=doing)
    if write and (changes or adopt):
        _write_record(run_dir, now.values(), changes, command=command, adopt=adopt)
    for c in changes:
        log.warning(f"{run_dir}: {c.describe()}; going on with it ({ACCEPT_FLAG})")
    return changes


def _write_record(run_dir: Path, now: Any, changes: list[InputChange], *, command: str, adopt: bool) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if adopt:
        for c in changes:
            if c.current.what == "store" and c.current.store is not None:
                _adopt_store(run_dir, c)
        record_inputs(run_dir, list(now))
    try:
        doc = _read_doc(run_dir)
        doc["accepted"] += [{"at": stamp, "command": command, **c.to_dict()} for c in changes]
        if changes:
            atomic_write_json(run_dir / INPUTS, doc)
    except OSError as e:
        if adopt:
            raise
        log.warning(f"{run_dir / INPUTS}: the accepted change could not be recorded ({e})")


def _adopt_store(run_dir: Path, change: InputChange) -> None:
    """The run's rows re-recorded for the changed store it goes on with."""
    note = (f"the store changed since (content hash {(change.recorded.digest or '-')[:12]} -> "
            f"{(change.current.digest or '-')[:12]}), accepted with {ACCEPT_FLAG}")
    if change.current.key == "store" and (run_dir / SPLITS).is_file():
        adopt_run_splits(run_dir, change.current.store, note=note)
    elif change.current.key.startswith("store:") and (run_dir / PRETRAIN_SPLITS).is_file():
        adopt_pretrain_store(run_dir, int(change.current.key.split(":")[1]), change.current.store, note=note)


# ---- eval and predict: a run on its own data --------------------------------------------------------------
def run_dir_of(path: str | Path) -> Path | None:
    """The run folder a run, checkpoint or exported-model path belongs to (None: not inside a run folder)."""
    p = Path(path).expanduser()
    for cand in (p, *list(p.parents)[:3]):
        if (cand / "config.yaml").is_file() and ((cand / SPLITS).is_file() or (cand / INPUTS).is_file()):
            return cand
    return None


def is_own_store(run_dir: str | Path, store: Store) -> bool:
    """Whether ``store`` is the run's own: the content it recorded, or the store at the path it recorded."""
    rec = recorded_inputs(run_dir).get("store")
    if rec is None:
        return False
    return rec.digest == store.content_hash or _same_path(rec.path, store.path)


def _same_path(a: str | Path, b: str | Path) -> bool:
    try:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    except OSError:
        return False


def check_own_data(run_dir: str | Path, store: Store, *, labels: RunInput | None = None, accept: bool = False,
                   doing: str, command: str) -> list[InputChange]:
    """``eval`` / ``predict`` of the run in ``run_dir`` on ``store``: on the run's own store (:func:`is_own_store`)
    every input it recorded must be as recorded; ``labels`` (the labels file the command reads) must be, when it
    is the run's own, on any store.

    Raises:
        ChangedInputError: naming each changed input, unless ``accept``.
    """
    own = is_own_store(run_dir, store)
    current = [store_input(store)] if own else []
    rec_labels = recorded_inputs(run_dir).get("labels_file")
    if labels is not None and rec_labels is not None and _same_path(labels.path, rec_labels.path):
        current.append(labels)
    return check_inputs(run_dir, current, accept=accept, doing=doing, command=command, adopt=False, recheck=own)
