"""Build a store: decode every record of a source exactly once, in parallel, resumably and atomically.

Work happens in ``<out>.partial/`` (build.json: parameters; decoded.npy / landmarks.npy: all records,
written in place by the workers; progress.jsonl: finished chunks, appended only after their pixels were
fsynced), renamed to ``<out>`` once manifest.json is written. See docs/store.md.

With an :class:`~facelab.faces.AlignSpec` (``prepare --align``), every image's faces are detected, the best
one is warped into CelebA's aligned frame and that frame is cropped and resized as usual; an image without a
face is a reported skip. See docs/faces.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing as mp
import os
import shutil
import sys
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import cv2
import numpy as np
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TaskID, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.text import Text

import facelab
from facelab.data.decode import crop_box, crop_resize, decode_min_side
from facelab.data.schema import NO_PARTITION, CropSpec, Partition, Record, Skip, SourceIndex
from facelab.data.sources.base import text_key
from facelab.data.store import FORMAT_VERSION, MANIFEST, facelab_manifest, not_store_files
from facelab.errors import ConfigError, DataError, ImageDecodeError, StoreError
from facelab.faces import AlignedFace, AlignSpec, FacePipeline
from facelab.data.partial import (
    BUILD_FILE,
    DECODED_FILE,
    LANDMARKS_FILE,
    PROGRESS_FILE,
    Journal,
    allocate,
    arrays_ok,
    clear_folder,
    differences,
    fsync_path,
    locked,
    made_by_a_build,
    open_partial,
    pending_spans,
    reserve,
)
from facelab.utils.console import stderr_console
from facelab.utils.io import atomic_write_json, foreign_entries, naming
from facelab.utils.progress import LineProgress, progress_bar

if TYPE_CHECKING:
    from facelab.data.sources.base import Source

PARTIAL_SUFFIX = ".partial"
KEYS_HASH = "keys_sha256"  # build.json and manifest field: sha256 of the record keys (see keys_sha256)
_BLOCK_BYTES = 16 << 20  # image bytes per block when compacting or hashing
BuildStatus = Literal["built", "resumed", "already complete"]
NO_FACE = "no face found"  # how the reason of a record skipped for having no face starts (stage "align")


# ---- report --------------------------------------------------------------------------------------
@dataclass
class BuildReport:
    """What ``prepare_store`` did. ``status`` is "built", "resumed" or "already complete"."""

    path: Path
    status: BuildStatus
    count: int  # images in the store
    indexed: int  # records the source listed
    decoded: int  # records decoded by this call (0 when already complete)
    skipped: list[dict[str, str]] = field(default_factory=list)  # {key, reason, stage: index|decode|align}
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    content_hash: str = ""
    align: dict[str, Any] | None = None  # the AlignSpec the faces were aligned with (None: not aligned)

    @property
    def aligned(self) -> int:
        """Images whose face was re-detected and aligned into the store (0 when the build does not align)."""
        return self.count if self.align is not None else 0

    @property
    def no_face(self) -> int:
        """Records skipped because no face was found in them."""
        return sum(1 for s in self.skipped if s.get("stage") == "align")

    @property
    def resumed(self) -> bool:
        return self.status == "resumed"

    @property
    def already_complete(self) -> bool:
        return self.status == "already complete"

    @property
    def images_per_s(self) -> float:
        """Records decoded per second of this call (0 when nothing was decoded)."""
        return self.decoded / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(path=str(self.path), seconds=round(self.seconds, 3), images_per_s=round(self.images_per_s, 1),
                 skipped_count=len(self.skipped), resumed=self.resumed, already_complete=self.already_complete,
                 aligned=self.aligned, no_face=self.no_face)
        return d


# ---- build key -----------------------------------------------------------------------------------
def build_key(source: Source, *, size: int, crop: CropSpec, align: AlignSpec | None = None) -> dict[str, Any]:
    """The parameters that make two builds the same store (as stored in the manifest, JSON-normalised).

    ``align`` is part of it: an aligned and an unaligned build of one dataset are different stores (stores
    built before alignment existed have no ``align`` field, which reads as None: not aligned).
    """
    key = {
        "source": source.name,
        "root": str(Path(source.root).resolve()) if source.root is not None else None,
        "options": source.options.model_dump(mode="json"),
        "image_size": int(size),
        "crop": crop.model_dump(mode="json"),
        "align": align.model_dump(mode="json") if align is not None else None,
    }
    return json.loads(json.dumps(key))


def _check_out(out: Path, key: dict[str, Any], *, overwrite: bool) -> dict[str, Any] | None:
    """The manifest of the store already at ``out`` (None when there is none); StoreError when in the way.

    ``overwrite`` replaces only a store facelab made (:func:`~facelab.data.store.facelab_manifest`) that holds
    nothing but the store's own files; anything else at ``out`` is refused, naming the files that would be
    lost. Called before indexing (fail fast), again under the lock of ``<out>.partial`` and right before the
    final rename: another build into the same ``out`` may have finished in between.
    """
    if not out.exists():
        return None
    if not out.is_dir():
        raise StoreError(f"{out} exists and is a file, not a store folder; choose another --out")
    if not (out / MANIFEST).exists():
        if any(out.iterdir()):
            raise StoreError(f"{out} exists, is not empty and holds no facelab store ({MANIFEST} missing): it holds "
                             f"{', '.join(foreign_entries(out, ()))}; facelab never deletes such folders, even with "
                             "--overwrite: choose another --out or empty it yourself")
        return None
    manifest = facelab_manifest(out)
    if manifest is None:
        beside = ", ".join(not_store_files(out)) or "nothing"
        raise StoreError(f"{out} holds a {MANIFEST} that facelab did not write (no store format_version, "
                         f"facelab_version and content_hash in it), beside {beside}; facelab never deletes such "
                         "folders, even with --overwrite: choose another --out or empty it yourself")
    diffs = differences({**key, "format_version": FORMAT_VERSION}, manifest)
    if diffs and not overwrite:
        raise StoreError(f"{out} already holds a different store ({'; '.join(diffs)}); "
                         "pass --overwrite (overwrite=True) to replace it or choose another --out")
    foreign = not_store_files(out) if overwrite else []
    if foreign:
        raise StoreError(f"{out} holds a facelab store and files that are not part of it: {', '.join(foreign)}; "
                         "--overwrite replaces only what facelab made: move them out of the store first, or "
                         "choose another --out")
    return manifest


# ---- landmarks -----------------------------------------------------------------------------------
def landmarks_to_store(points: tuple[float, ...] | np.ndarray, height: int, width: int, crop: CropSpec,
                       size: int) -> np.ndarray:
    """Map 5 (x, y) source-pixel landmarks of an ``height`` x ``width`` image into store pixels.

    Uses the pixel-centre convention of the resize: ``x' = (x - left + 0.5) * size / box_width - 0.5``.

    Returns:
        (10,) float32, x0 y0 x1 y1 ... (points outside the crop fall outside [0, size)).
    """
    left, top, right, bottom = crop_box(height, width, crop)
    xy = np.asarray(points, dtype=np.float64).reshape(-1, 2)  # (5, 2)
    xy[:, 0] = (xy[:, 0] - left + 0.5) * size / (right - left) - 0.5
    xy[:, 1] = (xy[:, 1] - top + 0.5) * size / (bottom - top) - 0.5
    return xy.reshape(-1).astype(np.float32)


# ---- workers -------------------------------------------------------------------------------------
_STATE: dict[str, Any] = {}  # per process: source, records, crop, size, min_side, open memmaps, face pipeline


def _set_state(source: Source, records: list[Record], crop: CropSpec, size: int, partial: str,
               with_landmarks: bool, align: AlignSpec | None) -> None:
    pipeline = FacePipeline(align) if align is not None else None  # its model loads on the first image
    _STATE.update(source=source, records=records, crop=crop, size=size, pipeline=pipeline,
                  min_side=None if align is not None else decode_min_side(crop, size),
                  images=np.load(Path(partial) / DECODED_FILE, mmap_mode="r+"),
                  landmarks=np.load(Path(partial) / LANDMARKS_FILE, mmap_mode="r+") if with_landmarks else None)


def _init_worker(*args: Any) -> None:
    """Pool initializer: one thread per process (parallelism comes from processes), then the state."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        os.environ[var] = "1"
    cv2.setNumThreads(1)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    _set_state(*args)


def _decode_range(span: tuple[int, int]) -> tuple[int, int, list[tuple[int, str]]]:
    """Decode records ``start:stop`` straight into the memmap; return the positions that failed."""
    start, stop = span
    st = _STATE
    crop, size, images, landmarks = st["crop"], st["size"], st["images"], st["landmarks"]
    failed: list[tuple[int, str]] = []
    for i in range(start, stop):
        rec: Record = st["records"][i]
        # Landmarks live in full-resolution pixels, so those records are decoded without downscaling.
        min_side = None if rec.landmarks is not None else st["min_side"]
        try:
            img = st["source"].load(rec, min_side=min_side)  # (H, W, 3) uint8
            _check_loaded(img, rec, st["source"])
            points = rec.landmarks
            if st["pipeline"] is not None:
                found = _aligned(st["pipeline"], img)
                img, points = found.image, tuple(found.landmarks.reshape(-1))  # (218, 178, 3): CelebA's frame
            images[i] = crop_resize(img, crop, size)  # (S, S, 3)
        except ImageDecodeError as e:
            failed.append((i, e.reason))  # the report lists the key beside it
            continue
        if landmarks is not None:
            landmarks[i] = (np.nan if points is None
                            else landmarks_to_store(points, img.shape[0], img.shape[1], crop, size))
    return start, stop, failed


def _aligned(pipeline: FacePipeline, img: np.ndarray) -> AlignedFace:
    """The best-scored face of ``img`` warped into the pipeline's frame, with its detected landmarks; an
    ImageDecodeError when there is none (its reason, "no face found (mtcnn, min score 0.9)", is what the
    report lists)."""
    faces = pipeline.detect(img)
    for face in faces:  # best first; a face whose landmarks coincide cannot be aligned: try the next
        try:
            return pipeline.align(img, face)
        except DataError:
            continue
    raise ImageDecodeError(pipeline.no_face_reason)


def _check_loaded(img: Any, rec: Record, source: Source) -> None:
    if not (isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3):
        got = f"{type(img).__name__} {getattr(img, 'dtype', '')} {getattr(img, 'shape', '')}"
        raise DataError(f"source {source.name!r} returned {got} for {rec.key!r}; Source.load must return "
                        "an (H, W, 3) uint8 RGB array (use facelab.data.decode.decode_bytes)")


@contextlib.contextmanager
def _chunk_runner(spans: list[tuple[int, int]], state_args: tuple, workers: int) -> Iterator[Iterator[tuple]]:
    """Results of each chunk as it finishes, in-process (workers <= 1) or over a process pool.

    The pool is started on entry, so callers can fork before starting threads (the progress bar). A worker
    that dies (killed, out of memory, a crash in a decoder) ends the iteration with a StoreError at once: the
    pool is then broken, and the chunks it was decoding would never be reported.
    """
    if workers <= 1 or len(spans) <= 1:
        _set_state(*state_args)
        try:
            yield map(_decode_range, spans)
        finally:
            _STATE.clear()
        return
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    pool = ProcessPoolExecutor(min(workers, len(spans)), mp_context=ctx, initializer=_init_worker,
                               initargs=state_args)
    try:
        futures = [pool.submit(_decode_range, span) for span in spans]
        yield _finished(futures, Path(state_args[4]))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _finished(futures: list[Future], partial: Path) -> Iterator[tuple]:
    try:
        for future in as_completed(futures):
            yield future.result()
    except BrokenProcessPool:
        raise StoreError(f"a decoding process ended abruptly (killed, out of memory, or a crash in an image "
                         f"decoder); the chunks finished so far are kept in {partial}: re-run the command to "
                         "resume (with --workers 1 the cause is shown)") from None


# ---- decoding ------------------------------------------------------------------------------------
class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.speed or 0:,.0f} img/s")


def _progress(enabled: bool, total: int, done: int) -> tuple[Progress | LineProgress, TaskID]:
    bar = progress_bar(TextColumn("decoding"), BarColumn(), MofNCompleteColumn(), _RateColumn(), TimeElapsedColumn(),
                       TextColumn("eta"), TimeRemainingColumn(), enabled=enabled, transient=False)
    return bar, bar.add_task("decoding", total=total, completed=done)


def _decode(source: Source, index: SourceIndex, partial: Path, journal: Journal, *, size: int, crop: CropSpec,
            align: AlignSpec | None, workers: int, chunk_size: int,
            progress: bool) -> tuple[int, dict[int, str]]:
    """Decode every record not yet done; return (records decoded now, {position: reason} of all failures)."""
    n = len(index.records)
    done, failed = journal.read(n)
    spans = pending_spans(done, chunk_size)
    state_args = (source, index.records, crop, size, str(partial), index.has_landmarks, align)
    decoded = 0
    if not spans:
        return decoded, failed
    bar, task = _progress(progress, n, int(done.sum()))
    try:
        with _chunk_runner(spans, state_args, workers) as results, bar:  # fork before the bar's thread
            for start, stop, chunk_failed in results:
                journal.add(start, stop, chunk_failed)
                failed.update(chunk_failed)
                decoded += stop - start
                bar.advance(task, stop - start)
    except BaseException:
        journal.flush()  # keep what finished, whatever stopped the loop (error, Ctrl-C)
        raise
    # On success the last chunks are not journaled: _finish fsyncs the pixels while it hashes them, and a
    # kill before the manifest costs at most partial.CHECKPOINT_SECONDS of decoding.
    return decoded, failed


# ---- finishing -----------------------------------------------------------------------------------
def _blocks(n_rows: int, row_bytes: int) -> Iterator[slice]:
    step = max(1, _BLOCK_BYTES // max(1, row_bytes))
    return (slice(j, j + step) for j in range(0, n_rows, step))


def content_hash(images: np.ndarray, labels: np.ndarray, keys: list[str] | np.ndarray, *,
                 rows: np.ndarray | None = None) -> str:
    """sha256 over the image bytes (row-major), the int32 little-endian labels, then the keys joined by "\\n".

    ``rows`` hashes ``images[rows]`` (in that order) without materialising it.
    """
    h = hashlib.sha256()
    n = len(images) if rows is None else len(rows)
    for block in _blocks(n, int(np.prod(images.shape[1:]))):
        h.update(np.ascontiguousarray(images[block] if rows is None else images[rows[block]]).data)
    h.update(np.ascontiguousarray(labels, dtype="<i4").data)
    h.update("\n".join(str(k) for k in keys).encode("utf-8"))
    return h.hexdigest()


def _compact(partial: Path, kept: np.ndarray, n: int) -> None:
    """decoded.npy (all records) -> images.npy (kept rows only); a no-op when an earlier run did it."""
    src_path, dst_path = partial / DECODED_FILE, partial / "images.npy"
    if not src_path.exists():
        return
    if kept.size == n:
        os.replace(src_path, dst_path)
        return
    src = np.load(src_path, mmap_mode="r")
    tmp = partial / "images.tmp.npy"
    dst = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(kept.size, *src.shape[1:]))
    reserve([tmp])
    for block in _blocks(kept.size, int(np.prod(src.shape[1:]))):
        dst[block] = src[kept[block]]
    dst.flush()
    del dst, src
    fsync_path(tmp)
    os.replace(tmp, dst_path)
    src_path.unlink()


def _save(path: Path, **arrays: np.ndarray) -> None:
    """np.save (one array) or np.savez_compressed (several) to ``path``, fsynced (an OSError names ``path``)."""
    try:
        with open(path, "wb") as f:
            if len(arrays) == 1:
                np.save(f, next(iter(arrays.values())))
            else:
                np.savez_compressed(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise naming(e, path) from None


def _columns(partial: Path, index: SourceIndex, kept: np.ndarray) -> dict[str, np.ndarray]:
    """labels (K, L) int32 and the index.npz columns of the kept records."""
    recs = [index.records[i] for i in kept]
    cols = {"labels": np.array([r.labels for r in recs], dtype="<i4").reshape(len(recs), len(index.labels)),
            "key": np.array([r.key for r in recs], dtype=str),
            "identity": np.array([r.identity for r in recs], dtype=np.int64),
            "partition": np.array([r.partition for r in recs], dtype=np.int8)}
    if index.has_landmarks:
        cols["landmarks"] = np.asarray(np.load(partial / LANDMARKS_FILE, mmap_mode="r")[kept], dtype=np.float32)
    return cols


def _finish(partial: Path, index: SourceIndex, failed: dict[int, str], journal: Journal, key: dict[str, Any],
            t0: float, keys_digest: str) -> dict[str, Any]:
    """Hash while fsyncing the pixels, compact, write labels and index, then manifest.json last."""
    n = len(index.records)
    kept = np.setdiff1d(np.arange(n), np.fromiter(failed, dtype=np.int64, count=len(failed)))
    cols = _columns(partial, index, kept)
    uncompacted = (partial / DECODED_FILE).exists()
    pixels = partial / (DECODED_FILE if uncompacted else "images.npy")
    with ThreadPoolExecutor(1) as pool:  # the disk flush overlaps the hash (read from the page cache)
        synced = pool.submit(fsync_path, pixels)
        rows = kept if uncompacted and kept.size < n else None
        digest = content_hash(np.load(pixels, mmap_mode="r"), cols["labels"], cols["key"], rows=rows)
        synced.result()
    journal.flush()  # every chunk is on disk now: journal the last ones before compaction renames the array
    _compact(partial, kept, n)
    _save(partial / "labels.npy", labels=cols.pop("labels"))
    _save(partial / "index.npz", **cols)
    skipped = [{"key": s.key, "reason": s.reason, "stage": "index"} for s in index.skipped]
    skipped += [{"key": index.records[i].key, "reason": failed[i],
                 "stage": "align" if failed[i].startswith(NO_FACE) else "decode"} for i in sorted(failed)]
    notes = list(index.notes)
    if key.get("align") is not None:
        spec = AlignSpec.from_dict(key["align"], where="align spec")
        no_face = sum(1 for s in skipped if s["stage"] == "align")
        notes.append(f"faces re-detected and aligned into the {spec.frame[0]}x{spec.frame[1]} frame "
                     f"({spec.describe()}): {kept.size:,} stored, {no_face:,} images without a face skipped")
    manifest = {
        "format_version": FORMAT_VERSION, **key, "facelab_version": facelab.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "count": int(kept.size), "indexed": n, "labels": [s.to_dict() for s in index.labels],
        "has_identities": index.has_identities, "has_partitions": index.has_partitions,
        "has_landmarks": index.has_landmarks, "partitions": {
            **{p.name.lower(): int((cols["partition"] == p).sum()) for p in Partition},
            "none": int((cols["partition"] == NO_PARTITION).sum())},
        "skipped": skipped, "notes": notes, "content_hash": digest, KEYS_HASH: keys_digest,
        "build_seconds": round(time.perf_counter() - t0, 3),
    }
    atomic_write_json(partial / MANIFEST, manifest)
    return manifest


def _move_into_place(partial: Path, out: Path, key: dict[str, Any], *, overwrite: bool) -> None:
    """Drop the working files, fsync, and rename ``partial`` to ``out`` (replacing an empty folder, or an old
    store when ``overwrite``).

    ``out`` is checked once more right before the rename: a store that is not the one built here is only
    ever replaced with ``overwrite``, whoever put it there; the finished build then stays in ``partial``.
    """
    for name in (PROGRESS_FILE, LANDMARKS_FILE, DECODED_FILE, "images.tmp.npy"):
        (partial / name).unlink(missing_ok=True)  # build.json goes last: it marks the folder as ours
    fsync_path(partial, directory=True)
    old = None
    if out.exists():
        try:
            there = _check_out(out, key, overwrite=overwrite)
        except StoreError as e:
            raise StoreError(f"{e} (it appeared while this build ran; the finished build is kept in "
                             f"{partial})") from None
        if there is not None and not overwrite:
            raise StoreError(f"{out} was filled with the same store by another process while this build ran; "
                             f"this build's copy is kept in {partial}: delete it, or re-run with --overwrite")
        if there is not None:  # overwrite was asked
            old = out.with_name(f"{out.name}.old-{os.getpid()}")
            os.replace(out, old)
        else:
            out.rmdir()  # empty (checked by _check_out just now)
    os.replace(partial, out)
    fsync_path(out.parent, directory=True)
    (out / BUILD_FILE).unlink(missing_ok=True)
    if old is not None:
        shutil.rmtree(old)


# ---- entry point ---------------------------------------------------------------------------------
def _validate_index(source: Source, index: SourceIndex) -> None:
    where = f"{source.name} ({source.root})" if source.root is not None else source.name
    if not index.records:
        reasons = [f"{s.key}: {s.reason}" for s in index.skipped[:5]]
        detail = f"; {len(index.skipped)} entries were skipped, e.g. " + " | ".join(reasons) if reasons else ""
        raise StoreError(f"source {where} found no images to store{detail}; check that ROOT is the dataset "
                         "folder as downloaded and the source options")
    n_labels, seen = len(index.labels), set()
    for r in index.records:
        if r.key in seen:
            escaped = ("; a file name that is not UTF-8 gets its other bytes written as backslash escapes, which "
                       "can equal another file's name: rename one of them") if "\\" in r.key else ""
            raise DataError(f"source {where}: record key {r.key!r} appears twice; keys must be unique{escaped}")
        seen.add(r.key)
        if len(r.labels) != n_labels:
            raise DataError(f"source {where}: record {r.key!r} has {len(r.labels)} labels, expected {n_labels}")
        if r.landmarks is not None and len(r.landmarks) != 10:
            raise DataError(f"source {where}: record {r.key!r} has {len(r.landmarks)} landmark values, expected 10")


def _report(out: Path, manifest: dict[str, Any], status: BuildStatus, decoded: int, t0: float,
            notes: list[str]) -> BuildReport:
    return BuildReport(path=out, status=status, count=int(manifest["count"]), indexed=int(manifest.get("indexed", 0)),
                       decoded=decoded, skipped=list(manifest.get("skipped", [])), seconds=time.perf_counter() - t0,
                       notes=notes + list(manifest.get("notes", [])), content_hash=str(manifest["content_hash"]),
                       align=manifest.get("align"))


def prepare_store(source: Source, out: str | Path, *, size: int = 64, crop: CropSpec | None = None,
                  align: AlignSpec | None = None, workers: int | None = None, overwrite: bool = False,
                  progress: bool = True, chunk_size: int = 256) -> BuildReport:
    """Decode every record of ``source`` once into a store at ``out`` (parallel, resumable, atomic).

    Args:
        source: the dataset to store; indexed once, then loaded record by record in worker processes.
        out: store folder to create. Work happens in ``<out>.partial``, renamed to ``out`` at the end.
        size: side of the square store images in pixels.
        crop: crop policy; default ``type(source).default_crop``, or when aligning the ``celeba`` source's
            default crop (the aligned images are in CelebA's frame).
        align: detect every image's faces and store the best-scored one aligned into CelebA's frame
            (:class:`~facelab.faces.AlignSpec`); images without a face are skipped and reported. The store's
            landmarks column then holds each face's detected landmarks carried into store pixels (near the
            template: how far they are from it says how the head is turned).
        workers: decoding processes (default ``os.cpu_count()``; 1 decodes in this process).
        overwrite: replace a different store already at ``out`` (never a folder that is not a store).
        progress: show a progress bar with ETA on stderr (when it is a terminal) and print notes.
        chunk_size: records per task; also the granularity of resuming.

    Returns:
        A BuildReport; ``status`` is "already complete" (nothing decoded: the store at ``out`` has this build
        key and the source still lists the same records), "built" or "resumed".

    Raises:
        StoreError: ``out`` holds another store or unrelated files (checked again under the lock and before
            the final rename, so a concurrent build's store is never replaced without ``overwrite``), the
            dataset changed since the store at ``out`` was built, nothing to store, or nothing decodable.
    """
    t0 = time.perf_counter()
    if size < 1 or chunk_size < 1 or (workers is not None and workers < 1):
        raise ConfigError(f"size ({size}), chunk_size ({chunk_size}) and workers ({workers}) must be >= 1")
    crop = crop if crop is not None else default_crop(source, align=align is not None)
    out = Path(out).expanduser()
    key = build_key(source, size=size, crop=crop, align=align)
    existing = _check_out(out, key, overwrite=overwrite)
    index = _text_keys(source.index())
    if align is not None:
        index.has_landmarks = True  # each face's detected landmarks, carried into the aligned frame
    if existing is not None and not overwrite:
        return _already_complete(out, existing, index, t0)
    _validate_index(source, index)
    partial = out.with_name(out.name + PARTIAL_SUFFIX)
    if partial.exists() and not partial.is_dir():
        raise StoreError(f"{partial} is a file in the way of the build; move it away")
    with locked(partial):
        existing = _recheck_out(out, partial, key, overwrite=overwrite)
        if existing is not None and not overwrite:
            return _already_complete(out, existing, index, t0)
        try:
            status, manifest, decoded, notes = _build(source, index, partial, key, size=size, crop=crop,
                                                      align=align, workers=workers or os.cpu_count() or 1,
                                                      progress=progress, chunk_size=chunk_size, t0=t0)
        except BaseException:
            _discard_if_nothing_done(partial)
            raise
        _move_into_place(partial, out, key, overwrite=overwrite)
    return _report(out, manifest, status, decoded, t0, notes)


def default_crop(source: Source, *, align: bool) -> CropSpec:
    """The crop a build uses when none is given: the source's own, or when aligning the ``celeba`` source's
    (aligned images are in CelebA's frame, whatever the dataset)."""
    from facelab.data.sources.base import SOURCES
    import facelab.data.sources  # noqa: F401  (registers the built-in sources)

    return SOURCES.get("celeba").default_crop if align else type(source).default_crop


def _recheck_out(out: Path, partial: Path, key: dict[str, Any], *, overwrite: bool) -> dict[str, Any] | None:
    """:func:`_check_out` again, under the lock: another build into ``out`` may have finished since the first
    check. When that ends this build, the ``partial`` folder it just locked is removed if still empty."""
    try:
        existing = _check_out(out, key, overwrite=overwrite)
    except StoreError:
        _remove_if_empty(partial)
        raise
    if existing is not None and not overwrite:
        _remove_if_empty(partial)
    return existing


def _discard_if_nothing_done(partial: Path) -> None:
    """Remove ``partial`` after a failed build when it holds nothing worth resuming (no chunk journaled, no
    compacted images) and nothing facelab did not make: a full disk or a kill at the start leaves no folder."""
    if not made_by_a_build(partial):
        return
    journal = partial / PROGRESS_FILE
    if (journal.exists() and journal.stat().st_size > 0) or (partial / "images.npy").exists():
        return
    clear_folder(partial)
    _remove_if_empty(partial)


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not empty: an interrupted build of other settings, kept for later
        folder.rmdir()


def keys_sha256(keys: Iterable[str]) -> str:
    """sha256 of the record keys joined by "\\n" (UTF-8): what the store was built from, in order."""
    return hashlib.sha256("\n".join(keys).encode("utf-8")).hexdigest()


def _text_keys(index: SourceIndex) -> SourceIndex:
    """``index`` with every record key and skip valid UTF-8 text (:func:`~facelab.data.sources.base.text_key`;
    the built-in sources make them so, this covers any other), so hashes, JSON and index.npz can hold them."""
    try:
        "\n".join(r.key for r in index.records).encode("utf-8")
        "\n".join(f"{s.key}\n{s.reason}" for s in index.skipped).encode("utf-8")
        return index
    except UnicodeEncodeError:
        for r in index.records:
            r.key = text_key(r.key)
        index.skipped = [Skip(text_key(s.key), text_key(s.reason)) for s in index.skipped]
        return index


def _already_complete(out: Path, manifest: dict[str, Any], index: SourceIndex, t0: float) -> BuildReport:
    """The report of a store that is already built, after checking that the dataset still lists the same
    records (StoreError when files were added, removed or renamed since)."""
    recorded = manifest.get(KEYS_HASH)
    if recorded is None:
        note = (f"{out} was built by an older facelab that did not record the dataset's file list "
                f"({KEYS_HASH}), so it cannot tell whether files were added or removed since; --overwrite "
                "rebuilds it")
        return _report(out, manifest, "already complete", 0, t0, [note])
    if recorded != keys_sha256(r.key for r in index.records):
        then, now = int(manifest.get("indexed", manifest["count"])), len(index.records)
        counts = f"{then:,} records then, {now:,} now" if then != now else f"{now:,} records, not the same ones"
        raise StoreError(f"the dataset changed since the store at {out} was built ({counts}); pass --overwrite "
                         "(overwrite=True) to rebuild it, or --out another folder to keep both")
    return _report(out, manifest, "already complete", 0, t0, [])


def _build(source: Source, index: SourceIndex, partial: Path, key: dict[str, Any], *, size: int, crop: CropSpec,
           align: AlignSpec | None, workers: int, progress: bool, chunk_size: int,
           t0: float) -> tuple[BuildStatus, dict[str, Any], int, list[str]]:
    """Fill the locked ``partial`` up to its manifest; return (status, manifest, records decoded, notes)."""
    n, notes = len(index.records), []
    params = {**key, "format_version": FORMAT_VERSION, "indexed": n, "has_landmarks": index.has_landmarks,
              KEYS_HASH: keys_sha256(r.key for r in index.records)}
    state = open_partial(partial, params, notes)
    if state == "finished":  # killed between the manifest and the rename
        return "resumed", json.loads((partial / MANIFEST).read_text()), 0, notes
    if not (partial / "images.npy").exists() and not arrays_ok(partial, n, size, index.has_landmarks):
        state = "fresh"  # killed before the arrays were allocated (or they are damaged)
        (partial / PROGRESS_FILE).unlink(missing_ok=True)
        allocate(partial, n, size, index.has_landmarks)
    data_files = [partial / DECODED_FILE] + ([partial / LANDMARKS_FILE] if index.has_landmarks else [])
    reserve([f for f in data_files if f.exists()])  # a full disk is an error now, not a killed worker later
    if state == "resume":
        notes.append(f"resumed the interrupted build in {partial}")
    for note in notes if progress else []:
        stderr_console().print(f"[yellow]note[/]: {note}")
    journal = Journal(partial, data_files)
    decoded, failed = _decode(source, index, partial, journal, size=size, crop=crop, align=align, workers=workers,
                              chunk_size=chunk_size, progress=progress)
    if len(failed) == n:
        _give_up(partial, index, failed)
    manifest = _finish(partial, index, failed, journal, key, t0, params[KEYS_HASH])
    return ("built" if state == "fresh" else "resumed"), manifest, decoded, notes


def _give_up(partial: Path, index: SourceIndex, failed: dict[int, str]) -> None:
    examples = " | ".join(f"{index.records[i].key}: {r}" for i, r in sorted(failed.items())[:5])
    clear_folder(partial)
    partial.rmdir()
    if all(r.startswith(NO_FACE) for r in failed.values()):
        raise StoreError(f"no face was found in any of the {len(failed)} images of source {index.source!r} "
                         f"(e.g. {examples}); check that they show faces, or align with a lower min score "
                         "or another --detector")
    raise StoreError(f"none of the {len(failed)} images of source {index.source!r} could be decoded "
                     f"(e.g. {examples}); check the files (or the source's options) and re-run")
