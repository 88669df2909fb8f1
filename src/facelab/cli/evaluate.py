"""``facelab eval``, ``predict`` and ``export``: score, apply and export trained classifiers."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from facelab.cli.common import (ACCEPT_CHANGED_OPT, CHECKPOINT_OPT, DETECTOR_OPT, DEVICE_OPT, FACES_OPT, JSON_OPT,
                                _checkpoint_choice, _one_or_many, console, emit_json)
from facelab.errors import FacelabError
from facelab.utils.console import stdout_console


def evaluate(
    run: list[Path] = typer.Argument(..., help="A training run folder (or checkpoint); several are scored as "
                                     "one ensemble, their probabilities averaged."),
    data: Path = typer.Option(..., "--data", help="Store to evaluate on (its labels must match the model's)."),
    split: str = typer.Option("test", help="train | val | test | all: on the run's own store, the rows the run "
                              "recorded (splits.json); elsewhere the official partition"),
    checkpoint: str = CHECKPOINT_OPT,
    device: str = DEVICE_OPT,
    tta_flip: Optional[bool] = typer.Option(None, "--tta-flip/--no-tta-flip", help="Average predictions with the "
                                            "horizontally flipped image [default: as the run was validated: "
                                            "on for runs trained with -o tta_flip=true]."),
    adapt_priors: bool = typer.Option(False, "--adapt-priors", help="Re-weight the probabilities to the class priors of "
                                      "the evaluated images, estimated from the unlabelled predictions (EM, Saerens et "
                                      "al. 2002): for data whose label frequencies differ from the training data's."),
    labels_file: Optional[Path] = typer.Option(None, "--labels-file", help="The labels CSV the truth comes from "
                                               "(default: the run's own, when the store lacks the model's labels)."),
    reviewed_only: bool = typer.Option(False, "--reviewed-only", help="Score only the images a person reviewed "
                                       "on the review page (their classes are the truth)."),
    accept_changed_inputs: bool = ACCEPT_CHANGED_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Per-label accuracy, balanced accuracy, macro-F1 and AUROC next to the majority baseline."""
    from facelab.eval.evaluate import evaluate_run

    if split not in ("train", "val", "test", "all"):
        raise FacelabError(f"--split {split!r}: choose train, val, test or all")
    report = evaluate_run(_one_or_many(run), data, split=split, device=device, tta_flip=tta_flip,  # type: ignore[arg-type]
                          which=_checkpoint_choice(checkpoint), adapt_priors=adapt_priors, labels_file=labels_file,
                          reviewed_only=reviewed_only, accept_changed_inputs=accept_changed_inputs)
    if as_json:
        emit_json(report)
        return
    from rich.table import Table

    def cell(v: float | None) -> str:
        return "-" if v is None or v != v else f"{v:.4f}"

    t = Table(title=f"{report['model']} on {report['store']} ({report['rows']}, n={report['count']})")
    for c in ("label", "accuracy", "majority", "balanced acc", "macro-F1", "AUROC"):
        t.add_column(c, justify="right" if c != "label" else "left")
    rows = list(report["per_label"].items()) + [("MEAN", {k.removeprefix("mean_"): v for k, v in report["summary"].items()})]
    for name, m in rows:
        t.add_row(name, *(cell(m[k]) for k in ("accuracy", "majority_accuracy", "balanced_accuracy", "f1_macro", "auroc")))
    stdout_console().print(t)
    for name, share in report.get("flip_consistency", {}).items():
        console.print(f"flip consistency of {name}: {share:.4f} (mirror image predicted as the mirrored class)")
    for note in ([report["note"]] if "note" in report else []):
        console.print(f"[yellow]note[/]: {note}")
    for w in report.get("warnings", []):
        console.print(f"[yellow]warning[/]: {w}")
    if "label_shift" in report:
        before = report["label_shift"]["unadapted_summary"]["mean_accuracy"]
        console.print(f"priors adapted to these images (EM): mean accuracy {before:.4f} -> "
                      f"{report['summary']['mean_accuracy']:.4f}; training priors from "
                      f"{report['label_shift']['train_priors_from']}")
    console.print(f"plots: {', '.join(report['plots'].values())}")


def predict(
    run: list[Path] = typer.Argument(..., help="A training run folder (or checkpoint); several are one ensemble, "
                                     "their probabilities averaged; or a .onnx file written by facelab export."),
    target: Path = typer.Argument(..., help="A store folder or a folder of images (searched recursively)."),
    out: Path = typer.Option(Path("predictions.csv"), "--out", help="CSV file to write."),
    checkpoint: str = CHECKPOINT_OPT,
    device: str = DEVICE_OPT,
    threshold: float = typer.Option(0.5, help="Decision threshold for binary labels."),
    tta_flip: Optional[bool] = typer.Option(None, "--tta-flip/--no-tta-flip", help="Average predictions with the "
                                            "horizontally flipped image [default: as the run was validated: "
                                            "on for runs trained with -o tta_flip=true]."),
    engine: Optional[str] = typer.Option(None, "--engine", help="torch (default) | onnx: onnxruntime on the run's "
                                         "RUN/export/model.onnx, exported first when missing or made from other "
                                         "weights than the checkpoint's. A .onnx file always runs on onnx."),
    faces: str = FACES_OPT,
    detector: Optional[str] = DETECTOR_OPT,
    accept_changed_inputs: bool = ACCEPT_CHANGED_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Probability per label and predicted labels for every image (every face of every photo), as CSV rows."""
    from facelab.eval.predict import predict_to_csv

    report = predict_to_csv(_one_or_many(run), target, out, device=device, threshold=threshold,
                            which=_checkpoint_choice(checkpoint), tta_flip=tta_flip, engine=engine,
                            faces=faces, detector=detector,  # type: ignore[arg-type]
                            accept_changed_inputs=accept_changed_inputs)
    if as_json:
        emit_json(report.to_dict())
        return
    console.print(f"[bold green]wrote[/] {report.count} rows to {report.out}")
    for s in report.skipped[:10]:
        console.print(f"  skipped {s['key']}: {s['reason']}", markup=False)
    for c in report.capped[:10]:
        console.print(f"  {c['key']}: {c['note']}", markup=False)
    for w in report.warnings:
        console.print(f"[yellow]warning[/]: {w}")


def export(
    run: list[Path] = typer.Argument(..., help="A classifier run folder (or checkpoint); several are exported as "
                                     "one ensemble, their probabilities averaged."),
    fmt: str = typer.Option("onnx", "--format", help="onnx (the only format so far)."),
    out: Optional[Path] = typer.Option(None, "--out", help="The .onnx file to write (default for one run: "
                                       "RUN/export/model.onnx, the file predict --engine onnx runs)."),
    checkpoint: str = CHECKPOINT_OPT,
    opset: Optional[int] = typer.Option(None, min=7, help="ONNX opset (default: the exporter's)."),
    exporter: str = typer.Option("dynamo", help="dynamo (torch.onnx.export(dynamo=True)) | torchscript"),
    check_batch: int = typer.Option(8, min=1, help="Images in the PyTorch-vs-onnxruntime parity check."),
    device: str = DEVICE_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Export a trained classifier to ONNX with its labels and preprocessing inside, checked against PyTorch."""
    from facelab.deploy import export_onnx

    if fmt != "onnx":
        raise FacelabError(f"--format {fmt!r}: facelab exports onnx only")
    report = export_onnx(_one_or_many(run), out, which=_checkpoint_choice(checkpoint), device=device, opset=opset,
                         check_batch=check_batch, exporter=exporter)
    if as_json:
        emit_json(report.to_dict())
        return
    p = report.parity
    console.print(f"[bold green]exported[/] {report.model} to {report.out}: {report.size_bytes / 1e6:.2f} MB, "
                  f"opset {report.opset}, {report.exporter} exporter ({report.seconds['total']:.1f}s)")
    console.print(f"parity PyTorch vs onnxruntime on {p.images}, batch sizes {', '.join(map(str, p.batch_sizes))}: "
                  f"max |difference| of logits {p.max_abs_logit_diff:.2e}, of probabilities {p.max_abs_prob_diff:.2e} "
                  f"(tolerance {p.tolerance:g})", highlight=False)
