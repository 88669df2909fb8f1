"""Hand-labelled class folders: ``root/<class>/*.jpg`` or ``root/{train,val,test}/<class>/*.jpg``.

The scanning helpers here (:func:`scan_class_tree`, :func:`file_skip_reason`) also serve other sources
whose data comes as class folders (the CIFAR-10 image-folder layout).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import field_validator

from facelab.data.decode import IMAGE_SUFFIXES
from facelab.data.schema import CropSpec, LabelKind, LabelSpec, Partition, Record, Skip, SourceIndex
from facelab.data.sources.base import SOURCES, Source, SourceOptions, comma_list
from facelab.errors import DataError

# Folder names recognised as official splits (case-insensitive).
SPLIT_DIRS: dict[str, Partition] = {
    "train": Partition.TRAIN,
    "training": Partition.TRAIN,
    "val": Partition.VAL,
    "valid": Partition.VAL,
    "validation": Partition.VAL,
    "test": Partition.TEST,
    "testing": Partition.TEST,
}

Layout = Literal["auto", "classes", "splits"]


def file_skip_reason(name: str) -> str | None:
    """Why a file called ``name`` is not an image record (None when its suffix is an image suffix)."""
    if name.startswith("."):
        return "hidden file (e.g. macOS/editor metadata), not an image"
    suffix = os.path.splitext(name)[1].lower()
    if suffix not in IMAGE_SUFFIXES:
        shown = repr(suffix) if suffix else "no suffix"
        return f"not an image file ({shown}; expected one of {', '.join(sorted(IMAGE_SUFFIXES))})"
    return None


def _subdirs_and_files(folder: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """Visible sub-folders, hidden sub-folders and files of ``folder``, each sorted by name."""
    visible, hidden, files = [], [], []
    with os.scandir(folder) as it:
        for e in it:
            if e.is_dir():
                (hidden if e.name.startswith(".") else visible).append(Path(e.path))
            elif e.is_file():
                files.append(Path(e.path))
    return sorted(visible), sorted(hidden), sorted(files)


@dataclass
class ClassTreeScan:
    """What :func:`scan_class_tree` found: records labelled by class index, plus skips and notes."""

    classes: tuple[str, ...]
    records: list[Record] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    has_partitions: bool = False


def _split_groups(root: Path, dirs: list[Path], layout: Layout) -> list[tuple[int | None, Path]]:
    """[(partition or None, folder holding class folders)] for ``root``'s sub-folders ``dirs``."""
    splits = [d for d in dirs if d.name.lower() in SPLIT_DIRS]
    if layout == "auto":
        others = [d.name for d in dirs if d.name.lower() not in SPLIT_DIRS]
        if splits and others:
            raise DataError(
                f"{root}: mixes split folders ({', '.join(d.name for d in splits)}) with other folders "
                f"({', '.join(others[:5])}); use either {root}/<class>/<image> or "
                f"{root}/{{train,val,test}}/<class>/<image>; or set the option layout='classes' (every "
                "sub-folder is a class) or layout='splits' (other folders are ignored)"
            )
        layout = "splits" if splits else "classes"
    if layout == "classes":
        return [(None, root)]
    if not splits:
        raise DataError(f"{root}: layout='splits' but there is no train/val/test folder in it")
    return [(int(SPLIT_DIRS[d.name.lower()]), d) for d in sorted(splits, key=lambda d: SPLIT_DIRS[d.name.lower()])]


def _image_files(class_dir: Path, root: Path, skipped: list[Skip]) -> list[tuple[str, str]]:
    """(key, path) of the image files anywhere under ``class_dir``, sorted; other files go to ``skipped``.

    Keys are paths relative to ``root`` with '/' separators (string slicing: Path maths costs seconds
    on 100k-image folders).
    """
    prefix = len(os.path.join(root, ""))
    images = []
    for dirpath, dirnames, filenames in os.walk(class_dir):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            key = path[prefix:].replace(os.sep, "/")
            reason = file_skip_reason(name)
            if reason is None:
                images.append((key, path))
            else:
                skipped.append(Skip(key, reason))
    return images


def _class_names(root: Path, groups, classes: Sequence[str] | None) -> tuple[str, ...]:
    """The class list: ``classes`` when given (checked against the folders), else the sorted folder names."""
    found: dict[str, Path] = {}
    for _, base in groups:
        for d in _subdirs_and_files(base)[0]:
            found.setdefault(d.name, d)
    if classes is None:
        return tuple(sorted(found))
    unknown = [f"{d.relative_to(root).as_posix() or '.'}" for name, d in found.items() if name not in classes]
    if unknown:
        raise DataError(
            f"{root}: class folder(s) {', '.join(sorted(unknown))} not among the expected classes "
            f"({', '.join(classes)}); rename the folder(s) or fix the class list"
        )
    return tuple(classes)


def scan_class_tree(
    root: Path, *, classes: Sequence[str] | None = None, layout: Layout = "auto", what: str = "class folders"
) -> ClassTreeScan:
    """Index ``root/<class>/...`` or ``root/<split>/<class>/...`` images without decoding them.

    Args:
        root: the dataset folder.
        classes: the class names in label order; None takes the sorted folder names.
        layout: ``auto`` detects split folders (train/val/test), ``classes`` treats every sub-folder as a
            class, ``splits`` requires split folders.
        what: how error messages call the dataset.

    Raises:
        DataError: no class folder, a folder that is not a known class, a mixed layout or no image at all.
    """
    dirs, hidden, files = _subdirs_and_files(root)
    groups = _split_groups(root, dirs, layout) if dirs else []
    names = _class_names(root, groups, classes) if groups else ()
    class_dirs = [(p, c) for p, base in groups for c in _subdirs_and_files(base)[0]]
    if not class_dirs:
        raise DataError(
            f"{root}: no class folders found; {what} must be laid out as {root}/<class>/<image> "
            f"(e.g. {root}/left/0001.jpg) or {root}/{{train,val,test}}/<class>/<image>"
        )
    scan = ClassTreeScan(classes=names, has_partitions=groups[0][0] is not None)
    scan.notes += [f"ignored hidden folder {h.relative_to(root).as_posix()}" for h in hidden]
    if scan.has_partitions:
        used = {base for _, base in groups}
        scan.notes += [f"ignored folder {d.name} (not a train/val/test split)" for d in dirs if d not in used]
    loose = files + [f for p, base in groups if p is not None for f in _subdirs_and_files(base)[2]]
    scan.skipped += [Skip(f.relative_to(root).as_posix(), "not inside a class folder") for f in loose]
    seen: set[str] = set()
    for partition, cdir in class_dirs:
        seen.add(cdir.name)
        images = _image_files(cdir, root, scan.skipped)
        if not images:
            scan.notes.append(f"class folder {cdir.relative_to(root).as_posix()} holds no images")
        label = (names.index(cdir.name),)
        part = {} if partition is None else {"partition": partition}
        scan.records += [Record(key=key, ref=path, labels=label, **part) for key, path in images]
    scan.notes += [f"class {c!r} has no folder (no images)" for c in names if c not in seen]
    if not scan.records:
        raise DataError(f"{root}: the class folders hold no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return scan


class FolderOptions(SourceOptions):
    """Options of the ``folder`` source."""

    label_name: str = "label"  # name of the single categorical label column
    classes: list[str] | None = None  # label order; default: the folder names sorted alphabetically
    layout: Layout = "auto"  # auto: split folders (train/val/test) are detected

    _split_classes = field_validator("classes", mode="before")(comma_list)

    @field_validator("label_name")
    @classmethod
    def _label_name_ok(cls, v: str) -> str:
        if not v or v != v.strip() or any(ch.isspace() for ch in v):
            raise ValueError(f"label_name must be a non-empty name without spaces, got {v!r}")
        return v

    @field_validator("classes")
    @classmethod
    def _classes_ok(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            if not v:
                raise ValueError("classes must name at least one class folder")
            dup = sorted({c for c in v if v.count(c) > 1})
            if dup:
                raise ValueError(f"classes lists {', '.join(dup)} more than once")
        return v


@SOURCES.register("folder")
class FolderSource(Source):
    """Images sorted into one folder per class; one categorical label named ``label_name``.

    Layouts: ``root/<class>/<image>`` (no partitions) or ``root/{train,val,test}/<class>/<image>``
    (official partitions taken from the split folders). Images in nested folders of a class folder
    belong to that class. Non-image and hidden files are skipped with a reason.
    """

    name = "folder"
    Options = FolderOptions
    default_crop = CropSpec(mode="center")

    def index(self) -> SourceIndex:
        assert self.root is not None
        opts: FolderOptions = self.options  # type: ignore[assignment]
        scan = scan_class_tree(self.root, classes=opts.classes, layout=opts.layout)
        return SourceIndex(
            source=self.name,
            root=str(self.root),
            labels=[LabelSpec(opts.label_name, LabelKind.CATEGORICAL, scan.classes)],
            records=scan.records,
            skipped=scan.skipped,
            notes=scan.notes,
            has_partitions=scan.has_partitions,
        )
