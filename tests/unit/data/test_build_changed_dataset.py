"""A dataset that changed since its store was built (files added, removed or renamed) is not "already
complete": a re-run indexes the source again and compares the record keys with the manifest's keys_sha256."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import facelab.data.build as build
from facelab.data.build import KEYS_HASH, prepare_store
from facelab.data.sources.folder import FolderSource
from facelab.data.store import Store
from facelab.errors import StoreError
from tests.fixtures.layouts import make_class_folders, write_image


def _prepare(root: Path, out: Path, **kw):
    return prepare_store(FolderSource(root), out, size=8, workers=1, progress=False, **kw)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    make_class_folders(tmp_path / "faces", {"left": 3, "right": 2})
    return tmp_path / "faces"


def test_manifest_records_the_keys_hash(root, tmp_path):
    out = tmp_path / "store"
    _prepare(root, out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest[KEYS_HASH] == build.keys_sha256(Store.open(out).keys.tolist())


@pytest.mark.parametrize("change,counts,now", [
    ("add", "5 records then, 6 now", 6),
    ("remove", "5 records then, 4 now", 4),
    ("rename", "5 records, not the same ones", 5),
])
def test_changed_dataset_is_not_already_complete(root, tmp_path, change, counts, now):
    out = tmp_path / "store"
    _prepare(root, out)
    if change == "add":
        write_image(root / "left" / "new.jpg")
    elif change == "remove":
        (root / "left" / "0000.jpg").unlink()
    else:
        (root / "left" / "0000.jpg").rename(root / "left" / "renamed.jpg")
    with pytest.raises(StoreError, match=rf"dataset changed since the store at .*store was built \({counts}\); "
                                         r"pass --overwrite"):
        _prepare(root, out)
    report = _prepare(root, out, overwrite=True)
    assert report.status == "built" and report.count == now
    assert _prepare(root, out).status == "already complete"


def test_unchanged_dataset_with_new_non_image_files_is_already_complete(root, tmp_path):
    out = tmp_path / "store"
    _prepare(root, out)
    (root / "left" / "notes.txt").write_text("not an image: no record, same dataset")
    assert _prepare(root, out).status == "already complete"


def test_store_built_before_the_keys_hash_still_works_with_a_note(root, tmp_path):
    out = tmp_path / "store"
    _prepare(root, out)
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest[KEYS_HASH]
    (out / "manifest.json").write_text(json.dumps(manifest))
    write_image(root / "left" / "new.jpg")  # cannot be noticed without the hash
    report = _prepare(root, out)
    assert report.status == "already complete" and report.count == 5
    assert any("older facelab" in n and "--overwrite" in n for n in report.notes)
