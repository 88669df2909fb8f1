"""prepare_store: round trip, parallel == serial, skips, resume after a crash or SIGKILL, out-folder rules."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from PIL import Image

import facelab.data.build as build
import facelab.data.partial as partial
from facelab.data.build import BuildReport, content_hash, landmarks_to_store, prepare_store
from facelab.data.decode import crop_resize, decode_file, decode_min_side
from facelab.data.schema import CropSpec, LabelKind, LabelSpec, Record, Skip, SourceIndex
from facelab.data.sources.base import Source, SourceOptions
from facelab.data.store import Store
from facelab.errors import ConfigError, DataError, StoreError

SIZE = 16
N_GOOD = 20


class TinyOptions(SourceOptions):
    landmarks: bool = False


class TinySource(Source):
    """Every image file under root (sorted); labels from the position; ``*.txt`` files are index skips."""

    name: ClassVar[str] = "tiny-test"
    Options = TinyOptions
    default_crop = CropSpec(mode="center", scale=0.9)

    def index(self) -> SourceIndex:
        files = sorted(p for p in self.root.iterdir() if p.is_file())
        labels = [LabelSpec("odd", LabelKind.BINARY), LabelSpec("third", LabelKind.CATEGORICAL, ("a", "b", "c"))]
        records, skipped = [], []
        for i, p in enumerate(f for f in files if f.suffix != ".txt"):
            lm = tuple(float(v) for v in (10, 20, 30, 20, 20, 30, 12, 40, 28, 40)) if self.options.landmarks else None
            records.append(Record(key=p.name, ref=str(p), labels=(i % 2, i % 3), identity=i // 2,
                                  partition=i % 3, landmarks=lm))
        skipped = [Skip(p.name, "not an image (.txt)") for p in files if p.suffix == ".txt"]
        return SourceIndex(source=self.name, root=str(self.root), labels=labels, records=records, skipped=skipped,
                           notes=["tiny test source"], has_identities=True, has_partitions=True,
                           has_landmarks=self.options.landmarks)


class CountingSource(TinySource):
    """Counts loads in this process and remembers the min_side each load asked for."""

    loads: ClassVar[list[tuple[str, int | None]]] = []

    def load(self, record, *, min_side=None):
        CountingSource.loads.append((record.key, min_side))
        return super().load(record, min_side=min_side)


class Boom(Exception):
    pass


class CrashingSource(TinySource):
    """Raises Boom on the ``crash_at``-th load (in this process): a build dying half-way."""

    crash_at: ClassVar[int] = 9
    calls: ClassVar[int] = 0

    def load(self, record, *, min_side=None):
        CrashingSource.calls += 1
        if CrashingSource.calls >= self.crash_at:
            raise Boom("simulated crash")
        return super().load(record, min_side=min_side)


class SlowSource(TinySource):
    def load(self, record, *, min_side=None):
        time.sleep(0.05)
        return super().load(record, min_side=min_side)


class BadArraySource(TinySource):
    def load(self, record, *, min_side=None):
        return np.zeros((8, 8), dtype=np.float32)


def _write_images(root: Path, n: int = N_GOOD) -> None:
    """n images 40 wide x 50 high: JPEGs and PNGs with smooth random content."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        small = rng.integers(0, 256, size=(5, 4, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((40, 50), Image.BILINEAR)
        if i % 4 == 3:
            img.save(root / f"img{i:02d}.png")
        else:
            img.save(root / f"img{i:02d}.jpg", quality=90)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "data"
    _write_images(r)
    (r / "readme.txt").write_text("not an image")
    return r


@pytest.fixture(autouse=True)
def _reset_counters():
    CountingSource.loads = []
    CrashingSource.calls = 0


def _expected(path: Path, crop: CropSpec, size: int) -> np.ndarray:
    return crop_resize(decode_file(path, min_side=decode_min_side(crop, size)), crop, size)


def _prepare(source: Source, out: Path, **kw) -> BuildReport:
    kw.setdefault("size", SIZE)
    kw.setdefault("workers", 1)
    kw.setdefault("progress", False)
    kw.setdefault("chunk_size", 4)
    return prepare_store(source, out, **kw)


def test_round_trip_pixels_labels_manifest(root: Path, tmp_path: Path) -> None:
    src = TinySource(root)
    report = _prepare(src, tmp_path / "store")
    store = Store.open(tmp_path / "store")
    files = sorted(p for p in root.iterdir() if p.suffix != ".txt")
    assert report.status == "built" and report.count == len(store) == N_GOOD and report.decoded == N_GOOD
    assert store.images.shape == (N_GOOD, SIZE, SIZE, 3) and store.images.dtype == np.uint8
    for i, p in enumerate(files):
        np.testing.assert_array_equal(store.images[i], _expected(p, src.default_crop, SIZE))
    assert list(store.keys) == [p.name for p in files]
    assert store.labels.dtype == np.int32
    np.testing.assert_array_equal(store.labels, [[i % 2, i % 3] for i in range(N_GOOD)])
    np.testing.assert_array_equal(store.partitions, [i % 3 for i in range(N_GOOD)])
    np.testing.assert_array_equal(store.identities, [i // 2 for i in range(N_GOOD)])
    assert store.partitions.dtype == np.int8 and store.identities.dtype == np.int64 and store.landmarks is None
    m = store.manifest.to_dict()
    assert m["format_version"] == 1 and m["source"] == "tiny-test" and m["root"] == str(root.resolve())
    assert m["options"] == {"landmarks": False} and m["image_size"] == SIZE
    assert m["crop"] == {"mode": "center", "scale": 0.9, "offset_y": 0.0, "box": None}
    assert store.label_names == ["odd", "third"] and store.spec("third").classes == ("a", "b", "c")
    assert m["has_identities"] and m["has_partitions"] and not m["has_landmarks"]
    assert m["partitions"] == {"train": 7, "val": 7, "test": 6, "none": 0}
    assert m["skipped"] == [{"key": "readme.txt", "reason": "not an image (.txt)", "stage": "index"}]
    assert m["notes"] == ["tiny test source"] and m["facelab_version"] and m["created"]
    assert m["content_hash"] == content_hash(store.images, store.labels, store.keys) == report.content_hash
    assert sorted(os.listdir(tmp_path / "store")) == ["images.npy", "index.npz", "labels.npy", "manifest.json"]
    assert not (tmp_path / "store.partial").exists()
    json.dumps(report.to_dict())  # JSON-ready


def test_content_hash_stable_and_sensitive(root: Path, tmp_path: Path) -> None:
    a = _prepare(TinySource(root), tmp_path / "a")
    b = _prepare(TinySource(root), tmp_path / "b", chunk_size=7)
    c = _prepare(TinySource(root), tmp_path / "c", size=SIZE + 2)
    assert a.content_hash == b.content_hash != c.content_hash


def test_parallel_equals_serial(root: Path, tmp_path: Path) -> None:
    serial = _prepare(TinySource(root), tmp_path / "serial", workers=1)
    parallel = _prepare(TinySource(root), tmp_path / "parallel", workers=2, chunk_size=3)
    assert serial.content_hash == parallel.content_hash
    np.testing.assert_array_equal(Store.open(tmp_path / "serial").images, Store.open(tmp_path / "parallel").images)


def test_broken_images_are_skipped_and_reported(root: Path, tmp_path: Path) -> None:
    (root / "img05.jpg").write_bytes((root / "img05.jpg").read_bytes()[:200])  # truncated
    (root / "img10.jpg").write_bytes(b"")  # zero bytes
    report = _prepare(TinySource(root), tmp_path / "store", workers=2, chunk_size=3)
    store = Store.open(tmp_path / "store")
    decode_skips = {s["key"]: s["reason"] for s in store.manifest.skipped if s["stage"] == "decode"}
    assert set(decode_skips) == {"img05.jpg", "img10.jpg"} and "empty" in decode_skips["img10.jpg"]
    assert not any("img05" in r or "img10" in r for r in decode_skips.values())  # the key is not repeated in its reason
    assert len(store) == report.count == N_GOOD - 2 and len(report.skipped) == 3
    kept = [p for p in sorted(root.iterdir()) if p.suffix != ".txt" and p.name not in decode_skips]
    assert list(store.keys) == [p.name for p in kept]
    for i, p in enumerate(kept):  # compaction kept rows, labels and index aligned
        np.testing.assert_array_equal(store.images[i], _expected(p, TinySource.default_crop, SIZE))
    original_pos = [int(p.stem[3:]) for p in kept]
    np.testing.assert_array_equal(store.labels[:, 0], [i % 2 for i in original_pos])


def test_odd_formats_land_as_rgb(tmp_path: Path) -> None:
    root = tmp_path / "odd"
    root.mkdir()
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (50, 40), dtype=np.uint8), "L").save(root / "a_gray.jpg")
    Image.fromarray(rng.integers(0, 256, (50, 40, 4), dtype=np.uint8), "CMYK").save(root / "b_cmyk.jpg")
    Image.fromarray(rng.integers(0, 256, (50, 40, 3), dtype=np.uint8)).save(root / "c_png_named.jpg", format="PNG")
    Image.fromarray(rng.integers(0, 256, (50, 40, 4), dtype=np.uint8), "RGBA").save(root / "d_rgba.png")
    _prepare(TinySource(root), tmp_path / "store")
    store = Store.open(tmp_path / "store")
    assert len(store) == 4 and store.images.shape == (4, SIZE, SIZE, 3)
    gray = store.images[0].astype(int)
    assert np.abs(gray[..., 0] - gray[..., 1]).max() <= 2 and np.abs(gray[..., 1] - gray[..., 2]).max() <= 2
    for i, p in enumerate(sorted(root.iterdir())):
        np.testing.assert_array_equal(store.images[i], _expected(p, TinySource.default_crop, SIZE))
        assert store.images[i].std() > 0


def test_zero_records_explains(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    (root / "notes.txt").write_text("x")
    with pytest.raises(StoreError, match=r"found no images.*notes\.txt: not an image"):
        _prepare(TinySource(root), tmp_path / "store")
    assert not (tmp_path / "store").exists()


def test_all_images_broken(tmp_path: Path) -> None:
    root = tmp_path / "broken"
    root.mkdir()
    for i in range(3):
        (root / f"x{i}.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(StoreError, match="none of the 3 images"):
        _prepare(TinySource(root), tmp_path / "store")
    assert not (tmp_path / "store").exists() and not (tmp_path / "store.partial").exists()


def test_resume_after_crash_decodes_only_the_rest(root: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(partial, "CHECKPOINT_SECONDS", 0.0)
    out = tmp_path / "store"
    with pytest.raises(Boom):
        _prepare(CrashingSource(root), out)  # dies on the 9th load: chunks [0, 4) and [4, 8) are done
    with pytest.raises(StoreError, match="interrupted"):
        Store.open(out)  # no manifest: never loads as a store
    with open(out.with_name("store.partial") / build.PROGRESS_FILE, "a") as f:
        f.write('{"start": 8, "stop": 12, "fai')  # a line torn by a kill counts for nothing
    report = _prepare(CountingSource(root), out)
    assert report.status == "resumed" and report.decoded == N_GOOD - 8
    assert not out.with_name("store.partial").exists()
    assert [k for k, _ in CountingSource.loads] == [f"img{i:02d}.{'png' if i % 4 == 3 else 'jpg'}" for i in range(8, 20)]
    reference = _prepare(TinySource(root), tmp_path / "reference")
    assert report.content_hash == reference.content_hash


def test_resume_after_sigkill(root: Path, tmp_path: Path) -> None:
    out = tmp_path / "store"
    script = textwrap.dedent(f"""
        import importlib.util, sys
        spec = importlib.util.spec_from_file_location("build_test_module", {str(Path(__file__))!r})
        mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
        import facelab.data.build as b, facelab.data.partial as p
        p.CHECKPOINT_SECONDS = 0.0
        b.prepare_store(mod.SlowSource({str(root)!r}), {str(out)!r}, size={SIZE}, workers=1, chunk_size=2,
                        progress=False)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE)
    journal = out.with_name("store.partial") / build.PROGRESS_FILE
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        if journal.exists() and journal.read_text().count("\n") >= 2:
            break
        time.sleep(0.01)
    assert proc.poll() is None, proc.stderr.read().decode()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = sum(json.loads(line)["stop"] - json.loads(line)["start"] for line in journal.read_text().splitlines())
    assert 4 <= done < N_GOOD
    report = _prepare(CountingSource(root), out)
    assert report.status == "resumed" and report.decoded == len(CountingSource.loads) == N_GOOD - done
    assert report.content_hash == _prepare(TinySource(root), tmp_path / "reference").content_hash


def test_same_store_is_a_no_op(root: Path, tmp_path: Path) -> None:
    out = tmp_path / "store"
    first = _prepare(TinySource(root), out)
    mtime = (out / "manifest.json").stat().st_mtime_ns
    again = _prepare(CountingSource(root), out, workers=2, chunk_size=5)  # workers/chunks do not matter
    assert again.status == "already complete" and again.already_complete and again.decoded == 0
    assert CountingSource.loads == [] and (out / "manifest.json").stat().st_mtime_ns == mtime
    assert again.count == first.count and again.content_hash == first.content_hash


def test_different_store_refused_unless_overwrite(root: Path, tmp_path: Path) -> None:
    out = tmp_path / "store"
    _prepare(TinySource(root), out)
    with pytest.raises(StoreError, match=r"different store \(image_size: 16 there, 24 asked\).*--overwrite"):
        _prepare(TinySource(root), out, size=24)
    with pytest.raises(StoreError, match="crop"):
        _prepare(TinySource(root), out, crop=CropSpec(mode="none"))
    report = _prepare(TinySource(root), out, size=24, overwrite=True)
    assert report.status == "built" and Store.open(out).image_size == 24
    assert sorted(os.listdir(tmp_path)) == ["data", "store"]  # the old store was deleted


def test_folder_that_is_not_a_store_is_never_touched(root: Path, tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    for overwrite in (False, True):
        with pytest.raises(StoreError, match="not empty and holds no facelab store"):
            _prepare(TinySource(root), out, overwrite=overwrite)
    assert (out / "thesis.tex").read_text() == "precious"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _prepare(TinySource(root), empty).count == N_GOOD  # an empty folder is fine


def test_partial_with_other_parameters_starts_over(root: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(partial, "CHECKPOINT_SECONDS", 0.0)
    out = tmp_path / "store"
    with pytest.raises(Boom):
        _prepare(CrashingSource(root), out, size=24)
    report = _prepare(CountingSource(root), out)
    assert report.status == "built" and report.decoded == N_GOOD
    assert any("other parameters" in note and "image_size" in note for note in report.notes)
    assert report.content_hash == _prepare(TinySource(root), tmp_path / "reference").content_hash


def test_foreign_partial_folder_refused(root: Path, tmp_path: Path) -> None:
    partial = tmp_path / "store.partial"
    partial.mkdir()
    (partial / "data.csv").write_text("1,2")
    with pytest.raises(StoreError, match="not made by facelab"):
        _prepare(TinySource(root), tmp_path / "store")
    assert (partial / "data.csv").exists()


def test_concurrent_build_refused(root: Path, tmp_path: Path) -> None:
    fcntl = pytest.importorskip("fcntl")
    partial = tmp_path / "store.partial"
    partial.mkdir()
    fd = os.open(partial, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(StoreError, match="another"):
            _prepare(TinySource(root), tmp_path / "store")
    finally:
        os.close(fd)


def test_landmarks_follow_crop_and_scale(root: Path, tmp_path: Path) -> None:
    src = CountingSource(root, landmarks=True)
    _prepare(src, tmp_path / "store", size=20)
    store = Store.open(tmp_path / "store")
    assert store.manifest.has_landmarks and store.landmarks.shape == (N_GOOD, 10)
    assert all(min_side is None for _, min_side in CountingSource.loads)  # landmarks need full resolution
    # centre crop 0.9 of a 40x50 image: side 36, box (2, 7, 38, 43); 20 px store -> scale 20/36
    x0, y0 = (10 - 2 + 0.5) * 20 / 36 - 0.5, (20 - 7 + 0.5) * 20 / 36 - 0.5
    np.testing.assert_allclose(store.landmarks[:, :2], np.tile([x0, y0], (N_GOOD, 1)), rtol=1e-6)


def test_landmarks_to_store_identity_and_none_crop() -> None:
    pts = np.arange(10, dtype=np.float32)
    np.testing.assert_allclose(landmarks_to_store(pts, 32, 32, CropSpec(mode="none"), 32), pts)
    halved = landmarks_to_store(pts, 64, 32, CropSpec(mode="none"), 16)  # x / 2, y / 4 (pixel centres)
    np.testing.assert_allclose(halved[0::2], (pts[0::2] + 0.5) / 2 - 0.5)
    np.testing.assert_allclose(halved[1::2], (pts[1::2] + 0.5) / 4 - 0.5)


def test_bad_arguments_and_bad_sources(root: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="size"):
        _prepare(TinySource(root), tmp_path / "store", size=0)
    with pytest.raises(DataError, match=r"\(H, W, 3\) uint8"):
        _prepare(BadArraySource(root), tmp_path / "store")
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="is a file"):
        _prepare(TinySource(root), tmp_path / "file")


def test_progress_output_does_not_break_non_tty(root: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(partial, "CHECKPOINT_SECONDS", 0.0)
    with pytest.raises(Boom):
        _prepare(CrashingSource(root), tmp_path / "store")
    report = _prepare(TinySource(root), tmp_path / "store", progress=True, workers=2)
    assert report.status == "resumed"
    assert "resumed the interrupted build" in capsys.readouterr().err


@pytest.mark.parametrize("fail_in", ["_save", "_move_into_place"])  # after compaction / after the manifest
def test_kill_while_finishing_resumes_without_decoding(root: Path, tmp_path: Path, monkeypatch, fail_in) -> None:
    (root / "img05.jpg").write_bytes(b"")  # a decode skip, so compaction really copies rows
    reference = _prepare(TinySource(root), tmp_path / "reference")
    out = tmp_path / "store"

    def dies(*args, **kwargs):
        raise Boom(f"killed in {fail_in}")

    with monkeypatch.context() as m:
        m.setattr(build, fail_in, dies)
        with pytest.raises(Boom):
            _prepare(TinySource(root), out)
    report = _prepare(CountingSource(root), out)
    assert report.status == "resumed" and report.decoded == 0 and CountingSource.loads == []
    assert report.content_hash == reference.content_hash and report.count == N_GOOD - 1
    assert [s["key"] for s in report.skipped if s["stage"] == "decode"] == ["img05.jpg"]
    np.testing.assert_array_equal(Store.open(out).images, Store.open(tmp_path / "reference").images)


def test_journal_drops_a_torn_line_and_keeps_appending(tmp_path: Path) -> None:
    data = tmp_path / "decoded.npy"
    np.save(data, np.zeros(4, dtype=np.uint8))
    journal = partial.Journal(tmp_path, [data])
    journal.add(0, 4, [(2, "empty file")])
    journal.flush()
    with open(journal.path, "a") as f:
        f.write('{"start": 4, "sto')
    done, failed = journal.read(10)
    assert done.tolist() == [True] * 4 + [False] * 6 and failed == {2: "empty file"}
    journal.add(4, 6, [])
    journal.flush()
    done, _ = partial.Journal(tmp_path, [data]).read(10)
    assert done.sum() == 6
