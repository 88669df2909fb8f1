"""CelebA, aligned & cropped: 40 binary attributes, identities, official partitions and 5 landmarks.

Layout as downloaded from the CelebA page (the folder may also sit in ``ROOT/celeba/``, the annotation
files in ``Anno/`` and ``Eval/``, the images in ``Img/``; the Kaggle ``.csv`` versions are read too)::

    ROOT/img_align_celeba/000001.jpg ...        178x218 aligned faces
    ROOT/list_attr_celeba.txt                   count line, 40 names, then "name v1 .. v40" (+1/-1)
    ROOT/list_eval_partition.txt                "name 0|1|2" (train/val/test)       optional
    ROOT/identity_CelebA.txt                    "name identity"                       optional
    ROOT/list_landmarks_align_celeba.txt        count line, 10 names, "name x1 y1 .. x5 y5"  optional

Annotation files are parsed with vectorised checks (all 202,599 rows in a fraction of a second); when a
check fails, a row-by-row pass finds the first bad line so the error can name it.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import compress, repeat
from pathlib import Path

import numpy as np
from pydantic import field_validator

from facelab.data.schema import (
    NO_IDENTITY,
    NO_PARTITION,
    CropSpec,
    LabelKind,
    LabelSpec,
    Partition,
    Record,
    Skip,
    SourceIndex,
)
from facelab.data.sources.base import SOURCES, Source, SourceOptions, text_key
from facelab.data.sources.folder import file_skip_reason
from facelab.errors import ConfigError, DataError

IMAGE_DIR = "img_align_celeba"
ATTR_FILE = "list_attr_celeba"
PARTITION_FILE = "list_eval_partition"
IDENTITY_FILE = "identity_CelebA"
LANDMARK_FILE = "list_landmarks_align_celeba"
N_ATTRIBUTES = 40
N_LANDMARK_VALUES = 10
DOWNLOAD = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"

_VALUE_CHARS = b" \t\r-+1\n"  # the only bytes of a valid attribute value block
_ATTR_VALUES = {"1": 1, "+1": 1, "-1": 0}
_WHITESPACE = np.zeros(256, dtype=bool)
_WHITESPACE[list(b" \t\r\n\v\f")] = True


# ---- reading annotation tables -----------------------------------------------------------------
@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector: building 200k small objects otherwise triggers it often."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _decode(path: Path, lineno: int, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path}:{lineno}: not UTF-8 text; is this really a CelebA annotation file?") from None


@dataclass
class _RawTable:
    """An annotation file split into its preamble and its rows (rows may end in '\\r')."""

    path: Path
    rows: list[bytes]
    linenos: range  # 1-based line number of each row
    header: list[str] | None  # column names after the image name, when the file has them
    declared: int | None  # the count line, when the file has one
    tabs: bool = False  # whether the file contains tab characters

    @classmethod
    def read(cls, path: Path, *, counted: bool) -> _RawTable:
        """Read ``path``; ``counted`` ``.txt`` files start with a count line and a line of column names,
        ``.csv`` (Kaggle) files with ``image_id,<column names>``, other ``.txt`` files with the rows."""
        try:
            raw = path.read_bytes().removeprefix(b"\xef\xbb\xbf")
        except OSError as e:
            raise DataError(f"{path}: cannot read ({e.strerror})") from None
        csv = path.suffix.lower() == ".csv"
        lines = (raw.replace(b",", b" ") if csv else raw).split(b"\n")
        start, header, declared = 0, None, None
        if csv:
            start, header = 1, _decode(path, 1, lines[0]).split()[1:]
        elif counted:
            first = _decode(path, 1, lines[0]).strip()
            if not first.isdigit():
                raise DataError(f"{path}:1: expected the number of images on the first line, found {first[:60]!r}")
            if len(lines) < 2:
                raise DataError(f"{path}: ends after the count line; expected the column names on line 2")
            start, header, declared = 2, _decode(path, 2, lines[1]).split(), int(first)
        end = len(lines)
        while end > start and not lines[end - 1].strip():
            end -= 1  # trailing blank lines
        return cls(path, lines[start:end], range(start + 1, end + 1), header, declared, tabs=b"\t" in raw)

    def check_header(self, expected: int, what: str) -> None:
        if self.header is None:
            return
        lineno, header = self.linenos.start - 1, self.header
        if len(header) != expected:
            shown = " ".join(header[:4]) + (" ..." if len(header) > 4 else "")
            raise DataError(
                f"{self.path}:{lineno}: expected {expected} {what} names, found {len(header)} ({shown}); "
                "the file is damaged: download it again"
            )
        dup = sorted({h for h in header if header.count(h) > 1})
        if dup:
            raise DataError(f"{self.path}:{lineno}: {what} name(s) {', '.join(dup)} appear more than once")

    def check_count(self, n_rows: int) -> None:
        if self.declared is not None and self.declared != n_rows:
            raise DataError(
                f"{self.path}:1: the count line says {self.declared:,} images but the file has {n_rows:,} rows; "
                "the file is truncated or was edited: download it again"
            )

    def columns_error(self, i: int, n_values: int, what: str) -> DataError:
        """The error for row ``i``, which does not have 1 + ``n_values`` columns."""
        line, lineno = self.rows[i], self.linenos[i]
        n = len(line.split())
        if n == 0:
            return DataError(f"{self.path}:{lineno}: empty line inside the table; delete it")
        return DataError(
            f"{self.path}:{lineno}: {n} columns, expected {n_values + 1} (image name + {n_values} {what} "
            f"value{'s' if n_values > 1 else ''}); the line reads {line.decode('utf-8', 'replace').strip()[:80]!r}"
        )

    def names(self, raw_names: list[bytes]) -> list[str]:
        """Decode the image names and check that none repeats."""
        try:
            names = b"\n".join(raw_names).decode("utf-8").split("\n") if raw_names else []
        except UnicodeDecodeError:
            raise DataError(f"{self.path}: image names are not UTF-8 text; is this a CelebA annotation file?") from None
        if len(set(names)) != len(names):
            first: dict[str, int] = {}
            for name, lineno in zip(names, self.linenos):
                if name in first:
                    raise DataError(
                        f"{self.path}:{lineno}: image {name} appears again (first on line {first[name]}); "
                        "remove one of the rows"
                    )
                first[name] = lineno
        return names


def _split_first(rows: list[bytes], *, tabs: bool) -> tuple[list[bytes], list[bytes]] | None:
    """(first token, rest) of every row; None when a row has fewer than two tokens."""
    if not rows:
        return [], []
    if not tabs:  # partition() is twice as fast as split(); valid unless a row starts with a space
        names, seps, rests = zip(*[ln.partition(b" ") for ln in rows])
        if b"" not in names and b"" not in seps:
            return list(names), list(rests)
    pairs = [ln.split(None, 1) for ln in rows]
    if set(map(len, pairs)) != {2}:
        return None
    names, rests = zip(*pairs)
    return list(names), list(rests)


def _fast_binary_values(rests: list[bytes], n_values: int) -> np.ndarray | None:
    """(N, n_values) int8 of 1 (+1) / 0 (-1), or None when some row is malformed (see the slow path)."""
    blob = b"\n".join(rests) + b"\n"
    if blob.translate(None, _VALUE_CHARS):
        return None  # a byte other than whitespace, '-', '+' or '1'
    arr = np.frombuffer(blob, dtype=np.uint8)
    cur, nxt = arr[:-1], arr[1:]
    one_glued = (cur == ord("1")) & ~_WHITESPACE[nxt]
    sign_alone = ((cur == ord("-")) | (cur == ord("+"))) & (nxt != ord("1"))
    if one_glued.any() or sign_alone.any():
        return None  # a token such as "11", "1-1", "--1" or "-"
    # Every token is now exactly "1", "+1" or "-1": drop separators and signs, "-1" -> "0".
    stream = blob.translate(None, b" \t\r+").replace(b"-1", b"0")
    codes = np.frombuffer(stream, dtype=np.uint8)
    if codes.size != len(rests) * (n_values + 1):
        return None
    codes = codes.reshape(len(rests), n_values + 1)  # each row: n_values digits then "\n"
    if not (codes[:, -1] == ord("\n")).all():
        return None
    return (codes[:, :n_values] - ord("0")).astype(np.int8)


def _binary_rows_slowly(table: _RawTable, columns: list[str], what: str) -> tuple[list[bytes], np.ndarray]:
    """Row-by-row parse of a +1/-1 table: raise a DataError naming the first bad line, else return
    (names, (N, K) 0/1 values) for the rare valid files the fast path does not handle (e.g. form feeds)."""
    names, values = [], []
    for i, (lineno, ln) in enumerate(zip(table.linenos, table.rows)):
        parts = _decode(table.path, lineno, ln).split()
        if len(parts) != len(columns) + 1:
            raise table.columns_error(i, len(columns), what)
        for col, tok in zip(columns, parts[1:]):
            if tok not in _ATTR_VALUES:
                raise DataError(f"{table.path}:{lineno}: value {tok!r} of {what} {col!r} for {parts[0]} is not 1 or -1")
        names.append(parts[0].encode())
        values.append([_ATTR_VALUES[tok] for tok in parts[1:]])
    return names, np.array(values, dtype=np.int8).reshape(len(names), len(columns))


@dataclass
class AttributeTable:
    """The parsed attribute file: image names in file order, attribute names and (N, 40) 0/1 values."""

    path: Path
    names: list[str]
    attributes: list[str]
    values: np.ndarray  # (N, 40) int8: 1 for +1, 0 for -1
    raw_names: list[bytes]  # the names as read, to compare other tables' names cheaply


def read_attributes(path: Path) -> AttributeTable:
    """Parse ``list_attr_celeba.txt`` (or Kaggle's ``list_attr_celeba.csv``).

    Raises:
        DataError: naming the file and line of a bad count line, header, column count, value or duplicate.
    """
    table = _RawTable.read(path, counted=True)
    assert table.header is not None
    table.check_header(N_ATTRIBUTES, "attribute")
    with _gc_paused():
        split = _split_first(table.rows, tabs=table.tabs)
        values = None if split is None else _fast_binary_values(split[1], len(table.header))
        if split is None or values is None:
            raw_names, values = _binary_rows_slowly(table, table.header, "attribute")
        else:
            raw_names = split[0]
        names = table.names(raw_names)
    table.check_count(len(names))
    return AttributeTable(path=path, names=names, attributes=table.header, values=values, raw_names=raw_names)


def _tokens_per_row(blob: bytes) -> np.ndarray:
    """Number of whitespace-separated tokens on each line of ``blob`` (which does not end in a newline)."""
    arr = np.frombuffer(blob, dtype=np.uint8)
    ws = _WHITESPACE[arr]
    starts = ~ws
    starts[1:] &= ws[:-1]  # a token starts where non-space follows space
    line_starts = np.concatenate(([0], np.flatnonzero(arr == ord("\n")) + 1))
    return np.add.reduceat(starts, line_starts, dtype=np.int64)


@dataclass
class IntTable:
    """A parsed ``name v1 .. vk`` integer table: names in file order, (N, k) values."""

    raw: _RawTable
    raw_names: list[bytes]
    values: np.ndarray  # (N, k) int64

    @property
    def path(self) -> Path:
        return self.raw.path

    def lineno(self, i: int) -> int:
        return self.raw.linenos[i]

    def select(self, attributes: AttributeTable, rows: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Values for the attribute-table rows ``rows``, and a mask of the rows this table has.

        Returns:
            (len(rows), k) values (-1 where absent) and (len(rows),) bool, True where found.
        """
        if self.raw_names == attributes.raw_names:  # the official files list the same images in order
            return self.values[rows], np.ones(len(rows), dtype=bool)
        names = self.raw.names(self.raw_names)
        row_of = dict(zip(names, range(len(names))))
        idx = np.array([row_of.get(attributes.names[r], -1) for r in rows], dtype=np.int64)
        found = idx >= 0
        out = np.full((len(rows), self.values.shape[1]), -1, dtype=np.int64)
        out[found] = self.values[idx[found]]
        return out, found


def read_int_table(
    path: Path, *, n_values: int, what: str, counted: bool = False, names_hint: list[bytes] | None = None
) -> IntTable:
    """Parse a ``name v1 .. vk`` table of integers (partitions, identities, landmarks).

    The whole table is tokenised at once. When every k-th token reproduces ``names_hint`` (the attribute
    file's names: the official files list the same images in the same order), names and values are
    paired correctly and the per-row column count check is skipped. Names are decoded (and checked for
    repeats) only when they differ from the attribute file's, see :meth:`IntTable.select`.

    Raises:
        DataError: naming the file and line of a bad count line, header, column count or value.
    """
    table = _RawTable.read(path, counted=counted)
    table.check_header(n_values, f"{what} column")
    k = n_values + 1
    with _gc_paused():
        blob = b"\n".join(table.rows)
        tokens = blob.split()
        aligned = len(tokens) == k * len(table.rows) and tokens[0::k] == names_hint
        if not aligned and (len(tokens) != k * len(table.rows) or (table.rows and (_tokens_per_row(blob) != k).any())):
            i = next(i for i, ln in enumerate(table.rows) if len(ln.split()) != k)
            raise table.columns_error(i, n_values, what)
        try:
            values = np.array([tokens[j::k] for j in range(1, k)], dtype=np.bytes_).astype(np.int64).T  # (N, k-1)
        except ValueError:
            i = next(i for i in range(len(tokens)) if i % k and not tokens[i].lstrip(b"-+").isdigit())
            text = tokens[i].decode("utf-8", "replace")
            raise DataError(f"{path}:{table.linenos[i // k]}: {what} value {text!r} is not an integer") from None
    table.check_count(len(values))
    return IntTable(raw=table, raw_names=tokens[0::k], values=values.reshape(len(table.rows), n_values))


# ---- where the files are -----------------------------------------------------------------------
@dataclass(frozen=True)
class CelebALayout:
    """Where the CelebA files under a root are; optional annotation files are None when absent."""

    base: Path
    images: Path
    attributes: Path
    partitions: Path | None
    identities: Path | None
    landmarks: Path | None


def _find_file(base: Path, stem: str, subdir: str) -> Path | None:
    for folder in (base, base / subdir):
        for suffix in (".txt", ".csv"):
            if (folder / (stem + suffix)).is_file():
                return folder / (stem + suffix)
    return None


def _find_images(base: Path) -> Path | None:
    for d in (base / IMAGE_DIR, base / "Img" / IMAGE_DIR):
        if d.is_dir():
            return d / IMAGE_DIR if (d / IMAGE_DIR).is_dir() else d  # the Kaggle zip nests it twice
    return None


def find_layout(root: Path) -> CelebALayout:
    """Locate the CelebA files in ``root``, ``root/celeba`` or ``root/CelebA``.

    Raises:
        DataError: the attribute file or the image folder is missing, saying what to download and where.
    """
    for base in (root, root / "celeba", root / "CelebA"):
        images, attrs = _find_images(base), _find_file(base, ATTR_FILE, "Anno")
        if images is None and attrs is None:
            continue
        if attrs is None:
            raise DataError(
                f"{base}: found {images} but no {ATTR_FILE}.txt (looked in {base} and {base / 'Anno'}); "
                f"download Anno/{ATTR_FILE}.txt from {DOWNLOAD} and put it in {base}"
            )
        if images is None:
            zipped = base / f"{IMAGE_DIR}.zip"
            fix = (
                f"unzip {zipped} in {base}"
                if zipped.is_file()
                else f'download {IMAGE_DIR}.zip ("Align&Cropped Images") from {DOWNLOAD} and unzip it in {base}'
            )
            raise DataError(f"{base}: found {attrs.name} but no {IMAGE_DIR}/ image folder; {fix}")
        return CelebALayout(
            base=base,
            images=images,
            attributes=attrs,
            partitions=_find_file(base, PARTITION_FILE, "Eval"),
            identities=_find_file(base, IDENTITY_FILE, "Anno"),
            landmarks=_find_file(base, LANDMARK_FILE, "Anno"),
        )
    raise DataError(
        f"{root}: no CelebA files; expected {root}/{IMAGE_DIR}/ (the aligned images) and "
        f"{root}/{ATTR_FILE}.txt (or both inside {root}/celeba/); download them from {DOWNLOAD}"
    )


def _list_files(folder: Path) -> list[str]:
    """Names in ``folder`` (a sub-folder among them is later skipped or fails to decode, with a reason)."""
    try:
        return os.listdir(folder)
    except OSError as e:
        raise DataError(f"{folder}: cannot list the image folder ({e.strerror})") from None


def _row_tuples(values: np.ndarray) -> list[tuple[int, ...]]:
    """Rows of an (N, K) array of 0..255 values as tuples (via bytes: ~2x faster than ``tolist``)."""
    k = values.shape[1]
    blob = np.ascontiguousarray(values, dtype=np.uint8).tobytes()
    return [tuple(blob[i : i + k]) for i in range(0, len(blob), k)]


# ---- the source --------------------------------------------------------------------------------
class CelebAOptions(SourceOptions):
    """Options of the ``celeba`` source."""

    attributes: list[str] | None = None  # keep only these attributes, in this order (default: all 40)
    landmarks: bool = True  # read list_landmarks_align_celeba.txt when present

    @field_validator("attributes")
    @classmethod
    def _attributes_ok(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            if not v:
                raise ValueError("attributes must name at least one attribute (or be left out for all 40)")
            dup = sorted({a for a in v if v.count(a) > 1})
            if dup:
                raise ValueError(f"attributes lists {', '.join(dup)} more than once")
        return v


@dataclass
class _Found:
    """The indexed images (rows of the attribute table) and the notes being collected."""

    table: AttributeTable
    rows: list[int]
    notes: list[str]

    def column(self, table: IntTable, absent_means: str) -> list[int]:
        """First column of ``table`` for the indexed images (-1 where absent, with a note)."""
        values, present = table.select(self.table, self.rows)
        if not present.all():
            self.notes.append(f"{(~present).sum():,} images have no row in {table.path.name} ({absent_means})")
        return values[:, 0].tolist()


@SOURCES.register("celeba")
class CelebASource(Source):
    """CelebA aligned & cropped faces with 40 binary attributes (1 = +1, 0 = -1), in file order.

    Only images present in ``img_align_celeba/`` are indexed, so a partial download works (a note says
    how many annotation rows had no image). Identities, partitions and landmarks come from their files
    when present. The default crop is the centred 178x178 square of the 178x218 image.
    """

    name = "celeba"
    Options = CelebAOptions
    default_crop = CropSpec(mode="center")

    def index(self) -> SourceIndex:
        assert self.root is not None
        layout = find_layout(self.root)
        table = read_attributes(layout.attributes)
        columns = self._columns(table)
        rows, skipped = self._match_images(layout, table)
        names = [table.names[r] for r in rows]
        values = table.values[rows][:, columns]  # (R, K) int8
        notes = []
        if len(rows) < len(table.names):
            notes.append(
                f"{len(table.names):,} annotation rows, {len(table.names) - len(rows):,} without an image file "
                f"in {layout.images} (partial download?)"
            )
        found = _Found(table, rows, notes)
        partitions = self._partitions(layout.partitions, found)
        identities = self._identities(layout.identities, found)
        use_landmarks = self.options.landmarks  # type: ignore[attr-defined]
        landmarks = self._landmarks(layout.landmarks, found) if use_landmarks else None
        n = len(names)
        prefix = os.path.join(layout.images, "")  # str concatenation: 200k Path joins take seconds
        with _gc_paused():
            records = list(
                map(
                    Record,
                    names,
                    [prefix + name for name in names],
                    _row_tuples(values),
                    identities or repeat(NO_IDENTITY, n),
                    partitions or repeat(NO_PARTITION, n),
                    landmarks or repeat(None, n),
                )
            )
        return SourceIndex(
            source=self.name,
            root=str(self.root),
            labels=[LabelSpec(table.attributes[c], LabelKind.BINARY) for c in columns],
            records=records,
            skipped=skipped,
            notes=notes,
            has_identities=identities is not None,
            has_partitions=partitions is not None,
            has_landmarks=landmarks is not None,
        )

    def _columns(self, table: AttributeTable) -> list[int]:
        """Indices of the kept attribute columns (all, or the ``attributes`` option in its order)."""
        wanted = self.options.attributes  # type: ignore[attr-defined]
        if wanted is None:
            return list(range(len(table.attributes)))
        unknown = [a for a in wanted if a not in table.attributes]
        if unknown:
            raise ConfigError(
                f"celeba option attributes: unknown attribute(s) {', '.join(unknown)}; "
                f"valid names (from {table.path.name}): {', '.join(table.attributes)}"
            )
        return [table.attributes.index(a) for a in wanted]

    @staticmethod
    def _match_images(layout: CelebALayout, table: AttributeTable) -> tuple[list[int], list[Skip]]:
        """Rows of ``table`` whose image exists (file order), and the files that are not records."""
        files = _list_files(layout.images)
        present = set(files)
        rows = list(compress(range(len(table.names)), map(present.__contains__, table.names)))
        skipped = [
            Skip(text_key(name), file_skip_reason(name) or f"image has no row in {table.path.name}")
            for name in sorted(present.difference(table.names))
        ]
        if not rows:
            raise DataError(
                f"{layout.images}: none of its {len(files):,} files has a row in {table.path}; "
                f"unzip {IMAGE_DIR}.zip (Align&Cropped Images from {DOWNLOAD}) into it"
            )
        return rows, skipped

    @staticmethod
    def _partitions(path: Path | None, found: _Found) -> list[int] | None:
        if path is None:
            found.notes.append(f"no {PARTITION_FILE}.txt: records have no official train/val/test partition")
            return None
        table = read_int_table(path, n_values=1, what="partition", names_hint=found.table.raw_names)
        v = table.values[:, 0]
        bad = np.flatnonzero((v < Partition.TRAIN) | (v > Partition.TEST))
        if bad.size:
            i = int(bad[0])
            raise DataError(
                f"{path}:{table.lineno(i)}: partition {v[i]} of {table.raw_names[i].decode(errors='replace')} "
                "is not 0 (train), 1 (val) or 2 (test)"
            )
        return found.column(table, "no partition")

    @staticmethod
    def _identities(path: Path | None, found: _Found) -> list[int] | None:
        if path is None:
            found.notes.append(f"no {IDENTITY_FILE}.txt: records have no identity (no identity-disjoint splits)")
            return None
        table = read_int_table(path, n_values=1, what="identity", names_hint=found.table.raw_names)
        bad = np.flatnonzero(table.values[:, 0] < 0)
        if bad.size:
            i = int(bad[0])
            name = table.raw_names[i].decode(errors="replace")
            raise DataError(f"{path}:{table.lineno(i)}: identity {table.values[i, 0]} of {name} is negative")
        return found.column(table, "identity unknown")

    @staticmethod
    def _landmarks(path: Path | None, found: _Found) -> list[tuple[int, ...]] | None:
        if path is None:
            return None
        table = read_int_table(
            path, n_values=N_LANDMARK_VALUES, what="landmark", counted=True, names_hint=found.table.raw_names
        )
        values, present = table.select(found.table, found.rows)
        if not present.all():
            found.notes.append(f"{(~present).sum():,} images have no row in {path.name}: landmarks are not used")
            return None
        return list(map(tuple, values.tolist()))  # ints: exact pixels, and small ints are not allocated
