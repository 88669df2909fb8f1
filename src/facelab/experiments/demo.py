"""The main job (``facelab demo``): end to end on built-in synthetic faces, in one run folder."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pydantic import Field

from facelab.config import StrictConfig
from facelab.runs import create_run_dir
from facelab.utils.io import atomic_write_json


class DemoConfig(StrictConfig):
    """What the demo builds; defaults keep it to a few minutes on 2 CPU cores."""

    n: int = Field(3000, ge=100)
    size: int = Field(64, ge=16, le=256)
    seed: int = 0
    minority_attribute: str = "Male"
    minority_prevalence: float = Field(0.3, gt=0, lt=1)


def run_demo(cfg: DemoConfig, *, runs_root: str | Path = "runs") -> dict[str, Any]:
    """Build a synthetic store, compute its statistics and plots; returns a JSON-able summary."""
    from facelab.data import stats as st
    from facelab.data.build import prepare_store
    from facelab.data.sources import create_source

    t0 = time.monotonic()
    run = create_run_dir("demo", root=runs_root, config=cfg)
    source = create_source("synthetic", None, n=cfg.n, seed=cfg.seed, prevalence={cfg.minority_attribute: cfg.minority_prevalence})
    report = prepare_store(source, run / "store", size=cfg.size, progress=True)
    from facelab.data.store import Store

    store = Store.open(run / "store")
    figures = st.dataset_stats(store)
    names, matrix = st.correlation_matrix(store)
    st.plot_correlation(run / "correlation.png", names, matrix)
    st.plot_prevalence(run / "prevalence.png", figures)
    summary = {
        "run_dir": str(run),
        "store": str(store.path),
        "build": report.to_dict(),
        "stats": figures,
        "plots": [str(run / "correlation.png"), str(run / "prevalence.png")],
        "seconds": round(time.monotonic() - t0, 2),
    }
    atomic_write_json(run / "summary.json", summary)
    return summary
