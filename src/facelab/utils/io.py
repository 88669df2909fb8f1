"""Atomic file writes, JSON-lines logs, content hashing, and what a failed write tells the user.

Every writer here leaves either the complete new file or nothing: its temporary file (a hidden sibling of the
target) is removed on any failure, and an ``OSError`` raised while writing names the target file.
:func:`os_error_message` turns the errors a user can fix (no space, no permission, a read-only file system, a
name too long) into one clear line; the CLI entry prints it and exits 2.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
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


#: errno values of a write a user can fix: no space, over quota, no permission, read-only, a name too long
USER_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENAMETOOLONG})
_TMP_NAME_CHARS = 64  # of the target's name kept in its temporary file's name (the name must fit NAME_MAX)
_TMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp(\.[A-Za-z0-9]+)?$")  # mkstemp's 8 random characters


def _tmp_prefix(path: Path) -> str:
    return f".{path.name[:_TMP_NAME_CHARS]}."


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffix, hidden name) for a writer that needs a file name
    (``savefig``, ``Image.save``, ``np.save``); renamed onto ``path`` when the block ends, removed when it
    raises. An OSError from the block that names no file is raised again naming ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_tmp_prefix(path), suffix=f".tmp{path.suffix}")
    except OSError as e:  # it names the temporary file it tried: name the target instead
        raise naming(e, path, instead_of=e.filename) from None
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; stores are shared between users
        yield Path(tmp)
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise naming(e, path, instead_of=tmp) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def temporary_sibling_dir(path: Path) -> Path:
    """A new hidden folder beside ``path`` (``.<name>.<random>.partial``) with the permissions of a folder made
    by ``mkdir``, to fill and then rename onto ``path``; the caller removes it on failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp = tempfile.mkdtemp(dir=path.parent, prefix=_tmp_prefix(path), suffix=".partial")
    except OSError as e:
        raise naming(e, path, instead_of=e.filename) from None
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700 folders; stores are shared between users
    return Path(tmp)


def naming(e: OSError, path: str | Path, *, instead_of: str | None = None) -> OSError:
    """``e`` itself when it names a file (other than ``instead_of``, a temporary file), else the same error
    naming ``path`` (a failed ``write`` on an open file names nothing)."""
    if (e.filename is not None and e.filename != instead_of) or e.errno is None:
        return e
    return type(e)(e.errno, e.strerror or os.strerror(e.errno), str(path))


def atomic_write_bytes(path: Path, data: bytes, *, keep_mode: bool = False) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and ``os.replace`` (fsynced).

    ``keep_mode``: a file already at ``path`` keeps its permission bits, and its owner and group where this
    process may set them (a file a person shares with a group stays shared)."""
    path = Path(path)
    old = path.stat() if keep_mode and path.is_file() else None
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        if old is not None:
            with contextlib.suppress(OSError):  # only root may give a file to another owner
                os.chown(tmp, old.st_uid, old.st_gid)
            os.chmod(tmp, old.st_mode & 0o7777)
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    """``obj`` as strict JSON (NaN written as null), atomically."""
    atomic_write_text(path, json.dumps(finite_or_none(obj), indent=2, sort_keys=False, default=str, allow_nan=False) + "\n")


def is_temporary_name(name: str) -> bool:
    """Whether ``name`` is the temporary file of :func:`atomic_path` (left behind only by a kill)."""
    return _TMP_NAME.match(name) is not None


def foreign_entries(folder: Path, allowed: Iterable[str], *, limit: int = 5) -> list[str]:
    """Up to ``limit`` entries of ``folder`` (files and folders, sorted; a folder with a trailing '/') whose
    names are not in ``allowed`` nor temporary files of :func:`atomic_path`: what a replacement of ``folder``
    would destroy that facelab did not make."""
    allowed = set(allowed)
    found = sorted(e.name + ("/" if e.is_dir(follow_symlinks=False) else "")
                   for e in os.scandir(folder) if e.name not in allowed and not is_temporary_name(e.name))
    return found[:limit] + ([f"... {len(found) - limit} more"] if len(found) > limit else [])


# ---- errors a user can fix -----------------------------------------------------------------------
_OS_ERROR_IN_TEXT = re.compile(r"\(os error (\d+)\)")  # how Rust libraries (safetensors) report an errno
_PATH_IN_TEXT = re.compile(r'at path "([^"]+)"')  # and the file they were writing
_TORCH_WRITE_FAILED = ("PytorchStreamWriter failed writing", "unexpected pos", "file write failed")


def _errno_of(e: BaseException) -> tuple[int, str | None] | None:
    """(errno, file name or None) of one exception when it is a failed file operation."""
    if isinstance(e, OSError) and e.errno is not None:
        return e.errno, e.filename
    text = str(e)
    m = _OS_ERROR_IN_TEXT.search(text)
    if m:
        path = _PATH_IN_TEXT.search(text)
        where = Path(path.group(1)) if path else None
        if where is not None and where.name.startswith(".tmp"):  # the library's own temporary file: its folder
            where = where.parent
        return int(m.group(1)), str(where) if where is not None else None
    if isinstance(e, RuntimeError) and "inline_container" in text:  # torch.save, which names no errno
        for code in USER_ERRNOS:
            if os.strerror(code) in text:
                return code, None
        if any(t in text for t in _TORCH_WRITE_FAILED):
            return errno.ENOSPC, None  # a short write: the disk filled up
    return None


def os_error_message(exc: BaseException) -> str | None:
    """One clear line for an error a user can fix by making room, permissions or a shorter name (errno in
    :data:`USER_ERRNOS`, also when it is the cause of ``exc``, or the error being handled when ``exc`` was
    raised); None for any other error."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        found = _errno_of(e)
        if found is not None and found[0] in USER_ERRNOS:
            return _describe(*found)
        e = e.__cause__ if e.__cause__ is not None or e.__suppress_context__ else e.__context__
    return None


def _describe(code: int, filename: str | None) -> str:
    where = f" {filename}" if filename else ""
    if code in (errno.ENOSPC, errno.EDQUOT):
        what = "no space left on the device" if code == errno.ENOSPC else "disk quota exceeded"
        return (f"{what} while writing{where}; free some space (or write elsewhere: --out) and run the command "
                "again")
    if code == errno.EROFS:
        return f"cannot write{where}: read-only file system; choose a writable folder (--out)"
    if code == errno.ENAMETOOLONG:
        longest = max((len(os.fsencode(p)) for p in Path(filename).parts), default=0) if filename else 0
        size = f" (a part of it is {longest} bytes)" if longest else ""
        return (f"file name too long for the file system:{where}{size}; use a shorter name or folder "
                "(--out, --name) or rename the input file")
    return (f"permission denied:{where or ' a file or folder this command needs'}; make it readable/writable for "
            "you or choose another path (--out)")


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
