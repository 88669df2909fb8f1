"""``facelab label auto`` end to end, and every bad labels file as a clear error."""

from __future__ import annotations

import csv

import pytest

from facelab.data.store import Store
from facelab.errors import DataError
from facelab.data.labels_file import LabelsFile, columns
from tests.e2e.conftest import cli, cli_error, cli_json


@pytest.fixture(scope="module")
def faces_store(tmp_path_factory):
    out = tmp_path_factory.mktemp("lab") / "store"
    cli_json("data", "prepare", "synthetic", "--out", out, "--size", 64, "--workers", 1, "-o", "n=60",
             "-o", "landmarks=true")
    return out


@pytest.fixture(scope="module")
def labels(faces_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("labels") / "labels.csv"
    # the drawn faces are flatter than a person's head: the mean face reads 2/3 of their yaw
    # (docs/labels.md), so their turned faces (28-40 degrees) are split at 15 measured degrees
    return out, cli_json("label", "auto", faces_store, "--out", out, "-o", "orientation.threshold=15")


def test_auto_labels_every_image_with_the_documented_columns_and_a_report(faces_store, labels):
    path, report = labels
    st = Store.open(faces_store)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == columns(["orientation", "light"])
    assert [r["key"] for r in rows] == [str(k) for k in st.keys]
    truth = {t: [st.spec(t).classes[v] for v in st.column(t)] for t in ("yaw", "light")}
    agree = sum(r["orientation"] == y for r, y in zip(rows, truth["yaw"])) / len(rows)
    assert agree >= 0.9 and report["images"] == 60 and report["unlabelled"] == 0
    assert sum(report["counts"]["orientation"].values()) == 60 and report["images_per_s"] > 0
    assert report["labelers"]["orientation"]["options"] == {"threshold": 15}
    assert all(r["orientation_reviewed"] == "0" and 0 <= float(r["light_confidence"]) <= 1 for r in rows)
    html = (path.with_suffix(".html")).read_text()
    assert html.count("data:image/png;base64,") >= 8 and "least confident" in html


def test_a_store_without_landmarks_is_a_clear_error(store, tmp_path):
    err = cli_error("label", "auto", store, "--out", tmp_path / "x.csv")
    assert isinstance(err, DataError) and "--align" in str(err)
    assert not (tmp_path / "x.csv").exists()


def test_labeler_options_are_checked(faces_store, tmp_path):
    assert "light" in str(cli_error("label", "auto", faces_store, "--task", "orientation", "-o", "light.threshold=1",
                                    "--out", tmp_path / "x.csv"))
    assert "tilt" in str(cli_error("label", "auto", faces_store, "-o", "orientation.tilt=1", "--out", tmp_path / "x.csv"))
    assert not (tmp_path / "x.csv").exists()


def test_an_unknown_task_is_a_clear_error(faces_store, tmp_path):
    assert "choose among orientation, light" in str(cli_error("label", "auto", faces_store, "--task", "mood",
                                                              "--out", tmp_path / "x.csv"))


def _edit(path, tmp_path, change):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    change(rows)
    out = tmp_path / "edited.csv"
    with open(out, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return out


@pytest.mark.parametrize("change, words", [
    (lambda rows: rows.append(rows[1]), "appears twice"),
    (lambda rows: rows[3].__setitem__(1, "upside-down"), "not a class of orientation"),
    (lambda rows: rows[2].__setitem__(0, "somebody_else.jpg"), "not images of"),
    (lambda rows: [r.pop(3) for r in rows], "not a facelab labels file"),  # orientation_confidence
], ids=["duplicate-key", "unknown-class", "key-not-in-store", "missing-column"])
def test_bad_labels_files_are_clear_errors_naming_the_line(faces_store, labels, tmp_path, change, words):
    bad = _edit(labels[0], tmp_path, change)
    with pytest.raises(DataError, match=words):
        LabelsFile.read(bad, store=Store.open(faces_store))


def _decide(store, path, decisions):
    from facelab.serve.review import Decision, ReviewSession

    st = Store.open(store)
    session = ReviewSession(st, LabelsFile.read(path, store=st))
    for key, task, cls in decisions:
        session.decide(Decision(key=key, task=task, cls=cls))


def _by_key(path):
    with open(path, newline="") as f:
        return {r["key"]: r for r in csv.DictReader(f)}


def test_auto_over_reviewed_rows_keeps_every_decision_and_the_tasks_it_does_not_relabel(faces_store, labels, tmp_path):
    path = tmp_path / "labels.csv"
    path.write_bytes(labels[0].read_bytes())
    keys = list(_by_key(path))
    decisions = [(keys[0], "orientation", "left"), (keys[1], "orientation", "right"), (keys[2], "light", "center"),
                 (keys[3], "orientation", "center")]
    _decide(faces_store, path, decisions)
    before = _by_key(path)
    mine = tmp_path / "notes.txt"  # a person's own file beside the labels
    mine.write_text("mine")
    journal = (tmp_path / "labels.csv.review.jsonl").read_bytes()
    report = cli_json("label", "auto", faces_store, "--out", path, "--task", "orientation",
                      "-o", "orientation.threshold=5")  # another threshold: most faces change class
    after = _by_key(path)
    assert report["kept_reviewed"] == {"orientation": 3} and report["kept_tasks"] == ["light"]
    for key, task, cls in decisions:
        assert after[key][task] == cls and after[key][f"{task}_reviewed"] == "1"
    light = columns(["light"])[1:-1]
    assert all(after[k][c] == before[k][c] for k in keys for c in light)  # not relabelled: as it was
    moved = [k for k in keys[4:] if after[k]["orientation"] != before[k]["orientation"]]
    assert moved and all(after[k]["orientation_reviewed"] == "0" for k in keys[4:])
    assert mine.read_text() == "mine" and (tmp_path / "labels.csv.review.jsonl").read_bytes() == journal
    text = cli("label", "auto", faces_store, "--out", path, "--task", "orientation").stderr
    assert "kept 3 classes a person reviewed: orientation 3" in text


def test_auto_is_refused_while_a_review_server_in_another_process_holds_the_file(faces_store, labels, tmp_path):
    import os
    import subprocess
    import sys
    import textwrap

    path = tmp_path / "labels.csv"
    path.write_bytes(labels[0].read_bytes())
    _decide(faces_store, path, [(next(iter(_by_key(path))), "orientation", "left")])
    before = path.read_bytes()
    holder = textwrap.dedent("""
        import sys
        from pathlib import Path
        from facelab.serve.review import review_lock
        with review_lock(Path(sys.argv[1])):
            print("held", flush=True)
            sys.stdin.read()
    """)
    server = subprocess.Popen([sys.executable, "-c", holder, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert server.stdout.readline().strip() == "held"
        err = cli_error("label", "auto", faces_store, "--out", path)
        assert f"being reviewed by `facelab label review` (pid {server.pid})" in str(err)
        assert path.read_bytes() == before
    finally:
        server.stdin.close()
        server.wait(timeout=60)
    assert cli_json("label", "auto", faces_store, "--out", path)["kept_reviewed"]["orientation"] == 1


def test_auto_replaces_only_a_labels_file_of_the_store(faces_store, labels, tmp_path):
    own = tmp_path / "mine.csv"
    own.write_text("name,score\nann,3\n")
    err = cli_error("label", "auto", faces_store, "--out", own)
    assert "exists and is not a labels file" in str(err) and own.read_text() == "name,score\nann,3\n"
    err = cli_error("label", "auto", faces_store, "--out", tmp_path / "labels.html")
    assert "report is written beside the labels" in str(err) and not list(tmp_path.glob("labels*"))
    ro = tmp_path / "ro.csv"
    ro.write_bytes(labels[0].read_bytes())
    ro.chmod(0o444)
    assert "read-only" in str(cli_error("label", "auto", faces_store, "--out", ro))
    assert ro.read_bytes() == labels[0].read_bytes() and ro.stat().st_mode & 0o777 == 0o444
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.csv", "ro.csv"]


def test_auto_into_a_folder_it_cannot_write_is_a_clear_error(faces_store, tmp_path, monkeypatch):
    import errno
    import os

    from facelab.data import labels_file

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(labels_file.tempfile, "mkstemp", read_only)
    err = cli_error("label", "auto", faces_store, "--out", tmp_path / "l.csv")
    assert "does not take new files (Read-only file system)" in str(err) and not list(tmp_path.iterdir())
    monkeypatch.undo()
    (tmp_path / "a-file").write_text("x")
    assert "cannot create the folder" in str(cli_error("label", "auto", faces_store, "--out", tmp_path / "a-file" / "l.csv"))
    long = tmp_path / ("x" * 300 + ".csv")
    assert "file name too long" in str(cli_error("label", "auto", faces_store, "--out", long)).lower()


@pytest.mark.parametrize("option, words", [("orientation.threshold=abc", "should be a valid number"),
                                           ("orientation.threshold=-5", "greater than 0"),
                                           ("light.threshold=.nan", "light.threshold=nan")])
def test_a_bad_labeler_option_is_one_clear_line(faces_store, tmp_path, option, words):
    err = cli_error("label", "auto", faces_store, "-o", option, "--out", tmp_path / "x.csv")
    assert f"-o {option.split('=')[0]}" in str(err) and words in str(err) and not list(tmp_path.iterdir())


def test_auto_never_writes_its_report_over_a_person_s_files(faces_store, tmp_path):
    page = tmp_path / "index.html"
    page.write_text("<html>my page</html>")
    err = cli_error("label", "auto", faces_store, "--out", tmp_path / "index.csv")
    assert "is not a labels report facelab wrote" in str(err) and page.read_text() == "<html>my page</html>"
    (tmp_path / "photos_report").mkdir()
    (tmp_path / "photos_report" / "holiday.jpg").write_bytes(b"mine")
    err = cli_error("label", "auto", faces_store, "--out", tmp_path / "photos.csv")
    assert "holds holiday.jpg" in str(err)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["holiday.jpg", "index.html", "photos_report"]
    cli_json("label", "auto", faces_store, "--out", tmp_path / "again.csv")  # its own report, replaced freely
    cli_json("label", "auto", faces_store, "--out", tmp_path / "again.csv")
