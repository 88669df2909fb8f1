"""Starting a facelab web app (``facelab serve``, ``facelab label review``): bind, announce, serve.

    with listen(http) as listener:          # binds now: a busy port is one FacelabError (exit 2), said at once
        app = ...                            # load the model after the port is known to be ours
        console.print(f"serving on {listener.url}")
        serve(app, listener, http)           # one process, or http.workers processes sharing the socket

Every connection is held to deadlines by :class:`GuardedH11Protocol`, so sockets that are idle, or that send
their request a byte at a time, cannot crowd out the requests that need the server:

- a request head (request line and headers) must arrive within ``header_timeout_s`` of its first byte, or of
  the connection opening (a partial head gets 408, a silent connection is closed);
- a request body must arrive within ``read_timeout_s`` of its head (the :class:`~facelab.serve.guard.BodyGuard`
  answers 408 at that moment; the protocol closes any connection still sending a moment later);
- a connection idle between requests is closed after ``keep_alive_s``;
- past ``max_connections`` open connections, the longest-idle ones are closed to make room; only when every
  connection is busy with a request does a new one get 503 + Retry-After.

Connections themselves are not a limit on requests (uvicorn's ``limit_concurrency``, which counts idle
connections too, is not used): the app's own limits (upload size, prediction slots and queue) bound the work.
Every refusal at this layer is JSON ``{"detail": ...}``, like the app's.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import resource
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import h11
import uvicorn
from pydantic import Field
from uvicorn.protocols.http.h11_impl import DEFAULT_MAX_INCOMPLETE_EVENT_SIZE, H11Protocol

from facelab.config import StrictConfig
from facelab.errors import FacelabError
from facelab.serve.guard import RETRY_AFTER_S, error_body, send_json


#: seconds between the BodyGuard's 408 and the protocol closing a connection that is still sending
BODY_GRACE_S = 1.0
#: file descriptors kept for everything but client connections (model files, logs, the listening socket)
SPARE_FDS = 64


class HttpConfig(StrictConfig):
    """Where the server listens and how long a connection may take (see the module docstring).

    Attributes:
        host: address to listen on (127.0.0.1: this computer only; 0.0.0.0 or :: every interface).
        port: TCP port (0: any free port, said in the announcement).
        workers: processes sharing the socket; each loads the model and has every per-process limit.
        header_timeout_s: a request head must arrive within this (slow or silent clients).
        read_timeout_s: a request body must arrive within this once its head is in.
        keep_alive_s: an idle connection between two requests is closed after this.
        max_connections: open connections per process; past it the longest-idle ones are closed.
        forwarded_allow_ips: proxies whose X-Forwarded-For / X-Forwarded-Proto headers are believed
            (comma-separated addresses or networks, ``*`` for any).
        graceful_shutdown_s: on Ctrl-C / SIGTERM, requests in flight get this long to finish.
    """

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(1, ge=1, le=256)
    header_timeout_s: float = Field(10.0, gt=0)
    read_timeout_s: float = Field(30.0, gt=0)
    keep_alive_s: float = Field(5.0, gt=0)
    max_connections: int = Field(1000, ge=2)
    forwarded_allow_ips: str = "127.0.0.1"
    graceful_shutdown_s: float = Field(10.0, ge=0)


# ---- binding ---------------------------------------------------------------------------------------------
@dataclass
class Listener:
    """A bound, listening socket and the URL it answers on."""

    sock: socket.socket
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"


@contextlib.contextmanager
def listen(http: HttpConfig) -> Iterator[Listener]:
    """Bind and listen on ``http.host:http.port`` now; the socket is closed when the block ends.

    Raises:
        FacelabError: the port is taken, needs privileges, or the host is not an address of this computer.
    """
    sock = _bind(http.host, http.port)
    try:
        yield Listener(sock, http.host, sock.getsockname()[1])
    finally:
        sock.close()


def _bind(host: str, port: int) -> socket.socket:
    where = f"{host}:{port}"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as e:
        raise FacelabError(f"--host {host}: not an address or a known name of this computer ({e}); use 127.0.0.1, "
                           "0.0.0.0 or one of its addresses") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart need not wait for TIME_WAIT
        sock.bind(addr)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise FacelabError(f"port {port} on {host} is already in use (another server listens there): choose "
                               "another with --port, or stop that server") from None
        if e.errno == errno.EACCES:
            raise FacelabError(f"listening on {where} is not permitted (ports below 1024 need privileges): choose "
                               "--port 1024 or above") from None
        if e.errno == errno.EADDRNOTAVAIL:
            raise FacelabError(f"--host {host} is not an address of this computer: use 127.0.0.1, 0.0.0.0 or one "
                               "of its addresses") from None
        raise FacelabError(f"cannot listen on {where}: {e.strerror or e}") from None
    sock.set_inheritable(True)  # worker processes serve on it too
    return sock


# ---- serving ---------------------------------------------------------------------------------------------
class _Config(uvicorn.Config):
    """uvicorn's config plus the facelab HTTP limits its protocol reads (pickled into worker processes)."""

    def __init__(self, app: Any, limits: HttpConfig, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.facelab_http = limits


def serve(app: Any, listener: Listener, http: HttpConfig, *, factory: bool = False) -> None:
    """Serve ``app`` on ``listener`` until Ctrl-C / SIGTERM.

    Args:
        app: the ASGI app; with ``http.workers > 1`` an import string ("module:function") that each worker
            process imports (``factory``: a function that builds the app, called once in each worker).
    """
    if http.workers > 1 and not isinstance(app, str):
        raise TypeError("several workers import the app by name: pass 'module:function' (factory=True)")
    _raise_fd_limit(http.max_connections)
    config = uvicorn_config(app, http, factory=factory)
    if http.workers > 1:
        from uvicorn.supervisors import Multiprocess

        Multiprocess(config, sockets=[listener.sock]).run()
    else:
        uvicorn.Server(config).run(sockets=[listener.sock])


def uvicorn_config(app: Any, http: HttpConfig, *, factory: bool = False) -> uvicorn.Config:
    """uvicorn's config for ``app`` under ``http``'s limits, with :class:`GuardedH11Protocol` (for
    ``uvicorn.Server(config).run(sockets=[listener.sock])``, which is what :func:`serve` runs)."""
    return _Config(app, http, factory=factory, workers=http.workers, http=GuardedH11Protocol, ws="none",
                   lifespan="off", log_level="warning", limit_concurrency=None, server_header=False,
                   timeout_keep_alive=http.keep_alive_s, timeout_graceful_shutdown=http.graceful_shutdown_s,
                   forwarded_allow_ips=http.forwarded_allow_ips, proxy_headers=True)


def _raise_fd_limit(connections: int) -> None:
    """Let the process hold ``connections`` sockets (up to the hard limit), so the connection cap, not
    accept() failing, decides what happens when many clients connect."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = connections + SPARE_FDS
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


def _connection_cap(http: HttpConfig) -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return http.max_connections
    return max(2, min(http.max_connections, soft - SPARE_FDS))


# ---- the protocol ----------------------------------------------------------------------------------------
async def _busy(scope: Any, receive: Any, send: Any) -> None:
    """The answer on a connection past the cap when no idle connection could be closed for it."""
    await send_json(send, 503, "busy: too many open connections; retry shortly",
                    [(b"retry-after", str(RETRY_AFTER_S).encode())])


def raw_json_response(status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None) -> bytes:
    """A complete ``Connection: close`` HTTP/1.1 response with a JSON ``{"detail": ...}`` body, as bytes (for
    answers written before a request head is parsed)."""
    body = error_body(detail)
    lines = [b"HTTP/1.1 %d %s" % (status, HTTPStatus(status).phrase.encode()), b"content-type: application/json",
             b"content-length: %d" % len(body), b"connection: close", *(k + b": " + v for k, v in headers or [])]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


_SEQUENCE = itertools.count()


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with deadlines on every connection, a connection cap that closes idle
    connections first, and JSON refusals (see the module docstring)."""

    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        http: HttpConfig = getattr(config, "facelab_http", None) or HttpConfig()
        self.header_timeout_s, self.read_timeout_s = http.header_timeout_s, http.read_timeout_s
        self.cap = _connection_cap(http)
        self._deadline: asyncio.TimerHandle | None = None  # of the current phase
        self._stalled: asyncio.TimerHandle | None = None  # of a response the client does not read
        self._phase: str | None = None  # "head" | "body" | None (between requests: uvicorn's keep-alive)
        self._head_bytes = False  # some bytes of the current request head have arrived
        self.idle_since = (0.0, 0)  # (loop time, sequence number): when it last became idle, ties broken in order

    # -- connections ----------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.idle_since = (self.loop.time(), next(_SEQUENCE))
        self._enter("head")
        if len(self.connections) > self.cap and not self._make_room():
            self.app = _busy  # answered once its request head is in, then closed

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        if self._stalled is not None:
            self._stalled.cancel()
        super().connection_lost(exc)

    def is_idle(self) -> bool:
        """Waiting for a request (none received, none being answered): safe to close."""
        return (self.conn.their_state is h11.IDLE and (self.cycle is None or self.cycle.response_complete)
                and not self.transport.is_closing())

    def _make_room(self) -> bool:
        """Close the longest-idle connections until this one fits under the cap; False when too few are idle."""
        excess = sum(not c.transport.is_closing() for c in self.connections) - self.cap
        idle = sorted((c for c in self.connections if c is not self and isinstance(c, GuardedH11Protocol)
                       and c.is_idle()), key=lambda c: c.idle_since)
        for c in idle[:max(0, excess)]:
            c._cancel()
            c.transport.close()
        return len(idle) >= excess

    # -- deadlines ------------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE and self._phase != "body":
            if self._phase is None:  # the first bytes after a keep-alive pause: a new head begins
                self._enter("head")
            self._head_bytes = True
        super().data_received(data)
        self._follow()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # arms uvicorn's keep-alive timer, parses pipelined requests
        self.idle_since = (self.loop.time(), next(_SEQUENCE))
        if self.conn.their_state is h11.IDLE:
            self._cancel()
            self._phase, self._head_bytes = None, False
        else:
            self._follow()

    def _follow(self) -> None:
        """Move the deadline along with the request: its head, then its body, then none while it is answered."""
        if self.transport.is_closing():
            self._cancel()
            return
        state = self.conn.their_state
        if state is h11.SEND_BODY and self._phase != "body":
            self._enter("body")
        elif state is h11.DONE or state is h11.MUST_CLOSE:
            self._cancel()
            self._phase, self._head_bytes = None, False
        elif state is h11.IDLE and self._phase == "body" and self.timeout_keep_alive_task is None:
            # a body that ended after its answer (a GET with a body): waiting for the next head, not forever
            self._enter("head")
            self._head_bytes = False

    def _enter(self, phase: str) -> None:
        self._cancel()
        self._phase = phase
        seconds = self.header_timeout_s if phase == "head" else self.read_timeout_s + BODY_GRACE_S
        self._deadline = self.loop.call_later(seconds, self._expired)

    def _cancel(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        """A head or body that did not arrive in time: 408 when it can still be answered, then close."""
        self._deadline = None
        if self.transport.is_closing():
            return
        answering = self.cycle is not None and self.cycle.response_started and not self.cycle.response_complete
        if self._phase == "head" and self._head_bytes and not answering:
            self.transport.write(raw_json_response(
                408, f"the request head did not arrive within {self.header_timeout_s:g} s; send it in one go"))
        elif self._phase == "body" and self.cycle is not None and not self.cycle.response_started:
            self.transport.write(raw_json_response(
                408, f"the request body did not arrive within {self.read_timeout_s:g} s; send it in one go"))
        self.transport.close()

    # -- a client that does not read its response -----------------------------------------------------
    def pause_writing(self) -> None:
        super().pause_writing()
        if self._stalled is None:
            self._stalled = self.loop.call_later(self.read_timeout_s, self.transport.abort)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._stalled is not None:
            self._stalled.cancel()
            self._stalled = None

    # -- refusals as JSON -----------------------------------------------------------------------------
    def send_400_response(self, msg: str) -> None:
        """A request that is not HTTP/1.1, or whose head is too large: JSON 400, then close."""
        detail = ("not a valid HTTP/1.1 request (a malformed request line or header, or a request head above "
                  f"{DEFAULT_MAX_INCOMPLETE_EVENT_SIZE // 1024} KB)")
        if self.cycle is None or not self.cycle.response_started:
            self.transport.write(raw_json_response(400, detail))
        self._cancel()
        self.transport.close()
