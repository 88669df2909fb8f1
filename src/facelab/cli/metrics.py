"""``facelab metrics fid | fidelity | cas``: quality metrics of generative runs."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from facelab.cli.common import DEVICE_OPT, JSON_OPT, _json_default, _run_folder, console, emit_json
from facelab.errors import FacelabError
from facelab.utils.io import finite_or_none

metrics_app = typer.Typer(help="Quality metrics of generative runs: FID/KID, conditional fidelity, CAS.", no_args_is_help=True)


@metrics_app.command("fid")
def metrics_fid(
    run: Path = typer.Argument(..., help="A generative run."),
    data: Path = typer.Option(..., "--data", help="Real store to compare with."),
    features: Path = typer.Option(..., help="Feature network: a facelab classifier run trained on --data."),
    split: str = typer.Option("test", help="Real rows: test | val | train"),
    n: int = typer.Option(5000, min=10, help="Generated samples."),
    device: str = DEVICE_OPT,
    seed: int = typer.Option(0),
    as_json: bool = JSON_OPT,
) -> None:
    """FID and KID with a named feature network (real features cached by data+extractor+resolution)."""
    from facelab.eval.generative_metrics import score_generator

    _check_cache_writable()
    res = score_generator(run, data=data, feature_run=features, split=split, n=n, device=device, seed=seed)  # type: ignore[arg-type]
    emit_json(res) if as_json else console.print_json(data=finite_or_none(res), default=_json_default)


@metrics_app.command("fidelity")
def metrics_fidelity(
    run: Path = typer.Argument(..., help="A conditional generative run."),
    classifier: Path = typer.Option(..., help="An independent classifier run predicting the conditions."),
    labels: Optional[str] = typer.Option(None, help="Conditions to test (default: all)."),
    n_per_value: int = typer.Option(500, min=1),
    data: Optional[Path] = typer.Option(None, "--data", help="Store whose rows give the other conditions."),
    device: str = DEVICE_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Share of samples conditioned on a value that the classifier assigns that value."""
    from facelab.eval.generative_metrics import conditional_fidelity

    res = conditional_fidelity(run, classifier, labels=labels.split(",") if labels else None,
                               n_per_value=n_per_value, data=data, device=device)
    emit_json(res) if as_json else console.print_json(data=finite_or_none(res), default=_json_default)


@metrics_app.command("cas")
def metrics_cas(
    run: Path = typer.Argument(..., help="A generative run conditioned on --label."),
    data: Path = typer.Option(..., "--data", help="Real store (test split = evaluation)."),
    label: str = typer.Option(..., help="The condition to classify."),
    n_train: int = typer.Option(10000, min=10),
    epochs: int = typer.Option(5, min=1),
    out: Path = typer.Option(Path("runs"), help="Folder under which the CAS folder (cas-<timestamp>: its two "
                             "classifier runs and cas.json) is created."),
    name: Optional[str] = typer.Option(None, help="CAS folder cas-NAME under --out (default: a timestamp)."),
    device: str = DEVICE_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Classification Accuracy Score: train on generated images only, test on real ones (with the real-data reference)."""
    from facelab.experiments.cas import CasConfig, classification_accuracy_score

    cfg = CasConfig(generator=str(run), data=str(data), label=label, n_train=n_train, epochs=epochs, device=device)
    with _run_folder("cas", name=name, out=out, config=cfg) as run_dir:
        res = classification_accuracy_score(run, data=data, label=label, run_dir=run_dir, n_train=n_train,
                                            epochs=epochs, device=device)
    emit_json(res) if as_json else console.print_json(data=finite_or_none(res), default=_json_default)


def _check_cache_writable() -> None:
    """FacelabError, before any work, when the real-feature cache folder cannot be made or written (a
    read-only home folder): the fix is another folder in $FACELAB_CACHE."""
    import os

    from facelab.eval.generative_metrics import default_cache_dir

    folder = default_cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FacelabError(f"cannot make the feature cache folder {folder} ({e.strerror}); set FACELAB_CACHE to a "
                           "folder you can write, e.g. FACELAB_CACHE=/tmp/facelab-cache") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise FacelabError(f"cannot write into the feature cache folder {folder}; set FACELAB_CACHE to a folder you "
                           "can write, e.g. FACELAB_CACHE=/tmp/facelab-cache")
