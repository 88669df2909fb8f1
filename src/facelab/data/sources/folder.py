"""Hand-labelled class folders: ``root/<class>/*.jpg`` or ``root/{train,val,test}/<class>/*.jpg``.

The scanning helpers here (:func:`scan_class_tree`, :func:`file_skip_reason`, :func:`follow`,
:func:`leads_up`) also serve other sources whose data comes as class folders (the CIFAR-10 image-folder
layout) or plain folders (UTKFace).
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
from facelab.data.sources.base import SOURCES, Source, SourceOptions, comma_list, text_key
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
LINK_LOOP = "symbolic link loop: it leads back to a folder that contains it"


def file_skip_reason(name: str) -> str | None:
    """Why a file called ``name`` is not an image record (None when its suffix is an image suffix)."""
    if name.startswith("."):
        return "hidden file (e.g. macOS/editor metadata), not an image"
    suffix = os.path.splitext(name)[1].lower()
    if suffix not in IMAGE_SUFFIXES:
        shown = repr(suffix) if suffix else "no suffix"
        return f"not an image file ({shown}; expected one of {', '.join(sorted(IMAGE_SUFFIXES))})"
    return None


@dataclass
class _Listing:
    """One folder's entries, each list sorted by name; ``broken``: (path, reason) of links that cannot be used."""

    visible: list[Path] = field(default_factory=list)  # sub-folders
    hidden: list[Path] = field(default_factory=list)  # sub-folders named ".*"
    files: list[Path] = field(default_factory=list)
    broken: list[tuple[Path, str]] = field(default_factory=list)


def _list_folder(folder: Path) -> _Listing:
    """The sub-folders and files of ``folder``; symbolic-link loops and dangling links go to ``broken``."""
    found = _Listing()
    with os.scandir(folder) as it:
        for e in it:
            is_dir, is_file, problem = follow(e)
            if problem is None and is_dir and e.is_symlink() and leads_up(e.path, folder):
                problem = LINK_LOOP
            if problem is not None:
                found.broken.append((Path(e.path), problem))
            elif is_dir:
                (found.hidden if e.name.startswith(".") else found.visible).append(Path(e.path))
            elif is_file:
                found.files.append(Path(e.path))
    for entries in (found.visible, found.hidden, found.files, found.broken):
        entries.sort()
    return found


def follow(entry: os.DirEntry) -> tuple[bool, bool, str | None]:
    """(is a folder, is a file, why it cannot be used) of a scandir entry, following symbolic links: a link
    that loops (ELOOP) or dangles gives a reason instead of raising or vanishing silently."""
    try:
        is_dir, is_file = entry.is_dir(), entry.is_file()
    except OSError as e:
        return False, False, f"cannot follow the symbolic link ({e.strerror})"
    if not (is_dir or is_file) and entry.is_symlink():
        return False, False, "dangling symbolic link (its target does not exist)"
    return is_dir, is_file, None


def leads_up(link: str | Path, folder: str | Path) -> bool:
    """Whether the folder ``link`` points to is ``folder`` or one of its parents (walking it would loop)."""
    target, here = os.path.realpath(link), os.path.realpath(folder)
    return os.path.commonpath([target, here]) == target


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

    Raises:
        DataError: a folder under ``class_dir`` (or itself) cannot be read: its images would be missing from
            the store without a word.
    """
    prefix = len(os.path.join(root, ""))
    images = []

    def unreadable(e: OSError) -> None:
        where = _shown(Path(e.filename), root) if e.filename else _shown(class_dir, root)
        raise DataError(f"{root}: cannot read the folder {where} ({e.strerror}); make it readable (or move it "
                        "out of the dataset) and re-run")

    for dirpath, dirnames, filenames in os.walk(class_dir, onerror=unreadable):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            key = text_key(path[prefix:].replace(os.sep, "/"))
            reason = file_skip_reason(name)
            if reason is None:
                images.append((key, path))
            else:
                skipped.append(Skip(key, reason))
    return images


def _shown(path: Path, root: Path) -> str:
    """``path`` relative to ``root``, '/'-separated, as UTF-8 text (keys and notes)."""
    return text_key(path.relative_to(root).as_posix()) or "."


def _class_names(root: Path, groups, classes: Sequence[str] | None) -> tuple[str, ...]:
    """The class list: ``classes`` when given (checked against the folders), else the sorted folder names."""
    found: dict[str, Path] = {}
    for _, base in groups:
        for d in _list_folder(base).visible:
            found.setdefault(text_key(d.name), d)
    if classes is None:
        return tuple(sorted(found))
    unknown = [_shown(d, root) for name, d in found.items() if name not in classes]
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
    top = _list_folder(root)
    dirs, hidden, files = top.visible, top.hidden, top.files
    groups = _split_groups(root, dirs, layout) if dirs else []
    names = _class_names(root, groups, classes) if groups else ()
    listings = [(p, base, top if base == root else _list_folder(base)) for p, base in groups]
    class_dirs = [(p, c) for p, _, listing in listings for c in listing.visible]
    if not class_dirs:
        raise DataError(
            f"{root}: no class folders found; {what} must be laid out as {root}/<class>/<image> "
            f"(e.g. {root}/left/0001.jpg) or {root}/{{train,val,test}}/<class>/<image>"
        )
    scan = ClassTreeScan(classes=names, has_partitions=groups[0][0] is not None)
    scan.notes += [f"ignored hidden folder {_shown(h, root)}" for h in hidden]
    if scan.has_partitions:
        used = {base for _, base in groups}
        scan.notes += [f"ignored folder {_shown(d, root)} (not a train/val/test split)" for d in dirs if d not in used]
    loose = files + [f for p, base, listing in listings if p is not None for f in listing.files]
    scan.skipped += [Skip(_shown(f, root), "not inside a class folder") for f in loose]
    broken = top.broken + [b for p, base, listing in listings if p is not None for b in listing.broken]
    scan.skipped += [Skip(_shown(path, root), reason) for path, reason in broken]
    seen: set[str] = set()
    for partition, cdir in class_dirs:
        name = text_key(cdir.name)
        seen.add(name)
        images = _image_files(cdir, root, scan.skipped)
        if not images:
            scan.notes.append(f"class folder {_shown(cdir, root)} holds no images")
        label = (names.index(name),)
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
