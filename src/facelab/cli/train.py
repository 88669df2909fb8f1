"""``facelab train``, ``pretrain`` and ``train-gen``: classifiers, backbones without labels, generative models."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from facelab.cli.common import (ACCEPT_CHANGED_OPT, JSON_OPT, OPTION_OPT, _fit, _refuse_with_resume, _resumed,
                                _torchrun_env, console, emit_json)
from facelab.config import resolve_config

NPROC_OPT = typer.Option(None, "--nproc", help="Training processes on this machine (torchrun + "
                        "DistributedDataParallel): one per GPU with --device cuda, gloo on the CPU; --batch-size is "
                        "each one's share of a step. Several machines: see docs/distributed.md.")
SYNC_BN_OPT = typer.Option(False, "--sync-bn", help="With several processes: batch-norm statistics over the whole "
                           "step (every process's share), so N processes of batch B train as one of batch N*B.")
OUT_OPT = typer.Option(Path("runs"), help="Folder under which the run folder is created.")
RESUME_OPT = typer.Option(None, help="Resume the run in this folder after a kill (or extend it: with --epochs).")
DRY_RUN_OPT = typer.Option(False, "--dry-run", help="Print the resolved config and exit.")
UNLIMITED_EPOCHS = 1_000_000  # train-gen --minutes without --epochs


# ---- classifiers -----------------------------------------------------------------------------
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
    out: Path = OUT_OPT,
    name: Optional[str] = typer.Option(None, help="Run folder train-NAME under --out (default: train-<timestamp>); an existing one is an error."),
    resume: Optional[Path] = RESUME_OPT,
    nproc: Optional[int] = NPROC_OPT,
    sync_bn: bool = SYNC_BN_OPT,
    dry_run: bool = DRY_RUN_OPT,
    accept_changed_inputs: bool = ACCEPT_CHANGED_OPT,
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
                   kind="train", out=out, name=name, as_json=as_json, dry_run=dry_run, config_files=[config],
                   accept_changed_inputs=accept_changed_inputs)
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


def pretrain(
    stores: Optional[list[Path]] = typer.Argument(None, help="Stores to learn from, without labels (one image size "
                                                  "and alignment); their official val/test rows are left out."),
    config: Optional[Path] = typer.Option(None, help="YAML file of PretrainConfig overrides."),
    objective: Optional[str] = typer.Option(None, help="Unlabelled objective: simclr (contrastive, the default) | distill (a trained classifier's labels: -o objective_kwargs.teacher=RUN)."),
    model: Optional[str] = typer.Option(None, help="vgg_scratch | resnet18 | resnet34 | resnet50 | inception_v3"),
    epochs: Optional[int] = typer.Option(None, min=1),
    batch_size: Optional[int] = typer.Option(None, min=2),
    lr: Optional[float] = typer.Option(None, help="Peak learning rate."),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda | cuda:N"),
    seed: Optional[int] = typer.Option(None),
    train_limit: Optional[int] = typer.Option(None, help="Use at most N training images (all stores together)."),
    option: Optional[list[str]] = OPTION_OPT,
    out: Path = OUT_OPT,
    name: Optional[str] = typer.Option(None, help="Run folder pretrain-NAME under --out (default: pretrain-<timestamp>)."),
    resume: Optional[Path] = RESUME_OPT,
    nproc: Optional[int] = NPROC_OPT,
    sync_bn: bool = SYNC_BN_OPT,
    dry_run: bool = DRY_RUN_OPT,
    accept_changed_inputs: bool = ACCEPT_CHANGED_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Pretrain a backbone on unlabelled faces of one or more stores (SimCLR, or distillation from a trained classifier); fine-tune it with train --pretrained RUN."""
    from facelab.train.pretrain import PretrainConfig, check_pretrain_config
    from facelab.train.pretrain import pretrain as run_pretrain

    flags = {"stores": [str(s) for s in stores] if stores else None, "objective": objective, "model": model,
             "trainer.epochs": epochs, "batch_size": batch_size, "trainer.optim.lr": lr, "device": device,
             "seed": seed, "train_limit": train_limit, "trainer.sync_batchnorm": sync_bn or None}
    if resume is not None:
        _refuse_with_resume(resume, {"STORES": stores, "--config": config, "--objective": objective, "--model": model,
                                     "--batch-size": batch_size, "--lr": lr, "--device": device, "--seed": seed,
                                     "--train-limit": train_limit, "--sync-bn": sync_bn, "-o": option,
                                     "--name": name}, allowed="--epochs")
    env = _torchrun_env(nproc)
    if resume is not None:
        cfg = _resumed(PretrainConfig, resume, epochs=epochs)
    else:
        cfg = resolve_config(PretrainConfig, yaml_file=config, flags=flags, options=option)
    summary = _fit("pretrain", run_pretrain, cfg, check=check_pretrain_config, env=env, nproc=nproc, resume=resume,
                   kind="pretrain", out=out, name=name, as_json=as_json, dry_run=dry_run, config_files=[config],
                   accept_changed_inputs=accept_changed_inputs)
    if summary is None or console.quiet:
        return  # --dry-run, or a rank other than 0
    if as_json:
        emit_json(summary)
        return
    best = summary["best"]
    console.print(f"[bold green]done[/] {summary['epochs']} epochs, best {summary['monitor']}="
                  f"{'-' if best is None else f'{best:.4f}'}, {summary['images_per_s'] or 0:.0f} images/s "
                  f"({summary['fit_seconds']:.0f}s); fine-tune with: facelab train STORE --pretrained "
                  f"{summary['run_dir']}")


# ---- generative models ---------------------------------------------------------------------------
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
    out: Path = OUT_OPT,
    name: Optional[str] = typer.Option(None, help="Run folder gen-<model>-NAME under --out (default: a timestamp); an existing one is an error."),
    resume: Optional[Path] = typer.Option(None, help="Resume the run in this folder after a kill (or extend it: "
                                          "with --epochs / --minutes)."),
    nproc: Optional[int] = NPROC_OPT,
    sync_bn: bool = SYNC_BN_OPT,
    dry_run: bool = DRY_RUN_OPT,
    accept_changed_inputs: bool = ACCEPT_CHANGED_OPT,
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
                   kind=f"gen-{cfg.model}", out=out, name=name, as_json=as_json, dry_run=dry_run, config_files=[config],
                   accept_changed_inputs=accept_changed_inputs)
    if summary is None or console.quiet:
        return  # --dry-run, or a rank other than 0
    emit_json(summary) if as_json else console.print(f"[bold green]done[/]: grid {summary['grid']}")


def _given_trainer_keys(config: Path | None, option: list[str] | None) -> set[str]:
    """The trainer keys a --config file or -o options set explicitly."""
    from facelab.config import parse_options, read_yaml

    given = read_yaml(config).get("trainer") or {} if config is not None else {}
    return set(given) | set(parse_options(option).get("trainer") or {})
