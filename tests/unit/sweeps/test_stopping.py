"""SIGTERM ends a worker's trial through :class:`Stopped`; while a trial is being made (before its first heartbeat)
a stop waits, so that no trial is left RUNNING without one."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from facelab.sweeps.stopping import Stopped, raise_pending, stop_on_signals, stops_held


@pytest.fixture
def handlers() -> Iterator[None]:
    saved = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    stop_on_signals()
    yield
    signal.signal(signal.SIGTERM, saved[0])
    signal.signal(signal.SIGINT, saved[1])


def test_sigterm_raises_stopped_naming_it(handlers: None) -> None:
    with pytest.raises(Stopped, match="SIGTERM"):
        signal.raise_signal(signal.SIGTERM)


def test_a_stop_waits_while_stops_are_held(handlers: None) -> None:
    steps = []
    with pytest.raises(Stopped, match="SIGTERM"):
        with stops_held():
            signal.raise_signal(signal.SIGTERM)
            steps.append("the trial got its heartbeat")
    assert steps == ["the trial got its heartbeat"]


def test_a_deferred_stop_is_raised_where_the_trial_can_note_it(handlers: None) -> None:
    with stops_held(defer=True):
        signal.raise_signal(signal.SIGINT)
    with pytest.raises(Stopped, match="SIGINT"):
        raise_pending()
    raise_pending()  # raised once
