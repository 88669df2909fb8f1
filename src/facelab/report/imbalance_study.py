"""The report of the class-imbalance study: tables of means with 95% intervals, interval bars, real vs generated
samples.

Every metric of the study is a share, so an interval is shown clipped to [0, 1], and only from 3 seeds on
(:func:`facelab.utils.figures.interval`): below that a table says why it shows means alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from facelab.report.html import esc, fmt, image, section, table
from facelab.report.kinds import RUN_KINDS, RunKind
from facelab.runs.summary import ImbalanceStudySummary
from facelab.utils.figures import MIN_N_FOR_INTERVAL, UNIT_RANGE, interval, mean_interval_text, no_interval_reason

METRICS = ("accuracy", "balanced_accuracy", "minority_recall", "f1_macro", "auroc")
BASELINE = "none"
#: Per-cell notes of the generative methods aggregated like metrics (see balancing.synthetic_fidelity).
SAMPLE_QUALITY = ("synthetic_fidelity", "judge_minority_recall_val")
SAMPLE_QUALITY_TEXT = ("Generated minority samples: the share that the study's own 'none' classifier (trained on the "
                       "same reduced real rows) calls minority, beside its recall on the real minority images of the "
                       "validation split (what a perfect generator would reach).")


INTERVAL_TEXT = ("mean [95% confidence interval] over seeds; Student t, clipped to [0, 1], shown from "
                 f"{MIN_N_FOR_INTERVAL} seeds on")


def _mean_ci_text(stat: dict[str, Any], digits: int) -> str:
    """``mean [low, high]``, or the mean alone where no interval is shown (fewer than 3 seeds)."""
    return mean_interval_text(stat, digits=digits, bounds=UNIT_RANGE)  # None where undefined (no NaN in JSON)


def interval_note(methods: dict[str, Any], keys: tuple[str, ...] = METRICS) -> str:
    """Why a table of ``methods`` shows means without intervals (empty when every cell has one)."""
    few = sorted({int(e[k].get("n") or 0) for e in methods.values() for k in keys
                  if k in e and 0 < int(e[k].get("n") or 0) < MIN_N_FOR_INTERVAL})
    return "; ".join(no_interval_reason(n) for n in few)


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
    """Markdown tables (one per p) of means [95% intervals]; * marks a significant difference from 'none'."""
    lines = []
    for p, methods in agg.items():
        note = interval_note(methods)
        lines += [f"\n**p = {p}** ({INTERVAL_TEXT}; * = paired t-test vs none, p < 0.05)"
                  + (f"\n\n{note}" if note else "") + "\n",
                  "| method | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]
        for method, e in methods.items():
            cells = []
            for m in METRICS:
                star = " *" if e[m].get("vs_none", {}).get("significant") else ""
                cells.append(_mean_ci_text(e[m], 3) + star)
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        quality = _quality_rows(methods, digits=3)
        if quality:
            note = interval_note(methods, SAMPLE_QUALITY)
            lines += [f"\n{SAMPLE_QUALITY_TEXT}" + (f" {note}." if note else "") + "\n",
                      "| method | " + " | ".join(SAMPLE_QUALITY) + " |",
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
            shown = [interval(agg[p][k][m]["mean"], agg[p][k][m]["ci95"], int(agg[p][k][m].get("n") or 0),
                              bounds=UNIT_RANGE) for k in methods]
            lows = [v if s is None else s[0] for v, s in zip(means, shown)]  # no bar where no interval is shown
            highs = [v if s is None else s[1] for v, s in zip(means, shown)]
            err = [[max(0.0, v - lo) for v, lo in zip(means, lows)], [max(0.0, hi - v) for v, hi in zip(means, highs)]]
            colors = ["#999" if k == BASELINE else "#4C72B0" for k in methods]
            ax.bar(range(len(methods)), means, yerr=err, capsize=3, color=colors)
            ax.set_xticks(range(len(methods)), methods, rotation=40, ha="right", fontsize=8)
            if np.isfinite(lows).any():
                ax.set_ylim(max(0, np.nanmin(lows) - 0.05), min(1.0, np.nanmax(highs) + 0.03))
            ax.set_title(f"{m} (p={p})", fontsize=10)
            ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def results_html(methods: dict[str, Any]) -> str:
    """The table of one p: a row per method, a column per metric, and why intervals are missing if they are."""
    rows = [[esc(m), *(_cell(e[k]) for k in METRICS)] for m, e in methods.items()]
    return table(["method", *METRICS], rows, raw_cells=True) + _note_html(interval_note(methods))


def _note_html(note: str) -> str:
    return f"<p class='muted'>{esc(note)}</p>" if note else ""


REAL_MINORITY = "real_minority.png"  # a grid of real minority training images, written by the study


def imbalance_sections(run_dir: Path, summary: ImbalanceStudySummary) -> list[str]:
    agg = summary.aggregate
    bars = plot_bars(run_dir / "bars.png", agg) if agg else None
    parts = [section("Question", f"<p>Training keeps only a share p of the minority class of <b>{esc(summary.target)}</b> "
                     f"(value {esc(summary.minority)}); validation and test data are real and untouched. "
                     f"Splits: {esc(summary.splits)}" + (f" ({esc(summary.splits_how)})" if summary.splits_how else "") +
                     f". Each cell: {esc(INTERVAL_TEXT)}; "
                     "<span class='sig'>*</span> / <span class='worse'>*</span>: significantly better / worse than "
                     "no augmentation (paired t-test over seeds, p &lt; 0.05; with 2-3 seeds only large effects can show).</p>")]
    for p, methods in agg.items():
        parts.append(section(f"Results on the real test split, p = {p}", results_html(methods)))
        quality = _quality_rows(methods, digits=4)
        if quality:
            parts.append(section(f"How convincing the generated minority samples are, p = {p}",
                                 f"<p>{esc(SAMPLE_QUALITY_TEXT)}</p>" + table(["method", *SAMPLE_QUALITY], quality)
                                 + _note_html(interval_note(methods, SAMPLE_QUALITY))))
    if bars:
        parts.append(section("Metrics with 95% confidence intervals (where shown)", image(bars)))
    for p, methods in (summary.external or {}).items():
        parts.append(section(f"External evaluation store, p = {p}", results_html(methods)))
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
