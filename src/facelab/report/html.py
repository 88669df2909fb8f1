"""Building blocks of self-contained HTML reports, and :func:`render_report` for any kind of run."""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from facelab.report.kinds import RUN_KINDS
from facelab.runs.folder import read_metrics
from facelab.runs.summary import read_summary
from facelab.utils.figures import DIGITS, figure
from facelab.utils.io import atomic_write_text

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.3rem}
table{border-collapse:collapse;margin:.8rem 0;font-size:.9rem}th,td{border:1px solid #ddd;padding:.3rem .6rem;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}.sig{font-weight:bold;color:#0a6}
.worse{font-weight:bold;color:#c33}img{max-width:100%;border:1px solid #eee;margin:.4rem 0}.muted{color:#777;font-size:.85rem}
.row{display:flex;gap:1rem;flex-wrap:wrap}.row figure{margin:0}figcaption{font-size:.85rem;color:#555}
pre{background:#f7f7f7;padding:.8rem;overflow:auto;font-size:.8rem}
"""


def esc(text: Any) -> str:
    return html.escape(str(text))


def image(path: str | Path, caption: str | None = None, *, width: int | None = None) -> str:
    """An <img> with the PNG embedded as base64 (the report stays one file); empty if the file is missing."""
    p = Path(path)
    if not p.is_file():
        return ""
    data = base64.b64encode(p.read_bytes()).decode()
    w = f' width="{width}"' if width else ""
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img alt="{esc(caption or p.name)}" src="data:image/png;base64,{data}"{w}>{cap}</figure>'


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, raw_cells: bool = False) -> str:
    """An HTML table; cells are escaped unless ``raw_cells``."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c if raw_cells else esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def section(title: str, *parts: str) -> str:
    return f"<section><h2>{esc(title)}</h2>{''.join(parts)}</section>"


def fmt(v: Any, digits: int = DIGITS) -> str:
    """A figure as report text: floats to ``digits`` significant digits (whole numbers are never cut: 1234.5 s
    reads "1234" at 1 digit), undefined ones (None, NaN) as "-" (:func:`facelab.utils.figures.figure`)."""
    return figure(v, digits)


def page(title: str, sections: Sequence[str]) -> str:
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title>"
            f"<style>{CSS}</style></head><body><h1>{esc(title)}</h1>{''.join(sections)}</body></html>")


def metrics_table(run_dir: Path) -> str:
    """The run's metrics.jsonl as a table: one row per epoch, its first numeric columns."""
    hist = read_metrics(run_dir)
    if not hist:
        return "<p>No metrics recorded.</p>"
    keys = [k for k in hist[-1] if k not in ("epoch",) and isinstance(hist[-1][k], (int, float))][:8]
    return table(["epoch", *keys], [[h["epoch"], *(fmt(h.get(k, "")) for k in keys)] for h in hist])


def config_section(run_dir: Path) -> str:
    cfg = run_dir / "config.yaml"
    env = run_dir / "env.json"
    parts = []
    if cfg.is_file():
        parts.append(f"<pre>{esc(cfg.read_text())}</pre>")
    if env.is_file():
        e = json.loads(env.read_text())
        parts.append(f"<p class='muted'>facelab {esc(e.get('facelab'))}, torch {esc(e.get('torch'))}, "
                     f"{esc(e.get('platform'))}, {esc(e.get('cpu_count'))} CPUs, GPU: {esc(e.get('cuda'))}, "
                     f"commit {esc(e.get('git_commit'))}</p>")
    return section("Configuration and environment", *parts)


def render_report(run_dir: str | Path) -> Path:
    """(Re-)render ``run_dir/report.html`` from what the run folder holds.

    Raises:
        FacelabError: no summary.json (an unfinished run), or a kind of run no reporter knows.
    """
    run_dir = Path(run_dir)
    summary = read_summary(run_dir)
    sections = RUN_KINDS.get(summary.kind).sections(run_dir, summary)
    sections.append(config_section(run_dir))
    out = run_dir / "report.html"
    atomic_write_text(out, page(f"facelab {summary.kind}: {run_dir.name}", sections))
    return out
