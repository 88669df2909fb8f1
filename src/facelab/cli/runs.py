"""``facelab report``, ``runs`` and ``demo``: run folders and the end-to-end demo."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from facelab.cli.common import JSON_OPT, console, emit_json
from facelab.config import resolve_config
from facelab.utils.console import stdout_console
from facelab.utils.figures import figure


def report(run: Path = typer.Argument(..., help="A run or experiment folder.")) -> None:
    """Re-render the run folder's self-contained report.html."""
    from facelab.report import render_report

    console.print(str(render_report(run)))


def runs(root: Path = typer.Argument(Path("runs"), help="Folder holding run folders."), as_json: bool = JSON_OPT) -> None:
    """List runs with their kind and key metric (whole rows when not printed to a terminal)."""
    from rich.table import Table
    from rich.text import Text

    from facelab.report import list_runs

    rows = list_runs(root)
    if as_json:
        emit_json(rows)
        return
    t = Table(title=Text(f"runs in {root}"))
    for c in ("run", "kind", "metric", "value", "modified"):
        t.add_column(c)
    for r in rows:  # Text: a folder or an error message is shown as it is, never read as rich markup
        t.add_row(*(Text(str(v)) for v in (r["run"], r["kind"], r["metric"], figure(r["value"]), r["modified"])))
    stdout_console().print(t)
    if not rows:
        console.print(f"no run folders in {root}")


def demo(
    out: Path = typer.Option(Path("runs"), help="Folder under which the demo run folder is created."),
    n: Optional[int] = typer.Option(None, help="Number of synthetic faces (default 2000)."),
    size: Optional[int] = typer.Option(None, help="Image size of the synthetic store (default 32)."),
    seeds: Optional[int] = typer.Option(None, help="Seeds per method in the study (default 2)."),
    option: Optional[list[str]] = typer.Option(None, "-o", "--option", help="Any DemoConfig field, e.g. -o p=0.2"),
    as_json: bool = JSON_OPT,
) -> None:
    """The main job, end to end on built-in synthetic faces: store, classifier, class-imbalance study, report."""
    from facelab.experiments.demo import DemoConfig, run_demo

    cfg = resolve_config(DemoConfig, flags={"n": n, "size": size, "seeds": seeds}, options=option, where="demo options")
    summary = run_demo(cfg, runs_root=out)
    if as_json:
        emit_json(summary)
        return
    c, st = summary["classifier"], summary["study"]
    console.print(f"classifier: test mean accuracy {c['test_mean_accuracy']:.4f} "
                  f"(majority baseline {c['test_majority_accuracy']:.4f})")
    console.print(f"study ({st['target']}, p={st['p']}): balanced accuracy " +
                  ", ".join(f"{m} {v:.3f}" for m, v in st["balanced_accuracy"].items() if v is not None))
    console.print(f"done in {summary['seconds']:.0f}s")
    print(summary["report"])
