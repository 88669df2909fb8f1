"""Progress of long work, on stderr: a live bar on a terminal, plain lines anywhere else.

Every long command (prepare, align, label auto, the studies, predict) gets its progress from
:func:`progress_bar`, which returns rich's :class:`~rich.progress.Progress` on a terminal and
:class:`LineProgress`, the same interface printed as lines, when stderr is a file or a pipe: there a bar
cannot redraw and rich would show nothing until the end. The lines say what started, how far it got (at most
one line every :data:`LOG_EVERY_SECONDS`) and when it finished. Training prints its epochs the same way
(:mod:`facelab.train.progress`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import Progress, ProgressColumn, TaskID

from facelab.utils.console import is_live, stderr_console

#: off a terminal, the most often a line reports how far a task got (its start and end are always printed)
LOG_EVERY_SECONDS = 30.0


def progress_bar(*columns: str | ProgressColumn, enabled: bool = True, transient: bool = True,
                 console: Console | None = None) -> Progress | LineProgress:
    """A progress display for ``with``: rich's bar on a terminal, :class:`LineProgress` elsewhere.

    Args:
        columns: rich columns of the bar (rich's default columns when none).
        enabled: False shows nothing (progress turned off by the caller).
        transient: the bar disappears when done (terminal only; the lines always stay).
        console: where to show it (default: the shared stderr console).
    """
    console = console or stderr_console()
    if is_live(console) or not enabled:
        return Progress(*columns, console=console, transient=transient, disable=not enabled)
    return LineProgress(console)


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``2 h 07 min``: a duration for people."""
    s = int(round(max(0.0, seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


@dataclass
class _Task:
    name: str  # its first description: what the start, progress and end lines name
    description: str
    total: float | None
    completed: float
    started: float = field(default_factory=time.monotonic)
    printed: float = field(default_factory=time.monotonic)  # when a line last reported it
    first: float = 0.0  # completed when the task was added (a resumed build): the rate counts the rest only
    finished: bool = False


class LineProgress:
    """rich's ``Progress`` interface (``add_task``, ``update``, ``advance``, ``console``) as plain lines.

    A line when a task is added (``study: 0/8``), one when its description changes to a new step
    (``study 3/8: p=0.1 seed=0 cvae``), at most one every :data:`LOG_EVERY_SECONDS` while it advances
    (``decoding: 5120/20000, 31 s, about 1 min 30 s left``), and one when it completes
    (``decoding: 20000/20000 in 2 min 01 s``).
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self._tasks: dict[int, _Task] = {}

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        """Nothing to start: lines are printed as the tasks advance."""

    def stop(self) -> None:
        """Nothing to tear down: every line is already printed."""

    def add_task(self, description: str, start: bool = True, total: float | None = 100.0, completed: float = 0,
                 visible: bool = True, **fields: Any) -> TaskID:
        task_id = TaskID(len(self._tasks))
        self._tasks[task_id] = task = _Task(description, description, total, completed, first=completed)
        if visible:
            self._say(task.name, self._count(task))
        return task_id

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def update(self, task_id: TaskID, *, total: float | None = None, completed: float | None = None,
               advance: float | None = None, description: str | None = None, visible: bool | None = None,
               refresh: bool = False, **fields: Any) -> None:
        task = self._tasks[task_id]
        if total is not None:
            task.total = total
        if completed is not None:
            task.completed = completed
        if advance is not None:
            task.completed += advance
        now = time.monotonic()
        if description is not None and description != task.description:
            task.description, task.printed = description, now
            step = "" if task.total is None else f" {_number(task.completed + 1)}/{_number(task.total)}"
            self._say(f"{task.name}{step}", description)
        elif task.total is not None and task.completed >= task.total and not task.finished:
            task.finished, task.printed = True, now
            self._say(task.name, f"{self._count(task)} in {duration(now - task.started)}")
        elif now - task.printed >= LOG_EVERY_SECONDS and (advance or completed is not None):
            task.printed = now
            self._say(task.name, f"{self._count(task)}, {duration(now - task.started)}{self._left(task, now)}")

    def _say(self, head: str, text: str) -> None:
        self.console.print(f"{head}: {text}", markup=False, highlight=False)

    @staticmethod
    def _count(task: _Task) -> str:
        done = _number(task.completed)
        return done if task.total is None else f"{done}/{_number(task.total)}"

    @staticmethod
    def _left(task: _Task, now: float) -> str:
        done = task.completed - task.first
        if task.total is None or done <= 0:
            return ""
        return f", about {duration((now - task.started) / done * (task.total - task.completed))} left"
