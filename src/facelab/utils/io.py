"""Atomic file writes, JSON-lines logs and content hashing."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any


def finite_or_none(value: Any) -> Any:
    """NaN and infinities become None, recursively (numpy arrays and scalars as lists and floats), so that
    every summary and ``--json`` output is strict JSON that jq or JavaScript can read."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def atomic_write_bytes(path: Path, data: bytes, *, keep_mode: bool = False) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and ``os.replace``.

    ``keep_mode``: a file already at ``path`` keeps its permission bits, and its owner and group where this
    process may set them (a file a person shares with a group stays shared)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.stat() if keep_mode and path.is_file() else None
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if old is not None:
            with contextlib.suppress(OSError):  # only root may give a file to another owner
                os.chown(tmp, old.st_uid, old.st_gid)
        os.chmod(tmp, 0o666 & ~_umask() if old is None else old.st_mode & 0o7777)  # mkstemp makes 0600 files
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    """``obj`` as strict JSON (NaN written as null), atomically."""
    atomic_write_text(path, json.dumps(finite_or_none(obj), indent=2, sort_keys=False, default=str, allow_nan=False) + "\n")


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one record as a line of a JSON-lines log (one line per finished item, read by :func:`read_jsonl`)."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines log appended one line per finished item (empty when the file is
    missing); a line a kill tore while it was being written is skipped, so that item is redone."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
