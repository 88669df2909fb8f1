"""ASGI middleware that reads a request body under a size limit and a deadline before the app sees it.

Parsing a multipart upload starts only once the whole body is here and small enough, so an oversized upload
(413), a client that sends too slowly or stops half-way (408) or one that lies about its length never reaches
the app, never fills the disk and never holds a prediction slot.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


#: seconds a client refused as busy is asked to wait (the Retry-After header of every 503)
RETRY_AFTER_S = 1


def error_body(detail: str) -> bytes:
    """The body of every refusal, whichever layer refuses: ``{"detail": "..."}`` (FastAPI's error shape)."""
    return json.dumps({"detail": detail}).encode()


async def send_json(send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """A JSON error response ``{"detail": ...}`` that closes the connection."""
    body = error_body(detail)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class BodyGuard:
    """Buffer every request body up to ``max_bytes`` within ``timeout_s``, then hand it to ``app``.

    ``budget_bytes`` bounds the bytes of all the bodies held at once (being read, or in the app): a body that
    would go past it gets 503 + Retry-After before (or while) it is read, so many simultaneous uploads cannot
    exhaust memory. A declared Content-Length is reserved whole up front.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int, timeout_s: float, budget_bytes: int | None = None) -> None:
        self.app, self.max_bytes, self.timeout_s, self.budget_bytes = app, max_bytes, timeout_s, budget_bytes
        self.held = 0  # bytes reserved by the bodies in flight (one event loop: no lock needed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.max_bytes
            except ValueError:
                await send_json(send, 400, "Content-Length is not a number")
                return
            if too_big:
                await send_json(send, 413, self._too_large(int(declared)))
                return
        reservation = _Reservation(self)
        try:
            if not reservation.grow(int(declared or 0)):
                await self._busy(send)
                return
            body = await self._read(receive, send, reservation)
            if body is None:
                return
            sent = False

            async def replay() -> Message:
                nonlocal sent
                if not sent:
                    sent = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()  # http.disconnect, when the client goes

            await self.app(scope, replay, send)
        finally:
            reservation.release()

    async def _busy(self, send: Send) -> None:
        await send_json(send, 503, f"busy: uploads of {self.held:,} bytes are being received or predicted; retry "
                                   "shortly", [(b"retry-after", str(RETRY_AFTER_S).encode())])

    async def _read(self, receive: Receive, send: Send, reservation: _Reservation) -> bytes | None:
        """The whole body, or None after answering 408/413/503 (or when the client went away)."""
        chunks, size = [], 0
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                message = await asyncio.wait_for(receive(), timeout=max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                await send_json(send, 408, f"the request body did not arrive within {self.timeout_s:g} s; "
                                           "send it in one go")
                return None
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await send_json(send, 413, self._too_large(size, at_least=True))
                return None
            if not reservation.grow(size):  # a body without Content-Length, or longer than it said
                await self._busy(send)
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _too_large(self, size: int, *, at_least: bool = False) -> str:
        return (f"upload of {'at least ' if at_least else ''}{size:,} bytes is above the limit of "
                f"{self.max_bytes:,} bytes (serve --max-upload-mb)")


class _Reservation:
    """The bytes one body holds of its guard's budget: grown as the body grows, given back when it is done."""

    def __init__(self, guard: BodyGuard) -> None:
        self.guard, self.bytes = guard, 0

    def grow(self, size: int) -> bool:
        """Hold ``size`` bytes in all; False (holding what it held) when that would exceed the budget."""
        extra = size - self.bytes
        if extra <= 0:
            return True
        budget = self.guard.budget_bytes
        if budget is not None and self.guard.held + extra > budget:
            return False
        self.guard.held += extra
        self.bytes = size
        return True

    def release(self) -> None:
        self.guard.held -= self.bytes
        self.bytes = 0
