"""Progress and text off a terminal: plain lines that say what runs, whole rows never cut at 80 columns; one
module decides for every command."""

from __future__ import annotations

import ast
import io
from pathlib import Path

import pytest
from rich.progress import Progress
from rich.table import Table

from facelab.utils import progress
from facelab.utils.console import FacelabConsole, stderr_console, stdout_console
from facelab.utils.progress import LineProgress, duration, progress_bar

SRC = Path(__file__).resolve().parents[3] / "src" / "facelab"


def test_off_a_terminal_progress_is_lines_of_start_steps_progress_and_end(capsys, monkeypatch):
    monkeypatch.setattr(progress, "LOG_EVERY_SECONDS", 0.0)
    with progress_bar() as prog:  # stderr is captured: not a terminal
        assert isinstance(prog, LineProgress)
        task = prog.add_task("study", total=3)
        for cell in ("p=0.1 seed=0 none", "p=0.1 seed=0 cvae", "p=0.1 seed=1 none"):
            prog.update(task, description=cell)
            prog.update(task, advance=1)
    out, err = capsys.readouterr()
    assert out == ""  # stdout stays free for --json
    lines = err.splitlines()
    assert lines[0] == "study: 0/3"
    assert lines[1] == "study 1/3: p=0.1 seed=0 none"
    assert lines[2].startswith("study: 1/3, 0 s, about 0 s left")
    assert lines[3] == "study 2/3: p=0.1 seed=0 cvae"
    assert lines[-1].startswith("study: 3/3 in ") and len(lines) == 7


def test_lines_come_at_most_every_log_period_and_the_end_always(capsys, monkeypatch):
    monkeypatch.setattr(progress, "LOG_EVERY_SECONDS", 3600.0)
    with progress_bar() as prog:
        task = prog.add_task("decoding", total=200_000, completed=1000)  # a resumed build
        for _ in range(199):
            prog.advance(task, 1000)
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["decoding: 1000/200000", lines[1]] and lines[1].startswith("decoding: 200000/200000 in ")


def test_disabled_progress_prints_nothing(capsys):
    with progress_bar(enabled=False) as prog:
        prog.advance(prog.add_task("x", total=2), 2)
    assert capsys.readouterr().err == ""


def test_on_a_terminal_progress_is_richs_live_bar():
    console = FacelabConsole(file=io.StringIO(), force_terminal=True)
    assert isinstance(progress_bar(console=console), Progress)
    dumb = FacelabConsole(file=io.StringIO(), force_terminal=True, _environ={"TERM": "dumb"})
    assert isinstance(progress_bar(console=dumb), LineProgress)  # a dumb terminal cannot redraw either


def test_a_quiet_console_silences_the_lines(capsys):
    console = stderr_console()
    console.quiet = True  # the ranks other than 0 of a distributed run
    try:
        with progress_bar() as prog:
            prog.advance(prog.add_task("x", total=1))
    finally:
        console.quiet = False
    assert capsys.readouterr().err == ""


def test_off_a_terminal_text_and_tables_are_whole(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")  # even where a terminal width is known
    path = "/runs/" + "x" * 200 + "/train-20261207-101500"
    table = Table(title="runs")
    table.add_column("run")
    table.add_column("value")
    table.add_row(path, "0.9306")
    stdout_console().print(table)
    stderr_console().print("note: " + "word " * 60 + "end")
    out, err = capsys.readouterr()
    assert any(path in line and "0.9306" in line for line in out.splitlines())  # one row, uncut
    assert "…" not in out
    assert err.count("\n") == 1 and err.rstrip().endswith("end")


def test_on_a_terminal_text_still_fits_the_window():
    buf = io.StringIO()
    console = FacelabConsole(file=buf, force_terminal=True, width=40)
    console.print("word " * 30)
    assert max(len(line) for line in buf.getvalue().splitlines()) <= 40


@pytest.mark.parametrize("seconds, text", [(0.4, "0 s"), (59.6, "1 min 00 s"), (125, "2 min 05 s"),
                                           (7322, "2 h 02 min")])
def test_duration(seconds, text):
    assert duration(seconds) == text


def _calls(name: str) -> list[str]:
    """``file:line`` of every call of ``name`` (a rich class) in facelab's source."""
    found = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == name:
                found.append(f"{path.relative_to(SRC)}:{node.lineno}")
    return found


def test_one_module_decides_what_a_terminal_gets():
    """Every console and progress display comes from utils/console.py and utils/progress.py, so no command can
    draw a bar that shows nothing in a log, or cut a table at 80 columns, on its own."""
    assert [c for c in _calls("Console") if not c.startswith("utils/console.py")] == []
    assert [c for c in _calls("Progress") if not c.startswith("utils/progress.py")] == []
