"""The labels file: a reader that never crashes on any input, and writers that never lose a person's decisions
(one inter-process lock, no write over a file that changed, no half-written or re-owned file)."""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from facelab.data import labels_file as lf
from facelab.data.labels_file import (LabelsChanged, LabelsFile, LabelsLocked, check_can_save, columns,
                                      keep_decisions, labels_lock)
from facelab.errors import DataError

TASKS = ["orientation", "light"]


def _row(key: str, /, **values: str) -> dict[str, str]:
    row = {c: "" for c in columns(TASKS)}
    row.update({"key": key, "orientation": "center", "orientation_yaw": "1.5", "orientation_confidence": "0.4",
                "orientation_reviewed": "0", "light": "left", "light_contrast": "-0.3", "light_confidence": "0.9",
                "light_reviewed": "0"})
    row.update(values)
    return row


def _write(path: Path, rows: list[dict[str, str]], *, bom: bool = False) -> Path:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + buf.getvalue().encode())
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- the reader -------------------------------------------------------------------------------------
COLUMN_NAMES = columns(TASKS) + ["", "extra", "Key"]
CELL = st.one_of(st.sampled_from(["", "0", "1", "left", "center", "right", "n/a", "nan", "-inf", "1e400", "0.5",
                                  "2", "-0.1", "yes", "a,b", 'q"q', "x\ny", "\x00", "\ufeff"]), st.text(max_size=8))


@st.composite
def csv_texts(draw) -> bytes:
    if draw(st.booleans()):  # any bytes at all
        return draw(st.binary(max_size=200))
    header = draw(st.lists(st.sampled_from(COLUMN_NAMES), max_size=14))
    if draw(st.booleans()):
        header = columns(TASKS)
    width = st.integers(0, len(header) + 2)
    rows = draw(st.lists(st.lists(CELL, min_size=0, max_size=16).flatmap(
        lambda cells: width.map(lambda n: (cells * 2)[:n] if cells else [])), max_size=6))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    prefix = draw(st.sampled_from(["", "\ufeff"]))
    return (prefix + buf.getvalue()).encode("utf-8", "surrogatepass")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=csv_texts())
def test_any_file_is_read_or_refused_with_a_clear_error_never_a_crash(tmp_path, data):
    path = tmp_path / "labels.csv"
    path.write_bytes(data)
    try:
        labels = LabelsFile.read(path)
    except DataError as e:
        assert str(path) in str(e)  # names the file (and the line where there is one)
        return
    # what is read is a checked labels file: every column, unique keys, classes, numbers and flags
    assert len(set(labels.index)) == len(labels.rows)
    for r in labels.rows:
        assert set(columns(labels.tasks)) <= set(r) and r["key"]
        for t in labels.tasks:
            assert r[t] in ("", *labels.classes(t)) and r[f"{t}_reviewed"] in ("0", "1")
            conf = r[f"{t}_confidence"]
            assert conf == "" or 0 <= float(conf) <= 1
    labels.save()  # and what was read can be written back and read again, unchanged
    again = LabelsFile.read(path)
    assert again.rows == labels.rows and again.tasks == labels.tasks


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(keys=st.lists(st.text(min_size=1, max_size=12).filter(lambda k: "\x00" not in k and "\r" not in k),
                     min_size=1, max_size=8, unique=True))
def test_any_keys_survive_a_round_trip(tmp_path, keys):
    path = tmp_path / "labels.csv"
    path.unlink(missing_ok=True)
    labels = LabelsFile(path, TASKS, [_row(k) for k in keys])
    labels.save()
    assert [r["key"] for r in LabelsFile.read(path).rows] == keys


@pytest.mark.parametrize("change, words", [
    ({"orientation_confidence": "n/a"}, "orientation_confidence 'n/a' is not a number from 0 to 1"),
    ({"orientation_confidence": "1.5"}, "not a number from 0 to 1"),
    ({"light_contrast": "nan"}, "light_contrast 'nan' is not a finite number"),
    ({"orientation_reviewed": "yes"}, "orientation_reviewed 'yes' is neither 0 nor 1"),
    ({"key": ""}, "the key is empty"),
], ids=["confidence-n/a", "confidence-1.5", "value-nan", "reviewed-yes", "empty-key"])
def test_a_bad_value_is_an_error_naming_its_line(tmp_path, change, words):
    path = _write(tmp_path / "labels.csv", [_row("a.jpg"), _row("b.jpg", **change)])
    with pytest.raises(DataError, match=words) as e:
        LabelsFile.read(path)
    assert f"{path}:3:" in str(e.value)


def test_a_repeated_column_is_an_error(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text(",".join(columns(TASKS) + ["light"]) + "\n")
    with pytest.raises(DataError, match="column 'light' appears twice"):
        LabelsFile.read(path)


def test_a_file_saved_by_a_spreadsheet_with_a_byte_order_mark_is_read(tmp_path):
    path = _write(tmp_path / "labels.csv", [_row("a.jpg"), _row("b.jpg", orientation_reviewed="")], bom=True)
    labels = LabelsFile.read(path)
    assert [r["key"] for r in labels.rows] == ["a.jpg", "b.jpg"] and labels.tasks == TASKS
    assert labels.rows[1]["orientation_reviewed"] == "0"  # an empty flag: not reviewed


# ---- the writers ------------------------------------------------------------------------------------
def test_save_writes_only_over_the_content_it_was_read_from(tmp_path):
    path = _write(tmp_path / "labels.csv", [_row("a.jpg"), _row("b.jpg")])
    mine, theirs = LabelsFile.read(path), LabelsFile.read(path)
    theirs.rows[0].update(orientation="left", orientation_reviewed="1")
    theirs.save()  # a person's decision, written by another session
    decided = path.read_bytes()
    mine.rows[1].update(orientation="right", orientation_reviewed="1")
    with pytest.raises(LabelsChanged, match="changed on disk"):
        mine.save()  # its rows are older than the file: writing them would undo the other decision
    assert path.read_bytes() == decided and mine.changed_on_disk()
    path.unlink()
    with pytest.raises(LabelsChanged, match="was removed"):
        theirs.save()
    with pytest.raises(LabelsChanged, match="appeared"):
        _write(path, [_row("c.jpg")])
        LabelsFile(path, TASKS, [_row("a.jpg")]).save()
    assert [r["key"] for r in LabelsFile.read(path).rows] == ["c.jpg"]


def test_save_keeps_mode_and_refuses_a_read_only_file(tmp_path):
    path = _write(tmp_path / "labels.csv", [_row("a.jpg")])
    os.chmod(path, 0o640)
    owner = (1234, 4321) if os.geteuid() == 0 else (os.getuid(), os.getgid())  # only root may give files away
    os.chown(path, *owner)
    labels = LabelsFile.read(path)
    labels.rows[0]["orientation_reviewed"] = "1"
    labels.save()
    assert path.stat().st_mode & 0o777 == 0o640 and (path.stat().st_uid, path.stat().st_gid) == owner
    os.chmod(path, 0o444)
    before = _sha(path)
    labels.rows[0]["orientation"] = "left"
    with pytest.raises(DataError, match="read-only .*chmod u\\+w"):
        labels.save()
    with pytest.raises(DataError, match="read-only"):
        check_can_save(path)
    assert _sha(path) == before and path.stat().st_mode & 0o777 == 0o444


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.ENAMETOOLONG])
def test_a_failed_write_is_a_clear_error_and_leaves_the_file_and_folder_as_they_were(tmp_path, monkeypatch, code):
    path = _write(tmp_path / "labels.csv", [_row("a.jpg")])
    labels = LabelsFile.read(path)
    labels.rows[0]["orientation_reviewed"] = "1"
    before, listing = _sha(path), sorted(os.listdir(tmp_path))
    def failing_fsync(fd):  # the temporary file exists and holds the data; flushing it to the disk fails
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr("facelab.utils.io.os.fsync", failing_fsync)
    said = {errno.ENOSPC: "no space left", errno.EROFS: "read-only file system", errno.ENAMETOOLONG: "name too long"}
    with pytest.raises(DataError, match=f"(?i)(?=.*{said[code]})(?=.*labels.csv).*nothing was changed in it"):
        labels.save()
    monkeypatch.undo()
    assert _sha(path) == before and sorted(os.listdir(tmp_path)) == listing


def test_a_folder_that_takes_no_files_is_refused_before_any_work(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(lf.tempfile, "mkstemp", read_only)
    with pytest.raises(DataError, match="does not take new files \\(Read-only file system\\)"):
        check_can_save(tmp_path / "labels.csv")


HOLDER = textwrap.dedent("""
    import sys
    from facelab.data.labels_file import labels_lock
    with labels_lock(sys.argv[1], activity="reviewed by `facelab label review`"):
        print("held", flush=True)
        sys.stdin.read()
""")


def test_every_writer_honours_one_lock_across_processes(tmp_path):
    path = _write(tmp_path / "labels.csv", [_row("a.jpg")])
    labels = LabelsFile.read(path)
    labels.rows[0].update(orientation="left", orientation_reviewed="1")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    other = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, env=env)
    try:
        assert other.stdout.readline().strip() == "held"
        before = _sha(path)
        with pytest.raises(LabelsLocked, match=f"being reviewed by `facelab label review` \\(pid {other.pid}\\)"):
            labels.save()
        with pytest.raises(LabelsLocked):
            with labels_lock(path, activity="labelled by `facelab label auto`"):
                pass
        assert _sha(path) == before
    finally:
        other.stdin.close()
        other.wait(timeout=60)
    labels.save()  # the other process ended: its lock went with it
    assert LabelsFile.read(path).rows[0]["orientation_reviewed"] == "1"


def test_the_lock_is_reentrant_in_a_process_unless_exclusive(tmp_path):
    path = tmp_path / "labels.csv"
    with labels_lock(path, activity="reviewed by `facelab label review`", exclusive=True):
        with labels_lock(path):  # the server's own writes
            pass
        with pytest.raises(LabelsLocked, match="being reviewed by"):
            with labels_lock(path, exclusive=True):  # a second server
                pass
    with labels_lock(path, exclusive=True):  # released
        pass


# ---- a new labelling over an older file ----------------------------------------------------------------
def test_a_column_a_person_added_is_kept_by_every_write(tmp_path):
    path = _write(tmp_path / "labels.csv", [_row("a.jpg") | {"comment": "blurry"}, _row("b.jpg") | {"comment": ""}])
    labels = LabelsFile.read(path)
    assert labels.own_columns == ["comment"]
    labels.rows[1].update(orientation="left", orientation_reviewed="1")
    labels.save()
    again = LabelsFile.read(path)
    assert [r["comment"] for r in again.rows] == ["blurry", ""] and again.rows[1]["orientation_reviewed"] == "1"


def test_keep_decisions_keeps_reviewed_classes_and_tasks_not_labelled_again(tmp_path):
    path = _write(tmp_path / "labels.csv", [_row("a.jpg", orientation="left", orientation_reviewed="1") | {"comment": "x"},
                                            _row("b.jpg", light="right", light_reviewed="1", note="light: odd")
                                            | {"comment": ""}, _row("c.jpg") | {"comment": "mine"}])
    previous = LabelsFile.read(path)
    new_rows = [{c: "" for c in columns(["orientation"])} | {"key": k, "orientation": "right", "orientation_yaw": "30",
                                                            "orientation_confidence": "0.9", "orientation_reviewed": "0"}
                for k in ("a.jpg", "b.jpg", "c.jpg", "d.jpg")]
    new = LabelsFile(path, ["orientation"], new_rows)
    kept = keep_decisions(new, previous)
    assert kept == {"reviewed": {"orientation": 1}, "tasks": ["light"]}
    new.save()
    rows = {r["key"]: r for r in LabelsFile.read(path).rows}
    assert rows["a.jpg"]["orientation"] == "left" and rows["a.jpg"]["orientation_reviewed"] == "1"
    assert rows["a.jpg"]["orientation_yaw"] == "30"  # the machine's new measurement beside the person's class
    assert rows["c.jpg"]["orientation"] == "right"  # not reviewed: relabelled
    assert rows["b.jpg"]["light"] == "right" and rows["b.jpg"]["light_reviewed"] == "1" and rows["b.jpg"]["note"] == "light: odd"
    assert rows["d.jpg"]["light"] == "" and rows["d.jpg"]["light_reviewed"] == "0"
    assert [rows[k]["comment"] for k in ("a.jpg", "b.jpg", "c.jpg", "d.jpg")] == ["x", "", "mine", ""]
