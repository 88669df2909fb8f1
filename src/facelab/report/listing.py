"""``facelab runs``: every run folder under a root with its kind and key metric."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from facelab.errors import FacelabError
from facelab.report.kinds import RUN_KINDS
from facelab.runs.folder import DEFAULT_RUNS_ROOT
from facelab.runs.summary import SUMMARY, read_summary


def _modified(path: Path) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(path.stat().st_mtime))


def list_runs(root: str | Path | None = None) -> list[dict[str, Any]]:
    """Every run folder directly under ``root``: finished ones (summary.json) with their key metric, unfinished
    ones (a config.yaml, no summary yet) and damaged ones (an unreadable summary) with the reason.

    Raises:
        FacelabError: ``root`` is not a folder (a wrong path must not look like an empty list).
    """
    root = Path(root) if root is not None else DEFAULT_RUNS_ROOT
    if not root.is_dir():
        raise FacelabError(f"{root}: no such folder; give the folder that holds the run folders (default: runs)")
    out = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        row: dict[str, Any] = {"run": str(d), "kind": "unfinished", "metric": "-", "value": None, "report": None,
                               "modified": _modified(d)}
        if (d / SUMMARY).is_file():
            try:
                summary = read_summary(d)
            except FacelabError as e:
                out.append({**row, "kind": "unreadable", "metric": str(e)})
                continue
            name, value = RUN_KINDS.get(summary.kind).key_metric(summary) if summary.kind in RUN_KINDS else ("-", None)
            report = d / "report.html"
            row.update(kind=summary.kind, metric=name, value=value, modified=_modified(d / SUMMARY),
                       report=str(report) if report.is_file() else None)
        elif not (d / "config.yaml").is_file():
            continue  # not a run folder
        out.append(row)
    return out
