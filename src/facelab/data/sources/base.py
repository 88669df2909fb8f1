"""The interface every dataset source implements, and the SOURCES registry."""

from __future__ import annotations

import errno
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from facelab.config import StrictConfig
from facelab.data.decode import decode_file
from facelab.data.schema import CropSpec, Record, SourceIndex
from facelab.errors import DataError
from facelab.registry import Registry


def text_key(name: str) -> str:
    r"""``name`` (a file name or relative path) as valid UTF-8 text, for record keys, reports and CSVs.

    On Linux a file name need not be UTF-8; Python gives its undecodable bytes as surrogate escapes, which
    cannot be written as UTF-8. Those bytes become backslash escapes (``caf\xe9.jpg`` for the Latin-1
    name ``café.jpg``); valid names are returned unchanged.

    Example:
        >>> text_key(b"caf\xe9.jpg".decode("utf-8", "surrogateescape"))
        'caf\\xe9.jpg'
    """
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        pass
    try:
        raw = name.encode("utf-8", "surrogateescape")  # the file name's bytes
    except UnicodeEncodeError:  # a surrogate that is no escaped byte: show its code point
        return name.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def not_a_folder(path: Path) -> str:
    """Why ``path``, which is not a folder, is not one: missing, a symbolic-link loop, a file..."""
    try:
        path.stat()
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "is a symbolic link loop (it leads back to itself), not a folder"
        return f"folder does not exist ({e.strerror})" if path.is_symlink() else "folder does not exist"
    return "is a file, not a folder"


class SourceOptions(StrictConfig):
    """Options of a source; each source subclasses this with its own typed fields."""


def comma_list(value: Any) -> Any:
    """``"bird, horse"`` -> ``["bird", "horse"]`` (how ``-o classes=bird,horse`` arrives); others unchanged."""
    return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value


class Source(ABC):
    """A dataset layout on disk (or generated): indexes records, then loads images one by one.

    Subclasses set ``name``, ``Options`` and ``default_crop`` and implement ``index`` (cheap: reads
    annotations and lists files, decodes nothing) and, when records are not plain files, ``load``.
    Instances must be picklable: store builds call ``load`` in worker processes.
    """

    name: ClassVar[str]
    Options: ClassVar[type[SourceOptions]] = SourceOptions
    default_crop: ClassVar[CropSpec] = CropSpec()
    needs_root: ClassVar[bool] = True

    def __init__(self, root: str | Path | None = None, **options) -> None:
        if self.needs_root:
            if root is None:
                raise DataError(f"source {self.name!r} needs a ROOT folder (the dataset as downloaded)")
            root = Path(root).expanduser()
            if not root.is_dir():
                raise DataError(f"{root}: {not_a_folder(root)}; point {self.name!r} at the dataset folder as downloaded")
        self.root: Path | None = Path(root) if root is not None else None
        self.options = self.Options.from_dict(options, where=f"options of source {self.name!r}")

    @abstractmethod
    def index(self) -> SourceIndex:
        """List the records (with labels) and the skipped files/rows, without decoding images."""

    def load(self, record: Record, *, min_side: int | None = None) -> np.ndarray:
        """Return record's image as (H, W, 3) RGB uint8; raise ImageDecodeError when unreadable.

        ``min_side`` lets JPEG decoders downscale while keeping both sides >= min_side.
        """
        return decode_file(record.ref, min_side=min_side)


SOURCES: Registry[Source] = Registry("dataset source")


def create_source(name: str, root: str | Path | None = None, **options) -> Source:
    """Create a registered source by name (``celeba``, ``utkface``, ``cifar10``, ``folder``, ``synthetic``)."""
    import facelab.data.sources  # noqa: F401  (registers the built-in sources)

    return SOURCES.create(name, root, **options)
