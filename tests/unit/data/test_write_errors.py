"""The atomic writers leave the whole new file or nothing, and the file errors a user can fix read as one line."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from safetensors import SafetensorError

from facelab.utils.io import atomic_path, atomic_write_bytes, is_temporary_name, os_error_message
from tests.fixtures.full_disk import simulate_full_disk


@pytest.mark.parametrize("code, says", [(errno.ENOSPC, "no space left"), (errno.EACCES, "permission denied")])
def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(tmp_path: Path, monkeypatch, code: int,
                                                                 says: str) -> None:
    target = tmp_path / "report.json"
    target.write_text("the old one")
    simulate_full_disk(monkeypatch, tmp_path, code)
    with pytest.raises(OSError) as e:
        atomic_write_bytes(target, b"the new one")
    monkeypatch.undo()
    assert e.value.filename == str(target)  # a failed write() names no file: the writer names its target
    message = os_error_message(e.value) or ""
    assert message.startswith(says) and str(target) in message
    assert os.listdir(tmp_path) == ["report.json"] and target.read_text() == "the old one"


def test_a_writer_that_needs_a_path_gets_a_hidden_one_with_the_same_suffix(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "plot.png") as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".png" and is_temporary_name(tmp.name)
        tmp.write_bytes(b"png")
    assert os.listdir(tmp_path) == ["plot.png"]
    with pytest.raises(KeyboardInterrupt), atomic_path(tmp_path / "other.png") as tmp:
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt
    assert os.listdir(tmp_path) == ["plot.png"]


def test_a_name_that_only_just_fits_still_gets_a_temporary_file(tmp_path: Path) -> None:
    name = "x" * 251 + ".png"  # 255 bytes: the temporary name keeps only the start of it
    atomic_write_bytes(tmp_path / name, b"data")
    assert os.listdir(tmp_path) == [name]
    with pytest.raises(OSError) as e:
        atomic_write_bytes(tmp_path / ("y" + name), b"data")
    message = os_error_message(e.value) or ""
    assert message.startswith("file name too long") and "256 bytes" in message and "y" + name in message
    assert os.listdir(tmp_path) == [name]


@pytest.mark.parametrize("error, says", [
    (SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)"), "no space left"),
    (SafetensorError('I/O error: Read-only file system (os error 30) at path "/data/run/.tmpAb12"'),
     "cannot write /data/run: read-only file system"),
    (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"), "no space left"),
    (RuntimeError("[enforce fail at inline_container.cc:747] . open file failed with strerror: Permission denied"),
     "permission denied"),
    (OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), "/home/a/x"), "disk quota exceeded while writing /home/a/x"),
])
def test_libraries_errors_read_as_one_line(error: BaseException, says: str) -> None:
    message = os_error_message(error)
    assert message is not None and says in message and "\n" not in message


def test_other_errors_are_not_taken_for_file_errors() -> None:
    assert os_error_message(ValueError("bad value")) is None
    assert os_error_message(OSError(errno.EIO, "Input/output error")) is None  # not one a user fixes
    assert os_error_message(RuntimeError("shape mismatch in inline_container")) is None
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise KeyError("a bug while handling it") from None
    except KeyError as e:
        assert os_error_message(e) is None  # a context the code chose to hide is not the cause
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as cause:
            raise RuntimeError("saving failed") from cause
    except RuntimeError as e:
        assert "no space left" in (os_error_message(e) or "")
