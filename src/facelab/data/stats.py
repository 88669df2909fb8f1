"""Dataset statistics: counts, label prevalence per split, label correlations, and their figures.

Every figure is a plain count over the store's label table, so it can be checked by hand against the
source's annotation files (e.g. the share of ``1`` in CelebA's ``list_attr_celeba.txt`` column).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from rich.table import Table

from facelab.data.schema import LabelKind, LabelSpec
from facelab.data.store import Store
from facelab.data.views import as_indices, official_splits
from facelab.utils.io import atomic_write_bytes


# ---- per-label summaries --------------------------------------------------------------------------
def _binary_summary(spec: LabelSpec, values: np.ndarray) -> dict[str, Any]:
    positives = int((values == 1).sum())
    return {"positives": positives, "prevalence": positives / values.size if values.size else None}


def _categorical_summary(spec: LabelSpec, values: np.ndarray) -> dict[str, Any]:
    counts = np.bincount(values, minlength=len(spec.classes))[: len(spec.classes)]
    pairs = list(zip(spec.classes, counts.tolist(), strict=True))
    return {
        "counts": dict(pairs),
        "shares": {c: (k / values.size if values.size else None) for c, k in pairs},
    }


def _numeric_summary(spec: LabelSpec, values: np.ndarray) -> dict[str, Any]:
    if not values.size:
        return {"mean": None, "std": None, "min": None, "max": None}
    v = values.astype(np.float64)
    return {"mean": float(v.mean()), "std": float(v.std()), "min": int(values.min()), "max": int(values.max())}


SUMMARIES: dict[LabelKind, Callable[[LabelSpec, np.ndarray], dict[str, Any]]] = {
    LabelKind.BINARY: _binary_summary,
    LabelKind.CATEGORICAL: _categorical_summary,
    LabelKind.NUMERIC: _numeric_summary,
}


def _split_stats(store: Store, rows: np.ndarray) -> dict[str, Any]:
    table = store.labels[rows]  # (n, L)
    ids = store.identities[rows]
    return {
        "count": int(rows.size),
        "identities": int(np.unique(ids[ids >= 0]).size) if store.has_identities else None,
        "labels": {s.name: SUMMARIES[s.kind](s, table[:, j]) for j, s in enumerate(store.label_specs)},
    }


def dataset_stats(store: Store, splits: Mapping[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Counts and label statistics of the whole store ("all") and of each split.

    Binary labels report ``positives`` and ``prevalence`` (share of 1s); categorical labels ``counts``
    and ``shares`` per class; numeric labels ``mean``, ``std`` (population, ddof=0), ``min``, ``max``.
    Shares of an empty split are ``None``. The result is JSON-serialisable.

    Args:
        store: the store.
        splits: name -> rows; default the official partitions when the store has them, else none.

    Returns:
        ``{"source", "content_hash", "image_size", "num_images", "num_identities", "labels" (specs),
        "splits": {"all" | name: {"count", "identities", "labels": {label: summary}}}}``.
    """
    if splits is None:
        splits = official_splits(store) if store.has_partitions else {}
    parts = {"all": np.arange(len(store))} | {name: as_indices(store, rows) for name, rows in splits.items()}
    per_split = {name: _split_stats(store, rows) for name, rows in parts.items()}
    return {
        "source": store.source,
        "content_hash": store.content_hash,
        "image_size": store.image_size,
        "num_images": len(store),
        "num_identities": per_split["all"]["identities"],
        "labels": [s.to_dict() for s in store.label_specs],
        "splits": per_split,
    }


# ---- correlations ---------------------------------------------------------------------------------
def _columns(store: Store, labels: Sequence[str], rows: np.ndarray) -> tuple[list[str], np.ndarray]:
    names, cols = [], []
    for name in labels:
        spec, values = store.spec(name), store.column(name)[rows]
        if spec.kind is LabelKind.CATEGORICAL:
            for k, cls in enumerate(spec.classes):
                names.append(f"{name}={cls}")
                cols.append(values == k)
        else:
            names.append(name)
            cols.append(values)
    return names, np.stack(cols, axis=1).astype(np.float64) if cols else np.zeros((rows.size, 0))


def correlation_matrix(
    store: Store,
    labels: Sequence[str] | None = None,
    *,
    one_hot_categorical: bool = False,
    indices: Sequence[int] | np.ndarray | None = None,
) -> tuple[list[str], np.ndarray]:
    """Pearson correlation between labels (the phi coefficient for binary pairs).

    Args:
        store: the store.
        labels: labels to correlate; default every binary label (plus categorical ones with
            ``one_hot_categorical``). Categorical labels become one 0/1 column per class (``name=class``);
            numeric labels are used as they are.
        one_hot_categorical: with the default labels, include categorical labels one-hot.
        indices: rows to use (default all).

    Returns:
        (names, (M, M) float64 matrix); entries involving a constant column are NaN.
    """
    if labels is None:
        kinds = {LabelKind.BINARY, LabelKind.CATEGORICAL} if one_hot_categorical else {LabelKind.BINARY}
        labels = [s.name for s in store.label_specs if s.kind in kinds]
    rows = np.arange(len(store)) if indices is None else as_indices(store, indices)
    names, x = _columns(store, labels, rows)  # (n, M)
    x = x - x.mean(axis=0)
    cov = x.T @ x
    std = np.sqrt(np.diag(cov))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = cov / np.outer(std, std)
    corr[~np.isfinite(corr)] = np.nan
    return names, np.clip(corr, -1.0, 1.0)


# ---- figures --------------------------------------------------------------------------------------
def _save(fig: Figure, path: str | Path) -> Path:
    buf = io.BytesIO()
    FigureCanvasAgg(fig)
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path


def plot_correlation(path: str | Path, names: Sequence[str], matrix: np.ndarray, *, title: str | None = None) -> Path:
    """Write a correlation heatmap PNG (diverging colormap centred at 0, NaN in grey); returns ``path``."""
    m = len(names)
    side = max(5.0, 0.26 * m + 2.5)
    fig = Figure(figsize=(side + 1.2, side))
    ax = fig.add_subplot()
    cmap = colormaps["RdBu_r"].with_extremes(bad="#d0d0d0")
    im = ax.imshow(np.ma.masked_invalid(matrix), cmap=cmap, vmin=-1.0, vmax=1.0, interpolation="nearest")
    fontsize = 8 if m <= 45 else max(4, int(360 / m))
    ax.set_xticks(range(m), labels=list(names), rotation=90, fontsize=fontsize)
    ax.set_yticks(range(m), labels=list(names), fontsize=fontsize)
    edges = np.arange(-0.5, m, 1.0)
    ax.hlines(edges, -0.5, m - 0.5, colors="white", linewidth=0.3)  # cell borders
    ax.vlines(edges, -0.5, m - 0.5, colors="white", linewidth=0.3)
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02, label="Pearson r (phi for binary pairs)")
    ax.set_title(title or "Label correlation")
    return _save(fig, path)


def _bars(stats: Mapping[str, Any]) -> tuple[list[str], dict[str, list[float]]]:
    """Bar names (binary label, or ``label=class``) and their share in each split."""
    specs = [LabelSpec.from_dict(d) for d in stats["labels"]]
    names: list[str] = []
    for s in specs:
        if s.kind is LabelKind.BINARY:
            names.append(s.name)
        elif s.kind is LabelKind.CATEGORICAL:
            names.extend(f"{s.name}={c}" for c in s.classes)
    shares: dict[str, list[float]] = {}
    for split, body in stats["splits"].items():
        vals = []
        for s in specs:
            summary = body["labels"][s.name]
            if s.kind is LabelKind.BINARY:
                vals.append(summary["prevalence"])
            elif s.kind is LabelKind.CATEGORICAL:
                vals.extend(summary["shares"][c] for c in s.classes)
        shares[split] = [np.nan if v is None else v for v in vals]
    return names, shares


def plot_prevalence(path: str | Path, stats: Mapping[str, Any], *, title: str | None = None) -> Path:
    """Write a horizontal bar chart of label prevalence (binary) and class shares (categorical) per split."""
    names, shares = _bars(stats)
    n, k = len(names), len(shares)
    fig = Figure(figsize=(8.0, max(3.0, 0.22 * n * max(1, k) ** 0.5 + 1.5)))
    ax = fig.add_subplot()
    height = 0.8 / max(k, 1)
    pos = np.arange(n)
    for j, (split, vals) in enumerate(shares.items()):
        label = f"{split} ({stats['splits'][split]['count']:,})"
        ax.barh(pos + (j - (k - 1) / 2) * height, vals, height=height, label=label)
    ax.set_yticks(pos, labels=names, fontsize=8 if n <= 60 else 5)
    ax.set_ylim(n - 0.5, -0.5)  # first label on top, no empty margins
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of images")
    ax.axvline(0.5, color="grey", linewidth=0.5, linestyle=":")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title or f"Label prevalence - {stats['source']}")
    return _save(fig, path)


# ---- table ----------------------------------------------------------------------------------------
def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _cells(spec: LabelSpec, per_split: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """Rows (name, one cell per split) for one label."""
    if spec.kind is LabelKind.BINARY:
        return [(spec.name, [_pct(s["prevalence"]) for s in per_split])]
    if spec.kind is LabelKind.CATEGORICAL:
        return [(f"{spec.name}={c}", [_pct(s["shares"][c]) for s in per_split]) for c in spec.classes]
    cells = [
        "-" if s["mean"] is None else f"{s['mean']:.1f} ± {s['std']:.1f} [{s['min']}-{s['max']}]" for s in per_split
    ]
    return [(spec.name, cells)]


def format_stats_table(stats: Mapping[str, Any]) -> Table:
    """A rich Table of :func:`dataset_stats`: image/identity counts, then one row per label (or class)."""
    splits = list(stats["splits"])
    title = f"{stats['source']}: {stats['num_images']:,} images"
    if stats.get("num_identities") is not None:
        title += f", {stats['num_identities']:,} identities"
    table = Table(title=title)
    table.add_column("label")
    table.add_column("kind", style="dim")
    for name in splits:
        table.add_column(name, justify="right")
    table.add_row("images", "", *[f"{stats['splits'][s]['count']:,}" for s in splits])
    if stats.get("num_identities") is not None:
        table.add_row("identities", "", *[f"{stats['splits'][s]['identities']:,}" for s in splits])
    for d in stats["labels"]:
        spec = LabelSpec.from_dict(d)
        for i, (name, cells) in enumerate(_cells(spec, [stats["splits"][s]["labels"][spec.name] for s in splits])):
            table.add_row(name, spec.kind.value if i == 0 else "", *cells, end_section=False)
    return table


def stats_with_plots(store: Store, folder: str | Path | None = None) -> dict[str, Any]:
    """:func:`dataset_stats` plus prevalence.png and (with two labels or more) correlation.png in ``folder``
    (default ``STORE/stats``); the figures name the plots they wrote."""
    figures = dataset_stats(store)
    folder = Path(folder) if folder is not None else store.path / "stats"
    folder.mkdir(parents=True, exist_ok=True)
    names, matrix = correlation_matrix(store)
    correlation = plot_correlation(folder / "correlation.png", names, matrix) if len(names) >= 2 else None
    prevalence = plot_prevalence(folder / "prevalence.png", figures)
    figures["plots"] = {"correlation": str(correlation) if correlation else None, "prevalence": str(prevalence)}
    return figures
