"""``facelab label auto | review``: orientation and light labels, automatic, then reviewed by a person."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from facelab.cli.common import JSON_OPT, console, emit_json
from facelab.config import parse_options

label_app = typer.Typer(help="Labels of face orientation and light direction: automatic, then reviewed.",
                        no_args_is_help=True)


@label_app.command("auto")
def label_auto(
    store: Path = typer.Argument(..., help="A store whose images carry face landmarks (built with --align, or CelebA "
                                 "with its landmarks file)."),
    task: str = typer.Option("orientation,light", "--task", help="Comma-separated: orientation, light."),
    out: Path = typer.Option(Path("labels.csv"), "--out", help="The labels CSV to write (plus OUT.html, the report). "
                             "An existing labels file keeps every class a person reviewed, and the tasks not "
                             "labelled now."),
    option: Optional[list[str]] = typer.Option(None, "-o", "--option", help="A labeler option, TASK.KEY=VALUE: "
                                               "-o orientation.threshold=20 (degrees of yaw), -o light.threshold=0.1"),
    as_json: bool = JSON_OPT,
) -> None:
    """Label every image: head orientation from the landmarks, light direction from the skin's shading."""
    from facelab.data.store import Store
    from facelab.data.labels_file import LabelsFile
    from facelab.labelers.report import label_report
    from facelab.labelers.table import auto_label

    st = Store.open(store)
    result = auto_label(st, task, out, options=parse_options(option))
    result["report"] = str(label_report(st, LabelsFile.read(out, store=st)))
    if as_json:
        emit_json(result)
        return
    console.print(f"[bold green]labelled[/] {result['images']} images in {result['seconds']:.1f}s "
                  f"({result['images_per_s']:.0f}/s) -> {result['out']}")
    for t, counts in result["counts"].items():
        console.print(f"  {t}: " + ", ".join(f"{c} {n}" for c, n in counts.items()))
    if result["unlabelled"]:
        console.print(f"  {result['unlabelled']} images without a label (see the note column)")
    kept = {t: n for t, n in result["kept_reviewed"].items() if n}
    if kept:
        console.print(f"  kept {sum(kept.values())} classes a person reviewed: "
                      + ", ".join(f"{t} {n}" for t, n in kept.items()))
    if result["kept_tasks"]:
        console.print(f"  kept as they were: {', '.join(result['kept_tasks'])} (not labelled now)")
    console.print(f"report: {result['report']}")


@label_app.command("review")
def label_review(
    store: Path = typer.Argument(..., help="The store the labels are of."),
    labels: Path = typer.Option(..., "--labels", help="The labels CSV (from `facelab label auto`): decisions are "
                                "written into it at once."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (127.0.0.1: this computer only)."),
    port: int = typer.Option(8000, min=0, max=65535, help="TCP port (0: any free one, said when serving starts)."),
) -> None:
    """A page showing the faces least-confident first: one key per class, s to skip, u to undo."""
    from facelab.data.store import Store
    from facelab.data.labels_file import LabelsFile
    from facelab.serve.app import create_app
    from facelab.serve.review import ReviewSession, review_lock
    from facelab.serve.server import HttpConfig, listen, serve

    st = Store.open(store)
    session = ReviewSession(st, LabelsFile.read(labels, store=st))
    http = HttpConfig(host=host, port=port)
    with review_lock(labels), listen(http) as listener:  # a busy port is one clear line, before any announcement
        console.print(f"reviewing {labels} on {listener.url}review - every decision is saved at once; Ctrl-C stops")
        serve(create_app(None, review=session), listener, http)
