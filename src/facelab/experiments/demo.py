"""The main job (``facelab demo``): the whole facelab story on built-in synthetic faces, in one run folder.

1. build a synthetic face store and its statistics (prevalence, correlation heatmap);
2. train a classifier on every label and evaluate it on the held-out test split;
3. the augmentation study: keep ``p`` of the minority of ``target`` in training and compare no
   augmentation, oversampling, class weights and cVAE-generated minority faces over ``seeds`` seeds;
4. write the demo's report.html (linking the classifier's and the study's reports) and print its path.

Each step starts with a line on stderr ("demo 2/4: ..."); the classifier prints its epochs and the study its
cells, so a log of the demo shows where it is, terminal or not.

Defaults (32 px images) take about 11 minutes on 2 CPU cores (7.6 min of CPU time; README.md).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pydantic import Field

from facelab.config import StrictConfig
from facelab.data import stats as st
from facelab.data.build import prepare_store
from facelab.data.sources import create_source
from facelab.data.store import Store
from facelab.eval.evaluate import evaluate_run
from facelab.experiments.imbalance_study import ImbalanceStudyConfig, run_study
from facelab.report import render_report
from facelab.runs.folder import create_run_dir
from facelab.runs.summary import DemoSummary, write_summary
from facelab.train.classifier import ClassifierConfig, train_classifier
from facelab.utils.console import stderr_console
from facelab.utils.progress import duration


class DemoConfig(StrictConfig):
    """What the demo builds."""

    n: int = Field(2000, ge=200)
    size: int = Field(32, ge=16, le=256)
    seed: int = 0
    classifier_epochs: int = Field(6, ge=1)
    target: str = "Male"
    target_prevalence: float = Field(0.6, gt=0, lt=1)
    minority: int = 0  # keep p of the female faces, as in the source project
    p: float = Field(0.1, gt=0, le=1)
    methods: list[str] = Field(default_factory=lambda: ["none", "oversample", "class_weights", "cvae"])
    seeds: int = Field(2, ge=1)
    study_epochs: int = Field(5, ge=1)
    generator_epochs: int = Field(12, ge=1)


STEPS = 4


def _step(log: dict[str, float], name: str, t0: float) -> float:
    now = time.monotonic()
    log[name] = round(now - t0, 1)
    return now


def _say(step: int, text: str) -> None:
    """The line that starts a step of the demo."""
    stderr_console().print(f"demo {step}/{STEPS}: {text}", markup=False, highlight=False)


def _study_config(cfg: DemoConfig, store: str) -> ImbalanceStudyConfig:
    return ImbalanceStudyConfig.from_dict({
        "store": store, "target": cfg.target, "p": [cfg.p], "methods": cfg.methods, "minority": cfg.minority,
        "seeds": list(range(cfg.seeds)),
        "classifier": {"model": "vgg_scratch", "batch_size": 64, "augment": "flip",
                       "trainer": {"epochs": cfg.study_epochs, "monitor": "val_mean_balanced_accuracy",
                                   "monitor_mode": "max", "progress": False}},
        "generator": {"epochs": cfg.generator_epochs, "batch_size": 64},
    }, where="demo study")


def run_demo(cfg: DemoConfig, *, runs_root: str | Path = "runs") -> dict[str, Any]:
    """Run every step; returns a JSON-able summary (also written to summary.json)."""
    t_start = t0 = time.monotonic()
    timings: dict[str, float] = {}
    # every option is checked before anything is built: the source (target), the study (methods, p)
    source = create_source("synthetic", None, n=cfg.n, seed=cfg.seed, prevalence={cfg.target: cfg.target_prevalence})
    _study_config(cfg, "store")
    run = create_run_dir("demo", root=runs_root, config=cfg)
    _say(1, f"a store of {cfg.n} synthetic faces ({cfg.size} px) and its statistics, in {run}")
    report = prepare_store(source, run / "store", size=cfg.size, progress=True)
    store = Store.open(run / "store")
    figures = st.dataset_stats(store)
    names, matrix = st.correlation_matrix(store)
    st.plot_correlation(run / "correlation.png", names, matrix)
    st.plot_prevalence(run / "prevalence.png", figures)
    t0 = _step(timings, "store_and_stats", t0)

    ccfg = ClassifierConfig.from_dict({"store": str(store.path), "seed": cfg.seed, "batch_size": 64,
                                       "trainer": {"epochs": cfg.classifier_epochs, "monitor": "val_mean_accuracy",
                                                   "monitor_mode": "max"}}, where="demo classifier")
    cdir = run / "classifier"
    _say(2, f"a classifier on every label, {cfg.classifier_epochs} epoch{'s' * (cfg.classifier_epochs > 1)}, evaluated on the test split")
    cdir.mkdir()
    ccfg.save(cdir / "config.yaml")
    csum = train_classifier(ccfg, run_dir=cdir)
    test = evaluate_run(cdir, store.path, split="test")
    render_report(cdir)
    t0 = _step(timings, "classifier", t0)

    scfg = _study_config(cfg, str(store.path))
    sdir = run / "study"
    cells = len(cfg.methods) * cfg.seeds
    _say(3, f"the class-imbalance study of {cfg.target} at p={cfg.p:g}: {cells} cells ({', '.join(cfg.methods)} "
            f"x {cfg.seeds} seed{'s' * (cfg.seeds > 1)})")
    sdir.mkdir()
    scfg.save(sdir / "config.yaml")
    study = run_study(scfg, run_dir=sdir)
    _step(timings, "imbalance_study", t0)
    _say(4, f"the report ({duration(time.monotonic() - t_start)} so far)")

    at_p = study["aggregate"][f"{cfg.p:g}"]
    summary = DemoSummary(
        run_dir=str(run), store=str(store.path), build=report.to_dict(), stats=figures,
        plots=[str(run / "correlation.png"), str(run / "prevalence.png")],
        classifier={"run_dir": str(cdir), "best_val_mean_accuracy": csum["best"],
                    "test_mean_accuracy": test["summary"]["mean_accuracy"],
                    "test_majority_accuracy": test["summary"]["mean_majority_accuracy"],
                    "test_mean_balanced_accuracy": test["summary"]["mean_balanced_accuracy"]},
        study={"run_dir": str(sdir), "target": cfg.target, "p": cfg.p,
               "balanced_accuracy": {m: e["balanced_accuracy"]["mean"] for m, e in at_p.items()},
               "minority_recall": {m: e["minority_recall"]["mean"] for m, e in at_p.items()},
               "report": study["report"]},
        timings_s=timings, seconds=round(time.monotonic() - t_start, 1))
    write_summary(run, summary)
    return {**summary.to_dict(), "report": str(render_report(run))}
