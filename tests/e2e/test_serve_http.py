"""The HTTP layer of ``facelab serve`` and ``facelab label review`` under hostile and heavy traffic, with real
sockets against a real server (uvicorn in a thread on a free port, or the CLI in a subprocess).

Deadlines here are a fraction of a second so that the tests are quick; every wait for the server to act is
bounded by a generous timeout, and no assertion depends on how fast this machine is.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import uvicorn

from facelab.deploy import load_engine
from facelab.errors import FacelabError
from facelab.eval.photos import PhotoPredictor
from facelab.serve.app import create_app
from facelab.serve.config import ServeConfig
from facelab.serve.server import HttpConfig, listen, uvicorn_config
from tests.e2e.conftest import cli, cli_error, cli_json
from tests.e2e.test_serve import png
from tests.fixtures.faces import blank

WAIT = 20.0  # the longest any test waits for the server to do something it must do


@pytest.fixture(scope="module")
def predictor(clf_run) -> PhotoPredictor:
    return PhotoPredictor(load_engine(clf_run[0]), faces="aligned")


@contextlib.contextmanager
def running(app, **limits):
    """``app`` served on a free port of 127.0.0.1 under ``HttpConfig(**limits)``, in a thread; yields the port."""
    http = HttpConfig(port=0, **limits)
    with listen(http) as listener:
        server = uvicorn.Server(uvicorn_config(app, http))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [listener.sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + WAIT
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
            time.sleep(0.02)
        try:
            yield listener.port
        finally:
            server.should_exit = True
            thread.join(timeout=WAIT)


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    return s


def read_response(s: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response (status, lower-cased headers, body) read from ``s``; skips a 100 Continue."""
    buf = b""
    while True:
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            assert chunk, f"the server closed the connection without a response (got {buf!r})"
            buf += chunk
        head, _, buf = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        if status != 100:
            break
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    n = int(headers.get("content-length", 0))
    while len(buf) < n:
        chunk = s.recv(65536)
        assert chunk, "the server closed the connection in the middle of a response"
        buf += chunk
    return status, headers, buf[:n]


def get(s: socket.socket, path: str = "/healthz") -> tuple[int, dict[str, str], bytes]:
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    return read_response(s)


def closed_by_server(s: socket.socket, timeout: float = WAIT) -> bytes:
    """Wait until the server closes ``s``; what it sent before closing."""
    s.settimeout(timeout)
    got = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := s.recv(65536):
            got += chunk
    return got


def still_open(s: socket.socket) -> bool:
    s.settimeout(0.2)
    try:
        return s.recv(1) != b""
    except socket.timeout:
        return True
    except ConnectionResetError:
        return False


def is_json_refusal(status: int, headers: dict[str, str], body: bytes, code: int) -> bool:
    return status == code and headers.get("content-type") == "application/json" and "detail" in json.loads(body)


def multipart(data: bytes, boundary: str = "facelabtest") -> tuple[bytes, str]:
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


# ---- idle and slow connections ---------------------------------------------------------------------------
def test_200_idle_connections_do_not_shut_out_healthz_or_predictions(predictor):
    """Connections are no limit on requests: 200 sockets that connect and send nothing leave /healthz and
    /v1/predict answering (uvicorn's limit_concurrency, which counts them, would answer 503 from the 16th)."""
    with running(create_app(predictor)) as port:
        idle = [connect(port) for _ in range(200)]
        try:
            with connect(port) as s:
                status, _, body = get(s)
                assert status == 200 and json.loads(body)["status"] == "ok"
                payload, ctype = multipart(png(blank((64, 64))))
                s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: t\r\nContent-Type: " + ctype.encode() +
                          b"\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload)
                status, _, body = read_response(s)
                assert status == 200 and len(json.loads(body)["faces"]) == 1
            assert all(still_open(s) for s in idle[-10:])  # they were still held open meanwhile
        finally:
            for s in idle:
                s.close()


def test_silent_and_slow_clients_are_timed_out_with_a_json_408(predictor):
    app = create_app(predictor, ServeConfig(read_timeout_s=0.5))
    with running(app, header_timeout_s=0.5, read_timeout_s=0.5, keep_alive_s=0.5) as port:
        with connect(port) as silent:  # connects and sends nothing: closed, nothing to answer
            assert closed_by_server(silent) == b""

        with connect(port) as loris:  # the request head one byte at a time
            loris.settimeout(WAIT)
            head = b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Padding: " + b"a" * 1000
            got = b""
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                for i in range(len(head)):
                    loris.sendall(head[i:i + 1])
                    time.sleep(0.05)
                    loris.setblocking(False)
                    with contextlib.suppress(BlockingIOError):
                        got += loris.recv(65536)
                    loris.setblocking(True)
                    if got:
                        break
            got += closed_by_server(loris)
            assert got.startswith(b"HTTP/1.1 408 ") and b'"detail"' in got and b"application/json" in got

        with connect(port) as half:  # a complete head, then half of the body it announces
            body, ctype = multipart(png(blank((64, 64))))
            half.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: t\r\nContent-Type: " + ctype.encode() +
                         b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body[:len(body) // 2])
            status, headers, reply = read_response(half)
            assert is_json_refusal(status, headers, reply, 408) and "did not arrive" in json.loads(reply)["detail"]

        with connect(port) as kept:  # one request, then the next head trickled on the kept-alive connection
            assert get(kept)[0] == 200
            kept.sendall(b"GET /healthz HTTP/1.1\r\n")
            got = closed_by_server(kept)
            assert got.startswith(b"HTTP/1.1 408 ") and b"request head" in got

        with connect(port) as idle:  # kept alive and then silent: closed
            assert get(idle)[0] == 200
            assert closed_by_server(idle) == b""

        with connect(port) as late:  # a GET whose small body ends after its answer, then silence: closed
            late.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\n")
            assert read_response(late)[0] == 200
            late.sendall(b"abc")
            assert closed_by_server(late) == b""

        with connect(port) as trickle:  # a GET announcing a body it sends a byte at a time: answered, then cut
            trickle.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n")
            assert read_response(trickle)[0] == 200
            deadline = time.monotonic() + WAIT
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                while time.monotonic() < deadline and still_open(trickle):
                    trickle.sendall(b"x")
            assert time.monotonic() < deadline, "a trickled body kept the connection open"


def test_past_the_connection_cap_the_longest_idle_connections_make_room(predictor):
    with running(create_app(predictor), max_connections=4, keep_alive_s=60) as port:
        kept = []
        for _ in range(4):  # each served once, then idle, one after the other
            kept.append(connect(port))
            assert get(kept[-1])[0] == 200
        with connect(port) as newcomer:
            assert get(newcomer)[0] == 200
            assert closed_by_server(kept[0]) == b""  # the longest idle made room
            assert all(get(s)[0] == 200 for s in kept[1:])  # the others still serve
        for s in kept:
            s.close()


def test_when_every_connection_is_busy_the_next_gets_a_json_503_with_retry_after(predictor):
    body, ctype = multipart(png(blank((64, 64))))
    with running(create_app(predictor), max_connections=4, read_timeout_s=60) as port:
        busy = []
        for _ in range(4):  # each in the middle of sending an upload (the server asked for its body)
            s = connect(port)
            s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Type: " +
                      ctype.encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(body))
            assert s.recv(100).startswith(b"HTTP/1.1 100 ")
            busy.append(s)
        with connect(port) as s:
            status, headers, reply = get(s)
            assert is_json_refusal(status, headers, reply, 503) and headers["retry-after"] == "1"
        for s in busy:  # they finish their uploads and are answered
            s.sendall(body)
            assert read_response(s)[0] == 200
            s.close()


def test_uploads_held_at_once_are_bounded_by_a_byte_budget():
    """Many simultaneous uploads cannot exhaust memory: past the guard's budget a body gets a JSON 503 with
    Retry-After before it is read (declared length) or as soon as it outgrows it (chunked); the budget is given
    back when a request ends."""
    import asyncio

    from facelab.serve.guard import BodyGuard

    async def scenario():
        release = asyncio.Event()

        async def app(scope, receive, send):  # holds its body until released
            await receive()
            await release.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

        guard = BodyGuard(app, max_bytes=1000, timeout_s=5, budget_bytes=1500)
        sent: dict[str, list] = {"a": [], "b": [], "c": [], "d": []}

        def sender(name):
            async def send(message):
                sent[name].append(message)
            return send

        def body(n, chunks=1):
            parts = [{"type": "http.request", "body": b"x" * (n // chunks), "more_body": i < chunks - 1}
                     for i in range(chunks)]

            async def receive():
                return parts.pop(0) if parts else {"type": "http.disconnect"}
            return receive

        def scope(n=None):
            headers = [(b"content-length", str(n).encode())] if n is not None else []
            return {"type": "http", "method": "POST", "headers": headers}

        a = asyncio.create_task(guard(scope(1000), body(1000), sender("a")))  # holds 1000 of 1500
        await asyncio.sleep(0.05)
        await guard(scope(800), body(800), sender("b"))  # declared: refused before reading
        await guard(scope(), body(900, chunks=3), sender("c"))  # chunked: refused when it outgrows the budget
        assert guard.held == 1000
        release.set()
        await a
        assert guard.held == 0
        await guard(scope(800), body(800), sender("d"))  # the budget is back
        return sent

    sent = asyncio.run(scenario())
    for name in ("b", "c"):
        start = sent[name][0]
        assert start["status"] == 503 and dict(start["headers"])[b"retry-after"] == b"1", name
        assert "busy" in json.loads(sent[name][1]["body"])["detail"]
    assert sent["a"][0]["status"] == 200 and sent["d"][0]["status"] == 200


def test_a_client_that_does_not_read_its_response_is_cut_off():
    """A response stuck because the client stopped reading is aborted after read_timeout_s (the kernel buffers
    of a loopback connection hide this from a real-socket test, so the transport is a stand-in)."""
    import asyncio

    from uvicorn.server import ServerState

    from facelab.serve.server import GuardedH11Protocol

    class Transport(asyncio.Transport):
        def __init__(self):
            super().__init__()
            self.aborted = self.closing = False

        def get_extra_info(self, name, default=None):
            return {"sockname": ("127.0.0.1", 1), "peername": ("127.0.0.1", 2)}.get(name, default)

        def is_closing(self):
            return self.closing

        def abort(self):
            self.aborted = self.closing = True

        def close(self):
            self.closing = True

        def write(self, data):
            pass

        def pause_reading(self):
            pass

        def resume_reading(self):
            pass

    async def scenario(resume: bool):
        async def app(scope, receive, send):
            pass

        config = uvicorn_config(app, HttpConfig(read_timeout_s=0.2, header_timeout_s=60))
        protocol = GuardedH11Protocol(config, ServerState(), {})
        transport = Transport()
        protocol.connection_made(transport)
        protocol.pause_writing()
        if resume:
            await asyncio.sleep(0.05)
            protocol.resume_writing()  # the client read: no cut
        await asyncio.sleep(0.6)
        return transport.aborted

    assert asyncio.run(scenario(resume=False)) is True
    assert asyncio.run(scenario(resume=True)) is False


# ---- every refusal is JSON -------------------------------------------------------------------------------
def test_64_concurrent_uploads_on_a_full_service_are_all_json_503_with_retry_after(predictor):
    """When the prediction slots are full, every one of 64 simultaneous uploads gets the documented 503
    (uvicorn's limit_concurrency would have answered those past its 16th connection in plain text)."""
    app = create_app(predictor, ServeConfig(max_concurrent=1, max_queue=0))
    slots = app.app.state.slots
    payload, ctype = multipart(png(blank((64, 64))))
    start = threading.Barrier(64)

    def upload(_: int) -> tuple[int, str | None, str | None, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
        conn.connect()
        start.wait(timeout=WAIT)
        conn.request("POST", "/v1/predict", body=payload, headers={"Content-Type": ctype})
        r = conn.getresponse()
        out = r.status, r.getheader("content-type"), r.getheader("retry-after"), r.read()
        conn.close()
        return out

    with running(app) as port:
        slots.busy = slots.n + slots.queue  # every slot running, the queue full
        try:
            with ThreadPoolExecutor(64) as pool:
                answers = list(pool.map(upload, range(64)))
        finally:
            slots.busy = 0
        for status, ctype_, retry, body in answers:
            assert (status, ctype_, retry) == (503, "application/json", "1") and "busy" in json.loads(body)["detail"]
        assert _post_ok(port, payload, ctype)  # free again


def _post_ok(port: int, payload: bytes, ctype: str, timeout: float = WAIT) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request("POST", "/v1/predict", body=payload, headers={"Content-Type": ctype})
    ok = conn.getresponse().status == 200
    conn.close()
    return ok


NOT_HTTP = "not a valid HTTP/1.1 request"


@pytest.mark.parametrize("raw, status, words", [
    (b"NOT AN HTTP REQUEST\r\n\r\n", 400, NOT_HTTP),
    (b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 300_000 + b"\r\n\r\n", 400, NOT_HTTP),
    (b"GET /\xff\xfe HTTP/1.1\r\nHost: t\r\n\r\n", 400, NOT_HTTP),
    (b"POST /v1/predict HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n\r\n", 400, NOT_HTTP),
    (b"POST /v1/predict HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400, NOT_HTTP),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40, 400, NOT_HTTP),  # TLS on the HTTP port
    (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 404, "Not Found"),  # HTTP/2 prior knowledge
    (b"GET /nothing-here HTTP/1.1\r\nHost: t\r\n\r\n", 404, "Not Found"),
    (b"DELETE /v1/predict HTTP/1.1\r\nHost: t\r\n\r\n", 405, "Method Not Allowed"),
    (b"GET /static/../../etc/passwd HTTP/1.1\r\nHost: t\r\n\r\n", 404, "Not Found"),
    (b"POST /v1/predict HTTP/1.1\r\nHost: t\r\nContent-Length: 999999999999\r\n\r\n", 413, "above the limit"),
    (b"POST /v1/predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}", 400,
     "multipart/form-data"),
    (b"GET /v1/review/next HTTP/1.1\r\nHost: t\r\n\r\n", 404, "Not Found"),
], ids=["not-http", "300kb-head", "non-ascii-target", "bad-content-length", "bad-chunk", "tls", "http2",
        "unknown-path", "wrong-method", "path-traversal", "huge-content-length", "json-body", "not-this-app"])
def test_every_refusal_is_json_whichever_layer_refuses(predictor, raw, status, words):
    with running(create_app(predictor)) as port, connect(port) as s:
        s.sendall(raw)
        st, headers, body = read_response(s)
        assert is_json_refusal(st, headers, body, status), (st, headers, body[:300])
        assert words in json.loads(body)["detail"]


def test_a_head_request_is_refused_in_json_too(predictor):
    with running(create_app(predictor)) as port, connect(port) as s:
        s.sendall(b"HEAD /v1/model HTTP/1.1\r\nHost: t\r\n\r\n")
        s.settimeout(WAIT)
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(65536)
        assert head.startswith(b"HTTP/1.1 405 ") and b"content-type: application/json" in head.lower()


def test_an_unexpected_error_is_a_json_500(predictor, monkeypatch):
    from fastapi.testclient import TestClient

    import facelab.serve.app as app_module

    def boom(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(app_module, "_predict", boom)
    client = TestClient(create_app(predictor), raise_server_exceptions=False)
    r = client.post("/v1/predict", files={"file": ("a.png", png(blank((64, 64))), "image/png")})
    assert r.status_code == 500 and r.headers["content-type"] == "application/json"
    assert "internal error" in r.json()["detail"] and "a bug" not in r.text  # nothing internal leaks


# ---- uploads stay in memory ------------------------------------------------------------------------------
def test_a_large_upload_is_parsed_in_memory_without_a_temporary_file(predictor, monkeypatch):
    import tempfile

    import numpy as np
    from fastapi.testclient import TestClient

    def no_disk(*args, **kwargs):
        raise AssertionError("an upload was written to a temporary file")

    for name in ("TemporaryFile", "NamedTemporaryFile", "mkstemp"):
        monkeypatch.setattr(tempfile, name, no_disk)
    noisy = np.random.default_rng(0).integers(0, 256, (1000, 1000, 3), dtype=np.uint8)
    data = png(noisy)
    assert len(data) > 2 << 20  # starlette spools file parts above 1 MB to disk by default
    client = TestClient(create_app(predictor, ServeConfig(max_upload_bytes=4 << 20)))
    r = client.post("/v1/predict", files={"file": ("big.png", data, "image/png")})
    assert r.status_code == 200, r.text


# ---- starting the server: bind first, then announce ------------------------------------------------------
@pytest.fixture
def taken_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        yield s.getsockname()[1]


def test_serve_on_a_busy_port_is_one_line_and_exit_2_and_announces_nothing(clf_run, taken_port):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src"), "COLUMNS": "300"}
    r = subprocess.run([sys.executable, "-m", "facelab.cli", "serve", str(clf_run[0]), "--port", str(taken_port)],
                       capture_output=True, text=True, timeout=120, env=env)
    out = (r.stdout + r.stderr).strip()
    assert r.returncode == 2, out
    assert out.count("\n") == 0 and f"port {taken_port} on 127.0.0.1 is already in use" in out, out
    assert "serving" not in out and "Traceback" not in out


def test_label_review_on_a_busy_port_is_a_user_error_and_announces_nothing(tmp_path, taken_port):
    store, labels = tmp_path / "store", tmp_path / "labels.csv"
    cli_json("data", "prepare", "synthetic", "--out", store, "--size", 32, "--workers", 1, "-o", "n=24",
             "-o", "landmarks=true")
    cli_json("label", "auto", store, "--out", labels)
    result = cli("label", "review", store, "--labels", labels, "--port", taken_port, ok=False)
    assert isinstance(result.exception, FacelabError) and "already in use" in str(result.exception)
    assert "reviewing" not in result.output
    # the lock is released with the port: a second try on a free port would get past both
    from facelab.serve.review import review_lock

    with review_lock(labels):
        pass


def test_a_host_that_is_not_this_computers_is_a_user_error():
    with pytest.raises(FacelabError, match="not an address"):
        with listen(HttpConfig(host="192.0.2.1", port=0)):  # TEST-NET-1: never an address of this machine
            pass
    with pytest.raises(FacelabError, match="not an address or a known name"):
        with listen(HttpConfig(host="no-such-host.invalid", port=0)):
            pass


def test_serve_announces_the_bound_port_then_serves(clf_run, monkeypatch):
    import facelab.serve.server as server

    seen = {}

    def fake_serve(app, listener, http, **kwargs):  # the bound socket exists when the announcement is made
        seen["port"] = listener.port
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", listener.port)) == 0

    monkeypatch.setattr(server, "serve", fake_serve)
    out = cli("serve", clf_run[0], "--port", 0).output
    assert f"on http://127.0.0.1:{seen['port']}/" in out.replace("\n", "")


def test_a_run_with_only_its_last_checkpoint_is_served_from_it_and_says_so(clf_run, tmp_path, monkeypatch):
    import facelab.serve.server as server
    from fastapi.testclient import TestClient

    from facelab.serve.spec import ServeSpec

    run = tmp_path / "run"
    shutil.copytree(clf_run[0], run)
    shutil.rmtree(run / "checkpoints" / "best")
    if not (run / "checkpoints" / "last").exists():
        shutil.copytree(clf_run[0] / "checkpoints" / "best", run / "checkpoints" / "last")
    info = TestClient(ServeSpec(runs=[run], faces="aligned").build()).get("/v1/model").json()
    assert any("no checkpoints/best: using checkpoints/last" in n for n in info["notes"]), info["notes"]
    monkeypatch.setattr(server, "serve", lambda *a, **k: None)
    out = cli("serve", run, "--port", 0).output.replace("\n", "")
    assert "note: " in out and "using checkpoints/last" in out
    assert TestClient(ServeSpec(runs=[clf_run[0]], faces="aligned").build()).get("/v1/model").json()["notes"] == []


@pytest.mark.parametrize("command", [("serve",), ("predict",), ("export",)])
def test_a_missing_run_folder_is_said_to_be_missing(tmp_path, command):
    args = [*command, tmp_path / "no-such-run"]
    if command[0] == "predict":
        args.append(png_file(tmp_path))
    err = cli_error(*args)
    assert "no-such-run: no such folder or file" in str(err) and "no checkpoint found" not in str(err)


def png_file(tmp_path: Path) -> Path:
    path = tmp_path / "photo.png"
    path.write_bytes(png(blank((64, 64))))
    return path


# ---- no telemetry ----------------------------------------------------------------------------------------
def test_the_service_collects_no_telemetry(tmp_path):
    """onnxruntime opens a telemetry database in the user's cache folder when it is imported; facelab (and so
    the server, on either engine) turns that off."""
    env = {k: v for k, v in os.environ.items() if k not in ("ORT_DISABLE_TELEMETRY", "XDG_CACHE_HOME")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2] / "src")
    db = "Microsoft/DeveloperTools/.onnxruntime/onnxruntime.db"
    bare = {**env, "HOME": str(tmp_path / "bare")}
    subprocess.run([sys.executable, "-c", "import onnxruntime"], env=bare, check=True, timeout=120)
    if not (tmp_path / "bare" / ".cache" / db).exists():
        pytest.skip("this onnxruntime writes no telemetry database: nothing to turn off")
    home = {**env, "HOME": str(tmp_path / "home")}
    subprocess.run([sys.executable, "-c", "import facelab.serve.spec, facelab.serve.app, onnxruntime"], env=home,
                   check=True, timeout=120)
    assert not (tmp_path / "home" / ".cache" / db).exists()


# ---- several processes -----------------------------------------------------------------------------------
def test_workers_share_the_port_and_each_answers(clf_run):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src"), "COLUMNS": "300"}
    proc = subprocess.Popen([sys.executable, "-m", "facelab.cli", "serve", str(clf_run[0]), "--port", "0",
                             "--workers", "2", "--faces", "aligned"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert "2 worker processes" in line and "http://127.0.0.1:" in line, line
        port = int(line.split("http://127.0.0.1:")[1].split("/")[0])
        payload, ctype = multipart(png(blank((64, 64))))
        # the socket listens before the workers have loaded the model: the first request waits for one of them
        assert _post_ok(port, payload, ctype, timeout=300)
        children = _children(proc.pid)
        workers = [c for c in children if "multiprocessing" in Path(f"/proc/{c}/cmdline").read_text()]
        assert len(workers) >= 2, children
        with ThreadPoolExecutor(8) as pool:
            assert all(pool.map(lambda _: _post_ok(port, payload, ctype, timeout=120), range(16)))
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert proc.returncode == 0


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            out += [int(c) for c in (task / "children").read_text().split()]
    return out
