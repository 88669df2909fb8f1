"""The page of ``facelab serve`` and its API docs in a real browser: Playwright drives Debian's chromium (``.ci/run``
installs it when missing; skipped with a message where it cannot be installed). Nothing is downloaded, and every
test fails when the page asks for anything that is not on this server.

Screenshots are written to each test's tmp folder (``page.png``, ``error.png``, ``no-face.png``, ``capped.png``,
``busy.png``, ``narrow.png``, ``docs.png``)."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import cv2
import numpy as np
import pytest
import uvicorn

from facelab.deploy import load_engine
from facelab.eval.photos import PhotoPredictor
from facelab.serve.app import create_app
from facelab.serve.config import ServeConfig
from tests.fixtures.faces import blank, two_faces
from tests.fixtures.foreign_files import foreign_files

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium here: `apt-get install chromium` (.ci/run does)")
#: flags for a headless chromium on a machine without a network (as root: no sandbox)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]
MAX_FACES = 3
#: the attribute rows of the chosen face: [label, shown value, bar width (% of its track), predicted?]
ROWS_JS = """els => els.map(e => [e.dataset.label, e.querySelector('.value').textContent,
    100 * e.querySelector('.bar span').getBoundingClientRect().width
        / e.querySelector('.bar').getBoundingClientRect().width,
    e.classList.contains('yes')])"""
#: the RGB of the canvas pixel at photo coordinates (x, y) of a photo ``width`` px wide
PIXEL_JS = """([x, y, width]) => { const c = document.getElementById('canvas'), s = c.width / width;
    return Array.from(c.getContext('2d').getImageData(Math.round(x * s), Math.round(y * s), 1, 1).data).slice(0, 3); }"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _png(path: Path, image: np.ndarray) -> Path:
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return path


@pytest.fixture(scope="module")
def server(clf_run):
    predictor = PhotoPredictor(load_engine(clf_run[0]), faces="detect")
    port = _free_port()
    app = create_app(predictor, ServeConfig(max_faces=MAX_FACES))
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.started, "the server did not start"
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser, server):
    """A page of 1280x900 whose every request to another host is refused and recorded (checked at the end)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    outside: list[str] = []

    def guard(route):
        if urlparse(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", guard)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    yield page
    context.close()
    assert not outside, f"the page asked for resources elsewhere: {outside}"
    assert not errors, f"script errors: {errors}"


def _api(server: str, path: Path) -> dict:
    import httpx2 as httpx

    r = httpx.post(f"{server}/v1/predict", files={"file": (path.name, path.read_bytes(), "application/octet-stream")})
    r.raise_for_status()
    return r.json()


def _open(page, server: str) -> None:
    page.goto(server + "/")
    page.wait_for_function("document.getElementById('model').textContent.includes('labels')")


def _upload(page, path: Path, *, expect: str = "done") -> None:
    page.set_input_files("#file", str(path))
    page.wait_for_selector(f"#status.{expect}")


def _expected_rows(face: dict) -> dict[str, tuple[float, bool]]:
    rows = {}
    for name, p in face["attributes"].items():
        if isinstance(p, float):
            rows[name] = (p, face["predicted"][name] == 1)
        else:
            rows.update({f"{name}={cls}": (q, face["predicted"][name] == cls) for cls, q in p.items()})
    return rows


def _check_rows(shown: list, face: dict) -> None:
    """Every attribute of ``face`` is shown once, with its probability as text and as the bar's length, the
    predicted ones first, each group by probability (highest first)."""
    want = _expected_rows(face)
    assert sorted(r[0] for r in shown) == sorted(want)
    for label, text, width, yes in shown:
        p, predicted = want[label]
        assert float(text.rstrip("%")) == pytest.approx(100 * p, abs=0.051), label
        assert width == pytest.approx(100 * p, abs=0.6), label
        assert yes == predicted, label
    flags = [r[3] for r in shown]
    assert flags == sorted(flags, reverse=True)  # the predicted ones first
    for group in (True, False):
        ps = [want[r[0]][0] for r in shown if r[3] is group]
        assert ps == sorted(ps, reverse=True)


# ---- the page --------------------------------------------------------------------------------------------
def test_bars_equal_the_apis_probabilities_for_every_face(page, server, tmp_path):
    photo = _png(tmp_path / "two.png", two_faces())
    api = _api(server, photo)
    assert len(api["faces"]) == 2
    _open(page, server)
    assert not page.is_visible("#result")  # no empty frame before a photo is chosen
    _upload(page, photo)
    assert "2 faces" in page.inner_text("#status") and not page.is_visible("#note")
    assert page.eval_on_selector_all("#faces [role=tab]", "bs => bs.length") == 2
    _check_rows(page.eval_on_selector_all("#attributes [data-label]", ROWS_JS), api["faces"][0])
    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    # the second face by clicking inside its box on the photo, then back to the first with the keyboard
    box = api["faces"][1]["box"]
    canvas = page.query_selector("#canvas").bounding_box()
    scale = canvas["width"] / api["image"]["width"]
    page.mouse.click(canvas["x"] + (box[0] + box[2] / 2) * scale, canvas["y"] + (box[1] + box[3] / 2) * scale)
    assert page.get_attribute("#faces [role=tab]:nth-child(2)", "aria-selected") == "true"
    _check_rows(page.eval_on_selector_all("#attributes [data-label]", ROWS_JS), api["faces"][1])
    page.keyboard.press("ArrowLeft")
    assert page.get_attribute("#faces [role=tab]:nth-child(1)", "aria-selected") == "true"
    _check_rows(page.eval_on_selector_all("#attributes [data-label]", ROWS_JS), api["faces"][0])


def test_the_photo_is_shown_large_with_the_faces_boxed_where_the_api_says(page, server, tmp_path):
    photo = _png(tmp_path / "two.png", two_faces())  # 256 x 128 px
    api = _api(server, photo)
    _open(page, server)
    _upload(page, photo)
    canvas = page.query_selector("#canvas").bounding_box()
    side = page.query_selector("#attributes").bounding_box()
    assert canvas["width"] >= 480, canvas  # a small photo is enlarged, not shown at 256 px
    assert canvas["width"] / canvas["height"] == pytest.approx(2.0, rel=0.02)
    assert side["x"] > canvas["x"] + canvas["width"]  # the attributes beside the photo, not below it
    xs = set(page.eval_on_selector_all("#attributes .grid li",
                                       "ls => ls.map(l => Math.round(l.getBoundingClientRect().x))"))
    assert len(xs) >= 2  # a grid of columns, not one long column
    # the chosen face's box is drawn in its colour along the top edge the API gives, the other face's box too
    for i, face in enumerate(api["faces"]):
        x, y, w, _ = face["box"]
        rgb = page.evaluate(PIXEL_JS, [x + w / 2, y, api["image"]["width"]])
        assert rgb == pytest.approx([47, 111, 223] if i == 0 else [224, 96, 43], abs=70), (i, rgb)


def test_an_error_after_a_result_hides_it_and_says_why(page, server, tmp_path):
    photo = _png(tmp_path / "two.png", two_faces())
    notes = tmp_path / "notes.jpg"
    notes.write_text("BM these are notes, not a photo: a text file that starts like a bitmap")
    eps = tmp_path / "holiday.jpg"
    eps.write_bytes(foreign_files()["holiday.jpg"])
    cut = tmp_path / "cut.png"
    cut.write_bytes(photo.read_bytes()[:300])
    _open(page, server)
    for bad, status in ((notes, "415"), (eps, "415"), (cut, "422")):
        _upload(page, photo)
        assert page.is_visible("#result") and page.eval_on_selector_all("#attributes [data-label]", "e => e.length")
        _upload(page, bad, expect="error")
        text = page.inner_text("#status")
        assert f"({status})" in text and bad.name in text, text
        assert not page.is_visible("#result") and not page.is_visible("#canvas")
        assert page.eval_on_selector_all("#attributes [data-label], #faces [role=tab]", "e => e.length") == 0
    page.screenshot(path=str(tmp_path / "error.png"), full_page=True)


def test_no_face_and_capped_faces_are_said_on_the_page(page, server, tmp_path):
    _open(page, server)
    _upload(page, _png(tmp_path / "blank.png", blank()))
    assert "0 faces" in page.inner_text("#status")
    assert "no face found" in page.inner_text("#note") and page.is_visible("#canvas")
    assert page.eval_on_selector_all("#attributes [data-label], #faces [role=tab]", "e => e.length") == 0
    page.screenshot(path=str(tmp_path / "no-face.png"), full_page=True)
    mosaic = np.concatenate([two_faces((1, 13)), two_faces((15, 1))], axis=0)  # 4 faces
    _upload(page, _png(tmp_path / "four.png", mosaic))
    assert f"{MAX_FACES} faces" in page.inner_text("#status")
    assert "4 faces found" in page.inner_text("#note") and "max_faces" in page.inner_text("#note")
    assert page.eval_on_selector_all("#faces [role=tab]", "e => e.length") == MAX_FACES
    page.screenshot(path=str(tmp_path / "capped.png"), full_page=True)


def test_a_photo_can_be_dropped_or_chosen_with_the_keyboard(page, server, tmp_path):
    photo = _png(tmp_path / "two.png", two_faces())
    # file choosers are intercepted from here on: the interception is switched on by the first listener, and
    # switched on only by expect_file_chooser it raced the key press (the dialog then opened unseen, half the time)
    page.on("filechooser", lambda chooser: None)
    _open(page, server)
    data = list(photo.read_bytes())
    transfer = page.evaluate_handle("""bytes => { const t = new DataTransfer();
        t.items.add(new File([new Uint8Array(bytes)], 'dropped.png', {type: 'image/png'})); return t; }""", data)
    page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})
    page.wait_for_selector("#status.done")
    assert "dropped.png" in page.inner_text("#status")
    page.focus("#drop")
    with page.expect_file_chooser() as chooser:
        page.keyboard.press("Enter")
    chooser.value.set_files(str(photo))
    page.wait_for_function("document.getElementById('status').textContent.includes('two.png')")
    page.set_viewport_size({"width": 420, "height": 900})  # a phone: the attributes go below the photo
    page.wait_for_timeout(100)
    canvas = page.query_selector("#canvas").bounding_box()
    assert canvas["width"] <= 420 and page.query_selector("#attributes").bounding_box()["y"] > canvas["y"]
    page.screenshot(path=str(tmp_path / "narrow.png"), full_page=True)


def test_the_page_shows_that_it_is_working_until_the_answer_comes(page, server, tmp_path):
    held = []
    page.route("**/v1/predict", lambda route: held.append(route))  # the answer waits until released
    _open(page, server)
    page.set_input_files("#file", str(_png(tmp_path / "two.png", two_faces())))
    page.wait_for_selector("#status.busy")
    assert "Finding faces in two.png" in page.inner_text("#status")
    assert page.get_attribute("main", "aria-busy") == "true" and not page.is_visible("#result")
    page.screenshot(path=str(tmp_path / "busy.png"))
    page.wait_for_function("true")  # lets the route handler run
    assert len(held) == 1
    held[0].continue_()
    page.wait_for_selector("#status.done")
    assert page.get_attribute("main", "aria-busy") == "false" and page.is_visible("#result")


# ---- the API docs ------------------------------------------------------------------------------------------
def test_the_api_docs_render_every_operation_offline(page, server, tmp_path):
    page.goto(server + "/docs")
    page.wait_for_selector(".opblock")
    text = page.inner_text("body")
    assert "Unable to render" not in text
    ops = page.eval_on_selector_all(".opblock-summary-path", "ps => ps.map(p => p.textContent.replace(/\\u200b/g, ''))")
    assert {"/v1/predict", "/v1/model", "/healthz"} <= set(ops), ops
    page.click(".opblock-post .opblock-summary")  # an operation opens, with its responses
    page.wait_for_selector(".opblock-post .responses-table")
    assert "415" in page.inner_text(".opblock-post .responses-table")
    page.screenshot(path=str(tmp_path / "docs.png"), full_page=True)
