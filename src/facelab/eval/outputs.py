"""Where a command may write the file a person names (``predict --out``, ``sample --grid``, ``blend --out`` ...).

facelab replaces only what it made: an output path is refused, before any work, when it lies inside a store or a
run folder facelab made (their files are facelab's record of that store or run), when it is one of the
command's own inputs, or when a file is already there that facelab did not write (``ours`` says which files are
facelab's, e.g. :func:`facelab.eval.grids.is_facelab_png`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from facelab.data.store import facelab_manifest
from facelab.errors import FacelabError
from facelab.runs.folder import made_by_facelab


def facelab_folder_of(path: Path) -> tuple[str, Path] | None:
    """("store" | "run", folder) of the store or run folder facelab made that holds ``path`` (or is it)."""
    path = Path(os.path.abspath(path))
    for folder in (path, *path.parents):
        if not folder.is_dir():
            continue
        if facelab_manifest(folder) is not None:
            return "store", folder
        if made_by_facelab(folder):
            return "run", folder
    return None


def _same(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output(out: Path, *, option: str, inputs: Iterable[Path] = (), ours: Callable[[Path], bool] | None = None,
                 folder: bool = False) -> None:
    """Refuse, naming the fix, an output path given as ``option`` (e.g. "--out") that facelab may not write.

    Args:
        out: the file (or, with ``folder``, the folder) the command is about to write.
        option: how the command's help names it, for the message.
        inputs: the command's inputs (files or folders): ``out`` may be none of them, nor lie inside a folder one.
        ours: for a file already at ``out``: whether facelab wrote it (then it may be replaced).
        folder: ``out`` is a folder to write files into (inputs may not lie inside it either).

    Raises:
        FacelabError: ``out`` lies in a store or run folder facelab made, is an input, or holds a file facelab
            did not write.
    """
    out = Path(out).expanduser()
    owner = facelab_folder_of(out)
    if owner is not None:
        kind, where = owner
        raise FacelabError(f"{option} {out} lies inside the {kind} folder {where} that facelab made (its files are "
                           f"facelab's record of that {kind}); write it elsewhere")
    for given in inputs:
        given = Path(given).expanduser()
        inside = given.is_dir() and os.path.abspath(out).startswith(os.path.join(os.path.abspath(given), ""))
        if _same(out, given) or os.path.abspath(out) == os.path.abspath(given) or (folder and inside):
            raise FacelabError(f"{option} {out} is {'inside ' if inside and not _same(out, given) else ''}an input "
                               f"of this command ({given}); write it elsewhere")
    if not folder and ours is not None and (out.exists() or out.is_symlink()):
        if out.is_dir():
            raise FacelabError(f"{option} {out} is a folder; name the file to write")
        if not ours(out):
            raise FacelabError(f"{option} {out} exists and facelab did not write it; facelab replaces only its own "
                               "files: move it away or choose another path")
