"""One writer per run folder: a process that trains in a run folder holds an exclusive lock on it.

Two ``--resume`` of the same run at once would both write its checkpoints and metrics.jsonl (each epoch twice,
checkpoints of either). The lock is ``flock`` on the folder itself (no lock file to leave behind, released by
the kernel when the process ends however it ends). Where ``flock`` does not exist (Windows) or the file
system refuses it (some network mounts) nothing is locked.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from facelab.errors import FacelabError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class RunBusyError(FacelabError):
    """Another process is training in the run folder."""


@contextlib.contextmanager
def exclusive_run(run_dir: str | Path) -> Iterator[None]:
    """Hold the run folder's lock while the block runs.

    Raises:
        RunBusyError: another process holds it (it is training in that folder now).
    """
    if fcntl is None:
        yield
        return
    fd = os.open(run_dir, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunBusyError(f"{run_dir}: another process is training in this run folder now; wait for it to end "
                               "(or stop it) before resuming the run") from None
        except OSError:
            pass  # a file system without locks (some network mounts): train unlocked, as before
        yield
    finally:
        os.close(fd)  # releases the lock
