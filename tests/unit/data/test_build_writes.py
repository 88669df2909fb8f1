"""prepare_store and write_store_arrays replace only what facelab made, and a full disk or a dying worker is one
clear error: no hang, no temporary file, nothing a later run takes as a finished store."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

import facelab.data.build as build
import facelab.data.partial as partial_mod
from facelab.data.build import prepare_store
from facelab.data.schema import LabelKind, LabelSpec, Partition
from facelab.data.store import Store
from facelab.data.write import write_store_arrays
from facelab.errors import FacelabError, StoreError
from facelab.utils.io import os_error_message
from tests.fixtures.full_disk import full_tmpfs, simulate_full_disk
from tests.unit.data.test_build import N_GOOD, TinySource, _write_images


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "data"
    _write_images(r)
    return r


def _prepare(source, out: Path, **kw):
    kw.setdefault("size", 16)
    kw.setdefault("workers", 1)
    kw.setdefault("progress", False)
    kw.setdefault("chunk_size", 4)
    return prepare_store(source, out, **kw)


def _hashes(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ---- only what facelab made ----------------------------------------------------------------------
def test_overwrite_never_deletes_a_folder_that_only_looks_like_a_store(root: Path, tmp_path: Path) -> None:
    out = tmp_path / "app"
    (out / "src").mkdir(parents=True)
    (out / "manifest.json").write_text(json.dumps({"name": "my web app"}))
    (out / "src" / "main.py").write_text("print('hello')\n")
    (out / "thesis.tex").write_text("\\documentclass{article}\n")
    before = _hashes(out)
    for overwrite in (False, True):
        with pytest.raises(StoreError, match=r"facelab did not write.*src/, thesis\.tex.*even with --overwrite"):
            _prepare(TinySource(root), out, overwrite=overwrite)
    assert _hashes(out) == before
    assert sorted(os.listdir(tmp_path)) == ["app", "data"]  # no .partial left beside it


def test_overwrite_keeps_a_persons_files_inside_a_store(root: Path, tmp_path: Path) -> None:
    out = tmp_path / "store"
    _prepare(TinySource(root), out)
    (out / "stats").mkdir()
    (out / "stats" / "prevalence.png").write_bytes(b"facelab's plot")
    (out / "notes.txt").write_text("my notes on this dataset")
    (out / "stats" / "my_chart.svg").write_text("<svg/>")
    before = _hashes(out)
    with pytest.raises(StoreError, match=r"files that are not part of it: notes\.txt, stats/my_chart\.svg"):
        _prepare(TinySource(root), out, size=24, overwrite=True)
    assert _hashes(out) == before
    (out / "notes.txt").unlink()
    (out / "stats" / "my_chart.svg").unlink()
    report = _prepare(TinySource(root), out, size=24, overwrite=True)  # the store's own files only: replaced
    assert report.status == "built" and Store.open(out).image_size == 24 and not (out / "stats").exists()


def test_a_manifest_without_the_facelab_marker_is_not_a_store(root: Path, tmp_path: Path) -> None:
    out = tmp_path / "store"
    _prepare(TinySource(root), out)
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["facelab_version"]  # the format field alone does not make it facelab's
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match="facelab did not write"):
        _prepare(TinySource(root), out, size=24, overwrite=True)
    assert (out / "images.npy").exists()


def test_a_persons_build_json_in_the_partial_folder_is_left_alone(root: Path, tmp_path: Path) -> None:
    part = tmp_path / "store.partial"
    part.mkdir()
    (part / "build.json").write_text(json.dumps({"target": "wasm", "optimize": True}))
    with pytest.raises(StoreError, match="not written by a facelab store build"):
        _prepare(TinySource(root), tmp_path / "store")
    assert json.loads((part / "build.json").read_text()) == {"target": "wasm", "optimize": True}


def test_an_interrupted_build_with_a_persons_file_beside_it_is_refused(root: Path, tmp_path: Path,
                                                                      monkeypatch) -> None:
    out = tmp_path / "store"
    monkeypatch.setattr(partial_mod, "CHECKPOINT_SECONDS", 0.0)
    monkeypatch.setattr(build, "_finish", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        _prepare(TinySource(root), out)
    monkeypatch.undo()
    (tmp_path / "store.partial" / "todo.md").write_text("mine")
    for size in (16, 24):  # resuming it, or starting over (which clears the folder)
        with pytest.raises(StoreError, match=r"files facelab did not make: todo\.md"):
            _prepare(TinySource(root), out, size=size)
    assert (tmp_path / "store.partial" / "todo.md").read_text() == "mine"


# ---- a full disk ----------------------------------------------------------------------------------
def test_no_room_for_the_images_is_an_error_before_decoding_and_leaves_nothing(root: Path, tmp_path: Path,
                                                                              monkeypatch) -> None:
    out = tmp_path / "full" / "store"
    out.parent.mkdir()
    simulate_full_disk(monkeypatch, out.parent)
    with pytest.raises(OSError) as e:
        _prepare(TinySource(root), out, workers=2)
    message = os_error_message(e.value)
    assert message is not None and message.startswith("no space left on the device while writing")
    assert str(out.parent / "store.partial") in message
    assert os.listdir(out.parent) == []  # no .partial, no store


def test_a_full_disk_at_the_end_keeps_the_decoded_images_for_a_resume(root: Path, tmp_path: Path,
                                                                      monkeypatch) -> None:
    out = tmp_path / "store"
    real_save = build._save

    def full(path, **arrays):
        if path.name == "index.npz":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_save(path, **arrays)

    monkeypatch.setattr(build, "_save", lambda path, **arrays: full(path, **arrays))
    with pytest.raises(OSError) as e:
        _prepare(TinySource(root), out)
    assert e.value.errno == errno.ENOSPC
    assert not out.exists()  # nothing a later run (or Store.open) takes as a finished store
    with pytest.raises(StoreError, match="interrupted"):
        Store.open(out)
    monkeypatch.setattr(build, "_save", real_save)
    report = _prepare(TinySource(root), out)
    assert report.status == "resumed" and report.decoded == 0 and Store.open(out).manifest.count == N_GOOD


def test_a_really_full_disk_ends_at_once_with_parallel_workers(root: Path, tmp_path: Path) -> None:
    """The replay: a pool worker writing the memory map on a full disk died and the parent waited forever."""
    with full_tmpfs(tmp_path / "tiny", size="1m", leave=64 << 10) as disk:
        many = tmp_path / "many"
        _write_images(many, n=400)
        t0 = time.monotonic()
        with pytest.raises(OSError) as e:
            _prepare(TinySource(many), disk / "store", size=64, workers=2)
        assert time.monotonic() - t0 < 60
        assert "no space left" in (os_error_message(e.value) or "")
        assert sorted(os.listdir(disk)) == [".filler"]


class DyingSource(TinySource):
    """Kills the process that loads its fifth record when that is a pool worker (not the test process)."""

    parent: ClassVar[int] = 0

    def load(self, record, *, min_side=None):
        if os.getpid() != DyingSource.parent and record.key == "img05.jpg":
            os.kill(os.getpid(), signal.SIGKILL)
        return super().load(record, min_side=min_side)


def test_a_worker_that_dies_fails_the_build_fast(root: Path, tmp_path: Path) -> None:
    DyingSource.parent = os.getpid()
    t0 = time.monotonic()
    with pytest.raises(StoreError, match="a decoding process ended abruptly.*re-run the command to resume"):
        _prepare(DyingSource(root), tmp_path / "store", workers=2, chunk_size=2)
    assert time.monotonic() - t0 < 60
    assert not (tmp_path / "store").exists()


# ---- stores written from arrays -------------------------------------------------------------------
def _arrays(n: int = 8):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 8, 8, 3), dtype=np.uint8)
    return images, rng.integers(0, 2, size=(n, 1)), np.full(n, int(Partition.TRAIN))


def test_write_store_arrays_leaves_no_temporary_folder_on_a_full_disk(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "s.partial").mkdir()
    (tmp_path / "s.partial" / "mine.txt").write_text("a person's folder that happens to have this name")
    simulate_full_disk(monkeypatch, tmp_path)
    images, labels, parts = _arrays()
    with pytest.raises(OSError) as e:
        write_store_arrays(tmp_path / "s", images, labels, [LabelSpec("y", LabelKind.BINARY)], parts, source="x")
    assert "no space left" in (os_error_message(e.value) or "")
    monkeypatch.undo()
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["s.partial",
                                                                                      "s.partial/mine.txt"]


def test_write_store_arrays_refuses_a_folder_that_appeared(tmp_path: Path, monkeypatch) -> None:
    images, labels, parts = _arrays()
    real = os.replace

    def appear_then_replace(src, dst):
        if Path(dst) == tmp_path / "s":  # another process makes the folder just before the rename
            Path(dst).mkdir()
            (Path(dst) / "theirs.txt").write_text("x")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", appear_then_replace)
    with pytest.raises(FacelabError, match="appeared while its store was written"):
        write_store_arrays(tmp_path / "s", images, labels, [LabelSpec("y", LabelKind.BINARY)], parts, source="x")
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["s"] and os.listdir(tmp_path / "s") == ["theirs.txt"]
