"""The ``facelab`` command: thin typer verbs over library functions (no logic of its own)."""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import typer
import yaml
from rich.console import Console

from facelab.config import overlay
from facelab.errors import FacelabError

app = typer.Typer(
    help="facelab: face-attribute datasets, classifiers, generative models and augmentation studies.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Prepare dataset stores and inspect them.", no_args_is_help=True)
app.add_typer(data_app, name="data")
experiment_app = typer.Typer(help="Experiments: config -> run folder -> results and plots.", no_args_is_help=True)
app.add_typer(experiment_app, name="experiment")
metrics_app = typer.Typer(help="Quality metrics of generative runs: FID/KID, conditional fidelity, CAS.", no_args_is_help=True)
app.add_typer(metrics_app, name="metrics")

console = Console(stderr=True)
JSON_OPT = typer.Option(False, "--json", help="Print the figures as JSON on stdout.")
UNLIMITED_EPOCHS = 1_000_000  # train-gen --minutes without --epochs


def emit_json(obj: Any) -> None:
    """Print ``obj`` as JSON on stdout (the machine-readable channel; progress goes to stderr)."""
    sys.stdout.write(json.dumps(_finite(obj), indent=2, default=_json_default, allow_nan=False) + "\n")


def _finite(o: Any) -> Any:
    """NaN/inf become null, so strict JSON parsers (jq, JavaScript) read every --json output."""
    if isinstance(o, float):
        return o if o == o and o not in (float("inf"), float("-inf")) else None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    if hasattr(o, "tolist"):
        return _finite(o.tolist())
    if hasattr(o, "to_dict"):
        return _finite(o.to_dict())
    return o


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "to_dict"):
        return o.to_dict()
    return str(o)


def parse_options(items: list[str] | None) -> dict[str, Any]:
    """``-o key=value`` pairs; values are parsed as YAML (numbers, lists, mappings); dotted keys nest."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise FacelabError(f"option {item!r} is not KEY=VALUE (e.g. -o n=5000 -o prevalence.Male=0.1)")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw else None
        node = out
        *parents, leaf = key.strip().split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


# ---- data ------------------------------------------------------------------------------------
@data_app.command("sources")
def data_sources(as_json: bool = JSON_OPT) -> None:
    """List the registered dataset sources and their options."""
    from facelab.data.sources import SOURCES

    rows = {}
    for name in SOURCES.names():
        cls = SOURCES.get(name)
        rows[name] = {
            "doc": (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else "",
            "options": {k: str(f.default) for k, f in cls.Options.model_fields.items()},
            "default_crop": cls.default_crop.model_dump(),
        }
    if as_json:
        emit_json(rows)
        return
    for name, r in rows.items():
        console.print(f"[bold]{name}[/]: {r['doc']}")
        if r["options"]:
            console.print("   options: " + ", ".join(f"{k}={v}" for k, v in r["options"].items()))


@data_app.command("prepare")
def data_prepare(
    source: str = typer.Argument(..., help="celeba | utkface | cifar10 | folder | synthetic"),
    root: Optional[Path] = typer.Argument(None, help="Dataset folder as downloaded (not needed for synthetic)."),
    out: Path = typer.Option(..., "--out", help="Store folder to write."),
    size: int = typer.Option(64, "--size", min=8, max=1024, help="Side of the square store images (px)."),
    crop: Optional[str] = typer.Option(None, help="Crop mode: center | box | none (default: the source's)."),
    crop_scale: Optional[float] = typer.Option(None, help="Centre crop side as a share of the short side (0-1]."),
    crop_offset_y: Optional[float] = typer.Option(None, help="Shift the centre crop down by this share of the height."),
    crop_box: Optional[str] = typer.Option(None, help="left,top,right,bottom in source pixels (mode box)."),
    workers: Optional[int] = typer.Option(None, help="Decoding processes (default: all cores)."),
    option: Optional[list[str]] = typer.Option(None, "-o", "--option", help="Source option KEY=VALUE (repeatable)."),
    overwrite: bool = typer.Option(False, help="Replace a different store already in --out."),
    as_json: bool = JSON_OPT,
) -> None:
    """Decode a dataset once into a fast store (resumable; re-run to finish an interrupted build)."""
    from facelab.data.build import prepare_store
    from facelab.data.sources import create_source

    src = create_source(source, root, **parse_options(option))
    crop_spec = _crop_spec(type(src).default_crop, crop, crop_scale, crop_offset_y, crop_box)
    report = prepare_store(src, out, size=size, crop=crop_spec, workers=workers, overwrite=overwrite, progress=True)
    if as_json:
        emit_json(report.to_dict())
    else:
        _print_build_report(report)


def _crop_spec(default, mode, scale, offset_y, box):
    from facelab.data.schema import CropSpec

    d = default.model_dump()
    for k, v in {"mode": mode, "scale": scale, "offset_y": offset_y}.items():
        if v is not None:
            d[k] = v
    if box is not None:
        try:
            d["box"] = tuple(int(v) for v in box.split(","))
        except ValueError:
            raise FacelabError(f"--crop-box {box!r}: expected four integers left,top,right,bottom") from None
        d.setdefault("mode", "box")
        d["mode"] = mode or "box"
    return CropSpec.from_dict(d, where="crop options")


def _print_build_report(report) -> None:
    d = report.to_dict()
    console.print(f"[bold green]store ready[/]: {d.get('path')}")
    for k in ("count", "skipped_count", "seconds", "images_per_s", "status"):
        if k in d:
            console.print(f"  {k}: {d[k]}")
    for note in d.get("notes", []):
        console.print(f"  note: {note}")
    skipped = d.get("skipped", [])
    for s in skipped[:10]:
        console.print(f"  skipped {s['key']}: {s['reason']}")
    if len(skipped) > 10:
        console.print(f"  ... {len(skipped) - 10} more skipped files listed in manifest.json")


@data_app.command("stats")
def data_stats(
    store: Path = typer.Argument(..., help="A store folder made by `facelab data prepare`."),
    plots: Optional[Path] = typer.Option(None, help="Folder for correlation.png and prevalence.png (default STORE/stats)."),
    as_json: bool = JSON_OPT,
) -> None:
    """Counts per split, per-label prevalence, and the label correlation heatmap."""
    from facelab.data import stats as st
    from facelab.data.store import Store

    s = Store.open(store)
    figures = st.dataset_stats(s)
    plots = plots or (s.path / "stats")
    plots.mkdir(parents=True, exist_ok=True)
    names, matrix = st.correlation_matrix(s)
    if len(names) >= 2:
        st.plot_correlation(plots / "correlation.png", names, matrix)
    st.plot_prevalence(plots / "prevalence.png", figures)
    figures["plots"] = {"correlation": str(plots / "correlation.png") if len(names) >= 2 else None,
                        "prevalence": str(plots / "prevalence.png")}
    if as_json:
        emit_json(figures)
        return
    Console().print(st.format_stats_table(figures))
    console.print(f"plots written to {plots}")


# ---- classifiers -----------------------------------------------------------------------------
def _classifier_config(store, config, labels, model, epochs, batch_size, lr, optimizer, schedule, augment,
                       random_erasing, balance, pretrained, freeze, unfreeze_at, device, seed, train_limit, train_identities,
                       option):
    from facelab.train.classifier import ClassifierConfig

    data: dict[str, Any] = {}
    if config is not None:
        data = yaml.safe_load(Path(config).read_text()) or {}
    cli = {"store": str(store) if store else None, "labels": labels.split(",") if labels else None, "model": model,
           "batch_size": batch_size, "augment": augment, "random_erasing": random_erasing, "balance": balance,
           "pretrained": pretrained, "freeze_backbone": freeze or None, "unfreeze_at_epoch": unfreeze_at,
           "device": device, "seed": seed, "train_limit": train_limit,
           "train_identities": train_identities}
    data.update({k: v for k, v in cli.items() if v is not None})
    tr = data.setdefault("trainer", {})  # merged over the classifier defaults by ClassifierConfig
    if epochs is not None:
        tr["epochs"] = epochs
    for key, val in (("lr", lr), ("name", optimizer)):
        if val is not None:
            tr.setdefault("optim", {})[key] = val
    if schedule is not None:
        tr.setdefault("schedule", {})["name"] = schedule
    data = overlay(data, parse_options(option))
    return ClassifierConfig.from_dict(data, where=str(config) if config else "classifier options")


def _resume_config(config_cls: Any, run_dir: Path, *, epochs: int | None = None, minutes: float | None = None,
                   others: dict[str, Any]) -> Any:
    """The saved config of the run to resume, its budgets raised by ``--epochs`` / ``--minutes``.

    A resumed run keeps its config.yaml (what trained the checkpoint). Only the training budgets can grow,
    e.g. a finished GAN trained for another hour; the new budgets are written back to config.yaml (time
    budgets count training time over every resume). Any other option is an error, never silently ignored.
    """
    given = [f"--{k.replace('_', '-')}" for k, v in others.items() if v not in (None, False, [])]
    if given:
        raise typer.BadParameter(f"--resume continues {run_dir} with its saved config.yaml; only --epochs and "
                                 f"--minutes can change (to extend training); drop {', '.join(given)}")
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise FacelabError(f"{run_dir}: no config.yaml, so not a facelab run folder to resume")
    cfg = config_cls.from_yaml(path)
    changes = {k: v for k, v in (("epochs", epochs), ("time_budget_minutes", minutes)) if v is not None}
    if changes:
        cfg = config_cls.from_dict(overlay(cfg.model_dump(mode="json"), {"trainer": changes}), where="--resume budgets")
        if epochs is not None and cfg.trainer.schedule.name != "constant":
            console.print(f"[yellow]note[/]: the {cfg.trainer.schedule.name} learning-rate schedule is stretched to "
                          f"{epochs} epochs from the resumed step on")
        path.write_text(cfg.to_yaml())
    return cfg


@app.command("train")
def train(
    store: Optional[Path] = typer.Argument(None, help="Store to train on (or set `store:` in --config)."),
    config: Optional[Path] = typer.Option(None, help="YAML file of ClassifierConfig overrides."),
    labels: Optional[str] = typer.Option(None, help="Comma-separated labels (default: all labels of the store)."),
    model: Optional[str] = typer.Option(None, help="vgg_scratch | resnet18 | resnet34 | resnet50 | inception_v3"),
    epochs: Optional[int] = typer.Option(None, min=1),
    batch_size: Optional[int] = typer.Option(None, min=1),
    lr: Optional[float] = typer.Option(None, help="Peak learning rate."),
    optimizer: Optional[str] = typer.Option(None, help="sgd | adam | adamw | adabound"),
    schedule: Optional[str] = typer.Option(None, help="onecycle | cosine | step | plateau | constant"),
    augment: Optional[str] = typer.Option(None, help="Augmentation preset: none | flip | geometric | standard | strong"),
    random_erasing: Optional[float] = typer.Option(None, help="Random-erasing probability."),
    balance: Optional[str] = typer.Option(None, help="none | class_weights | sampler"),
    pretrained: Optional[str] = typer.Option(None, help="torchvision-format weights file or facelab run/checkpoint."),
    freeze: bool = typer.Option(False, help="Freeze the backbone (batch-norm statistics too)."),
    unfreeze_at: Optional[int] = typer.Option(None, help="Epoch at which to unfreeze (with a lower lr)."),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda | cuda:1"),
    seed: Optional[int] = typer.Option(None),
    train_limit: Optional[int] = typer.Option(None, help="Use at most N training images."),
    train_identities: Optional[int] = typer.Option(None, help="Train on the photos of N randomly chosen training people only."),
    option: Optional[list[str]] = typer.Option(None, "-o", "--option", help="Any config key, dotted: -o trainer.optim.weight_decay=0.01"),
    out: Path = typer.Option(Path("runs"), help="Folder under which the run folder is created."),
    name: Optional[str] = typer.Option(None, help="Run folder train-NAME under --out (default: train-<timestamp>); an existing one is an error."),
    resume: Optional[Path] = typer.Option(None, help="Resume the run in this folder after a kill (or extend it: with --epochs)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved config and exit."),
    as_json: bool = JSON_OPT,
) -> None:
    """Train an attribute classifier (multi-label or multi-class) on a store."""
    from facelab.runs import create_run_dir
    from facelab.train.classifier import ClassifierConfig, check_config, train_classifier

    if resume is not None:
        cfg = _resume_config(ClassifierConfig, resume, epochs=epochs, others=dict(
            store=store, config=config, labels=labels, model=model, batch_size=batch_size, lr=lr, optimizer=optimizer,
            schedule=schedule, augment=augment, random_erasing=random_erasing, balance=balance, pretrained=pretrained,
            freeze=freeze, unfreeze_at=unfreeze_at, device=device, seed=seed, train_limit=train_limit,
            train_identities=train_identities, option=option,
            name=name))
        run_dir = resume
    else:
        cfg = _classifier_config(store, config, labels, model, epochs, batch_size, lr, optimizer, schedule, augment,
                                 random_erasing, balance, pretrained, freeze, unfreeze_at, device, seed, train_limit,
                                 train_identities, option)
        check_config(cfg)
        if dry_run:
            sys.stdout.write(cfg.to_yaml())
            return
        run_dir = create_run_dir("train", name=name, root=out, config=cfg)
    console.print(f"run folder: {run_dir}")
    with _drop_if_nothing_ran(run_dir, resume is not None):
        summary = train_classifier(cfg, run_dir=run_dir, resume=resume is not None)
    if as_json:
        emit_json(summary)
    else:
        f = summary["final"]
        console.print(f"[bold green]done[/] {summary['epochs']} epochs, best {summary['monitor']}={summary['best']:.4f}, "
                      f"val mean accuracy {f.get('val_mean_accuracy', float('nan')):.4f} ({summary['fit_seconds']:.0f}s)")


CHECKPOINT_OPT = typer.Option("best", "--checkpoint", help="Checkpoint of each run folder: best (by its validation "
                              "metric) or last (the last epoch's).")


def _checkpoint_choice(value: str) -> str:
    if value not in ("best", "last"):
        raise FacelabError(f"--checkpoint {value!r}: choose best or last")
    return value


@app.command("eval")
def evaluate(
    run: list[Path] = typer.Argument(..., help="A training run folder (or checkpoint); several are scored as "
                                     "one ensemble, their probabilities averaged."),
    data: Path = typer.Option(..., "--data", help="Store to evaluate on (its labels must match the model's)."),
    split: str = typer.Option("test", help="train | val | test | all"),
    checkpoint: str = CHECKPOINT_OPT,
    device: str = typer.Option("cpu"),
    tta_flip: bool = typer.Option(False, help="Average predictions with the horizontally flipped image."),
    adapt_priors: bool = typer.Option(False, "--adapt-priors", help="Re-weight the probabilities to the class priors of "
                                      "the evaluated images, estimated from the unlabelled predictions (EM, Saerens et "
                                      "al. 2002): for data whose label frequencies differ from the training data's."),
    as_json: bool = JSON_OPT,
) -> None:
    """Per-label accuracy, balanced accuracy, macro-F1 and AUROC next to the majority baseline."""
    from facelab.eval.evaluate import evaluate_run

    if split not in ("train", "val", "test", "all"):
        raise FacelabError(f"--split {split!r}: choose train, val, test or all")
    report = evaluate_run(run if len(run) > 1 else run[0], data, split=split, device=device, tta_flip=tta_flip,  # type: ignore[arg-type]
                          which=_checkpoint_choice(checkpoint), adapt_priors=adapt_priors)
    if as_json:
        emit_json(report)
        return
    from rich.table import Table

    t = Table(title=f"{report['model']} on {report['store']} ({report['rows']}, n={report['count']})")
    for c in ("label", "accuracy", "majority", "balanced acc", "macro-F1", "AUROC"):
        t.add_column(c, justify="right" if c != "label" else "left")
    rows = list(report["per_label"].items()) + [("MEAN", {k.removeprefix("mean_"): v for k, v in report["summary"].items()})]
    for name, m in rows:
        t.add_row(name, *(f"{m[k]:.4f}" for k in ("accuracy", "majority_accuracy", "balanced_accuracy", "f1_macro", "auroc")))
    Console().print(t)
    if "note" in report:
        console.print(f"[yellow]note[/]: {report['note']}")
    if "label_shift" in report:
        before = report["label_shift"]["unadapted_summary"]["mean_accuracy"]
        console.print(f"priors adapted to these images (EM): mean accuracy {before:.4f} -> "
                      f"{report['summary']['mean_accuracy']:.4f}; training priors from "
                      f"{report['label_shift']['train_priors_from']}")
    console.print(f"plots: {', '.join(report['plots'].values())}")


@app.command("predict")
def predict(
    run: list[Path] = typer.Argument(..., help="A training run folder (or checkpoint); several are one ensemble, "
                                     "their probabilities averaged."),
    target: Path = typer.Argument(..., help="A store folder or a folder of images (searched recursively)."),
    out: Path = typer.Option(Path("predictions.csv"), "--out", help="CSV file to write."),
    checkpoint: str = CHECKPOINT_OPT,
    device: str = typer.Option("cpu"),
    threshold: float = typer.Option(0.5, help="Decision threshold for binary labels."),
    tta_flip: bool = typer.Option(False, help="Average predictions with the horizontally flipped image."),
    as_json: bool = JSON_OPT,
) -> None:
    """Probability per label and predicted labels for every image, one CSV row each."""
    from facelab.eval.predict import predict_to_csv

    report = predict_to_csv(run if len(run) > 1 else run[0], target, out, device=device, threshold=threshold,
                            which=_checkpoint_choice(checkpoint), tta_flip=tta_flip)
    if as_json:
        emit_json(report.to_dict())
        return
    console.print(f"[bold green]wrote[/] {report.count} rows to {report.out}")
    for s in report.skipped[:10]:
        console.print(f"  skipped {s['key']}: {s['reason']}")


def _resumed_study_config(config_cls: Any, folder: Path, **given: Any) -> Any:
    """The saved config of the study folder to resume; options that would change it are refused, never
    silently ignored (the finished cells were run with the saved config)."""
    named = [k for k, v in given.items() if v not in (None, False, [])]
    if named:
        raise typer.BadParameter(f"--resume continues {folder} with its saved config.yaml; drop {', '.join(named)}")
    if not (folder / "config.yaml").is_file():
        raise FacelabError(f"{folder}: no config.yaml, so not a study folder to resume")
    return config_cls.from_yaml(folder / "config.yaml")


@experiment_app.command("batch-schedule")
def experiment_batch_schedule(
    store: Optional[Path] = typer.Argument(None, help="Store to train on (or `store:` in --config)."),
    config: Optional[Path] = typer.Option(None, help="YAML overrides of BatchScheduleConfig."),
    option: Optional[list[str]] = typer.Option(None, "-o", "--option", help="KEY=VALUE override, e.g. -o epochs=8"),
    out: Path = typer.Option(Path("runs"), help="Folder under which the experiment folder is created."),
    resume: Optional[Path] = typer.Option(None, help="Resume the study in this folder after a kill (finished "
                                                     "variants are kept, an interrupted one continues)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved config and exit."),
    as_json: bool = JSON_OPT,
) -> None:
    """LR decay vs batch-size increase vs hybrid at the same milestones: accuracy, updates, training time."""
    from facelab.data.store import Store
    from facelab.experiments.batch_schedule import BatchScheduleConfig, results_table, run_batch_schedule, study_splits
    from facelab.runs import create_run_dir

    if resume is not None:
        cfg = _resumed_study_config(BatchScheduleConfig, resume, STORE=store, **{"--config": config, "-o": option})
        run_dir = resume
    else:
        data = yaml.safe_load(config.read_text()) if config else {}
        data = data or {}
        if store is not None:
            data["store"] = str(store)
        data = overlay(data, parse_options(option))
        cfg = BatchScheduleConfig.from_dict(data, where=str(config or "batch-schedule options"))
        study_splits(cfg, Store.open(cfg.store))  # labels and splits checked before any folder or training
        if dry_run:
            sys.stdout.write(cfg.to_yaml())
            return
        run_dir = create_run_dir("batch-schedule", root=out, config=cfg)
    console.print(f"study folder: {run_dir}")
    result = run_batch_schedule(cfg, run_dir=run_dir)
    if as_json:
        emit_json(result)
    else:
        Console().print(results_table(result["results"]))
        console.print(f"results and curves in {run_dir}")


@experiment_app.command("augment")
def experiment_augment(
    config: Optional[Path] = typer.Argument(None, help="YAML overrides of AugmentStudyConfig (store, target, p, methods, ...)."),
    store: Optional[Path] = typer.Option(None, help="Store (overrides the config's)."),
    target: Optional[str] = typer.Option(None, help="Binary label whose minority is reduced, e.g. Male or gender."),
    p: Optional[str] = typer.Option(None, help="Minority share(s) kept in training, e.g. 0.1 or 0.05,0.1,0.25"),
    methods: Optional[str] = typer.Option(None, help="Comma-separated methods (see `facelab experiment methods`)."),
    seeds: Optional[int] = typer.Option(None, help="Number of seeds per method."),
    eval_data: Optional[Path] = typer.Option(None, "--eval-data", help="An extra external store to evaluate on."),
    option: Optional[list[str]] = typer.Option(None, "-o", "--option", help="KEY=VALUE, e.g. -o classifier.trainer.epochs=5"),
    out: Path = typer.Option(Path("runs"), help="Folder under which the study folder is created."),
    resume: Optional[Path] = typer.Option(None, help="Resume the study in this folder (finished cells are kept)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate and print the resolved config, train nothing."),
    as_json: bool = JSON_OPT,
) -> None:
    """Does generated data help a minority class? Methods x seeds, mean ± 95% CI, report.html."""
    from facelab.experiments.augmentation_study import AugmentStudyConfig, run_study, validate_study
    from facelab.experiments.study_report import results_markdown
    from facelab.runs import create_run_dir

    if resume is not None:
        cfg = _resumed_study_config(AugmentStudyConfig, resume, CONFIG=config, **{
            "--store": store, "--target": target, "--p": p, "--methods": methods, "--seeds": seeds,
            "--eval-data": eval_data, "-o": option})
        run_dir = resume
    else:
        data = (yaml.safe_load(config.read_text()) if config else None) or {}
        for k, v in {"store": str(store) if store else None, "target": target, "seeds": seeds,
                     "eval_data": str(eval_data) if eval_data else None,
                     "p": [float(x) for x in p.split(",")] if p else None,
                     "methods": methods.split(",") if methods else None}.items():
            if v is not None:
                data[k] = v
        data = overlay(data, parse_options(option))
        cfg = AugmentStudyConfig.from_dict(data, where=str(config or "study options"))
        validate_study(cfg)
        if dry_run:
            sys.stdout.write(cfg.to_yaml())
            return
        run_dir = create_run_dir("augment", root=out, config=cfg)
    console.print(f"study folder: {run_dir}")
    summary = run_study(cfg, run_dir=run_dir)
    if as_json:
        emit_json(summary)
    else:
        Console().print(results_markdown(summary["aggregate"]))
        console.print(f"report: {summary['report']}")


@experiment_app.command("methods")
def experiment_methods() -> None:
    """List the balancing methods of the augmentation study."""
    from facelab.experiments.balancing import METHODS

    for name in METHODS.names():
        console.print(name)


@app.command("report")
def report(run: Path = typer.Argument(..., help="A run or experiment folder.")) -> None:
    """Re-render the run folder's self-contained report.html."""
    from facelab.report import render_report

    console.print(str(render_report(run)))


@app.command("runs")
def runs(root: Path = typer.Argument(Path("runs"), help="Folder holding run folders."), as_json: bool = JSON_OPT) -> None:
    """List runs with their kind and key metric."""
    from rich.table import Table

    from facelab.runs import list_runs

    rows = list_runs(root)
    if as_json:
        emit_json(rows)
        return
    t = Table(title=f"runs in {root}")
    for c in ("run", "kind", "metric", "value", "modified"):
        t.add_column(c)
    for r in rows:
        t.add_row(r["run"], r["kind"], r["metric"], "-" if r["value"] is None else f"{r['value']:.4f}", r["modified"])
    Console().print(t)


# ---- generative models ---------------------------------------------------------------------------
@app.command("train-gen")
def train_gen(
    store: Optional[Path] = typer.Argument(None, help="Store (32 or 64 px) to train on (or `store:` in --config)."),
    model: Optional[str] = typer.Option(None, help="vae | beta_vae | cvae | aae | dcgan | wgan_gp | sngan | cgan | acai"),
    cond: Optional[str] = typer.Option(None, help="Comma-separated labels to condition on (conditional models)."),
    epochs: Optional[int] = typer.Option(None, min=1),
    minutes: Optional[float] = typer.Option(None, min=0.01, help="Training-time budget: stop when it is spent "
                                            "(alone, it is the only limit; with --resume, the new total)."),
    batch_size: Optional[int] = typer.Option(None, min=2),
    config: Optional[Path] = typer.Option(None, help="YAML overrides of GenerativeRunConfig."),
    option: Optional[list[str]] = typer.Option(None, "-o", "--option", help="KEY=VALUE, e.g. -o model_options.width=64"),
    device: Optional[str] = typer.Option(None),
    out: Path = typer.Option(Path("runs"), help="Folder under which the run folder is created."),
    name: Optional[str] = typer.Option(None, help="Run folder gen-<model>-NAME under --out (default: a timestamp); an existing one is an error."),
    resume: Optional[Path] = typer.Option(None, help="Resume the run in this folder after a kill (or extend it: "
                                          "with --epochs / --minutes)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved config and exit."),
    as_json: bool = JSON_OPT,
) -> None:
    """Train a VAE / GAN / AAE / ACAI; writes sample grids every epoch and resumable checkpoints."""
    from facelab.runs import create_run_dir
    from facelab.train.generative import GenerativeRunConfig, check_config, train_generative

    if resume is not None:
        cfg = _resume_config(GenerativeRunConfig, resume, epochs=epochs, minutes=minutes, others=dict(
            store=store, model=model, cond=cond, batch_size=batch_size, config=config, option=option, device=device,
            name=name))
        run_dir = resume
    else:
        data = yaml.safe_load(config.read_text()) if config else {}
        data = data or {}
        for k, v in {"store": str(store) if store else None, "model": model, "batch_size": batch_size, "device": device,
                     "conditions": cond.split(",") if cond else None}.items():
            if v is not None:
                data[k] = v
        if epochs is not None:
            data.setdefault("trainer", {})["epochs"] = epochs
        if minutes is not None:
            data.setdefault("trainer", {})["time_budget_minutes"] = minutes
        data = overlay(data, parse_options(option))
        if minutes is not None and "epochs" not in data.get("trainer", {}):
            data["trainer"]["epochs"] = UNLIMITED_EPOCHS  # --minutes alone: the time budget ends training
        cfg = GenerativeRunConfig.from_dict(data, where=str(config or "generative options"))
        check_config(cfg)
        if dry_run:
            sys.stdout.write(cfg.to_yaml())
            return
        run_dir = create_run_dir(f"gen-{cfg.model}", name=name, root=out, config=cfg)
    console.print(f"run folder: {run_dir}")
    with _drop_if_nothing_ran(run_dir, resume is not None):
        summary = train_generative(cfg, run_dir=run_dir, resume=resume is not None)
    emit_json(summary) if as_json else console.print(f"[bold green]done[/]: grid {summary['grid']}")


@app.command("sample")
def sample(
    run: Path = typer.Argument(..., help="A generative run folder (or checkpoint)."),
    n: int = typer.Option(64, min=1),
    grid: Optional[Path] = typer.Option(None, help="PNG grid to write (8 per row; default RUN/samples/)."),
    images: Optional[Path] = typer.Option(None, help="Also save each image as a PNG in this folder."),
    cond: Optional[str] = typer.Option(None, help='Condition, e.g. "Male=1,Eyeglasses=1" or "horse".'),
    seed: int = typer.Option(0),
    temperature: float = typer.Option(1.0, min=0.01),
    device: str = typer.Option("cpu"),
    as_json: bool = JSON_OPT,
) -> None:
    """Sample images from a generative run."""
    from facelab.eval.sampling import sample_run

    res = sample_run(run, n=n, cond=cond, grid=grid, images_dir=images, seed=seed, temperature=temperature, device=device)
    emit_json(res) if as_json else console.print(f"grid: {res['grid']}")


@app.command("interpolate")
def interpolate(
    run: Path = typer.Argument(..., help="A generative run folder."),
    out: Path = typer.Option(Path("interpolation.png"), "--out"),
    steps: int = typer.Option(10, min=2),
    rows: int = typer.Option(4, min=1, help="Strips between random latent pairs."),
    data: Optional[Path] = typer.Option(None, "--data", help="Store of the real images for --pair."),
    pair: Optional[str] = typer.Option(None, help="I,J: interpolate between store rows I and J through the encoder."),
    cond: Optional[str] = typer.Option(None),
    linear: bool = typer.Option(False, help="Linear instead of spherical interpolation."),
    seed: int = typer.Option(0),
    device: str = typer.Option("cpu"),
    as_json: bool = JSON_OPT,
) -> None:
    """A strip between two latent points, or between two real images (autoencoders)."""
    from facelab.eval.sampling import interpolate_run

    pr = None
    if pair:
        try:
            a, b = (int(v) for v in pair.split(","))
        except ValueError:
            raise FacelabError(f"--pair {pair!r}: expected two store rows I,J") from None
        pr = (a, b)
    res = interpolate_run(run, out=out, steps=steps, rows=rows, seed=seed, cond=cond, store=data, pair=pr,
                          spherical=not linear, device=device)
    emit_json(res) if as_json else console.print(f"strip: {res['strip']}")


@app.command("blend")
def blend(
    run: Path = typer.Argument(..., help="A generative run (conditional on a class label, or an autoencoder)."),
    classes: str = typer.Option(..., help="Two classes, e.g. bird,horse"),
    weight: float = typer.Option(0.5, help="0 = first class, 1 = second class."),
    sweep: Optional[int] = typer.Option(None, help="K weights from 0 to 1 as columns, one latent per row "
                                        "(bird -> pegasus -> horse); replaces --weight."),
    n: Optional[int] = typer.Option(None, min=1, help="Images (default 64); with --sweep, rows (default 8)."),
    out: Path = typer.Option(Path("blend.png"), "--out"),
    data: Optional[Path] = typer.Option(None, "--data", help="Store for class latent means (unconditional autoencoders)."),
    seed: int = typer.Option(0),
    device: str = typer.Option("cpu"),
    as_json: bool = JSON_OPT,
) -> None:
    """Blend two classes (the pegasus from CIFAR-10 birds and horses)."""
    from facelab.eval.sampling import blend_run

    parts = [c.strip() for c in classes.split(",") if c.strip()]
    if len(parts) != 2:
        raise FacelabError(f"--classes {classes!r}: give exactly two classes, e.g. bird,horse")
    rows = n if n is not None else (8 if sweep else 64)
    res = blend_run(run, classes=(parts[0], parts[1]), weight=weight, n=rows, out=out, store=data, seed=seed,
                    device=device, sweep=sweep)
    emit_json(res) if as_json else console.print(f"blend: {res['grid']}")


@metrics_app.command("fid")
def metrics_fid(
    run: Path = typer.Argument(..., help="A generative run."),
    data: Path = typer.Option(..., "--data", help="Real store to compare with."),
    features: Path = typer.Option(..., help="Feature network: a facelab classifier run trained on --data."),
    split: str = typer.Option("test", help="Real rows: test | val | train"),
    n: int = typer.Option(5000, min=10, help="Generated samples."),
    device: str = typer.Option("cpu"),
    seed: int = typer.Option(0),
    as_json: bool = JSON_OPT,
) -> None:
    """FID and KID with a named feature network (real features cached by data+extractor+resolution)."""
    from facelab.eval.generative_metrics import score_generator

    res = score_generator(run, data=data, feature_run=features, split=split, n=n, device=device, seed=seed)  # type: ignore[arg-type]
    emit_json(res) if as_json else console.print_json(data=res, default=_json_default)


@metrics_app.command("fidelity")
def metrics_fidelity(
    run: Path = typer.Argument(..., help="A conditional generative run."),
    classifier: Path = typer.Option(..., help="An independent classifier run predicting the conditions."),
    labels: Optional[str] = typer.Option(None, help="Conditions to test (default: all)."),
    n_per_value: int = typer.Option(500, min=1),
    data: Optional[Path] = typer.Option(None, "--data", help="Store whose rows give the other conditions."),
    device: str = typer.Option("cpu"),
    as_json: bool = JSON_OPT,
) -> None:
    """Share of samples conditioned on a value that the classifier assigns that value."""
    from facelab.eval.generative_metrics import conditional_fidelity

    res = conditional_fidelity(run, classifier, labels=labels.split(",") if labels else None,
                               n_per_value=n_per_value, data=data, device=device)
    emit_json(res) if as_json else console.print_json(data=res, default=_json_default)


@metrics_app.command("cas")
def metrics_cas(
    run: Path = typer.Argument(..., help="A generative run conditioned on --label."),
    data: Path = typer.Option(..., "--data", help="Real store (test split = evaluation)."),
    label: str = typer.Option(..., help="The condition to classify."),
    n_train: int = typer.Option(10000, min=10),
    epochs: int = typer.Option(5, min=1),
    out: Path = typer.Option(Path("runs/cas"), help="Folder for the two classifier runs."),
    device: str = typer.Option("cpu"),
    as_json: bool = JSON_OPT,
) -> None:
    """Classification Accuracy Score: train on generated images only, test on real ones (with the real-data reference)."""
    from facelab.eval.generative_metrics import classification_accuracy_score

    res = classification_accuracy_score(run, data=data, label=label, run_dir=out, n_train=n_train, epochs=epochs, device=device)
    emit_json(res) if as_json else console.print_json(data=res, default=_json_default)


# ---- demo ------------------------------------------------------------------------------------
@app.command("demo")
def demo(
    out: Path = typer.Option(Path("runs"), help="Folder under which the demo run folder is created."),
    n: Optional[int] = typer.Option(None, help="Number of synthetic faces (default 2000)."),
    size: Optional[int] = typer.Option(None, help="Image size of the synthetic store (default 32)."),
    seeds: Optional[int] = typer.Option(None, help="Seeds per method in the study (default 2)."),
    option: Optional[list[str]] = typer.Option(None, "-o", "--option", help="Any DemoConfig field, e.g. -o p=0.2"),
    as_json: bool = JSON_OPT,
) -> None:
    """The main job, end to end on built-in synthetic faces: store, classifier, augmentation study, report."""
    from facelab.experiments.demo import DemoConfig, run_demo

    data = {k: v for k, v in {"n": n, "size": size, "seeds": seeds}.items() if v is not None}
    data.update(parse_options(option))
    summary = run_demo(DemoConfig.from_dict(data, where="demo options"), runs_root=out)
    if as_json:
        emit_json(summary)
        return
    c, st = summary["classifier"], summary["study"]
    console.print(f"classifier: test mean accuracy {c['test_mean_accuracy']:.4f} "
                  f"(majority baseline {c['test_majority_accuracy']:.4f})")
    console.print(f"study ({st['target']}, p={st['p']}): balanced accuracy " +
                  ", ".join(f"{m} {v:.3f}" for m, v in st["balanced_accuracy"].items()))
    console.print(f"done in {summary['seconds']:.0f}s")
    print(summary["report"])


@contextlib.contextmanager
def _drop_if_nothing_ran(run_dir: Path, resumed: bool) -> Iterator[None]:
    """Remove a new run folder when its run fails before writing any metric or checkpoint (e.g. a wrong
    --pretrained file), so failed starts do not litter --out; a run that trained keeps everything."""
    try:
        yield
    except FacelabError:
        started = (run_dir / "metrics.jsonl").exists() or any((run_dir / "checkpoints").glob("*/*"))
        if not resumed and not started:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def _show_library_log() -> None:
    """Library notices (e.g. what a --pretrained file loaded and left out) go to stderr, not nowhere."""
    import logging

    from rich.logging import RichHandler

    logger = logging.getLogger("facelab")
    if not logger.handlers:
        logger.addHandler(RichHandler(console=console, show_time=False, show_path=False))
        logger.setLevel(logging.INFO)


def main() -> None:
    """Entry point with friendly errors: user mistakes print one clear line and exit 2."""
    _show_library_log()
    try:
        app()
    except FacelabError as e:
        console.print(f"[bold red]error:[/] {e}")
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
