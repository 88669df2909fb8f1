"""How sweep processes stop: SIGTERM and SIGINT end the trial in progress as FAILED (``interrupted``, with a
note) instead of leaving it RUNNING, and a worker that a ``facelab sweep`` started stops when that launcher ends,
however it ends (even SIGKILL).

The launcher hands each worker the read end of a pipe (:data:`LAUNCHER_FD_ENV` names its descriptor) and keeps
the write end open while it runs. When the launcher's process ends, the kernel closes the write end, the worker
reads end-of-file, and it stops itself as if it had been sent SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import threading
from collections.abc import Iterator
from typing import Any

#: the environment variable that gives a worker the descriptor of its launcher's pipe
LAUNCHER_FD_ENV = "FACELAB_SWEEP_LAUNCHER_FD"


class Stopped(KeyboardInterrupt):
    """The process was told to stop; ``str(e)`` says by what."""


_held = [0]  # depth of stops_held blocks (signal handlers run in the main thread, as these blocks do)
_pending: list[str] = []  # a stop that arrived while stops were held
_reason: list[str] = []  # why this process sent itself SIGTERM


def _handler(signum: int, frame: Any) -> None:
    why = _reason[0] if _reason else f"{signal.Signals(signum).name}"
    if _held[0]:
        _pending.append(why)
        return
    raise Stopped(why)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within this block SIGTERM (and SIGINT, unless this process was started with it ignored) raise
    :class:`Stopped` in the main thread, so the trial in progress is recorded FAILED with a note. The handlers
    from before are put back when the block ends: a caller in the same process (a test, a notebook) keeps its
    own, and processes it forks later do not inherit facelab's (a pool worker told to stop must simply stop)."""
    if threading.current_thread() is not threading.main_thread():  # (only the main thread may set handlers)
        yield
        return
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    signal.signal(signal.SIGTERM, _handler)
    if before[signal.SIGINT] is signal.default_int_handler:
        signal.signal(signal.SIGINT, _handler)
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


@contextlib.contextmanager
def stops_held(*, defer: bool = False) -> Iterator[None]:
    """Within this block a stop waits; it is raised when the block ends, or with ``defer`` at the next
    :func:`raise_pending`. A trial created in such a block gets its first heartbeat before it can be interrupted
    (a RUNNING trial without one is never found stale, and would be waited for forever)."""
    _held[0] += 1
    try:
        yield
    finally:
        _held[0] -= 1
        if not defer:
            raise_pending()


def raise_pending() -> None:
    """Raise the stop that came while stops were held, if any."""
    if not _held[0] and _pending:
        raise Stopped(_pending.pop(0))


def watch_launcher() -> None:
    """In a worker started by ``facelab sweep``: stop (as on SIGTERM) once the launcher's process has ended. Does
    nothing in a worker started by hand."""
    fd = os.environ.pop(LAUNCHER_FD_ENV, None)
    try:
        if fd is None or not stat.S_ISFIFO(os.fstat(int(fd)).st_mode):
            return  # (a variable inherited by some other way than from a launcher names no pipe of ours)
    except (ValueError, OSError):
        return

    def wait() -> None:
        try:
            while os.read(int(fd), 1):
                pass
        except OSError:
            pass
        _reason.append("the facelab sweep that started this worker ended")
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=wait, name="facelab-launcher-watch", daemon=True).start()


def launcher_pipe() -> tuple[int, int]:
    """(read end for the workers, write end the launcher keeps open while it runs)."""
    return os.pipe()
