"""The review page's API: least-confident first, decisions written at once, undo (across restarts), one
server per labels file; and the page driven by keys in chromium."""

from __future__ import annotations

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
        with pytest.raises(DataError, match="being reviewed by another"):
            with review_lock(session.labels.path):
                pass
    with review_lock(session.labels.path):  # released: may be reviewed again
        pass


CHROMIUM = shutil.which("chromium")


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium here: `apt-get install chromium` (.ci/run does)")
def test_the_page_labels_with_keys_and_a_reopened_page_continues(session):
    from playwright.sync_api import sync_playwright

    from tests.e2e.test_serve_browser import CHROMIUM_ARGS

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
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/review")
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
            again.goto(f"http://127.0.0.1:{port}/review")
            again.wait_for_function("document.getElementById('progress').textContent.includes('reviewed')")
            progress = again.inner_text("#progress")
            browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    rows = _rows(session.labels.path)
    assert rows[shown[0]]["orientation"] == "left" and rows[shown[1]]["orientation"] == "center"
    assert rows[shown[2]]["orientation_reviewed"] == "0"  # undone
    assert progress.startswith("2 of 24 reviewed")
