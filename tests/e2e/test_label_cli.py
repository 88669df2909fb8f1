"""``facelab label auto`` end to end, and every bad labels file as a clear error."""

from __future__ import annotations

import csv
import json

import pytest

from facelab.data.store import Store
from facelab.errors import DataError
from facelab.data.labels_file import LabelsFile, columns
from tests.e2e.conftest import cli_error, cli_json


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
