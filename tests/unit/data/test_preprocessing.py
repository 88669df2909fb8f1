"""The checkpoint's preprocessing block and the one check of a store against it."""

from __future__ import annotations

import pytest

from facelab.data.preprocessing import Preprocessing
from facelab.errors import ConfigError, FacelabError
from tests.helpers import make_store


def test_of_store_records_size_crop_source_and_hash(tmp_path):
    st = make_store(tmp_path / "s", n=8, size=16)
    p = Preprocessing.of_store(st, mean=(0.5, 0.5, 0.5), std=[0.25, 0.25, 0.25])
    assert (p.image_size, p.source, p.store_hash, p.std) == (16, "test", st.content_hash, (0.25, 0.25, 0.25))
    same = p.check_store(st, what="the model")
    assert same.same_source and same.same_store and same.warnings == []


def test_check_store_refuses_another_size_and_warns_about_the_rest(tmp_path):
    st = make_store(tmp_path / "s", n=8, size=16)
    p = Preprocessing.of_store(st, mean=(0.5,) * 3, std=(0.5,) * 3)
    with pytest.raises(FacelabError, match="32px but the model works at 16px.*--size 16"):
        p.check_store(make_store(tmp_path / "big", n=8, size=32), what="the model")
    rebuilt = p.check_store(make_store(tmp_path / "other", n=8, size=16, seed=4), what="the model")
    assert rebuilt.same_source and not rebuilt.same_store and "overlap" in rebuilt.warnings[0]
    foreign = p.check_store(make_store(tmp_path / "f", n=8, size=16, source="cifar10"), what="the model")
    assert not foreign.same_source and "'test' images" in foreign.warnings[0]
    cropped = Preprocessing.from_dict({**p.model_dump(), "crop": {"mode": "box", "box": (0, 0, 10, 10)}})
    warning = cropped.check_store(st, what="m").warnings[0]  # the store's images are not cropped at all
    assert "cropped to the box (0, 0, 10, 10)" in warning and "cropped not at all" in warning


def test_unknown_keys_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="detector"):
        Preprocessing.from_dict({"image_size": 8, "mean": [0, 0, 0], "std": [1, 1, 1], "detector": "x"})
    assert Preprocessing.from_meta(None, where="x") is None and Preprocessing.from_meta({}, where="x") is None


def test_to_input_is_what_the_batch_loader_feeds_the_network(tmp_path):
    import numpy as np
    import torch

    from facelab.data.loader import BatchLoader

    st = make_store(tmp_path / "s", n=6, size=16)
    p = Preprocessing.of_store(st, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    x = p.to_input(np.asarray(st.images))
    assert x.shape == (6, 3, 16, 16) and x.dtype == np.float32
    batch = next(iter(BatchLoader(st, np.arange(6), batch_size=6, shuffle=False, mean=p.mean, std=p.std,
                                  device=torch.device("cpu"))))
    np.testing.assert_allclose(x, batch.x.numpy(), atol=1e-6, rtol=0)
    with pytest.raises(FacelabError, match=r"\(B, 16, 16, 3\) uint8"):
        p.to_input(np.asarray(st.images)[:, :8, :8])
    with pytest.raises(FacelabError, match=r"\(B, 16, 16, 3\) uint8"):
        p.to_input(np.asarray(st.images).astype(np.float32))
