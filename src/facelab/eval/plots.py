"""Plots of runs and evaluations: training curves, per-label bars, confusion matrices (PNG, Agg)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from facelab.utils.io import atomic_path  # noqa: E402


def _save(fig, path: Path, *, tight: bool = True) -> Path:
    """Write ``fig`` as PNG atomically; ``tight`` crops to the drawn content (not needed with a layout engine)."""
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight" if tight else None)
    finally:
        plt.close(fig)
    return path


def curve_family(key: str) -> str:
    """The panel of a history key: train_X and val_X share one; a player's losses (``train_generator/g_loss``)
    share the player's; the per-label means of a classifier (``val_mean_accuracy``, ...) share one."""
    name = key.split("_", 1)[1] if key.startswith(("train_", "val_")) else key
    if "/" in name:
        return name.split("/", 1)[0]
    return "mean metrics" if name.startswith("mean_") else name


def plot_curves(path: Path, history: Sequence[dict[str, Any]], *, keys: Sequence[str] | None = None) -> Path:
    """One panel per metric family (losses, mean metrics, each player of a GAN, lr) over epochs."""
    from matplotlib.ticker import MaxNLocator

    if keys is None:
        keys = sorted({k for h in history for k, v in h.items() if isinstance(v, (int, float))}
                      - {"epoch", "step", "train_seconds", "train_images_per_s"})
    families: dict[str, list[str]] = {}
    for k in keys:
        families.setdefault(curve_family(k), []).append(k)
    fams = [f for f in families if f not in ("lr",)] + (["lr"] if "lr" in families else [])
    n = max(1, len(fams))
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False, layout="constrained")
    epochs = [h.get("epoch", i + 1) for i, h in enumerate(history)]
    for ax, fam in zip(axes.flat, fams):
        for k in families[fam]:
            style = "--" if "majority" in k else "-"  # the baseline to beat
            ax.plot(epochs, [h.get(k, np.nan) for h in history], style, marker="o", ms=3, label=k)
        ax.set_title(fam)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    return _save(fig, path, tight=False)  # constrained layout already fits the panels


def plot_label_bars(path: Path, per_label: dict[str, dict[str, float]], *, metric: str = "accuracy",
                    baseline: str = "majority_accuracy") -> Path:
    """Horizontal bars of ``metric`` per label with the majority baseline marked."""
    names = list(per_label)
    vals = np.array([per_label[n][metric] for n in names])
    base = np.array([per_label[n].get(baseline, np.nan) for n in names])
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(names) + 1.2))
    y = np.arange(len(names))
    ax.barh(y, vals, color="#4C72B0", label=metric)
    ax.scatter(base, y, color="#DD8452", marker="|", s=120, label="majority baseline", zorder=3)
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(min(0.5, np.nanmin(np.r_[vals, base]) - 0.05), 1.0)
    ax.set_xlabel(metric)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def plot_confusion(path: Path, matrix: np.ndarray, classes: Sequence[str], *, title: str = "") -> Path:
    """Confusion matrix heatmap with counts and row-normalised shares."""
    m = np.asarray(matrix)
    share = m / np.maximum(1, m.sum(1, keepdims=True))
    fig, ax = plt.subplots(figsize=(1.0 * len(classes) + 2.5, 1.0 * len(classes) + 2))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{m[i, j]}\n{share[i, j]:.0%}", ha="center", va="center", fontsize=8,
                    color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return _save(fig, path)
