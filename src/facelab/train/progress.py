"""What the Trainer prints while it trains, on stderr (stdout is for ``--json``).

On a terminal: a live bar per epoch and one line per finished epoch. Elsewhere (a log file, nohup, a batch
scheduler) a bar cannot redraw, so mid-epoch lines are printed at most once every
:data:`facelab.utils.progress.LOG_EVERY_SECONDS`; :mod:`facelab.utils.console` decides which applies, for
training as for every other long command.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

from facelab.utils import progress as lines
from facelab.utils.console import is_live, stderr_console

#: called after every batch with the batch's logs
Advance = Callable[[dict[str, float]], None]
_INSIDE: list[str] = []  # what encloses the trainings with progress off that still print epoch lines (a study cell)


def epoch_progress(*, enabled: bool, epoch: int, epochs: int, total: int, done: int
                   ) -> contextlib.AbstractContextManager[Advance]:
    """The progress of one epoch: a context whose value is called after every batch with its logs.

    Args:
        enabled: False (progress off, or a process other than rank 0): nothing is shown.
        epoch: the epoch in progress, counted from 0.
        epochs: the epochs of the whole run.
        total: the batches of this epoch.
        done: the batches already trained (a resume mid-epoch).
    """
    if not enabled:
        return contextlib.nullcontext(lambda logs: None)
    console = stderr_console()
    if not is_live(console):
        return contextlib.nullcontext(_log_lines(console, epoch=epoch, epochs=epochs, total=total, done=done))
    return _bar(console, epoch=epoch, epochs=epochs, total=total, done=done)


@contextlib.contextmanager
def epoch_lines_inside(name: str) -> Iterator[None]:
    """Trainings run inside (with their progress off: a study's cells, under the study's own progress) print a
    line per finished epoch, headed ``name: ``, when stderr is not a terminal: a cell may train for many minutes,
    and a log would show nothing meanwhile. On a terminal they stay quiet under the study's bar."""
    _INSIDE.append(name)
    try:
        yield
    finally:
        _INSIDE.pop()


def print_epoch(rec: dict[str, Any], *, epochs: int, monitor: str, enabled: bool = True) -> None:
    """One line for a finished epoch (``rec``: its metrics.jsonl record): up to three training losses, three
    validation figures, the monitored metric, the time and the speed. Not ``enabled`` (the run's progress is
    off): nothing, unless inside :func:`epoch_lines_inside` off a terminal."""
    console = stderr_console()
    head = ""
    if not enabled:
        if not _INSIDE or is_live(console):
            return
        head = f"{_INSIDE[-1]}: "
    losses = {k: v for k, v in rec.items() if k.startswith("train_") and k not in ("train_seconds", "train_images_per_s")}
    vals = {k: v for k, v in rec.items() if k.startswith("val_")}
    shown = {**dict(list(losses.items())[:3]), **dict(list(vals.items())[:3])}
    if monitor in rec:
        shown[monitor] = rec[monitor]
    speed = f", {rec['train_images_per_s']:.0f} img/s" if "train_images_per_s" in rec else ""
    console.print(f"{head}epoch {rec['epoch']}/{epochs} ({rec.get('train_seconds', 0.0):.0f} s{speed}): "
                     f"{format_logs(shown, len(shown))}", soft_wrap=True, highlight=False)


def format_logs(logs: dict[str, float], most: int) -> str:
    """``key=value`` for the first ``most`` numeric logs."""
    return " ".join(f"{k}={v:.4g}" for k, v in list(logs.items())[:most] if isinstance(v, (int, float)))


@contextlib.contextmanager
def _bar(console: Any, *, epoch: int, epochs: int, total: int, done: int) -> Iterator[Advance]:
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    cols = [TextColumn(f"epoch {epoch + 1}/{epochs}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[logs]}")]
    with lines.progress_bar(*cols, transient=True, console=console) as prog:
        task = prog.add_task("train", total=total, completed=done, logs="")

        def advance(logs: dict[str, float]) -> None:
            prog.update(task, advance=1, logs=format_logs(logs, 3))

        yield advance


def _log_lines(console: Any, *, epoch: int, epochs: int, total: int, done: int) -> Advance:
    start, last = time.monotonic(), time.monotonic()

    def advance(logs: dict[str, float]) -> None:
        nonlocal last, done
        done += 1
        now = time.monotonic()
        if now - last >= lines.LOG_EVERY_SECONDS and done < total:
            last = now
            console.print(f"epoch {epoch + 1}/{epochs}: {done}/{total} batches, {now - start:.0f} s, "
                          f"{format_logs(logs, 3)}", soft_wrap=True, highlight=False)

    return advance
