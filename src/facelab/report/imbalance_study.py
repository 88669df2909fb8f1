"""The report of the class-imbalance study: tables of mean ± 95% CI, CI bars, real vs generated samples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from facelab.report.html import esc, fmt, image, section, table
from facelab.report.kinds import RUN_KINDS, RunKind
from facelab.runs.summary import ImbalanceStudySummary

METRICS = ("accuracy", "balanced_accuracy", "minority_recall", "f1_macro", "auroc")
BASELINE = "none"
#: Per-cell notes of the generative methods aggregated like metrics (see balancing.synthetic_fidelity).
SAMPLE_QUALITY = ("synthetic_fidelity", "judge_minority_recall_val")
SAMPLE_QUALITY_TEXT = ("Generated minority samples: the share that the study's own 'none' classifier (trained on the "
                       "same reduced real rows) calls minority, beside its recall on the real minority images of the "
                       "validation split (what a perfect generator would reach).")


def _mean_ci_text(stat: dict[str, Any], digits: int) -> str:
    """``mean ± ci95`` (the interval left out when it is undefined, e.g. one seed)."""
    mean, ci = stat["mean"], stat["ci95"]  # None where undefined (summary.json holds no NaN)
    if mean is None or not np.isfinite(mean):
        return "-"
    return f"{mean:.{digits}f}" + (f" ± {ci:.{digits}f}" if ci is not None and np.isfinite(ci) else "")


def _cell(stat: dict[str, Any]) -> str:
    text = _mean_ci_text(stat, 4)
    vs = stat.get("vs_none")
    if vs and vs.get("significant"):
        cls = "sig" if vs["diff"] > 0 else "worse"
        return f"<span class='{cls}' title='p={vs['p_value']:.3g}'>{esc(text)} *</span>"
    if vs and vs.get("p_value") is not None:
        return f"<span title='p={vs['p_value']:.3g}'>{esc(text)}</span>"
    return esc(text)


def results_markdown(agg: dict[str, Any]) -> str:
    """Markdown tables (one per p) of mean ± 95% CI; * marks a significant difference from 'none'."""
    lines = []
    for p, methods in agg.items():
        lines += [f"\n**p = {p}** (mean ± 95% CI over seeds; * = paired t-test vs none, p < 0.05)\n",
                  "| method | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]
        for method, e in methods.items():
            cells = []
            for m in METRICS:
                star = " *" if e[m].get("vs_none", {}).get("significant") else ""
                cells.append(_mean_ci_text(e[m], 3) + star)
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        quality = _quality_rows(methods, digits=3)
        if quality:
            lines += [f"\n{SAMPLE_QUALITY_TEXT}\n", "| method | " + " | ".join(SAMPLE_QUALITY) + " |",
                      "|---" * (len(SAMPLE_QUALITY) + 1) + "|"]
            lines += ["| " + " | ".join(row) + " |" for row in quality]
    return "\n".join(lines) + "\n"


def _quality_rows(methods: dict[str, Any], *, digits: int) -> list[list[str]]:
    """One row per method that has a judgement of its generated samples (plain text cells)."""
    return [[method, *(_mean_ci_text(e[k], digits) if k in e else "-" for k in SAMPLE_QUALITY)]
            for method, e in methods.items() if any(k in e for k in SAMPLE_QUALITY)]


def _finite(v: float | None, default: float) -> float:
    return v if v is not None and np.isfinite(v) else default


def plot_bars(path: Path, agg: dict[str, Any], *, metrics: tuple[str, ...] = ("balanced_accuracy", "minority_recall", "auroc")) -> Path:
    """Grouped bars per method with 95% CI error bars, one panel per metric (first p)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ps = list(agg)
    fig, axes = plt.subplots(len(ps), len(metrics), figsize=(4.6 * len(metrics), 3.4 * len(ps)), squeeze=False)
    for row, p in enumerate(ps):
        methods = list(agg[p])
        for ax, m in zip(axes[row], metrics):
            means = [_finite(agg[p][k][m]["mean"], float("nan")) for k in methods]
            cis = [_finite(agg[p][k][m]["ci95"], 0.0) for k in methods]
            colors = ["#999" if k == BASELINE else "#4C72B0" for k in methods]
            ax.bar(range(len(methods)), means, yerr=cis, capsize=3, color=colors)
            ax.set_xticks(range(len(methods)), methods, rotation=40, ha="right", fontsize=8)
            lows, highs = [v - c for v, c in zip(means, cis)], [v + c for v, c in zip(means, cis)]
            if np.isfinite(lows).any():
                ax.set_ylim(max(0, np.nanmin(lows) - 0.05), min(1.0, np.nanmax(highs) + 0.03))
            ax.set_title(f"{m} (p={p})", fontsize=10)
            ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


REAL_MINORITY = "real_minority.png"  # a grid of real minority training images, written by the study


def imbalance_sections(run_dir: Path, summary: ImbalanceStudySummary) -> list[str]:
    agg = summary.aggregate
    bars = plot_bars(run_dir / "bars.png", agg) if agg else None
    parts = [section("Question", f"<p>Training keeps only a share p of the minority class of <b>{esc(summary.target)}</b> "
                     f"(value {esc(summary.minority)}); validation and test data are real and untouched. "
                     f"Splits: {esc(summary.splits)}" + (f" ({esc(summary.splits_how)})" if summary.splits_how else "") +
                     ". Mean ± 95% confidence interval over seeds; "
                     "<span class='sig'>*</span> / <span class='worse'>*</span>: significantly better / worse than "
                     "no augmentation (paired t-test over seeds, p &lt; 0.05; with 2-3 seeds only large effects can show).</p>")]
    for p, methods in agg.items():
        rows = [[esc(m), *(_cell(e[k]) for k in METRICS)] for m, e in methods.items()]
        parts.append(section(f"Results on the real test split, p = {p}", table(["method", *METRICS], rows, raw_cells=True)))
        quality = _quality_rows(methods, digits=4)
        if quality:
            parts.append(section(f"How convincing the generated minority samples are, p = {p}",
                                 f"<p>{esc(SAMPLE_QUALITY_TEXT)}</p>" + table(["method", *SAMPLE_QUALITY], quality)))
    if bars:
        parts.append(section("Metrics with 95% confidence intervals", image(bars)))
    for p, methods in (summary.external or {}).items():
        rows = [[esc(m), *(_cell(e[k]) for k in METRICS)] for m, e in methods.items()]
        parts.append(section(f"External evaluation store, p = {p}", table(["method", *METRICS], rows, raw_cells=True)))
    real = run_dir / REAL_MINORITY
    synth = sorted(run_dir.glob("p*/seed0/synthetic_*.png"))
    figs = ([image(real, "real minority (training)")] if real.is_file() else []) + [
        image(s, f"{s.stem.removeprefix('synthetic_')} ({s.parent.parent.name})") for s in synth]
    if figs:
        parts.append(section("Real vs generated minority samples", "<div class='row'>" + "".join(figs) + "</div>"))
    curves = sorted(run_dir.glob("p*/seed0/*/curves.png"))
    if curves:
        parts.append(section("Training curves (seed 0)", "<div class='row'>" + "".join(
            image(c, c.parent.name, width=520) for c in curves) + "</div>"))
    parts.append(section("Time", f"<p>{fmt(summary.seconds, 1)} s in total.</p>"))
    return parts


def imbalance_key_metric(summary: ImbalanceStudySummary) -> tuple[str, float | None]:
    """The best method's balanced accuracy at the first p."""
    for p, methods in summary.aggregate.items():
        best = max(methods.items(), key=lambda kv: kv[1]["balanced_accuracy"]["mean"] or 0.0)
        return f"balanced acc p={p} ({best[0]})", best[1]["balanced_accuracy"]["mean"]
    return "-", None


_KIND = RunKind(sections=imbalance_sections, key_metric=imbalance_key_metric)
RUN_KINDS.register("imbalance_study")(_KIND)
RUN_KINDS.register("augment_study")(_KIND)  # the study's former name, in older run folders
