"""SIGTERM ends a worker's trial through :class:`Stopped`; while a trial is being made (before its first heartbeat)
a stop waits, so that no trial is left RUNNING without one."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from facelab.sweeps.stopping import Stopped, raise_pending, stop_on_signals, stops_held


@pytest.fixture
def handlers() -> Iterator[None]:
    with stop_on_signals():
        yield


def test_the_handlers_from_before_are_put_back() -> None:
    """facelab's handlers must not outlive the command: a pool worker forked later would inherit them and, told
    to stop, raise where it holds its queue's lock (a test run once hung that way)."""
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with stop_on_signals():
        assert signal.getsignal(signal.SIGTERM) is not before[0]
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


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
