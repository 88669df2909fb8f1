"""A folder of loose images (``facelab predict FOLDER``, ``facelab align PHOTOS``): which files are images, and
the key each is listed under in reports and CSVs.

A key is the file's path relative to the folder, '/'-separated, as UTF-8 text (bytes of a file name that are
not UTF-8 are written as backslash escapes, see :func:`facelab.data.sources.base.text_key`). Keys never
start with '/' and never hold '..': files are found by walking down from the folder.
"""

from __future__ import annotations

from pathlib import Path

from facelab.data.decode import IMAGE_SUFFIXES
from facelab.data.sources.base import not_a_folder, text_key
from facelab.errors import FacelabError


def list_images(folder: Path, *, what: str = "") -> tuple[list[Path], list[dict[str, str]]]:
    """Image files under ``folder`` (recursive, sorted) and the files skipped, with their reason: not an
    image by extension, a symbolic-link loop or dangling link, a linked folder (not followed).

    Args:
        folder: the folder to walk.
        what: added to the "not a folder" error, e.g. ", and not a store".

    Raises:
        FacelabError: ``folder`` is not a folder, holds no image file, or two files share a key
            (:func:`image_key`).
    """
    if not folder.is_dir():
        raise FacelabError(f"{folder}: {not_a_folder(folder)}{what}")
    images, skipped = [], []
    for p in sorted(folder.rglob("*")):  # rglob lists linked folders but does not descend into them
        if p.name.startswith("."):
            continue
        why = _unusable(p)
        if why is None and p.is_file():
            images.append(p)
        elif why is not None:
            skipped.append({"key": image_key(folder, p), "reason": why})
    if not images:
        raise FacelabError(f"{folder}: no image files found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    _check_unique_keys(folder, images)
    return images, skipped


def _unusable(path: Path) -> str | None:
    """Why ``path`` (an entry under the folder) is not read as an image; None for image files and folders."""
    if path.is_symlink():
        try:
            path.stat()
        except OSError as e:  # ELOOP: the link leads back to itself; ENOENT: dangling
            return f"cannot follow the symbolic link ({e.strerror})"
        if path.is_dir():
            return "symbolic link to a folder, not followed (it may lead back to a folder that contains it)"
    if path.is_file() and path.suffix.lower() not in IMAGE_SUFFIXES:
        return "not an image file (by extension)"
    return None


def image_key(folder: Path, path: Path) -> str:
    """The key of ``path``: its path relative to ``folder``, '/'-separated, as UTF-8 text."""
    return text_key(path.relative_to(folder).as_posix())


def _check_unique_keys(folder: Path, files: list[Path]) -> None:
    """FacelabError (before any work) when two files get the same key, which only escaped names can."""
    seen: set[str] = set()
    for p in files:
        key = image_key(folder, p)
        if key in seen:
            raise FacelabError(f"{folder}: two files would both be listed as {key}: one named so, one whose name is "
                               "not UTF-8 (its other bytes are written as backslash escapes); rename one of them")
        seen.add(key)
