"""Creating run folders: ``<root>/<kind>-<name>`` with config.yaml and env.json; the metrics log."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import facelab
from facelab.config import StrictConfig
from facelab.errors import ConfigError, FacelabError
from facelab.utils.io import atomic_write_json, read_jsonl
from facelab.utils.secrets import mask_argv

DEFAULT_RUNS_ROOT = Path(os.environ.get("FACELAB_RUNS", "runs"))
METRICS = "metrics.jsonl"
ENV_FILE = "env.json"
CHECKPOINTS = "checkpoints"
#: what a run folder holds before anything has trained (a start that failed or was killed early); inputs.json:
#: the hashes of its inputs (:mod:`facelab.runs.inputs`)
SETUP_FILES = frozenset({"config.yaml", "env.json", "splits.json", "pretrain_splits.json", "inputs.json"})


def environment() -> dict[str, Any]:
    """Versions and hardware, saved with every run so results can be traced."""
    import torch

    env: dict[str, Any] = {
        "facelab": facelab.__version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "argv": mask_argv(sys.argv),  # a password on the command line is never written down
    }
    try:
        env["git_commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        ).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        env["git_commit"] = None
    return env


def cpu_model() -> str | None:
    """The CPU's model name (figures differ between machines: say which one made them)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def check_run_name(name: str) -> str:
    """``name`` if it is one plain folder name (the run folder stays inside ``--out``); ConfigError otherwise."""
    bad = (not name or name != name.strip() or "/" in name or "\\" in name or name in (".", "..")
           or name.startswith(".") or "\x00" in name)
    if bad:
        raise ConfigError(f"--name {name!r}: give a plain folder name (letters, digits, '-', '_'), without "
                          "'/', '..' or a leading '.': the run folder is created inside --out")
    return name


def has_started(run_dir: Path) -> bool:
    """Whether anything was trained in ``run_dir``: a metric logged or a checkpoint written."""
    return (run_dir / METRICS).exists() or any((run_dir / CHECKPOINTS).glob("*/*"))


def made_by_facelab(run_dir: Path) -> bool:
    """Whether ``run_dir`` is a run folder facelab made: its env.json, the first file written into it, says so."""
    try:
        env = json.loads((Path(run_dir) / ENV_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(env, dict) and "facelab" in env and "argv" in env


def holds_only_setup(run_dir: Path) -> bool:
    """Whether ``run_dir`` is a run folder facelab made that holds nothing but what a run writes before it trains
    (config.yaml, env.json, splits.json or pretrain_splits.json, inputs.json, an empty checkpoints/): a start that
    failed or was killed early, with nothing to lose."""
    if not run_dir.is_dir() or has_started(run_dir) or not made_by_facelab(run_dir):
        return False
    for p in run_dir.iterdir():
        if p.name == CHECKPOINTS and p.is_dir() and not any(p.iterdir()):
            continue
        if p.name not in SETUP_FILES:
            return False
    return True


def create_run_dir(kind: str, *, name: str | None = None, root: str | Path | None = None,
                   config: StrictConfig | None = None) -> Path:
    """Make ``<root>/<kind>-<name or timestamp>`` with config.yaml and env.json; returns its path.

    A named folder that already holds a run is an error (continue it with ``--resume``); one that holds only
    the config of a start that failed before training (nothing trained, nothing to lose) is reused.
    """
    root = Path(root) if root is not None else DEFAULT_RUNS_ROOT
    if name is not None:
        path = root / f"{kind}-{check_run_name(name)}"
        if path.exists() and not path.is_dir():
            raise FacelabError(f"{path} exists and is a file; pick another --name")
        if path.is_dir() and any(path.iterdir()) and not made_by_facelab(path):
            raise FacelabError(f"{path} holds files facelab did not make; pick another --name (or --out)")
        if path.is_dir() and any(path.iterdir()) and not holds_only_setup(path):
            raise FacelabError(f"{path} already holds a run; continue it with --resume {path}, "
                               "or pick another --name")  # never mix a new run's config and metrics into an old one
    else:
        base = path = root / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}"
        n = 1
        while path.exists():
            n += 1
            path = base.with_name(f"{base.name}-{n}")
    made = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    try:
        atomic_write_json(path / ENV_FILE, environment())  # first: it marks the folder as facelab's
        if config is not None:
            config.save(path / "config.yaml")
    except BaseException:
        if made:  # a full disk, a kill: no half-made run folder is left
            shutil.rmtree(path, ignore_errors=True)
        raise
    return path


def remove_if_nothing_ran(run_dir: Path) -> bool:
    """Delete ``run_dir`` when it holds only what :func:`create_run_dir` wrote (a start that failed before
    training); returns whether it did. A folder with anything else in it is never touched."""
    if not holds_only_setup(run_dir):
        return False
    shutil.rmtree(run_dir)
    return True


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The metrics.jsonl records of a run, one per finished epoch (empty when none)."""
    return read_jsonl(Path(run_dir) / METRICS)
