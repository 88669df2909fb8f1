"""A store whose files were damaged after it was built (a copy cut short, a file replaced) is a clear StoreError."""

from __future__ import annotations

import json

import numpy as np
import pytest

from facelab.data.store import Store
from facelab.errors import StoreError
from tests.helpers import make_store


@pytest.mark.parametrize("damage, attr, words", [
    ("truncate:images.npy", "images", "images.npy: cannot be read"),
    ("other:images.npy", "images", "the manifest says uint8"),
    ("truncate:labels.npy", "labels", "labels.npy: cannot be read"),
    ("other:labels.npy", "labels", "labels.npy: has shape"),
    ("truncate:index.npz", "keys", "index.npz: cannot be read"),
])
def test_damaged_arrays_name_the_file_and_the_fix(tmp_path, damage, attr, words):
    st = make_store(tmp_path / "s", n=12, size=8)
    how, name = damage.split(":")
    path = st.path / name
    if how == "truncate":
        path.write_bytes(path.read_bytes()[:100])
    else:
        np.save(path, np.zeros((3, 2), np.int32))
    with pytest.raises(StoreError, match=words) as e:
        getattr(Store.open(st.path), attr)
    assert "--overwrite" in str(e.value)


def test_a_manifest_that_is_not_a_manifest_is_a_store_error(tmp_path):
    st = make_store(tmp_path / "s", n=4, size=8)
    (st.path / "manifest.json").write_text("{")
    with pytest.raises(StoreError, match="unreadable manifest"):
        Store.open(st.path)
    (st.path / "manifest.json").write_text(json.dumps({"format_version": 1, "source": "x"}))
    with pytest.raises(StoreError, match="not a valid store manifest"):
        Store.open(st.path)
