"""Shows pytest-randomly's seed whatever the verbosity, with the command that replays the order.

pytest-randomly prints its seed in pytest's header, which ``-q`` (in the project's addopts) hides; this
plugin (loaded by addopts' ``-p tests.random_order``) prints it as the first line of the run and again beside
the summary, where a failure is read. Nothing is printed when the order is not random (``-p no:randomly``).
"""

from __future__ import annotations

import pytest


def seed_line(config: pytest.Config) -> str | None:
    """The line that names this run's seed, or None when pytest-randomly does not shuffle this run."""
    if not config.pluginmanager.hasplugin("randomly"):
        return None
    seed = config.getoption("randomly_seed", None)
    if not isinstance(seed, int):
        return None
    return f"random test order, seed {seed}; replay it: make test PYTEST_ARGS=\"--randomly-seed={seed}\""


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    line = seed_line(session.config)
    if reporter is not None and line:
        reporter.write_line(line)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    line = seed_line(config)
    if line:
        terminalreporter.write_line(line)
