"""Increase the batch size instead of decaying the learning rate (Smith et al., 2018), measured.

The same model and epochs are trained with
  (a) ``lr_decay``: lr divided by ``factor`` at each milestone, batch size fixed;
  (b) ``batch_increase``: batch size multiplied by ``factor`` at each milestone, lr fixed;
  (c) ``hybrid``: batch size increased at the first milestone(s), lr decayed at the later ones.
Each variant records test accuracy, parameter updates and wall time; the curves share one plot.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from facelab.config import StrictConfig
from facelab.registry import Registry
from facelab.train.trainer import Callback, Trainer

VARIANTS: Registry[Any] = Registry("batch-schedule variant")
Variant = Literal["lr_decay", "batch_increase", "hybrid"]


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


def _variant_config(cfg: BatchScheduleConfig, schedule: dict[str, Any]):
    from facelab.train.classifier import ClassifierConfig

    return ClassifierConfig.from_dict({
        "store": cfg.store, "labels": cfg.labels, "model": cfg.model, "model_kwargs": cfg.model_kwargs,
        "batch_size": cfg.batch_size, "device": cfg.device, "seed": cfg.seed, "train_limit": cfg.train_limit,
        "augment": "flip",
        "trainer": {"epochs": cfg.epochs, "monitor": "val_mean_accuracy", "monitor_mode": "max",
                    "optim": {"name": cfg.optimizer, "lr": cfg.lr, "weight_decay": 5e-4}, "schedule": schedule},
    }, where="batch-schedule variant")


def run_batch_schedule(cfg: BatchScheduleConfig, *, run_dir: str | Path) -> dict[str, Any]:
    """Train every variant into ``run_dir/<variant>``; write results.json, results.md and curves.png."""
    from facelab.eval.evaluate import evaluate_run
    from facelab.train.classifier import train_classifier
    from facelab.utils.io import atomic_write_json, atomic_write_text

    run_dir = Path(run_dir)
    results = {}
    for variant in cfg.variants:
        schedule, batch_ms = VARIANTS.create(variant, cfg)
        vcfg = _variant_config(cfg, schedule)
        vdir = run_dir / variant
        vdir.mkdir(parents=True, exist_ok=True)
        vcfg.save(vdir / "config.yaml")
        cb = BatchSizeCallback(cfg.batch_size, cfg.factor, batch_ms)
        t0 = time.monotonic()
        summary = train_classifier(vcfg, run_dir=vdir, callbacks=[cb])
        wall = time.monotonic() - t0
        test = evaluate_run(vdir, cfg.store, split="test", device=str(summary["device"]))
        results[variant] = {
            "test_mean_accuracy": test["summary"]["mean_accuracy"],
            "test_mean_balanced_accuracy": test["summary"]["mean_balanced_accuracy"],
            "best_val_mean_accuracy": summary["best"],
            "parameter_updates": summary["steps"],
            "wall_seconds": round(wall, 1),
            "final_batch_size": cb.batch_size_at(cfg.epochs - 1),
            "history": _history(vdir),
        }
    _plot(run_dir / "curves.png", results)
    atomic_write_json(run_dir / "results.json", results)
    atomic_write_text(run_dir / "results.md", results_table(results))
    summary = {"kind": "batch_schedule", "run_dir": str(run_dir),
               "results": {k: {kk: vv for kk, vv in v.items() if kk != "history"} for k, v in results.items()}}
    atomic_write_json(run_dir / "summary.json", summary)
    from facelab.report import render_report

    summary["report"] = str(render_report(run_dir))
    return summary


def _history(vdir: Path) -> list[dict[str, Any]]:
    from facelab.runs import read_metrics

    return read_metrics(vdir)


def results_table(results: dict[str, Any]) -> str:
    """Markdown table of the variants."""
    lines = ["| variant | test mean acc | test balanced acc | parameter updates | final batch | wall s |",
             "|---|---|---|---|---|---|"]
    for v, r in results.items():
        lines.append(f"| {v} | {r['test_mean_accuracy']:.4f} | {r['test_mean_balanced_accuracy']:.4f} | "
                     f"{r['parameter_updates']} | {r['final_batch_size']} | {r['wall_seconds']} |")
    return "\n".join(lines) + "\n"


def _plot(path: Path, results: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for v, r in results.items():
        h = r["history"]
        axes[0].plot([x["epoch"] for x in h], [x.get("val_mean_accuracy") for x in h], marker="o", ms=3, label=v)
        axes[1].plot([x["step"] for x in h], [x.get("val_mean_accuracy") for x in h], marker="o", ms=3, label=v)
        axes[2].plot([x["epoch"] for x in h], [x.get("train_loss") for x in h], marker="o", ms=3, label=v)
    for ax, (xl, yl) in zip(axes, [("epoch", "val mean accuracy"), ("parameter updates", "val mean accuracy"), ("epoch", "train loss")]):
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
