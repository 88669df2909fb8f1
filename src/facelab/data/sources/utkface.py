"""UTKFace: age, gender and race encoded in each file name, ``<age>_<gender>_<race>_<datetime>.jpg.chip.jpg``.

The aligned & cropped faces (``UTKFace/``, 200x200) use the ``.jpg.chip.jpg`` suffix; the ``crop_part1``
and in-the-wild (``part1/ part2/ part3/``) variants use plain ``.jpg``. Labels are read only from names
that follow the scheme exactly: a malformed name (a missing field, a stray space, a missing dot, a code
outside its range) is skipped with the reason, never repaired by guessing.
"""

from __future__ import annotations

import bisect
import os
import re
from pathlib import Path

from pydantic import field_validator

from facelab.data.schema import CropSpec, LabelKind, LabelSpec, Record, Skip, SourceIndex
from facelab.data.sources.base import SOURCES, Source, SourceOptions, comma_list, text_key
from facelab.data.sources.folder import LINK_LOOP, file_skip_reason, follow, leads_up
from facelab.errors import DataError

GENDERS = ("male", "female")  # 0, 1
RACES = ("White", "Black", "Asian", "Indian", "Others")  # 0..4
MAX_AGE = 120
CHIP_SUFFIX = ".jpg.chip.jpg"
SUBFOLDERS = ("UTKFace", "utkface", "crop_part1", "UTKface_inthewild", "utkface_inthewild")
PART_FOLDERS = ("part1", "part2", "part3")
SCHEME = "<age>_<gender>_<race>_<datetime>.jpg.chip.jpg"
DOWNLOAD = "https://susanqq.github.io/UTKFace/"

_FIELDS = ("age", "gender", "race", "datetime")
_DIGITS = re.compile(r"[0-9]+")


def _stem(name: str) -> tuple[str | None, str | None]:
    """(the part before the suffix, None) or (None, why the suffix is wrong)."""
    if name.endswith(CHIP_SUFFIX):
        return name[: -len(CHIP_SUFFIX)], None
    if name.endswith(".chip.jpg"):
        return None, f"malformed name: no '.' before 'jpg.chip.jpg' (expected {SCHEME})"
    if name.lower().endswith(".jpg"):
        return name[:-4], None
    return None, f"not a UTKFace image name: expected the suffix '.jpg.chip.jpg' or '.jpg' ({SCHEME})"


def _field_error(field: str, text: str) -> str | None:
    """Why one name field is invalid (None when it is fine)."""
    if _DIGITS.fullmatch(text):
        value = int(text)
        if field == "age" and value > MAX_AGE:
            return f"age {value} is outside 0-{MAX_AGE}"
        if field == "gender" and value >= len(GENDERS):
            return f"gender code {value} is not 0 (male) or 1 (female)"
        if field == "race" and value >= len(RACES):
            return f"race code {value} is not 0-4 ({', '.join(RACES)})"
        return None
    if text != text.strip() or " " in text:
        return f"{field} field {text!r} contains a space"
    if not text:
        return f"{field} field is empty"
    return f"{field} field {text!r} is not a non-negative integer"


def parse_name(name: str) -> tuple[tuple[int, int, int], None] | tuple[None, str]:
    """Parse a UTKFace file name into (age, gender, race), or return why it cannot be parsed.

    Example:
        >>> parse_name("25_1_3_20170104231539445.jpg.chip.jpg")
        ((25, 1, 3), None)
        >>> parse_name("39_1_20170116174525125.jpg.chip.jpg")[1]
        'malformed name: 3 fields (39_1_20170116174525125), expected 4 (<age>_<gender>_<race>_<datetime>.jpg.chip.jpg)'
    """
    stem, why = _stem(name)
    if stem is None:
        return None, why  # type: ignore[return-value]
    fields = stem.split("_")
    if len(fields) != len(_FIELDS):
        return None, f"malformed name: {len(fields)} fields ({stem}), expected {len(_FIELDS)} ({SCHEME})"
    for field, text in zip(_FIELDS, fields):
        error = _field_error(field, text)
        if error is not None:
            return None, f"malformed name: {error}" + ("" if _DIGITS.fullmatch(text) else f" ({SCHEME})")
    age, gender, race = (int(t) for t in fields[:3])
    return (age, gender, race), None


def image_folders(root: Path, skipped: list[Skip] | None = None) -> list[Path]:
    """The folders holding UTKFace images under ``root`` (root itself, a known sub-folder, or part1..3).

    A known sub-folder that is a symbolic link loop is not entered; it is added to ``skipped`` when given.

    Raises:
        DataError: no UTKFace images anywhere expected, with the layout to use.
    """
    folders: dict[str, bool] = {}  # entry name -> is a usable folder
    loops = []
    with os.scandir(root) as it:
        for e in it:
            is_dir, is_file, problem = follow(e)
            if is_file and e.name.lower().endswith(".jpg"):
                return [root]
            if problem is None and is_dir and e.is_symlink() and leads_up(e.path, root):
                problem = LINK_LOOP
            if e.name in SUBFOLDERS + PART_FOLDERS:
                folders[e.name] = is_dir and problem is None
                loops += [Skip(text_key(e.name), problem)] if problem else []
    if skipped is not None:
        skipped += loops
    for sub in SUBFOLDERS:
        if folders.get(sub):
            return image_folders(root / sub, skipped)
    parts = [root / p for p in PART_FOLDERS if folders.get(p)]
    if parts:
        return parts
    ignored = f"; ignored {', '.join(f'{s.key} ({s.reason})' for s in loops)}" if loops else ""
    raise DataError(
        f"{root}: no UTKFace images; expected files named {SCHEME} in {root} or {root}/UTKFace/ "
        f"(the 'Aligned&Cropped Faces' UTKFace.tar.gz from {DOWNLOAD}, unpacked){ignored}"
    )


def _file_names(folder: Path, prefix: str, skipped: list[Skip]) -> list[str]:
    """Sorted names of the files in ``folder``; symbolic-link loops and dangling links go to ``skipped``."""
    names = []
    with os.scandir(folder) as it:
        for e in it:
            _, is_file, problem = follow(e)
            if problem is not None:
                skipped.append(Skip(text_key(prefix + e.name), problem))
            elif is_file:
                names.append(e.name)
    return sorted(names)


def age_classes(edges: list[int]) -> tuple[str, ...]:
    """Class names of the age groups cut at ``edges``: ``[20, 40]`` -> ``("0-19", "20-39", "40+")``."""
    lows = [0, *edges]
    return tuple(f"{lo}-{hi - 1}" for lo, hi in zip(lows, edges)) + (f"{edges[-1]}+",)


class UTKFaceOptions(SourceOptions):
    """Options of the ``utkface`` source."""

    # Also label an ``age_group`` (categorical) cut at these ages, e.g. ``-o age_bins=20,40,60`` gives
    # 0-19, 20-39, 40-59 and 60+: classifiers and conditional generators take categories, not years.
    age_bins: list[int] | None = None

    _split_bins = field_validator("age_bins", mode="before")(comma_list)

    @field_validator("age_bins")
    @classmethod
    def _ascending_ages(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (not v or any(b <= a for a, b in zip(v, v[1:])) or v[0] < 1 or v[-1] > MAX_AGE):
            raise ValueError(f"age_bins must be strictly ascending ages between 1 and {MAX_AGE}, e.g. 20,40,60; got {v}")
        return v


@SOURCES.register("utkface")
class UTKFaceSource(Source):
    """UTKFace faces labelled by file name: ``age`` (numeric, years), ``gender`` (binary: 0 male,
    1 female) and ``race`` (categorical, 5 classes), plus ``age_group`` (categorical) with the
    ``age_bins`` option. No identities, no official partitions.
    """

    name = "utkface"
    Options = UTKFaceOptions
    default_crop = CropSpec(mode="center")

    def index(self) -> SourceIndex:
        assert self.root is not None
        records, skipped = [], []
        edges = self.options.age_bins  # type: ignore[attr-defined]
        folders = image_folders(self.root, skipped)
        base = folders[0] if len(folders) == 1 else folders[0].parent  # keys: "name" or "part1/name"
        for folder in folders:
            prefix = "" if folder == base else folder.name + "/"
            names = _file_names(folder, prefix, skipped)
            ref_prefix = os.path.join(folder, "")  # string joins: Path maths costs seconds on 20k files
            for name in names:
                text = text_key(name)  # bytes that are not UTF-8 never parse as digits: same labels or skip
                reason = file_skip_reason(text)
                labels, why = (None, reason) if reason else parse_name(text)
                if labels is None:
                    skipped.append(Skip(prefix + text, why))  # type: ignore[arg-type]
                else:
                    if edges:
                        labels = (*labels, bisect.bisect_right(edges, labels[0]))
                    records.append(Record(key=prefix + text, ref=ref_prefix + name, labels=labels))
        if not records:
            raise DataError(f"{self.root}: no file follows the UTKFace naming scheme {SCHEME}")
        notes = [f"{len(skipped):,} files skipped (malformed names or not images)"] if skipped else []
        return SourceIndex(
            source=self.name,
            root=str(self.root),
            labels=[
                LabelSpec("age", LabelKind.NUMERIC),
                LabelSpec("gender", LabelKind.BINARY, GENDERS),
                LabelSpec("race", LabelKind.CATEGORICAL, RACES),
                *([LabelSpec("age_group", LabelKind.CATEGORICAL, age_classes(edges))] if edges else []),
            ],
            records=records,
            skipped=skipped,
            notes=notes,
        )
