"""Run folders: every training run and experiment leaves one, with its config, environment and metrics."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import facelab
from facelab.config import StrictConfig
from facelab.errors import FacelabError
from facelab.utils.io import atomic_write_json

DEFAULT_RUNS_ROOT = Path(os.environ.get("FACELAB_RUNS", "runs"))


def environment() -> dict[str, Any]:
    """Versions and hardware, saved with every run so results can be traced."""
    import torch

    env: dict[str, Any] = {
        "facelab": facelab.__version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "argv": sys.argv,
    }
    try:
        env["git_commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        ).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        env["git_commit"] = None
    return env


def create_run_dir(kind: str, *, name: str | None = None, root: str | Path | None = None, config: StrictConfig | None = None) -> Path:
    """Make ``<root>/<kind>-<name or timestamp>`` with config.yaml and env.json; returns its path."""
    root = Path(root) if root is not None else DEFAULT_RUNS_ROOT
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = root / f"{kind}-{name}" if name else root / f"{kind}-{stamp}"
    if name is not None and path.exists() and any(path.iterdir()):
        raise FacelabError(
            f"{path} already holds a run; continue it with --resume {path}, or pick another --name"
        )  # never mix a new run's config and metrics into an old one
    n = 1
    base = path
    while path.exists() and name is None:
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    path.mkdir(parents=True, exist_ok=True)
    if config is not None:
        config.save(path / "config.yaml")
    atomic_write_json(path / "env.json", environment())
    return path


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The metrics.jsonl records of a run (empty when none)."""
    p = Path(run_dir) / "metrics.jsonl"
    if not p.is_file():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def _key_metric(summary: dict[str, Any]) -> tuple[str, float | None]:
    kind = summary.get("kind")
    if kind == "classifier":
        return str(summary.get("monitor")), summary.get("best")
    if kind == "generative":
        final = summary.get("final", {})
        losses = [k for k in final if k.startswith("train_") and k.endswith("loss")]  # GANs: train_generator/g_loss
        k = next((k for k in ("val_loss", "train_loss", *sorted(losses)) if k in final), None)
        return (k or "-"), (final.get(k) if k else None)
    if kind == "batch_schedule":
        res = summary.get("results", {})
        best = max(res.items(), key=lambda kv: kv[1]["test_mean_accuracy"], default=None)
        return (f"test acc ({best[0]})", best[1]["test_mean_accuracy"]) if best else ("-", None)
    if kind == "augment_study":
        agg = summary.get("aggregate", {})
        for p, methods in agg.items():
            best = max(methods.items(), key=lambda kv: kv[1]["balanced_accuracy"]["mean"])
            return f"balanced acc p={p} ({best[0]})", best[1]["balanced_accuracy"]["mean"]
    return "-", None


def list_runs(root: str | Path | None = None) -> list[dict[str, Any]]:
    """Every run folder under ``root`` (recursively one level of experiments) with its kind and key metric."""
    root = Path(root) if root is not None else DEFAULT_RUNS_ROOT
    out = []
    for sp in sorted(root.glob("*/summary.json")):
        try:
            summary = json.loads(sp.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        name, value = _key_metric(summary)
        out.append({"run": str(sp.parent), "kind": summary.get("kind", "?"), "metric": name, "value": value,
                    "report": str(sp.parent / "report.html") if (sp.parent / "report.html").is_file() else None,
                    "modified": time.strftime("%Y-%m-%d %H:%M", time.localtime(sp.stat().st_mtime))})
    for d in sorted(root.glob("*/")):
        if not (d / "summary.json").is_file() and (d / "config.yaml").is_file():
            out.append({"run": str(d), "kind": "unfinished", "metric": "-", "value": None, "report": None,
                        "modified": time.strftime("%Y-%m-%d %H:%M", time.localtime(d.stat().st_mtime))})
    return out
