"""Loaded models that several threads use: no model ever runs in two threads at once unless it may.

A cv2.dnn network (MTCNN) keeps its buffers inside the network object, so two threads running one network
at once corrupt each other's results, then the heap. :class:`ModelPool` lends each caller a model no other
thread is using, loading another one only when all are lent: a service running N predictions at once holds
at most N models, a single-threaded command exactly one. A model whose runs are thread-safe (an onnxruntime
session: ``InferenceSession.run`` may be called from several threads) is loaded once and lent to everyone.

    >>> pool = ModelPool(load_network, shared=False)
    >>> with pool.borrow() as net:
    ...     net.setInput(blob); out = net.forward()
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class ModelPool(Generic[T]):
    """Models made by ``load``, each lent to one caller at a time (every caller the same one when ``shared``).

    Models load on first use.

    Args:
        load: builds one model.
        shared: the model may run in several threads at once: one is loaded (once, whatever the race) and
            lent to every caller.
    """

    def __init__(self, load: Callable[[], T], *, shared: bool = False) -> None:
        self._load, self.shared = load, shared
        self._lock = threading.Lock()
        self._idle: list[T] = []
        self._count = 0

    @property
    def loaded(self) -> int:
        """How many models this pool has loaded (never more than the callers it served at once)."""
        return self._count

    @contextlib.contextmanager
    def borrow(self) -> Iterator[T]:
        """A model for this caller alone (or the shared one) until the ``with`` block ends."""
        if self.shared:
            yield self._shared()
            return
        with self._lock:
            model = self._idle.pop() if self._idle else None
        if model is None:
            model = self._load()  # outside the lock: others may return or borrow models meanwhile
            with self._lock:
                self._count += 1
        try:
            yield model
        finally:
            with self._lock:
                self._idle.append(model)

    def _shared(self) -> T:
        with self._lock:
            if not self._idle:
                self._idle.append(self._load())
                self._count = 1
            return self._idle[0]
