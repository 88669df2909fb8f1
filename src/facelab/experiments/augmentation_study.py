"""Does generated data help a minority class? ``facelab experiment augment CONFIG``.

For each minority share ``p`` and seed: split the store (identities kept apart), keep ``p`` of the
minority class of ``target`` in the *training* split only, and train the same classifier once per
balancing method (none, oversampling, class weights, SMOTE, cVAE/cGAN/AAE samples, ...). Every model,
generators included, sees only the reduced training rows; validation and test rows are real and
untouched; synthetic rows are tagged by the loader and never evaluated. Results are appended to
``results.jsonl`` one (p, seed, method) at a time, so a killed study resumes where it stopped.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator

from facelab.config import StrictConfig, overlay
from facelab.data.schema import LabelKind
from facelab.data.store import Store
from facelab.errors import ConfigError
from facelab.experiments.balancing import GENERATIVE_METHODS, METHODS, MIN_MINORITY_FOR_GENERATOR, StudyContext
from facelab.utils.io import append_jsonl, atomic_write_json, read_jsonl

STUDY_METRICS = ("accuracy", "balanced_accuracy", "minority_recall", "f1_macro", "auroc")


def _default_classifier() -> dict[str, Any]:
    return {"model": "vgg_scratch", "batch_size": 64, "augment": "flip",
            "trainer": {"epochs": 8, "monitor": "val_mean_balanced_accuracy", "monitor_mode": "max", "progress": False}}


def _default_generator() -> dict[str, Any]:
    # minutes: optional training-time budget of each generator (stops early when spent)
    return {"epochs": 15, "minutes": None, "batch_size": 64, "model_options": {}}


class AugmentStudyConfig(StrictConfig):
    """The study; YAML files are short overrides of these defaults."""

    store: str
    target: str
    p: list[float] = Field(default_factory=lambda: [0.1])
    methods: list[str] = Field(default_factory=lambda: ["none", "oversample", "class_weights", "balanced_sampler",
                                                         "augment", "random_erasing", "smote", "smote_features", "cvae", "cgan", "aae"])
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    minority: int | str | None = None  # default: the rarer class of the target in the training split
    synthetic_amount: float | None = Field(None, gt=0)  # None: enough synthetic minority rows to balance
    split: Literal["auto", "official", "random"] = "auto"
    classifier: dict[str, Any] = Field(default_factory=_default_classifier)
    generator: dict[str, Any] = Field(default_factory=_default_generator)
    eval_data: str | None = None
    device: str = "auto"

    @field_validator("classifier", mode="before")
    @classmethod
    def _classifier_over_defaults(cls, v: Any) -> Any:

        return overlay(_default_classifier(), v)  # -o classifier.trainer.epochs=2 keeps the rest

    @field_validator("generator", mode="before")
    @classmethod
    def _generator_over_defaults(cls, v: Any) -> Any:
        unknown = sorted(set(v or {}) - set(_default_generator()))
        if unknown:
            raise ValueError(f"unknown generator option(s) {unknown}; known: {sorted(_default_generator())} "
                             "(per-model options go under model_options.<model>)")
        return overlay(_default_generator(), v)

    @field_validator("p", mode="before")
    @classmethod
    def _p_list(cls, v: Any) -> Any:
        return [v] if isinstance(v, (int, float)) else v

    @field_validator("seeds", mode="before")
    @classmethod
    def _seeds(cls, v: Any) -> Any:
        return list(range(v)) if isinstance(v, int) else v

    @field_validator("p")
    @classmethod
    def _p_range(cls, v: list[float]) -> list[float]:
        bad = [x for x in v if not 0 < x <= 1]
        if bad or not v:
            raise ValueError(f"p must be shares in (0, 1] (the part of the minority kept in training); got {bad or v}")
        return v

    @field_validator("methods")
    @classmethod
    def _methods(cls, v: list[str]) -> list[str]:
        unknown = [m for m in v if m not in METHODS]
        if unknown or not v:
            raise ValueError(f"unknown method(s) {unknown}; known: {', '.join(METHODS.names())}")
        return v


# ---- validation before any training --------------------------------------------------------------
def validate_study(cfg: AugmentStudyConfig) -> tuple[Store, dict[str, np.ndarray], int]:
    """Open the store, check the target, make the splits and check every p leaves enough minority rows."""
    from facelab.data.views import resolve_value, splits_for

    store = Store.open(cfg.store)
    if cfg.target not in store.label_names:
        raise ConfigError(f"target {cfg.target!r} is not a label of {store.path}; labels: {', '.join(store.label_names)}")
    spec = store.spec(cfg.target)
    if spec.kind is not LabelKind.BINARY:
        raise ConfigError(f"target {cfg.target!r} is {spec.kind.value}; the study needs a binary label "
                          f"(binary labels: {', '.join(store.binary_labels())})")
    splits = splits_for(store, policy=cfg.split, seed=0, stratify=[cfg.target])
    for name in ("train", "val", "test"):
        if len(splits.get(name, [])) == 0:
            raise ConfigError(f"{store.path}: the {name} split is empty; use split: random")
    values = store.column(cfg.target)[splits["train"]]
    if cfg.minority is None:
        minority = 1 if (values == 1).sum() <= (values == 0).sum() else 0
    else:
        minority = resolve_value(store, spec, cfg.minority)
    n_min = int((values == minority).sum())
    if GENERATIVE_METHODS & set(cfg.methods):
        for p in cfg.p:
            kept = int(np.floor(p * n_min + 0.5))
            if kept < MIN_MINORITY_FOR_GENERATOR:
                raise ConfigError(
                    f"p={p} keeps {kept} of the {n_min} minority training images ({cfg.target}={spec.classes[minority]}); "
                    f"the generative methods need at least {MIN_MINORITY_FOR_GENERATOR}: raise p or drop "
                    f"{sorted(GENERATIVE_METHODS & set(cfg.methods))}"
                )
    if cfg.eval_data:
        ext = Store.open(cfg.eval_data)
        if cfg.target not in ext.label_names or ext.spec(cfg.target) != spec:
            raise ConfigError(f"--eval-data {ext.path} has no binary label {cfg.target!r} matching the study store")
    return store, splits, minority


# ---- one cell ------------------------------------------------------------------------------------
def evaluate_binary(run_dir: Path, store: Store, rows: np.ndarray, target: str, minority: int) -> dict[str, float]:
    """Accuracy, balanced accuracy, minority recall, macro-F1 and AUROC of a run's best model on real rows."""
    return binary_scores(run_dir, store, rows, target, minority)


@torch.no_grad()
def binary_scores(run_dir: Path, store: Store, rows: np.ndarray, target: str, minority: int) -> dict[str, float]:
    """What :func:`evaluate_binary` computes; also used on validation rows to describe a judge classifier."""
    from facelab.eval.classification import predict_rows
    from facelab.eval.metrics import label_metrics
    from facelab.models.loading import load_model

    model, meta = load_model(run_dir, kind="classifier")
    probs, y, _ = predict_rows(model, meta, store, rows)
    p = probs[target]
    m = label_metrics(y[:, 0], p)
    pred = (p >= 0.5).astype(int)
    is_min = y[:, 0] == minority
    m["minority_recall"] = float((pred[is_min] == minority).mean()) if is_min.any() else float("nan")
    return {k: m[k] for k in STUDY_METRICS}


def _classifier_config(cfg: AugmentStudyConfig, seed: int, overrides: dict[str, Any]):
    from facelab.train.classifier import ClassifierConfig

    data = json.loads(json.dumps(cfg.classifier))
    data.update({"store": cfg.store, "labels": [cfg.target], "seed": seed, "device": cfg.device})
    data.update(overrides)
    return ClassifierConfig.from_dict(data, where="study classifier")


def run_cell(cfg: AugmentStudyConfig, ctx: StudyContext, method: str, splits: dict[str, np.ndarray],
             eval_store: Store | None) -> dict[str, Any]:
    """Train and evaluate one (p, seed, method); returns its results record."""
    from facelab.train.classifier import train_classifier

    t0 = time.monotonic()
    plan = METHODS.create(method, ctx)
    ccfg = _classifier_config(cfg, ctx.seed, plan.overrides)
    run_dir = ctx.work_dir / method
    run_dir.mkdir(parents=True, exist_ok=True)
    ccfg.save(run_dir / "config.yaml")
    summary = train_classifier(ccfg, run_dir=run_dir, splits={"train": plan.train_rows, "val": splits["val"]},
                               extra=plan.extra)
    if plan.post_train is not None:
        plan.notes.update(plan.post_train(run_dir))
    rec: dict[str, Any] = {
        "method": method, "seed": ctx.seed, "train_rows": int(len(plan.train_rows)),
        "synthetic_rows": 0 if plan.extra is None else int(len(plan.extra[0])),
        "test": evaluate_binary(run_dir, ctx.store, splits["test"], ctx.target, ctx.minority),
        "epochs": summary["epochs"], "notes": plan.notes, "run_dir": str(run_dir),
    }
    if eval_store is not None:
        rec["external"] = evaluate_binary(run_dir, eval_store, np.arange(len(eval_store)), ctx.target, ctx.minority)
    if plan.extra is not None and len(plan.extra[0]):
        from facelab.eval.grids import save_grid

        save_grid(plan.extra[0][:32], ctx.work_dir / f"synthetic_{method}.png", nrow=8)
    rec["seconds"] = round(time.monotonic() - t0, 1)
    return rec


# ---- the whole study -----------------------------------------------------------------------------
def _done(results_path: Path) -> dict[tuple[float, int, str], dict[str, Any]]:
    return {(r["p"], r["seed"], r["method"]): r for r in read_jsonl(results_path)}


def run_study(cfg: AugmentStudyConfig, *, run_dir: str | Path, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) every (p, seed, method) cell; aggregate; write summary.json and report.html."""
    from facelab.data.views import simulate_imbalance, save_view
    from facelab.experiments.study_report import aggregate, results_markdown
    from facelab.report import render_report
    from facelab.utils.io import atomic_write_text

    run_dir = Path(run_dir)
    t0 = time.monotonic()
    store, splits, minority = validate_study(cfg)
    eval_store = Store.open(cfg.eval_data) if cfg.eval_data else None
    results_path = run_dir / "results.jsonl"
    done = _done(results_path)
    total = len(cfg.p) * len(cfg.seeds) * len(cfg.methods)
    from rich.console import Console
    from rich.progress import Progress

    with Progress(disable=not progress, transient=False, console=Console(stderr=True)) as prog:  # stdout: --json
        bar = prog.add_task("study", total=total, completed=len(done))
        for p in cfg.p:
            for seed in cfg.seeds:
                reduced = simulate_imbalance(store, splits["train"], target=cfg.target, keep=p, minority=minority, seed=seed)
                cell_dir = run_dir / f"p{p:g}" / f"seed{seed}"
                cell_dir.mkdir(parents=True, exist_ok=True)
                save_view(cell_dir / "rows.json", {"train": reduced, "val": splits["val"], "test": splits["test"]}, store)
                ctx = StudyContext(store=store, target=cfg.target, minority=minority, train_rows=reduced,
                                   val_rows=splits["val"], seed=seed, work_dir=cell_dir,
                                   synthetic_amount=cfg.synthetic_amount, generator=cfg.generator, device=cfg.device)
                for method in cfg.methods:
                    if (p, seed, method) in done:
                        continue
                    prog.update(bar, description=f"p={p:g} seed={seed} {method}")
                    rec = {"p": p, **run_cell(cfg, ctx, method, splits, eval_store)}
                    append_jsonl(results_path, rec)
                    done[(p, seed, method)] = rec
                    prog.update(bar, advance=1)
    records = list(done.values())
    summary = {"kind": "augment_study", "run_dir": str(run_dir), "store": cfg.store, "target": cfg.target, "minority": minority,
               "splits": {k: int(len(v)) for k, v in splits.items()}, "aggregate": aggregate(records, cfg),
               "seconds": round(time.monotonic() - t0, 1)}
    atomic_write_json(run_dir / "summary.json", summary)
    atomic_write_text(run_dir / "results.md", results_markdown(summary["aggregate"]))
    summary["report"] = str(render_report(run_dir))
    return summary
