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
