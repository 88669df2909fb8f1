"""The ``facelab`` command: thin typer verbs over library functions.

Every command resolves its config one way (:func:`facelab.config.resolve_config`: defaults < ``--config`` YAML
< flags < ``-o``), makes its run folder one way (:func:`facelab.cli.common._run_folder`: removed again when the
command fails before anything was trained) and prints figures as JSON with ``--json``. User mistakes are one
clear line and exit code 2 (:func:`main`).

The verbs live one group to a module (``data.py``, ``train.py``, ``evaluate.py``, ``serve.py``, ``labels.py``,
``experiments.py``, ``runs.py``, ``generate.py``, ``metrics.py``, ``sweep.py``; what they share in ``common.py``);
this module builds the root app from them, in the order ``facelab --help`` lists them. Library imports stay inside
the command functions, so ``facelab --help`` starts fast.
"""

from __future__ import annotations

import typer

from facelab.cli import data, evaluate, experiments, generate, labels, metrics, runs, serve, sweep, train
from facelab.cli.common import console
from facelab.errors import FacelabError

app = typer.Typer(
    help="facelab: face-attribute datasets, classifiers, generative models and class-imbalance studies.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(data.data_app, name="data")
app.add_typer(experiments.experiment_app, name="experiment")
app.add_typer(labels.label_app, name="label")
app.add_typer(metrics.metrics_app, name="metrics")
app.add_typer(sweep.sweep_app, name="sweep")

app.command("align")(data.align)
app.command("train")(train.train)
app.command("pretrain")(train.pretrain)
app.command("eval")(evaluate.evaluate)
app.command("predict")(evaluate.predict)
app.command("export")(evaluate.export)
app.command("serve")(serve.serve)
app.command("report")(runs.report)
app.command("runs")(runs.runs)
app.command("train-gen")(train.train_gen)
app.command("sample")(generate.sample)
app.command("interpolate")(generate.interpolate)
app.command("blend")(generate.blend)
app.command("demo")(runs.demo)


def _show_library_log() -> None:
    """Library notices (e.g. what a --pretrained file loaded and left out) go to stderr, not nowhere."""
    import logging

    from rich.logging import RichHandler

    logger = logging.getLogger("facelab")
    if not logger.handlers:
        logger.addHandler(RichHandler(console=console, show_time=False, show_path=False))
        logger.setLevel(logging.INFO)


def main() -> None:
    """Entry point with friendly errors: user mistakes print one clear line and exit 2, and so do the file
    errors a user fixes (no space, no permission, a read-only file system, a name too long:
    :func:`facelab.utils.io.os_error_message`), whichever library raised them."""
    _show_library_log()
    from rich.text import Text

    from facelab.utils.io import os_error_message
    from facelab.utils.secrets import mask_secrets

    try:
        app()
    except FacelabError as e:
        # one line however long (no markup in paths): what scripts and logs read; no password from a URL it quotes
        console.print(Text.assemble(("error: ", "bold red"), mask_secrets(str(e))), highlight=False, soft_wrap=True)
        raise SystemExit(2) from None
    except Exception as e:  # noqa: BLE001 - only the errors a user can fix are caught; others raise on
        message = os_error_message(e)
        if message is None:
            raise
        console.print(Text.assemble(("error: ", "bold red"), mask_secrets(message)), highlight=False, soft_wrap=True)
        raise SystemExit(2) from None
