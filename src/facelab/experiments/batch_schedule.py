"""Increase the batch size instead of decaying the learning rate (Smith et al., 2018), measured.

The same model and epochs are trained with
  (a) ``lr_decay``: lr divided by ``factor`` at each milestone, batch size fixed;
  (b) ``batch_increase``: batch size multiplied by ``factor`` at each milestone, lr fixed;
  (c) ``hybrid``: batch size increased at the first milestone(s), lr decayed at the later ones.
Each variant records test accuracy, parameter updates and training time (over ``seeds`` seeds: mean ±
standard deviation); the curves share one plot. A killed study resumes where it stopped (``--resume``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from facelab.config import StrictConfig
from facelab.data.store import Store
from facelab.data.views import run_splits
from facelab.errors import ConfigError
from facelab.eval.evaluate import evaluate_rows
from facelab.models.checkpoint import STATE
from facelab.models.classifiers import list_classifiers
from facelab.registry import Registry
from facelab.report import render_report
from facelab.report.batch_schedule import results_table
from facelab.runs.folder import read_metrics
from facelab.runs.inputs import check_inputs, store_input
from facelab.runs.splits import save_run_splits
from facelab.runs.summary import BatchScheduleSummary, write_summary
from facelab.train.classifier import ClassifierConfig, train_classifier
from facelab.train.trainer import Callback, Trainer
from facelab.utils.console import stderr_console
from facelab.utils.device import resolve_device
from facelab.utils.io import append_jsonl, atomic_write_json, atomic_write_text, read_jsonl

VARIANTS: Registry[Any] = Registry("batch-schedule variant")
Variant = Literal["lr_decay", "batch_increase", "hybrid"]
VAL_SHARE = 0.15  # of train, held out for checkpoint selection when the store's split has no val set


class BatchScheduleConfig(StrictConfig):
    store: str
    labels: list[str] = Field(default_factory=lambda: ["Male", "Smiling", "Eyeglasses"])
    model: str = "vgg_scratch"
    model_kwargs: dict[str, Any] = Field(default_factory=dict)  # e.g. {channels: [16, 32, 64]} (ClassifierConfig)
    epochs: int = Field(12, ge=2)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(0.05, gt=0)
    optimizer: Literal["sgd", "adam", "adamw", "adabound"] = "sgd"
    factor: int = Field(4, ge=2)
    milestones: list[float] = Field(default_factory=lambda: [0.5, 0.75])  # fractions of the run
    variants: list[Variant] = Field(default_factory=lambda: ["lr_decay", "batch_increase", "hybrid"])
    train_limit: int | None = None
    split: Literal["auto", "official", "random"] = "auto"  # see study_splits for stores without a test set
    seeds: int = Field(1, ge=1)  # seeds seed, seed + 1, ...: mean ± standard deviation per variant
    device: str = "auto"
    seed: int = 0


class BatchSizeCallback(Callback):
    """Set the training loader's batch size at the start of each epoch from a step function of epochs."""

    def __init__(self, base: int, factor: int, milestones: list[float]) -> None:
        self.base, self.factor, self.milestones = base, factor, milestones

    def batch_size_at(self, epoch: int) -> int:
        return self.base * self.factor ** sum(epoch >= m for m in self.milestones)

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        trainer.train_loader.batch_size = self.batch_size_at(epoch)


def _split_milestones(cfg: BatchScheduleConfig) -> tuple[list[float], list[float]]:
    ms = sorted(m * cfg.epochs if m <= 1 else m for m in cfg.milestones)
    half = max(1, len(ms) // 2)
    return ms[:half], ms[half:]


def _as_fractions(epochs: list[float], cfg: BatchScheduleConfig) -> list[float]:
    """Milestone epochs as fractions of the run: ScheduleConfig reads values <= 1 as fractions, so an epoch
    milestone of 1 would otherwise mean the end of the run."""
    return [m / cfg.epochs for m in epochs]


@VARIANTS.register("lr_decay")
def _lr_decay(cfg: BatchScheduleConfig) -> tuple[dict[str, Any], list[float]]:
    ms = sorted(m * cfg.epochs if m <= 1 else m for m in cfg.milestones)
    return {"name": "step", "milestones": _as_fractions(ms, cfg), "gamma": 1.0 / cfg.factor}, []


@VARIANTS.register("batch_increase")
def _batch_increase(cfg: BatchScheduleConfig) -> tuple[dict[str, Any], list[float]]:
    ms = sorted(m * cfg.epochs if m <= 1 else m for m in cfg.milestones)
    return {"name": "constant"}, ms


@VARIANTS.register("hybrid")
def _hybrid(cfg: BatchScheduleConfig) -> tuple[dict[str, Any], list[float]]:
    batch_ms, lr_ms = _split_milestones(cfg)
    lr_fractions = _as_fractions(lr_ms, cfg) or [cfg.epochs + 1]  # (epochs + 1: never)
    return {"name": "step", "milestones": lr_fractions, "gamma": 1.0 / cfg.factor}, batch_ms


def _variant_config(cfg: BatchScheduleConfig, schedule: dict[str, Any], seed: int) -> ClassifierConfig:
    return ClassifierConfig.from_dict({
        "store": cfg.store, "labels": cfg.labels, "model": cfg.model, "model_kwargs": cfg.model_kwargs,
        "batch_size": cfg.batch_size, "device": cfg.device, "seed": seed, "train_limit": cfg.train_limit,
        "augment": "flip",
        "trainer": {"epochs": cfg.epochs, "monitor": "val_mean_accuracy", "monitor_mode": "max",
                    "optim": {"name": cfg.optimizer, "lr": cfg.lr, "weight_decay": 5e-4}, "schedule": schedule},
    }, where="batch-schedule variant")


def study_splits(cfg: BatchScheduleConfig, store: Store) -> tuple[dict[str, np.ndarray], str]:
    """Train/val/test rows shared by every variant and seed, and how they were made; also checks the labels,
    the device and that the grown batch still fits the training rows.

    Test accuracy needs rows that neither training nor checkpoint selection saw
    (:func:`facelab.data.views.run_splits` with ``need_test``): a store whose official partitions lack a test
    set tests on its val partition and holds an identity-disjoint, stratified 15% of train out for validation
    (the CelebA subset); one that lacks a val set (CIFAR-10) holds it out of train the same way.
    """
    missing = [n for n in cfg.labels if n not in store.label_names]
    if missing:
        raise ConfigError(f"labels {missing} are not in {store.path}; its labels: {', '.join(store.label_names)}")
    resolve_device(cfg.device)
    for variant in cfg.variants:  # every variant's classifier config, as its cells will build it
        vcfg = _variant_config(cfg, VARIANTS.create(variant, cfg)[0], cfg.seed)
        if vcfg.model not in list_classifiers():
            raise ConfigError(f"unknown classifier {vcfg.model!r}; known classifiers: {', '.join(list_classifiers())}")
    s, how = run_splits(store, policy=cfg.split, seed=cfg.seed, stratify=cfg.labels[:1], val_share=VAL_SHARE,
                        need_test=True)
    train, val, test = s["train"], s["val"], s["test"]
    if min(train.size, val.size, test.size) == 0:
        raise ConfigError(f"{store.path}: the {cfg.split} split leaves train {train.size}, val {val.size}, test "
                          f"{test.size} rows; the study needs all three (try -o split=random)")
    rows = min(train.size, cfg.train_limit or train.size)
    final = max(cfg.batch_size * cfg.factor ** len(VARIANTS.create(v, cfg)[1]) for v in cfg.variants)
    if final > rows:  # the loader drops the last partial batch: such an epoch would train on nothing
        raise ConfigError(f"the batch grows to {final} (batch_size {cfg.batch_size} x factor {cfg.factor} per "
                          f"milestone) but training has {rows} rows; lower batch_size, factor or the milestones")
    return {"train": train, "val": val, "test": test}, how


def _done(results_path: Path) -> dict[tuple[str, int], dict[str, Any]]:
    return {(r["variant"], r["seed"]): r for r in read_jsonl(results_path)}


def run_batch_schedule(cfg: BatchScheduleConfig, *, run_dir: str | Path, progress: bool = True,
                       accept_changed_inputs: bool = False) -> dict[str, Any]:
    """Train every variant and seed into ``run_dir/<variant>/seed<k>``; write results.json, results.md and
    curves.png. Each finished (variant, seed) is appended to results.jsonl, so calling this again on the
    same folder (``--resume``) skips them and resumes an interrupted one from its last checkpoint, once its
    inputs are checked to be those it recorded (:mod:`facelab.runs.inputs`; ``accept_changed_inputs``: go on
    with changed ones)."""
    run_dir = Path(run_dir)
    t0 = time.monotonic()
    store = Store.open(cfg.store)
    check_inputs(run_dir, [store_input(store)], accept=accept_changed_inputs, doing="resume", adopt=True,
                 command="experiment batch-schedule --resume")
    splits, how = study_splits(cfg, store)
    save_run_splits(run_dir, splits, store, how=how)
    results_path = run_dir / "results.jsonl"
    done = _done(results_path)
    seeds = [cfg.seed + i for i in range(cfg.seeds)]
    cells = [(v, s) for s in seeds for v in cfg.variants]
    console = stderr_console()  # stdout stays free for --json
    for i, (variant, seed) in enumerate(cells, 1):
        if (variant, seed) in done:
            continue
        schedule, batch_ms = VARIANTS.create(variant, cfg)
        vcfg = _variant_config(cfg, schedule, seed)
        vdir = run_dir / variant / f"seed{seed}"
        vdir.mkdir(parents=True, exist_ok=True)
        vcfg.save(vdir / "config.yaml")
        resume = (vdir / "checkpoints" / "last" / STATE).is_file()
        if progress:
            console.print(f"[bold]{variant}[/], seed {seed} ({i}/{len(cells)})" + (": resuming" if resume else ""))
        cb = BatchSizeCallback(cfg.batch_size, cfg.factor, batch_ms)
        summary = train_classifier(vcfg, run_dir=vdir, callbacks=[cb], splits=splits, splits_how=f"the study's {how}",
                                   resume=resume, accept_changed_inputs=accept_changed_inputs)
        test = evaluate_rows(vdir, store, splits["test"], device=str(summary["device"]))
        rec = {"variant": variant, "seed": seed,
               "test_mean_accuracy": test["summary"]["mean_accuracy"],
               "test_mean_balanced_accuracy": test["summary"]["mean_balanced_accuracy"],
               "best_val_mean_accuracy": summary["best"], "parameter_updates": summary["steps"],
               "train_seconds": round(summary["train_seconds"], 1), "final_batch_size": cb.batch_size_at(cfg.epochs - 1)}
        append_jsonl(results_path, rec)
        done[(variant, seed)] = rec
    results = {v: _aggregate([done[(v, s)] for s in seeds], [read_metrics(run_dir / v / f"seed{s}") for s in seeds])
               for v in cfg.variants}
    _plot(run_dir / "curves.png", results)
    atomic_write_json(run_dir / "results.json", results)
    atomic_write_text(run_dir / "results.md", results_table(results))
    summary = BatchScheduleSummary(
        run_dir=str(run_dir), store=cfg.store, labels=cfg.labels, seeds=seeds,
        splits={k: int(v.size) for k, v in splits.items()}, splits_how=how,
        results={k: {kk: vv for kk, vv in v.items() if kk != "history"} for k, v in results.items()},
        seconds=round(time.monotonic() - t0, 1))
    write_summary(run_dir, summary)
    return {**summary.to_dict(), "report": str(render_report(run_dir))}


def _aggregate(records: list[dict[str, Any]], histories: list[list[dict[str, Any]]]) -> dict[str, Any]:
    """One variant over its seeds: means (and sample standard deviations), per-seed figures, and the
    per-epoch history averaged over the seeds (every seed trains the same epochs and steps)."""
    out: dict[str, Any] = {}
    for k in ("test_mean_accuracy", "test_mean_balanced_accuracy", "best_val_mean_accuracy", "train_seconds"):
        vals = np.array([r[k] for r in records], dtype=float)
        out[k] = float(vals.mean())
        out[f"{k}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else None
        out[f"{k}_per_seed"] = vals.tolist()
    out["parameter_updates"] = records[0]["parameter_updates"]
    out["final_batch_size"] = records[0]["final_batch_size"]
    n = min(len(h) for h in histories)
    out["history"] = [{"epoch": histories[0][e]["epoch"], "step": histories[0][e]["step"], "lr": histories[0][e]["lr"],
                       **{k: float(np.mean([h[e][k] for h in histories if h[e].get(k) is not None]))
                          for k in ("val_mean_accuracy", "train_loss") if any(h[e].get(k) is not None for h in histories)}}
                      for e in range(n)]
    return out


def _plot(path: Path, results: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    styles = [("-", "o"), ("--", "s"), (":", "^")]  # variants share their first epochs: keep overlaps visible
    for i, (v, r) in enumerate(results.items()):
        h = r["history"]
        ls, mk = styles[i % len(styles)]
        kw = {"ls": ls, "marker": mk, "ms": 3, "label": v}
        axes[0].plot([x["epoch"] for x in h], [x.get("val_mean_accuracy") for x in h], **kw)
        axes[1].plot([x["step"] for x in h], [x.get("val_mean_accuracy") for x in h], **kw)
        axes[2].plot([x["epoch"] for x in h], [x.get("train_loss") for x in h], **kw)
    for ax, (xl, yl) in zip(axes, [("epoch", "val mean accuracy"), ("parameter updates", "val mean accuracy"), ("epoch", "train loss")]):
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
