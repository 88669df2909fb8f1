"""A class folder the folder source cannot read is an error naming it, never a class "with no images"."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from facelab.data.sources import create_source
from facelab.errors import DataError
from tests.fixtures.layouts import write_image


def _deny(monkeypatch, folder: Path) -> None:
    """Reading ``folder`` fails with EACCES (a chmod 000 folder, also when the tests run as root)."""
    real = os.scandir

    def scandir(path=".", *args, **kwargs):  # noqa: ANN001
        if os.path.abspath(os.fsdecode(path)) == str(folder):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "scandir", scandir)


@pytest.mark.parametrize("where", ["cat", "cat/2024"])
def test_an_unreadable_class_folder_is_an_error_naming_it(tmp_path: Path, monkeypatch, where: str) -> None:
    for name in ("cat/a.png", "cat/2024/b.png", "dog/c.png"):
        write_image(tmp_path / name)
    _deny(monkeypatch, tmp_path / where)
    with pytest.raises(DataError, match=rf"cannot read the folder {where} \(Permission denied\); make it readable"):
        create_source("folder", tmp_path).index()
