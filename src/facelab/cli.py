"""The ``facelab`` command: thin typer verbs over library functions.

Every command resolves its config one way (:func:`facelab.config.resolve_config`: defaults < ``--config`` YAML
< flags < ``-o``), makes its run folder one way (:func:`_run_folder`: removed again when the command fails
before anything was trained) and prints figures as JSON with ``--json``. User mistakes are one clear line and
exit code 2 (:func:`main`).
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from typer.core import TyperGroup

from facelab.config import StrictConfig, parse_options, resolve_config, resume_config
from facelab.errors import FacelabError
from facelab.utils.io import finite_or_none

app = typer.Typer(
    help="facelab: face-attribute datasets, classifiers, generative models and class-imbalance studies.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Prepare dataset stores and inspect them.", no_args_is_help=True)
app.add_typer(data_app, name="data")
experiment_app = typer.Typer(help="Experiments: config -> run folder -> results and plots.", no_args_is_help=True)
app.add_typer(experiment_app, name="experiment")
label_app = typer.Typer(help="Labels of face orientation and light direction: automatic, then reviewed.",
                        no_args_is_help=True)
app.add_typer(label_app, name="label")
metrics_app = typer.Typer(help="Quality metrics of generative runs: FID/KID, conditional fidelity, CAS.", no_args_is_help=True)
app.add_typer(metrics_app, name="metrics")


class _SweepGroup(TyperGroup):
    """``facelab sweep SPEC.yaml`` and ``facelab sweep --resume DIR`` mean ``facelab sweep run ...``."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


sweep_app = typer.Typer(cls=_SweepGroup, no_args_is_help=True,
                        help="Hyperparameter sweeps on Optuna: facelab sweep SPEC.yaml [--workers N]; sweep worker; "
                             "sweep report.")
app.add_typer(sweep_app, name="sweep")

console = Console(stderr=True)
JSON_OPT = typer.Option(False, "--json", help="Print the figures as JSON on stdout.")
OPTION_OPT = typer.Option(None, "-o", "--option", help="Any config key, dotted, value in YAML: -o trainer.epochs=3 "
                          "-o labels=Male,Smiling (repeatable).")
DEVICE_OPT = typer.Option("cpu", help="cpu | cuda | cuda:N | auto")
UNLIMITED_EPOCHS = 1_000_000  # train-gen --minutes without --epochs
DETECTOR_OPT = typer.Option(None, "--detector", help="Face detector: mtcnn (default; landmarks trained on CelebA) "
                            "| retinaface (faster, coarser landmarks).")
MIN_SCORE_OPT = typer.Option(None, "--min-score", min=0.0, max=1.0,
                             help="Detections scored below this are not faces (default: the detector's, 0.9).")
NPROC_OPT = typer.Option(None, "--nproc", help="Training processes on this machine (torchrun + "
                        "DistributedDataParallel): one per GPU with --device cuda, gloo on the CPU; --batch-size is "
                        "each one's share of a step. Several machines: see docs/distributed.md.")
SYNC_BN_OPT = typer.Option(False, "--sync-bn", help="With several processes: batch-norm statistics over the whole "
                           "step (every process's share), so N processes of batch B train as one of batch N*B.")


def emit_json(obj: Any) -> None:
    """Print ``obj`` as strict JSON on stdout (the machine-readable channel; progress goes to stderr)."""
    sys.stdout.write(json.dumps(finite_or_none(obj), indent=2, default=_json_default, allow_nan=False) + "\n")


def _json_default(o: Any) -> Any:
    if hasattr(o, "to_dict"):
        return finite_or_none(o.to_dict())
    return str(o)


def _refuse_with_resume(run_dir: Path, given: dict[str, Any], *, allowed: str = "") -> None:
    """--resume continues with the saved config: any other option would be silently ignored, so it is refused."""
    named = [k for k, v in given.items() if v not in (None, False, [], ())]
    if named:
        extra = f"; only {allowed} can change (to extend training)" if allowed else ""
        raise typer.BadParameter(f"--resume continues {run_dir} with its saved config.yaml{extra}; "
                                 f"drop {', '.join(named)}")


@contextlib.contextmanager
def _run_folder(kind: str, *, name: str | None, out: Path, config: StrictConfig) -> Iterator[Path]:
    """A new run folder for the command's work; removed again if the command fails before anything in it was
    trained (a bad --pretrained file, a kill before the first checkpoint), so failed starts leave nothing."""
    from facelab.runs.folder import create_run_dir, remove_if_nothing_ran

    run_dir = create_run_dir(kind, name=name, root=out, config=config)
    console.print(f"run folder: {run_dir}")
    try:
        yield run_dir
    except BaseException:
        remove_if_nothing_ran(run_dir)
        raise


# ---- several processes (--nproc, torchrun) ---------------------------------------------------------
def _torchrun_env(nproc: int | None) -> Any:
    """This process's place when torchrun started it (None otherwise); the other ranks than 0 print nothing.

    Raises:
        FacelabError: ``--nproc`` given under torchrun with another number of processes on this machine.
    """
    from facelab.train.distributed import TorchrunEnv

    env = TorchrunEnv.from_environ()
    console.quiet = env is not None and env.rank != 0  # rank 0 speaks for the run
    if env is None:
        return None
    if nproc is not None and nproc != env.local_world_size:
        raise FacelabError(f"--nproc {nproc} in a process that torchrun started with {env.local_world_size} "
                           "process(es) on this machine; drop --nproc (torchrun's --nproc_per_node decides)")
    return env


def _launch_needed(nproc: int | None, env: Any, device: str) -> int:
    """How many processes train: torchrun's world, or ``--nproc`` (checked against this machine: 1 or more,
    no more than its GPUs on CUDA) when this command is to start them."""
    from facelab.train.distributed import check_nproc

    if env is not None:
        return env.world_size
    if nproc is None:
        return 1
    check_nproc(nproc, device)
    return nproc


def _relaunch(nproc: int, command: str, cfg: StrictConfig | None, args: list[str]) -> None:
    """Run ``facelab COMMAND`` in ``nproc`` processes (torchrun) with ``cfg`` (the resolved config, written to
    a temporary YAML file that they read as --config) and ``args``, then exit with torchrun's status."""
    import os
    import tempfile

    from facelab.train.launch import run_torchrun

    if cfg is None:
        raise SystemExit(run_torchrun(nproc, [command, *args]))
    fd, path = tempfile.mkstemp(prefix="facelab-config-", suffix=".yaml")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(cfg.to_yaml())
        code = run_torchrun(nproc, [command, "--config", path, *args])
    finally:
        os.unlink(path)
    raise SystemExit(code)


def _new_run_args(*, out: Path, name: str | None, as_json: bool) -> list[str]:
    return ["--out", str(out), *(["--name", name] if name else []), *(["--json"] if as_json else [])]


@contextlib.contextmanager
def _processes(env: Any, device: str) -> Iterator[Any]:
    """The process group of a torchrun launch (``Distributed()`` alone without one), left at the end."""
    from facelab.train.distributed import Distributed, init_distributed

    dist = Distributed() if env is None else init_distributed(env, device)
    try:
        yield dist
    finally:
        dist.close()


@contextlib.contextmanager
def _shared_run_folder(kind: str, *, name: str | None, out: Path, config: StrictConfig, dist: Any) -> Iterator[Path]:
    """:func:`_run_folder` made by rank 0 alone, its path sent to the others; a failure to make it (an existing
    --name) reaches every process, so none waits for a folder that will not come."""
    with contextlib.ExitStack() as stack:
        made: Path | None = None
        error: Exception | None = None
        if dist.is_main:
            try:
                made = stack.enter_context(_run_folder(kind, name=name, out=out, config=config))
            except Exception as e:  # noqa: BLE001 - sent to the other processes, then raised here
                error = e
        path, message = dist.broadcast((None if made is None else str(made), None if error is None else str(error)))
        if error is not None:
            raise error
        if message is not None:
            raise FacelabError(f"rank 0 could not make the run folder: {message}")
        yield Path(path)


def _fit(command: str, fit: Callable[..., dict[str, Any]], cfg: StrictConfig, *, check: Callable[..., Any],
         env: Any, nproc: int | None, resume: Path | None, kind: str, out: Path, name: str | None, as_json: bool,
         dry_run: bool) -> dict[str, Any] | None:
    """Train ``cfg`` with ``fit`` (``train_classifier`` / ``train_generative``): in this process, in the
    processes of a torchrun launch, or, for ``--nproc N`` outside one, by starting N processes that run
    ``facelab COMMAND`` (this process then exits with their status). A new run is checked (``check``) for
    that many processes first; its folder is made by rank 0. Returns the summary (None for --dry-run)."""
    processes = _launch_needed(nproc, env, cfg.device)
    if resume is not None:
        if env is None and processes > 1:
            _relaunch(processes, command, None, ["--resume", str(resume), *(["--json"] if as_json else [])])
        with _processes(env, cfg.device) as dist:
            return fit(cfg, run_dir=resume, resume=True, dist=dist)
    check(cfg, processes=processes)
    if dry_run:
        console.quiet or sys.stdout.write(cfg.to_yaml())
        return None
    if env is None and processes > 1:
        _relaunch(processes, command, cfg, _new_run_args(out=out, name=name, as_json=as_json))
    with _processes(env, cfg.device) as dist, \
            _shared_run_folder(kind, name=name, out=out, config=cfg, dist=dist) as run_dir:
        return fit(cfg, run_dir=run_dir, dist=dist)


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
            "options": {k: f.get_default(call_default_factory=True) for k, f in cls.Options.model_fields.items()},
            "default_crop": cls.default_crop.model_dump(),
        }
    if as_json:
        emit_json(rows)
        return
    for name, r in rows.items():
        console.print(f"[bold]{name}[/]: {r['doc']}")
        if r["options"]:
            console.print("   options: " + ", ".join(f"{k}={json.dumps(v)}" for k, v in r["options"].items()),
                          highlight=False, markup=False)


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
    option: Optional[list[str]] = typer.Option(None, "-o", "--option", help="Source option KEY=VALUE (repeatable), "
                                                                              "e.g. -o attributes=Male,Smiling."),
    overwrite: bool = typer.Option(False, help="Replace a different store already in --out."),
    align: bool = typer.Option(False, "--align", help="Detect each image's faces and store the best one aligned "
                               "into CelebA's frame (then cropped as celeba is); images without a face are skipped."),
    detector: Optional[str] = DETECTOR_OPT,
    min_score: Optional[float] = MIN_SCORE_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Decode a dataset once into a fast store (resumable; re-run to finish an interrupted build)."""
    from facelab.data.build import default_crop, prepare_store
    from facelab.data.sources import create_source

    if not align and (detector is not None or min_score is not None):
        raise typer.BadParameter("--detector and --min-score choose how --align finds faces; add --align")
    spec = _align_spec(detector, min_score) if align else None
    src = create_source(source, root, **parse_options(option))
    crop_spec = _crop_spec(default_crop(src, align=align), crop, crop_scale, crop_offset_y, crop_box)
    report = prepare_store(src, out, size=size, crop=crop_spec, align=spec, workers=workers, overwrite=overwrite,
                           progress=True)
    if as_json:
        emit_json(report.to_dict())
    else:
        _print_build_report(report)


def _align_spec(detector: str | None, min_score: float | None):
    from facelab.faces import AlignSpec

    given = {k: v for k, v in {"detector": detector, "min_score": min_score}.items() if v is not None}
    return AlignSpec.from_dict(given, where="alignment options")


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
        d["mode"] = mode or "box"
    return CropSpec.from_dict(d, where="crop options")


def _print_build_report(report) -> None:
    d = report.to_dict()
    console.print(f"[bold green]store ready[/]: {d.get('path')}")
    for k in ("count", "skipped_count", "seconds", "images_per_s", "status"):
        if k in d:
            console.print(f"  {k}: {d[k]}")
    if d.get("align") is not None:
        console.print(f"  aligned: {d['aligned']} faces re-detected ({d['align']['detector']}, min score "
                      f"{d['align']['min_score']:g}); {d['no_face']} images without a face")
    for note in d.get("notes", []):
        console.print(f"  note: {note}")
    skipped = d.get("skipped", [])
    for s in skipped[:10]:
        console.print(f"  skipped {s['key']}: {s['reason']}", markup=False)
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

    figures = st.stats_with_plots(Store.open(store), plots)
    if as_json:
        emit_json(figures)
        return
    Console().print(st.format_stats_table(figures))
    console.print(f"plots written to {Path(figures['plots']['prevalence']).parent}")


# ---- faces -----------------------------------------------------------------------------------------
@app.command("align")
def align(
    photos: Path = typer.Argument(..., help="A folder of photos (searched recursively) or one image file."),
    out: Path = typer.Option(..., "--out", help="Folder to write <photo>.face<i>.png and faces.csv into."),
    detector: Optional[str] = DETECTOR_OPT,
    min_score: Optional[float] = MIN_SCORE_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Detect every face in photos and write each aligned into CelebA's 178x218 frame, plus faces.csv."""
    from facelab.data.align_folder import align_folder

    report = align_folder(photos, out, spec=_align_spec(detector, min_score), progress=True)
    for s in report.skipped:
        console.print(f"  skipped {s['file']}: {s['reason']}", markup=False, highlight=False, soft_wrap=True)
    if as_json:
        emit_json(report.to_dict())
        return
    console.print(f"[bold green]wrote[/] {report.faces} aligned faces from {report.read} of {report.photos} photos "
                  f"to {report.out} (list: {report.csv})")


# ---- classifiers -----------------------------------------------------------------------------
@app.command("train")
def train(
    store: Optional[Path] = typer.Argument(None, help="Store to train on (or set `store:` in --config)."),
    config: Optional[Path] = typer.Option(None, help="YAML file of ClassifierConfig overrides."),
    labels: Optional[str] = typer.Option(None, help="Comma-separated labels (default: all labels of the store)."),
    labels_file: Optional[Path] = typer.Option(None, "--labels-file", help="A labels CSV (facelab label auto / "
                                               "review) whose tasks (orientation, light) become labels to train on."),
    model: Optional[str] = typer.Option(None, help="vgg_scratch | resnet18 | resnet34 | resnet50 | inception_v3"),
    epochs: Optional[int] = typer.Option(None, min=1),
    batch_size: Optional[int] = typer.Option(None, min=1),
    lr: Optional[float] = typer.Option(None, help="Peak learning rate."),
    optimizer: Optional[str] = typer.Option(None, help="sgd | adam | adamw | adabound"),
    schedule: Optional[str] = typer.Option(None, help="onecycle | cosine | step | plateau | constant"),
    augment: Optional[str] = typer.Option(None, help="Augmentation preset: none | flip | geometric | standard | strong | wild (photos: greyscale, light, blur)"),
    random_erasing: Optional[float] = typer.Option(None, help="Random-erasing probability."),
    balance: Optional[str] = typer.Option(None, help="none | class_weights | sampler"),
    pretrained: Optional[str] = typer.Option(None, help="torchvision-format weights file or facelab run/checkpoint."),
    freeze: bool = typer.Option(False, help="Freeze the backbone (batch-norm statistics too)."),
    unfreeze_at: Optional[int] = typer.Option(None, help="Epoch at which to unfreeze (with a lower lr)."),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda | cuda:N"),
    seed: Optional[int] = typer.Option(None),
    train_limit: Optional[int] = typer.Option(None, help="Use at most N training images."),
    train_identities: Optional[int] = typer.Option(None, help="Train on the photos of N randomly chosen training people only."),
    option: Optional[list[str]] = OPTION_OPT,
    out: Path = typer.Option(Path("runs"), help="Folder under which the run folder is created."),
    name: Optional[str] = typer.Option(None, help="Run folder train-NAME under --out (default: train-<timestamp>); an existing one is an error."),
    resume: Optional[Path] = typer.Option(None, help="Resume the run in this folder after a kill (or extend it: with --epochs)."),
    nproc: Optional[int] = NPROC_OPT,
    sync_bn: bool = SYNC_BN_OPT,
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved config and exit."),
    as_json: bool = JSON_OPT,
) -> None:
    """Train an attribute classifier (multi-label or multi-class) on a store."""
    from facelab.train.classifier import ClassifierConfig, check_config, train_classifier

    flags = {"store": str(store) if store else None, "labels": labels, "model": model, "trainer.epochs": epochs,
             "labels_file": str(labels_file) if labels_file else None,
             "batch_size": batch_size, "trainer.optim.lr": lr, "trainer.optim.name": optimizer,
             "trainer.schedule.name": schedule, "augment": augment, "random_erasing": random_erasing,
             "balance": balance, "pretrained": pretrained, "freeze_backbone": freeze or None,
             "unfreeze_at_epoch": unfreeze_at, "device": device, "seed": seed, "train_limit": train_limit,
             "train_identities": train_identities, "trainer.sync_batchnorm": sync_bn or None}
    if resume is not None:
        _refuse_with_resume(resume, {
            "STORE": store, "--config": config, "--labels": labels, "--model": model, "--batch-size": batch_size,
            "--labels-file": labels_file, "--lr": lr, "--optimizer": optimizer, "--schedule": schedule, "--augment": augment,
            "--random-erasing": random_erasing, "--balance": balance, "--pretrained": pretrained, "--freeze": freeze,
            "--unfreeze-at": unfreeze_at, "--device": device, "--seed": seed, "--train-limit": train_limit,
            "--train-identities": train_identities, "--sync-bn": sync_bn, "-o": option, "--name": name},
            allowed="--epochs")
    env = _torchrun_env(nproc)
    if resume is not None:
        cfg = _resumed(ClassifierConfig, resume, epochs=epochs)  # writes a raised --epochs into config.yaml
    else:
        cfg = resolve_config(ClassifierConfig, yaml_file=config, flags=flags, options=option)
    summary = _fit("train", train_classifier, cfg, check=check_config, env=env, nproc=nproc, resume=resume,
                   kind="train", out=out, name=name, as_json=as_json, dry_run=dry_run)
    if summary is None or console.quiet:
        return  # --dry-run, or a rank other than 0
    if as_json:
        emit_json(summary)
        return
    f, best = summary["final"], summary["best"]
    console.print(f"[bold green]done[/] {summary['epochs']} epochs, best {summary['monitor']}="
                  f"{'-' if best is None else f'{best:.4f}'}, val mean accuracy "
                  f"{f.get('val_mean_accuracy') or float('nan'):.4f} ({summary['fit_seconds']:.0f}s)")
    for w in summary.get("warnings", []):
        console.print(f"[yellow]warning[/]: {w}")


def _resumed(config_cls: Any, run_dir: Path, *, epochs: int | None = None, minutes: float | None = None) -> Any:
    """The saved config of the run to resume, its budgets raised by ``--epochs`` / ``--minutes`` (time budgets
    count training time over every resume)."""
    cfg = resume_config(config_cls, run_dir, changes={"trainer.epochs": epochs, "trainer.time_budget_minutes": minutes})
    if epochs is not None and cfg.trainer.schedule.name != "constant":
        console.print(f"[yellow]note[/]: the {cfg.trainer.schedule.name} learning-rate schedule is stretched to "
                      f"{epochs} epochs from the resumed step on")
    return cfg


@app.command("pretrain")
def pretrain(
    stores: Optional[list[Path]] = typer.Argument(None, help="Stores to learn from, without labels (one image size "
                                                  "and alignment); their official val/test rows are left out."),
    config: Optional[Path] = typer.Option(None, help="YAML file of PretrainConfig overrides."),
    objective: Optional[str] = typer.Option(None, help="Unlabelled objective: simclr"),
    model: Optional[str] = typer.Option(None, help="vgg_scratch | resnet18 | resnet34 | resnet50 | inception_v3"),
    epochs: Optional[int] = typer.Option(None, min=1),
    batch_size: Optional[int] = typer.Option(None, min=2),
    lr: Optional[float] = typer.Option(None, help="Peak learning rate."),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda | cuda:N"),
    seed: Optional[int] = typer.Option(None),
    train_limit: Optional[int] = typer.Option(None, help="Use at most N training images (all stores together)."),
    option: Optional[list[str]] = OPTION_OPT,
    out: Path = typer.Option(Path("runs"), help="Folder under which the run folder is created."),
    name: Optional[str] = typer.Option(None, help="Run folder pretrain-NAME under --out (default: pretrain-<timestamp>)."),
    resume: Optional[Path] = typer.Option(None, help="Resume the run in this folder after a kill (or extend it: with --epochs)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved config and exit."),
    as_json: bool = JSON_OPT,
) -> None:
    """Pretrain a backbone without labels (SimCLR) on one or more stores; fine-tune it with train --pretrained RUN."""
    from facelab.train.pretrain import PretrainConfig, check_pretrain_config
    from facelab.train.pretrain import pretrain as run_pretrain

    flags = {"stores": [str(s) for s in stores] if stores else None, "objective": objective, "model": model,
             "trainer.epochs": epochs, "batch_size": batch_size, "trainer.optim.lr": lr, "device": device,
             "seed": seed, "train_limit": train_limit}
    if resume is not None:
        _refuse_with_resume(resume, {"STORES": stores, "--config": config, "--objective": objective, "--model": model,
                                     "--batch-size": batch_size, "--lr": lr, "--device": device, "--seed": seed,
                                     "--train-limit": train_limit, "-o": option, "--name": name}, allowed="--epochs")
        summary = run_pretrain(_resumed(PretrainConfig, resume, epochs=epochs), run_dir=resume, resume=True)
    else:
        cfg = resolve_config(PretrainConfig, yaml_file=config, flags=flags, options=option)
        check_pretrain_config(cfg)
        if dry_run:
            sys.stdout.write(cfg.to_yaml())
            return
        with _run_folder("pretrain", name=name, out=out, config=cfg) as run_dir:
            summary = run_pretrain(cfg, run_dir=run_dir)
    if as_json:
        emit_json(summary)
        return
    best = summary["best"]
    console.print(f"[bold green]done[/] {summary['epochs']} epochs, best {summary['monitor']}="
                  f"{'-' if best is None else f'{best:.4f}'}, {summary['images_per_s'] or 0:.0f} images/s "
                  f"({summary['fit_seconds']:.0f}s); fine-tune with: facelab train STORE --pretrained "
                  f"{summary['run_dir']}")


CHECKPOINT_OPT = typer.Option("best", "--checkpoint", help="Checkpoint of each run folder: best (by its validation "
                              "metric) or last (the last epoch's).")


def _checkpoint_choice(value: str) -> str:
    if value not in ("best", "last"):
        raise FacelabError(f"--checkpoint {value!r}: choose best or last")
    return value


def _one_or_many(runs: list[Path]) -> Path | list[Path]:
    return runs if len(runs) > 1 else runs[0]


@app.command("eval")
def evaluate(
    run: list[Path] = typer.Argument(..., help="A training run folder (or checkpoint); several are scored as "
                                     "one ensemble, their probabilities averaged."),
    data: Path = typer.Option(..., "--data", help="Store to evaluate on (its labels must match the model's)."),
    split: str = typer.Option("test", help="train | val | test | all: on the run's own store, the rows the run "
                              "recorded (splits.json); elsewhere the official partition"),
    checkpoint: str = CHECKPOINT_OPT,
    device: str = DEVICE_OPT,
    tta_flip: bool = typer.Option(False, help="Average predictions with the horizontally flipped image."),
    adapt_priors: bool = typer.Option(False, "--adapt-priors", help="Re-weight the probabilities to the class priors of "
                                      "the evaluated images, estimated from the unlabelled predictions (EM, Saerens et "
                                      "al. 2002): for data whose label frequencies differ from the training data's."),
    labels_file: Optional[Path] = typer.Option(None, "--labels-file", help="The labels CSV the truth comes from "
                                               "(default: the run's own, when the store lacks the model's labels)."),
    reviewed_only: bool = typer.Option(False, "--reviewed-only", help="Score only the images a person reviewed "
                                       "on the review page (their classes are the truth)."),
    as_json: bool = JSON_OPT,
) -> None:
    """Per-label accuracy, balanced accuracy, macro-F1 and AUROC next to the majority baseline."""
    from facelab.eval.evaluate import evaluate_run

    if split not in ("train", "val", "test", "all"):
        raise FacelabError(f"--split {split!r}: choose train, val, test or all")
    report = evaluate_run(_one_or_many(run), data, split=split, device=device, tta_flip=tta_flip,  # type: ignore[arg-type]
                          which=_checkpoint_choice(checkpoint), adapt_priors=adapt_priors, labels_file=labels_file,
                          reviewed_only=reviewed_only)
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
    Console().print(t)
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


FACES_OPT = typer.Option("auto", "--faces", help="Photos: auto (find and align every face when the model was trained "
                         "on aligned faces, e.g. CelebA) | detect | aligned (each photo is one aligned face).")
DETECTOR_OPT = typer.Option(None, "--detector", help="Face detector instead of the checkpoint's: mtcnn | retinaface "
                            "(faster, coarser landmarks).")


@app.command("predict")
def predict(
    run: list[Path] = typer.Argument(..., help="A training run folder (or checkpoint); several are one ensemble, "
                                     "their probabilities averaged; or a .onnx file written by facelab export."),
    target: Path = typer.Argument(..., help="A store folder or a folder of images (searched recursively)."),
    out: Path = typer.Option(Path("predictions.csv"), "--out", help="CSV file to write."),
    checkpoint: str = CHECKPOINT_OPT,
    device: str = DEVICE_OPT,
    threshold: float = typer.Option(0.5, help="Decision threshold for binary labels."),
    tta_flip: bool = typer.Option(False, help="Average predictions with the horizontally flipped image."),
    engine: Optional[str] = typer.Option(None, "--engine", help="torch (default) | onnx: onnxruntime on the run's "
                                         "RUN/export/model.onnx, exported first when missing or made from other "
                                         "weights than the checkpoint's. A .onnx file always runs on onnx."),
    faces: str = FACES_OPT,
    detector: Optional[str] = DETECTOR_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Probability per label and predicted labels for every image (every face of every photo), as CSV rows."""
    from facelab.eval.predict import predict_to_csv

    report = predict_to_csv(_one_or_many(run), target, out, device=device, threshold=threshold,
                            which=_checkpoint_choice(checkpoint), tta_flip=tta_flip, engine=engine,
                            faces=faces, detector=detector)  # type: ignore[arg-type]
    if as_json:
        emit_json(report.to_dict())
        return
    console.print(f"[bold green]wrote[/] {report.count} rows to {report.out}")
    for s in report.skipped[:10]:
        console.print(f"  skipped {s['key']}: {s['reason']}", markup=False)
    for w in report.warnings:
        console.print(f"[yellow]warning[/]: {w}")


@app.command("export")
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


@app.command("serve")
def serve(
    run: list[Path] = typer.Argument(..., help="A classifier run folder (or checkpoint, or .onnx export); several "
                                     "are one ensemble."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (127.0.0.1: this computer only)."),
    port: int = typer.Option(8000, min=0, max=65535),
    engine: Optional[str] = typer.Option(None, "--engine", help="torch (default) | onnx"),
    checkpoint: str = CHECKPOINT_OPT,
    faces: str = FACES_OPT,
    detector: Optional[str] = DETECTOR_OPT,
    threshold: float = typer.Option(0.5, help="Decision threshold for binary labels."),
    max_upload_mb: float = typer.Option(20.0, min=0.01, help="Largest accepted upload (413 above)."),
    max_pixels: Optional[int] = typer.Option(None, min=1, help="Largest accepted image, in pixels, checked from its "
                                             "header before decoding (413 above; default 89.5 Mpx)."),
    max_concurrent: int = typer.Option(2, min=1, help="Predictions at once."),
    max_queue: int = typer.Option(8, min=0, help="Requests waiting for a prediction; one more gets 503 + Retry-After."),
    max_faces: int = typer.Option(32, min=1, help="Faces predicted per photo (the best-scored)."),
    read_timeout: float = typer.Option(30.0, min=0.1, help="Seconds a client has to send its upload (408 after)."),
) -> None:
    """A REST API (POST /v1/predict, GET /v1/model, /healthz, /docs) and a web page at / for any photo."""
    import uvicorn

    from facelab.deploy import load_engine
    from facelab.eval.photos import PhotoPredictor
    from facelab.serve.app import create_app
    from facelab.serve.config import ServeConfig

    config = resolve_config(ServeConfig, flags={
        "host": host, "port": port, "max_upload_bytes": int(max_upload_mb * 1024 * 1024), "max_pixels": max_pixels,
        "max_concurrent": max_concurrent, "max_queue": max_queue, "max_faces": max_faces, "read_timeout_s": read_timeout},
        where="serve options")
    predictor = PhotoPredictor(load_engine(_one_or_many(run), engine=engine, which=_checkpoint_choice(checkpoint)),
                               faces=faces, detector=detector, threshold=threshold)  # type: ignore[arg-type]
    app = create_app(predictor, config)
    info = predictor.describe()
    console.print(f"serving {info['model']} ({info['engine']}, faces: {info['faces']}) on http://{host}:{port}/ "
                  f"- API docs at /docs; Ctrl-C stops")
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning", timeout_keep_alive=5,
                limit_concurrency=max(16, 8 * config.max_concurrent))


# ---- labels ----------------------------------------------------------------------------------------
@label_app.command("auto")
def label_auto(
    store: Path = typer.Argument(..., help="A store whose images carry face landmarks (built with --align, or CelebA "
                                 "with its landmarks file)."),
    task: str = typer.Option("orientation,light", "--task", help="Comma-separated: orientation, light."),
    out: Path = typer.Option(Path("labels.csv"), "--out", help="The labels CSV to write (plus OUT.html, the report)."),
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
    console.print(f"report: {result['report']}")


@label_app.command("review")
def label_review(
    store: Path = typer.Argument(..., help="The store the labels are of."),
    labels: Path = typer.Option(..., "--labels", help="The labels CSV (from `facelab label auto`): decisions are "
                                "written into it at once."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (127.0.0.1: this computer only)."),
    port: int = typer.Option(8000, min=0, max=65535),
) -> None:
    """A page showing the faces least-confident first: one key per class, s to skip, u to undo."""
    import uvicorn

    from facelab.data.store import Store
    from facelab.data.labels_file import LabelsFile
    from facelab.serve.app import create_app
    from facelab.serve.review import ReviewSession, review_lock

    st = Store.open(store)
    session = ReviewSession(st, LabelsFile.read(labels, store=st))
    with review_lock(labels):
        console.print(f"reviewing {labels} on http://{host}:{port}/review - every decision is saved at once; "
                      "Ctrl-C stops")
        uvicorn.run(create_app(None, review=session), host=host, port=port, log_level="warning")


# ---- experiments -----------------------------------------------------------------------------------
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
    from facelab.experiments.batch_schedule import BatchScheduleConfig, run_batch_schedule, study_splits
    from facelab.report.batch_schedule import results_table

    if resume is not None:
        _refuse_with_resume(resume, {"STORE": store, "--config": config, "-o": option})
        cfg = resume_config(BatchScheduleConfig, resume)
        result = run_batch_schedule(cfg, run_dir=resume)
    else:
        cfg = resolve_config(BatchScheduleConfig, yaml_file=config, flags={"store": str(store) if store else None},
                             options=option, where=str(config or "batch-schedule options"))
        study_splits(cfg, Store.open(cfg.store))  # labels, device and splits checked before any folder or training
        if dry_run:
            sys.stdout.write(cfg.to_yaml())
            return
        with _run_folder("batch-schedule", name=None, out=out, config=cfg) as run_dir:
            result = run_batch_schedule(cfg, run_dir=run_dir)
    if as_json:
        emit_json(result)
    else:
        Console().print(results_table(result["results"]))
        console.print(f"results and curves in {result['run_dir']}")


def experiment_imbalance(
    config: Optional[Path] = typer.Argument(None, help="YAML overrides of ImbalanceStudyConfig (store, target, p, methods, ...)."),
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
    from facelab.experiments.imbalance_study import ImbalanceStudyConfig, run_study, validate_study
    from facelab.report.imbalance_study import results_markdown

    flags = {"store": str(store) if store else None, "target": target, "seeds": seeds,
             "eval_data": str(eval_data) if eval_data else None, "p": p, "methods": methods}
    if resume is not None:
        _refuse_with_resume(resume, {"CONFIG": config, **{f"--{k.replace('_', '-')}": v for k, v in flags.items()},
                                     "-o": option})
        cfg = resume_config(ImbalanceStudyConfig, resume)
        summary = run_study(cfg, run_dir=resume)
    else:
        cfg = resolve_config(ImbalanceStudyConfig, yaml_file=config, flags=flags, options=option,
                             where=str(config or "study options"))
        validate_study(cfg)
        if dry_run:
            sys.stdout.write(cfg.to_yaml())
            return
        with _run_folder("imbalance", name=None, out=out, config=cfg) as run_dir:
            summary = run_study(cfg, run_dir=run_dir)
    if as_json:
        emit_json(summary)
    else:
        Console().print(results_markdown(summary["aggregate"]))
        console.print(f"report: {summary['report']}")


experiment_app.command("imbalance")(experiment_imbalance)
# the study's former name, kept for scripts that use it (hidden from --help; typer marks it deprecated)
experiment_app.command("augment", hidden=True, deprecated=True)(experiment_imbalance)


@experiment_app.command("methods")
def experiment_methods() -> None:
    """List the balancing methods of the class-imbalance study."""
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

    from facelab.report import list_runs

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
    if not rows:
        console.print(f"no run folders in {root}")


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
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda | cuda:N"),
    out: Path = typer.Option(Path("runs"), help="Folder under which the run folder is created."),
    name: Optional[str] = typer.Option(None, help="Run folder gen-<model>-NAME under --out (default: a timestamp); an existing one is an error."),
    resume: Optional[Path] = typer.Option(None, help="Resume the run in this folder after a kill (or extend it: "
                                          "with --epochs / --minutes)."),
    nproc: Optional[int] = NPROC_OPT,
    sync_bn: bool = SYNC_BN_OPT,
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved config and exit."),
    as_json: bool = JSON_OPT,
) -> None:
    """Train a VAE / GAN / AAE / ACAI; writes sample grids every epoch and resumable checkpoints."""
    from facelab.train.generative import GenerativeRunConfig, check_config, train_generative

    env = _torchrun_env(nproc)
    if resume is not None:
        _refuse_with_resume(resume, {"--store": store, "--model": model, "--cond": cond, "--batch-size": batch_size,
                                     "--config": config, "--option": option, "--device": device, "--name": name,
                                     "--sync-bn": sync_bn},
                            allowed="--epochs and --minutes")
        cfg = _resumed(GenerativeRunConfig, resume, epochs=epochs, minutes=minutes)  # budgets into config.yaml
    else:
        flags = {"store": str(store) if store else None, "model": model, "batch_size": batch_size, "device": device,
                 "conditions": cond, "trainer.epochs": epochs, "trainer.time_budget_minutes": minutes,
                 "trainer.sync_batchnorm": sync_bn or None}
        cfg = resolve_config(GenerativeRunConfig, yaml_file=config, flags=flags, options=option,
                             where=str(config or "generative options"))
        if minutes is not None and epochs is None and "epochs" not in _given_trainer_keys(config, option):
            cfg.trainer.epochs = UNLIMITED_EPOCHS  # --minutes alone: the time budget ends training
    summary = _fit("train-gen", train_generative, cfg, check=check_config, env=env, nproc=nproc, resume=resume,
                   kind=f"gen-{cfg.model}", out=out, name=name, as_json=as_json, dry_run=dry_run)
    if summary is None or console.quiet:
        return  # --dry-run, or a rank other than 0
    emit_json(summary) if as_json else console.print(f"[bold green]done[/]: grid {summary['grid']}")


def _given_trainer_keys(config: Path | None, option: list[str] | None) -> set[str]:
    """The trainer keys a --config file or -o options set explicitly."""
    from facelab.config import parse_options, read_yaml

    given = read_yaml(config).get("trainer") or {} if config is not None else {}
    return set(given) | set(parse_options(option).get("trainer") or {})


@app.command("sample")
def sample(
    run: Path = typer.Argument(..., help="A generative run folder (or checkpoint)."),
    n: int = typer.Option(64, min=1),
    grid: Optional[Path] = typer.Option(None, help="PNG grid to write (8 per row; default RUN/samples/)."),
    images: Optional[Path] = typer.Option(None, help="Also save each image as a PNG in this folder."),
    cond: Optional[str] = typer.Option(None, help='Condition, e.g. "Male=1,Eyeglasses=1" or "horse".'),
    seed: int = typer.Option(0),
    temperature: float = typer.Option(1.0, min=0.01),
    device: str = DEVICE_OPT,
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
    device: str = DEVICE_OPT,
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
    device: str = DEVICE_OPT,
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
    device: str = DEVICE_OPT,
    seed: int = typer.Option(0),
    as_json: bool = JSON_OPT,
) -> None:
    """FID and KID with a named feature network (real features cached by data+extractor+resolution)."""
    from facelab.eval.generative_metrics import score_generator

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


# ---- sweeps ------------------------------------------------------------------------------------------
@sweep_app.command("run")
def sweep_run(
    spec: Optional[Path] = typer.Argument(None, help="The sweep spec (YAML): command, base, space, metric, sampler, "
                                          "pruner, n_trials (docs/sweeps.md)."),
    workers: int = typer.Option(1, min=1, help="Local worker processes sharing the study."),
    threads: Optional[int] = typer.Option(None, min=1, help="Torch threads per worker (default: the cores shared out)."),
    n_trials: Optional[int] = typer.Option(None, "--n-trials", min=1, help="Trials COMPLETE or PRUNED to reach (with "
                                           "--resume: the new total)."),
    storage: Optional[str] = typer.Option(None, help="SQLAlchemy URL of the study database, e.g. "
                                          "postgresql+psycopg://user@host/db (default: sqlite in the sweep folder)."),
    study_name: Optional[str] = typer.Option(None, "--study-name", help="Study name (default: the folder's name)."),
    option: Optional[list[str]] = typer.Option(None, "-o", "--option", help="Any spec key, dotted, value in YAML: "
                                               "-o base.store=stores/celeba32 -o pruner.name=none (repeatable)."),
    out: Path = typer.Option(Path("runs"), help="Folder under which the sweep folder is created."),
    name: Optional[str] = typer.Option(None, help="Sweep folder sweep-NAME under --out (default: a timestamp)."),
    resume: Optional[Path] = typer.Option(None, help="Continue the sweep in this folder: more trials until n_trials are "
                                          "COMPLETE or PRUNED; a killed worker's trial is FAILED and replaced."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check the spec, print it resolved, run nothing."),
    as_json: bool = JSON_OPT,
) -> None:
    """Run a hyperparameter sweep: N local workers on one Optuna study, one run folder per trial, then the report."""
    from facelab.sweeps import create_sweep, load_spec, open_sweep, prepare_spec, raise_n_trials, run_sweep, stop_on_sigterm

    stop_on_sigterm()  # a terminated launcher stops its workers, whose trials end FAILED instead of hanging RUNNING
    if resume is not None:
        _refuse_with_resume(resume, {"SPEC": spec, "--study-name": study_name, "-o": option, "--name": name},
                            allowed="--n-trials, --workers, --threads and --storage (to give a password)")
        sweep = open_sweep(resume, storage=storage)
        if n_trials is not None and n_trials != sweep.spec.n_trials:
            sweep = raise_n_trials(sweep, n_trials)
    else:
        if spec is None:
            raise typer.BadParameter("give a sweep spec (facelab sweep SPEC.yaml) or --resume DIR")
        loaded = load_spec(spec, options=option, flags={"n_trials": n_trials, "storage": storage,
                                                        "study_name": study_name})
        if dry_run:
            sys.stdout.write(prepare_spec(loaded).to_yaml())
            return
        sweep = create_sweep(loaded, out=out, name=name)
    console.print(f"sweep folder: {sweep.dir} (study {sweep.study_name}, {sweep.spec.n_trials} trials, {workers} "
                  f"worker{'s' * (workers > 1)}; logs in {sweep.dir / 'workers'})")
    result = run_sweep(sweep, workers=workers, threads=threads, on_trial=_print_trial(sweep.spec.metric))
    if as_json:
        emit_json(result)
        return
    _print_sweep(result)


def _print_trial(metric: str | None) -> Any:
    def show(t: Any) -> None:
        value = f" {metric}={t.value:.4f}" if t.state.name == "COMPLETE" and t.value is not None else ""
        note = t.user_attrs.get("note")
        cpu = t.user_attrs.get("cpu_seconds")
        console.print(f"trial {t.number} {t.state.name}{value}{f' ({note})' if note else ''}"
                      f"{f', {cpu:.0f} s CPU' if cpu is not None else ''}", highlight=False, markup=False, soft_wrap=True)

    return show


def _print_sweep(result: dict[str, Any]) -> None:
    def say(text: str) -> None:
        console.print(text, highlight=False, markup=False, soft_wrap=True)

    states = ", ".join(f"{n} {s.lower()}" for s, n in sorted(result["states"].items()))
    say(f"done: {states}; {result['cpu_seconds']:.0f} s CPU in trials")
    if result["best_trial"] is not None:
        params = ", ".join(f"{k}={v}" for k, v in result["best_params"].items())
        say(f"best: trial {result['best_trial']}, {result['metric']}={result['best_value']:.4f} ({params})")
        say(f"its config: {result['best_config']} (facelab {result['command']} --config {result['best_config']})")
    for note in result.get("notes", []):
        say(f"note: {note}")
    say(f"report: {result['report']}")
    say(f"dashboard: {result['dashboard']}  (then http://127.0.0.1:8080/)")


@sweep_app.command("worker")
def sweep_worker(
    study: str = typer.Option(..., "--study", help="The study to join."),
    storage: str = typer.Option(..., envvar="FACELAB_SWEEP_STORAGE", help="SQLAlchemy URL of the study database "
                                "(or the FACELAB_SWEEP_STORAGE variable, which keeps a password out of the process list)."),
    folder: Optional[Path] = typer.Option(None, "--dir", help="Where this worker's trial folders go (default: the sweep "
                                          "folder recorded in the study when it is on this machine, else runs/STUDY)."),
    worker_index: int = typer.Option(0, "--worker-index", min=0, help="Seeds this worker's sampler (seed + index): "
                                     "give each worker of a study its own."),
    threads: Optional[int] = typer.Option(None, min=1, help="Torch threads for training."),
    as_json: bool = JSON_OPT,
) -> None:
    """Join a sweep (from this or another machine): run its trials until n_trials are COMPLETE or PRUNED."""
    from facelab.sweeps import run_worker, stop_on_sigterm

    stop_on_sigterm()
    report = run_worker(storage, study, sweep_dir=folder, worker=worker_index, threads=threads)
    if as_json:
        emit_json(report.__dict__)
        return
    console.print(f"worker {report.worker}: ran trials {report.trials or 'none'} of study {report.study} "
                  f"(folders in {report.sweep_dir})", highlight=False)


@sweep_app.command("report")
def sweep_report_command(
    sweep_dir: Path = typer.Argument(..., help="A sweep folder (runs/sweep-NAME)."),
    storage: Optional[str] = typer.Option(None, help="The study database's URL with its password, when the recorded "
                                          "one (which has none) is not enough."),
    as_json: bool = JSON_OPT,
) -> None:
    """The best trial (best.yaml), every trial's state, params, value and CPU time, plots in report.html."""
    from facelab.sweeps import sweep_report

    result = sweep_report(sweep_dir, storage=storage)
    if as_json:
        emit_json(result)
        return
    from rich.table import Table

    names = list(result["trials"][0]["params"]) if result["trials"] else []
    t = Table(title=f"sweep {result['study_name']}: {result['metric']} ({result['direction']})")
    for c in ("trial", "state", "value", *names, "epochs", "CPU s"):
        t.add_column(c)
    for r in result["trials"]:
        t.add_row(str(r["number"]), r["state"], "-" if r["value"] is None else f"{r['value']:.4f}",
                  *(str(r["params"].get(n, "")) for n in names), str(r["epochs"] or "-"),
                  "-" if r["cpu_seconds"] is None else f"{r['cpu_seconds']:.0f}")
    Console().print(t)
    _print_sweep(result)


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
    from rich.text import Text

    try:
        app()
    except FacelabError as e:
        console.print(Text.assemble(("error: ", "bold red"), str(e)), highlight=False)  # no markup in paths
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
