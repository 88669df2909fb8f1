"""Two `prepare` runs into one --out: a store is never replaced without --overwrite, whoever finished first.

The interleavings are made deterministic: the other build runs at a chosen point of this one (inside the
source's index(), between the first out-folder check and the lock; or after the manifest, before the
rename), never by timing.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

import facelab.data.build as build
import facelab.data.partial as partial
from facelab.data.build import prepare_store
from facelab.data.sources.folder import FolderSource
from facelab.data.store import Store
from facelab.errors import StoreError
from tests.fixtures.layouts import make_class_folders
from tests.helpers import make_store


def _prepare(root: Path, out: Path, *, size: int = 8, source: FolderSource | None = None, **kw):
    return prepare_store(source or FolderSource(root), out, size=size, workers=1, progress=False, **kw)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    make_class_folders(tmp_path / "faces", {"left": 3, "right": 2})
    return tmp_path / "faces"


class RacedSource(FolderSource):
    """Indexing runs another complete build (``other_size``) into the same ``out`` first: that build
    finishes after this one's out-folder check and before it takes the lock."""

    other_size: int = 8
    out: Path

    def index(self):
        _prepare(self.root, self.out, size=self.other_size)
        return super().index()


def _raced(root: Path, out: Path, other_size: int) -> RacedSource:
    source = RacedSource(root)
    source.out, source.other_size = out, other_size
    return source


# ---- another build finishes between the out check and the lock ----------------------------------
def test_other_settings_finished_meanwhile_are_not_replaced(root, tmp_path):
    out = tmp_path / "store"
    with pytest.raises(StoreError, match=r"already holds a different store \(image_size: 8 there, 12 asked\)"):
        _prepare(root, out, size=12, source=_raced(root, out, other_size=8))
    assert Store.open(out).image_size == 8  # the first build's store is intact
    assert not out.with_name("store.partial").exists()  # the empty folder this run locked is gone


def test_same_settings_finished_meanwhile_is_already_complete(root, tmp_path):
    out = tmp_path / "store"
    report = _prepare(root, out, size=8, source=_raced(root, out, other_size=8))
    assert report.status == "already complete" and report.decoded == 0 and report.count == 5
    assert not out.with_name("store.partial").exists()


def test_overwrite_still_replaces_a_store_finished_meanwhile(root, tmp_path):
    out = tmp_path / "store"
    report = _prepare(root, out, size=12, source=_raced(root, out, other_size=8), overwrite=True)
    assert report.status == "built" and Store.open(out).image_size == 12


# ---- a store appears after the manifest, before the rename ---------------------------------------
def test_rename_never_replaces_a_store_that_appeared_during_the_build(root, tmp_path, monkeypatch):
    out = tmp_path / "store"
    finish = build._finish

    def finish_then_other_store_appears(*args, **kwargs):
        manifest = finish(*args, **kwargs)
        make_store(out, n=3, size=4)  # not written by prepare_store: nothing but the rename checks it
        return manifest

    monkeypatch.setattr(build, "_finish", finish_then_other_store_appears)
    with pytest.raises(StoreError, match=r"different store .*appeared while this build ran; the finished build is "
                                         r"kept in .*store\.partial"):
        _prepare(root, out)
    monkeypatch.undo()
    assert len(Store.open(out)) == 3  # untouched
    assert (out.with_name("store.partial") / "manifest.json").is_file()
    report = _prepare(root, out, overwrite=True)  # the kept build is used, not decoded again
    assert report.status == "resumed" and report.decoded == 0 and len(Store.open(out)) == 5


# ---- the lock follows the folder now at <out>.partial --------------------------------------------
def test_lock_taken_on_a_partial_renamed_meanwhile_is_taken_again(tmp_path, monkeypatch):
    folder = tmp_path / "store.partial"
    real_flock, renamed = fcntl.flock, []

    def flock_after_the_other_build_renamed_it(fd, op):
        if not renamed:  # the build that held it moves it into place just before this lock is granted
            os.replace(folder, tmp_path / "store")
            renamed.append(True)
        return real_flock(fd, op)

    monkeypatch.setattr(fcntl, "flock", flock_after_the_other_build_renamed_it)
    with partial.locked(folder):
        assert folder.is_dir() and (tmp_path / "store").is_dir()
        with pytest.raises(StoreError, match="being written by another"):  # the lock is on the new folder
            with partial.locked(folder):
                pass
