"""The review page's API: least-confident first, decisions written at once, undo (across restarts), one
server per labels file; and the page driven by keys in chromium."""

from __future__ import annotations

import contextlib
import csv
import shutil
import socket
import threading
import time

import pytest
import uvicorn
from fastapi.testclient import TestClient

from facelab.data.store import Store
from facelab.errors import DataError
from facelab.data.labels_file import LabelsFile
from facelab.serve.app import create_app
from facelab.serve.review import Decision, ReviewSession, review_lock
from tests.e2e.conftest import cli_json


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    root = tmp_path_factory.mktemp("review")
    cli_json("data", "prepare", "synthetic", "--out", root / "store", "--size", 32, "--workers", 1, "-o", "n=24",
             "-o", "landmarks=true")
    cli_json("label", "auto", root / "store", "--out", root / "labels.csv")
    return root


@pytest.fixture
def session(labelled, tmp_path):
    labels = tmp_path / "labels.csv"
    shutil.copy(labelled / "labels.csv", labels)
    st = Store.open(labelled / "store")
    return ReviewSession(st, LabelsFile.read(labels, store=st))


def _rows(path):
    with open(path, newline="") as f:
        return {r["key"]: r for r in csv.DictReader(f)}


def test_faces_come_least_confident_first_and_each_decision_is_on_disk_at_once(session):
    client = TestClient(create_app(None, review=session))
    assert client.get("/").url.path == "/review" and "review.js" in client.get("/review").text
    assert client.get("/v1/review/tasks").json()["tasks"] == {"orientation": ["left", "center", "right"],
                                                             "light": ["left", "center", "right"]}
    first = client.get("/v1/review/next", params={"task": "orientation"}).json()["next"]
    confs = sorted(float(r["orientation_confidence"]) for r in session.labels.rows)
    assert first["confidence"] == pytest.approx(confs[0], abs=1e-4)
    png = client.get(first["image"])
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    r = client.post("/v1/review/decision", json={"key": first["key"], "task": "orientation", "cls": "right"}).json()
    on_disk = _rows(session.labels.path)[first["key"]]
    assert on_disk["orientation"] == "right" and on_disk["orientation_reviewed"] == "1"  # written before answering
    assert r["next"]["key"] != first["key"] and r["next"]["progress"]["reviewed"] == 1
    skipped = r["next"]["key"]
    r = client.post("/v1/review/decision", json={"key": skipped, "task": "orientation", "cls": None}).json()
    assert r["saved"] is False and r["next"]["key"] != skipped and _rows(session.labels.path)[skipped]["orientation_reviewed"] == "0"
    bad = client.post("/v1/review/decision", json={"key": first["key"], "task": "orientation", "cls": "up"})
    assert bad.status_code == 422 and "not a class" in bad.json()["detail"]
    assert client.get("/v1/review/next", params={"task": "mood"}).status_code == 404


def test_undo_takes_back_the_last_decision_even_after_a_restart(session, labelled):
    key = session.next_face("light")["key"]
    before = dict(session.labels.rows[session.labels.index[key]])
    session.decide(Decision(key=key, task="light", cls="left" if before["light"] != "left" else "right"))
    st = Store.open(labelled / "store")
    reopened = ReviewSession(st, LabelsFile.read(session.labels.path, store=st))  # a new server, same files
    assert reopened.undo("light")["undone"] == key
    row = _rows(session.labels.path)[key]
    assert row["light"] == before["light"] and row["light_reviewed"] == "0"
    with pytest.raises(Exception, match="nothing to undo"):
        ReviewSession(st, LabelsFile.read(session.labels.path, store=st)).undo("light")


def test_a_second_review_server_on_one_labels_file_is_refused(session):
    with review_lock(session.labels.path):
        with pytest.raises(DataError, match="being reviewed by `facelab label review`"):
            with review_lock(session.labels.path):
                pass
    with review_lock(session.labels.path):  # released: may be reviewed again
        pass


CHROMIUM = shutil.which("chromium")


@contextlib.contextmanager
def _serving(session):
    """The review app on a free local port, in a thread; yields its address."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(None, review=session), host="127.0.0.1", port=port,
                                          log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium here: `apt-get install chromium` (.ci/run does)")
def test_the_page_labels_with_keys_and_a_reopened_page_continues(session):
    from playwright.sync_api import sync_playwright

    from tests.e2e.test_serve_browser import CHROMIUM_ARGS

    with _serving(session) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(f"{url}/review")
        page.wait_for_function("document.getElementById('auto').textContent.includes('auto')")
        shown = [page.inner_text("#auto").split(":")[0]]
        for key in ("ArrowLeft", "2", "ArrowRight"):
            page.keyboard.press(key)
            page.wait_for_function(f"window.facelabLatencies.length >= {len(shown)}")
            shown.append(page.inner_text("#auto").split(":")[0])
        page.keyboard.press("u")  # undo the last (ArrowRight)
        page.wait_for_function("document.getElementById('status').textContent.startsWith('undone')")
        page.close()
        again = browser.new_page()  # a reopened page continues where the last one stopped
        again.goto(f"{url}/review")
        again.wait_for_function("document.getElementById('progress').textContent.includes('reviewed')")
        progress = again.inner_text("#progress")
        browser.close()
    rows = _rows(session.labels.path)
    assert rows[shown[0]]["orientation"] == "left" and rows[shown[1]]["orientation"] == "center"
    assert rows[shown[2]]["orientation_reviewed"] == "0"  # undone
    assert progress.startswith("2 of 24 reviewed")


# ---- keys that need encoding --------------------------------------------------------------------------
ODD_NAMES = ["p+q.png", "p q.png", "a&b.png", "x#y.png", "100%.png", "ü.png", "k=v;w.png", "it's<b>.png"]


@pytest.fixture(scope="module")
def odd_store(tmp_path_factory):
    """A store whose keys hold every character a URL, a query string or HTML treats specially; each face a
    colour of its own, so a served image tells which key it is of."""
    import cv2
    import numpy as np

    root = tmp_path_factory.mktemp("odd")
    (root / "photos" / "c").mkdir(parents=True)
    for i, name in enumerate(ODD_NAMES):
        cv2.imwrite(str(root / "photos" / "c" / name), np.full((24, 24, 3), (10 + 30 * i, 200 - 20 * i, 7 * i), np.uint8))
    cli_json("data", "prepare", "folder", root / "photos", "--out", root / "store", "--size", 16, "--workers", 1)
    return root / "store"


def _odd_session(store, path):
    from facelab.data.labels_file import columns

    st = Store.open(store)
    rows = [{c: "" for c in columns(["orientation"])} | {"key": str(k), "orientation": "center",
                                                         "orientation_confidence": f"{i / 10:.1f}",
                                                         "orientation_reviewed": "0"} for i, k in enumerate(st.keys)]
    LabelsFile(path, ["orientation"], rows).save()
    return ReviewSession(st, LabelsFile.read(path, store=st))


def _colour(png_bytes):
    import cv2
    import numpy as np

    return tuple(cv2.imdecode(np.frombuffer(png_bytes, np.uint8), cv2.IMREAD_COLOR)[0, 0])


def test_every_key_travels_encoded_so_the_face_shown_is_the_face_labelled(odd_store, tmp_path):
    session = _odd_session(odd_store, tmp_path / "labels.csv")
    st = session.store
    colour_of = {str(k): _colour(session.image_png(str(k))) for k in st.keys}
    assert len(set(colour_of.values())) == len(ODD_NAMES)  # every face tells its key
    client = TestClient(create_app(None, review=session))
    face = client.get("/v1/review/next", params={"task": "orientation"}).json()["next"]
    decided = {}
    while face is not None:
        png = client.get(face["image"])  # the URL exactly as the page uses it
        assert png.status_code == 200 and _colour(png.content) == colour_of[face["key"]], face["key"]
        decided[face["key"]] = ("left", "center", "right")[len(decided) % 3]
        body = {"key": face["key"], "task": "orientation", "cls": decided[face["key"]]}
        face = client.post("/v1/review/decision", json=body).json()["next"]
    rows = _rows(session.labels.path)
    assert set(decided) == set(rows) and len(rows) == len(ODD_NAMES)
    assert all(rows[k]["orientation"] == c and rows[k]["orientation_reviewed"] == "1" for k, c in decided.items())
    undone = client.post("/v1/review/undo", params={"task": "orientation"}).json()
    assert undone["undone"] in colour_of and _rows(session.labels.path)[undone["undone"]]["orientation_reviewed"] == "0"
    assert client.get(undone["next"]["image"]).status_code == 200


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium here: `apt-get install chromium` (.ci/run does)")
def test_the_page_shows_and_labels_the_face_of_the_key_it_names(odd_store, tmp_path):
    from urllib.parse import parse_qs, urlparse

    from playwright.sync_api import sync_playwright

    from tests.e2e.test_serve_browser import CHROMIUM_ARGS

    session = _odd_session(odd_store, tmp_path / "labels.csv")
    requested = []
    with _serving(session) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.on("request", lambda r: requested.append(parse_qs(urlparse(r.url).query).get("key", [None])[0])
                if "/v1/review/image" in r.url else None)
        page.goto(f"{url}/review")
        page.wait_for_function("document.getElementById('auto').textContent.includes('auto')")
        shown = []
        for i in range(len(ODD_NAMES)):
            shown.append(page.inner_text("#auto").rsplit(": auto", 1)[0])
            page.keyboard.press("ArrowLeft" if i % 2 else "ArrowRight")
            page.wait_for_function(f"document.getElementById('progress').textContent.startsWith('{i + 1} of')")
        browser.close()
    rows = _rows(session.labels.path)
    assert sorted(shown) == sorted(rows) and requested == shown  # each image fetched is of the key shown
    assert [rows[k]["orientation"] for k in shown] == ["right" if i % 2 == 0 else "left" for i in range(len(shown))]


# ---- the journal and the file on disk ---------------------------------------------------------------------
def test_a_journal_of_another_store_or_file_is_never_a_server_error(session, tmp_path):
    import json

    client = TestClient(create_app(None, review=session))
    journal = session.journal
    key = next(iter(_rows(session.labels.path)))
    journal.write_text("\n".join([
        json.dumps({"key": "someone/else.jpg", "task": "orientation", "before": "left", "before_reviewed": "0",
                    "after": "right"}),
        json.dumps({"key": key, "task": "mood", "before": "", "before_reviewed": "0", "after": "happy"}),
        json.dumps({"undo": "someone/else.jpg", "task": "orientation"}),
        json.dumps(["not", "a", "record"]), "{torn", json.dumps({"key": key}),
        # a decision of a file with the same keys: this file never holds it
        json.dumps({"key": key, "task": "orientation", "before": "center", "before_reviewed": "0", "after": "left"}),
    ]) + "\n")
    st = session.store
    reopened = ReviewSession(st, LabelsFile.read(session.labels.path, store=st))
    assert reopened.foreign == 5 and len(reopened.history) == 1
    client = TestClient(create_app(None, review=reopened))
    assert client.get("/v1/review/tasks").json()["foreign_journal_records"] == 5
    before = session.labels.path.read_bytes()
    first = client.post("/v1/review/undo", params={"task": "orientation"})
    assert first.status_code == 409 and f"cannot undo {key}" in first.json()["detail"]
    second = client.post("/v1/review/undo", params={"task": "orientation"})
    assert second.status_code == 409 and second.json()["detail"] == "nothing to undo"
    assert session.labels.path.read_bytes() == before


def test_a_file_rewritten_by_label_auto_meanwhile_is_merged_never_overwritten(session, labelled):
    path = session.labels.path
    client = TestClient(create_app(None, review=session))
    first = client.get("/v1/review/next", params={"task": "orientation"}).json()["next"]["key"]
    client.post("/v1/review/decision", json={"key": first, "task": "orientation", "cls": "left"})
    # another writer while the page is open (here label auto, relabelling at another threshold)
    cli_json("label", "auto", labelled / "store", "--out", path, "-o", "orientation.threshold=3")
    relabelled = _rows(path)
    assert relabelled[first]["orientation"] == "left" and relabelled[first]["orientation_reviewed"] == "1"
    r = client.get("/v1/review/next", params={"task": "orientation"}).json()
    assert "changed on disk" in r["notice"]
    second = r["next"]["key"]
    r = client.post("/v1/review/decision", json={"key": second, "task": "orientation", "cls": "right"}).json()
    assert r["saved"] and r["notice"] is None
    after = _rows(path)
    for key, row in relabelled.items():  # label auto's rows, not the session's older ones, plus the decision
        expected = row | ({"orientation": "right", "orientation_reviewed": "1"} if key == second else {})
        assert after[key] == expected


def test_a_decision_on_a_row_a_person_decided_elsewhere_meanwhile_is_refused(session, labelled):
    path = session.labels.path
    st = Store.open(labelled / "store")
    client = TestClient(create_app(None, review=session))
    key = client.get("/v1/review/next", params={"task": "light"}).json()["next"]["key"]
    other = ReviewSession(st, LabelsFile.read(path, store=st))  # another page, another server's rows
    other.decide(Decision(key=key, task="light", cls="left"))
    decided = path.read_bytes()
    r = client.post("/v1/review/decision", json={"key": key, "task": "light", "cls": "right"})
    assert r.status_code == 409 and "now holds light left (reviewed)" in r.json()["detail"]
    assert path.read_bytes() == decided
    # the page then shows the file as it is: that face is no longer offered
    assert client.get("/v1/review/next", params={"task": "light"}).json()["next"]["key"] != key
    path.write_text("not,a,labels,file\n")
    broken = client.post("/v1/review/decision", json={"key": key, "task": "orientation", "cls": "left"})
    assert broken.status_code == 409 and "not a facelab labels file" in broken.json()["detail"]
    assert path.read_text() == "not,a,labels,file\n"


def test_a_writer_in_another_process_holds_off_every_decision(session):
    import os
    import subprocess
    import sys
    import textwrap

    path = session.labels.path
    key = session.next_face("orientation")["key"]
    holder = textwrap.dedent("""
        import sys
        from facelab.data.labels_file import labels_lock
        with labels_lock(sys.argv[1], activity="labelled by `facelab label auto`"):
            print("held", flush=True)
            sys.stdin.read()
    """)
    other = subprocess.Popen([sys.executable, "-c", holder, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    client = TestClient(create_app(None, review=session))
    try:
        assert other.stdout.readline().strip() == "held"
        before = path.read_bytes()
        r = client.post("/v1/review/decision", json={"key": key, "task": "orientation", "cls": "left"})
        assert r.status_code == 409 and f"being labelled by `facelab label auto` (pid {other.pid})" in r.json()["detail"]
        assert path.read_bytes() == before and session.next_face("orientation")["key"] == key  # nothing changed
        with pytest.raises(DataError, match="being labelled"):
            with review_lock(path):
                pass
    finally:
        other.stdin.close()
        other.wait(timeout=60)
    assert client.post("/v1/review/decision", json={"key": key, "task": "orientation", "cls": "left"}).json()["saved"]


def test_a_failed_write_keeps_the_file_and_the_page_as_they_were(session, monkeypatch):
    import errno
    import os

    from facelab.data import labels_file

    path = session.labels.path
    client = TestClient(create_app(None, review=session))
    key = session.next_face("orientation")["key"]
    before = path.read_bytes()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(labels_file, "atomic_write_bytes", full)
    r = client.post("/v1/review/decision", json={"key": key, "task": "orientation", "cls": "right"})
    assert r.status_code == 507 and "no space left" in r.json()["detail"].lower()
    assert path.read_bytes() == before and session.next_face("orientation")["key"] == key
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.undo()
    monkeypatch.setattr("facelab.serve.review.append_jsonl", full)  # the undo history cannot be written
    r = client.post("/v1/review/decision", json={"key": key, "task": "orientation", "cls": "right"}).json()
    assert r["saved"] and "undo history" in r["warning"] and _rows(path)[key]["orientation"] == "right"


def test_a_labels_file_in_a_folder_it_cannot_write_is_refused_before_serving(session, monkeypatch):
    import errno
    import os

    from facelab.data import labels_file

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    st = session.store
    labels = LabelsFile.read(session.labels.path, store=st)
    monkeypatch.setattr(labels_file.tempfile, "mkstemp", read_only)
    with pytest.raises(DataError, match="does not take new files \\(Read-only file system\\)"):
        ReviewSession(st, labels)
    monkeypatch.setattr(labels_file.os, "open", read_only)  # nor the lock file
    with pytest.raises(DataError, match="does not take the lock file"):
        with review_lock(session.labels.path):
            pass
