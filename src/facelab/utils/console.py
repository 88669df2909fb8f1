"""Where facelab's text goes and how it is laid out there: one decision for every command.

On a terminal (a person watching), rich draws live progress bars and fits text and tables to the window.
Anywhere else (a log file, a pipe, nohup, a batch scheduler, CI) nothing can redraw and nobody resizes a
window: progress is printed as plain lines (:mod:`facelab.utils.progress`), and text and tables are printed
whole, never wrapped, cut or shortened with an ellipsis, so that ``facelab runs | grep`` finds every path.

stderr carries progress, notes and errors; stdout carries what a command reports (``--json``, tables).
"""

from __future__ import annotations

from typing import Any

from rich.console import Console, ConsoleDimensions

#: the width of a console that writes to no terminal: wide enough that no line or table row is ever cut
UNLIMITED_WIDTH = 1_000_000


class FacelabConsole(Console):
    """A rich Console that, when it writes to no terminal, lays lines out at :data:`UNLIMITED_WIDTH` instead of
    rich's 80 columns, ``$COLUMNS`` or the width of some terminal its process happens to be attached to (a
    ``width`` given here still applies).

    Whether it writes to a terminal is asked at every print (rich's ``is_terminal``: the stream's ``isatty()``,
    overridden by ``TTY_COMPATIBLE=0|1`` or ``FORCE_COLOR``), so one console serves a process whose stream is
    redirected later (pytest's capture, typer's CliRunner).
    """

    def __init__(self, *, width: int | None = None, **kwargs: Any) -> None:
        super().__init__(width=width, **kwargs)
        self._given_width = width

    @property
    def size(self) -> ConsoleDimensions:
        size = Console.size.fget(self)  # type: ignore[attr-defined]
        if self._given_width is None and not self.is_terminal:
            return ConsoleDimensions(UNLIMITED_WIDTH, size.height)
        return size

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]


def is_live(console: Console) -> bool:
    """Whether ``console`` can redraw in place (a progress bar): a terminal that understands cursor moves."""
    return console.is_terminal and not console.is_dumb_terminal


_STDERR: FacelabConsole | None = None


def stderr_console() -> FacelabConsole:
    """The one console of progress, notes and errors (stderr; stdout stays free for ``--json``).

    Shared by the whole process, so that ``console.quiet = True`` (the ranks other than 0 of a distributed run)
    silences every part of facelab at once.
    """
    global _STDERR
    if _STDERR is None:
        _STDERR = FacelabConsole(stderr=True)
    return _STDERR


def stdout_console(**kwargs: Any) -> FacelabConsole:
    """A console on stdout, for what a command reports as text (tables, results)."""
    return FacelabConsole(**kwargs)
