"""The page of ``facelab serve`` in a real browser: Playwright drives Debian's chromium (``.ci/run`` installs it
when missing; skipped with a message where it cannot be installed). Nothing is downloaded."""

from __future__ import annotations

import shutil
import socket
import threading
import time

import cv2
import pytest
import uvicorn

from facelab.deploy import load_engine
from facelab.eval.photos import PhotoPredictor
from facelab.serve.app import create_app
from tests.fixtures.faces import two_faces

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium here: `apt-get install chromium` (.ci/run does)")
#: flags for a headless chromium on a machine without a network (as root: no sandbox)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(clf_run):
    predictor = PhotoPredictor(load_engine(clf_run[0]), faces="detect")
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(predictor), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.started, "the server did not start"
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


def test_the_page_uploads_a_photo_and_shows_one_bar_per_attribute(server, tmp_path):
    import httpx2 as httpx
    from playwright.sync_api import sync_playwright

    photo = tmp_path / "two.png"
    cv2.imwrite(str(photo), cv2.cvtColor(two_faces(), cv2.COLOR_RGB2BGR))
    api = httpx.post(f"{server}/v1/predict", files={"file": ("two.png", photo.read_bytes(), "image/png")}).json()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(server + "/")
            page.wait_for_function("document.getElementById('model').textContent.includes('labels')")
            page.set_input_files("#file", str(photo))
            page.wait_for_selector("#bars tbody tr")
            status = page.inner_text("#status")
            rows = page.eval_on_selector_all("#bars tbody tr", "rs => rs.map(r => [r.dataset.label, r.cells[2].textContent])")
            tabs = page.eval_on_selector_all("#faces button", "bs => bs.length")
            page.click("#faces button:nth-child(2)")
            second = page.eval_on_selector_all("#bars tbody tr", "rs => rs.map(r => [r.dataset.label, r.cells[2].textContent])")
            page.screenshot(path=str(tmp_path / "page.png"))
        finally:
            browser.close()
    assert "2 face(s)" in status and tabs == 2
    for face, shown in zip(api["faces"], (rows, second)):
        values = dict(shown)
        for name, p in face["attributes"].items():
            if isinstance(p, float):
                assert float(values[name]) == pytest.approx(p, abs=5e-4), name
            else:
                for cls, q in p.items():
                    assert float(values[f"{name}={cls}"]) == pytest.approx(q, abs=5e-4), (name, cls)
    assert (tmp_path / "page.png").stat().st_size > 1000
