"""The class-imbalance study: does generated data help a minority class? ``facelab experiment imbalance``.

For each minority share ``p`` and seed: split the store (identities kept apart), keep ``p`` of the
minority class of ``target`` in the *training* split only, and train the same classifier once per
balancing method (none, oversampling, class weights, SMOTE, cVAE/cGAN/AAE samples, ...). Every model,
generators included, sees only the reduced training rows; validation and test rows are real and
untouched; synthetic rows are tagged by the loader and never evaluated. Results are appended to
``results.jsonl`` one (p, seed, method) at a time, so a killed study resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from facelab.config import StrictConfig, overlay
from facelab.data.schema import LabelKind
from facelab.data.store import Store
from facelab.data.views import resolve_value, run_splits, save_view, simulate_imbalance
from facelab.errors import ConfigError
from facelab.eval.evaluate import BINARY_METRICS, binary_scores
from facelab.eval.grids import save_grid
from facelab.eval.statistics import mean_ci, paired_test
from facelab.experiments.balancing import GENERATIVE_METHODS, METHODS, MIN_MINORITY_FOR_GENERATOR, StudyContext
from facelab.report import render_report
from facelab.report.imbalance_study import BASELINE, METRICS, REAL_MINORITY, SAMPLE_QUALITY, results_markdown
from facelab.runs.inputs import check_inputs, store_input
from facelab.runs.summary import ImbalanceStudySummary, write_summary
from facelab.train.classifier import ClassifierConfig, check_batches, train_classifier
from facelab.train.generative import GenerativeRunConfig
from facelab.train.progress import epoch_lines_inside
from facelab.utils.figures import UNIT_RANGE, figure
from facelab.utils.io import append_jsonl, atomic_write_text, read_jsonl
from facelab.utils.progress import duration, progress_bar

STUDY_METRICS = BINARY_METRICS


def _default_classifier() -> dict[str, Any]:
    return {"model": "vgg_scratch", "batch_size": 64, "augment": "flip",
            "trainer": {"epochs": 8, "monitor": "val_mean_balanced_accuracy", "monitor_mode": "max", "progress": False}}


def _default_generator() -> dict[str, Any]:
    # minutes: optional training-time budget of each generator (stops early when spent)
    return {"epochs": 15, "minutes": None, "batch_size": 64, "model_options": {}}


class ImbalanceStudyConfig(StrictConfig):
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
def validate_study(cfg: ImbalanceStudyConfig) -> tuple[Store, dict[str, np.ndarray], str, int]:
    """Everything that can fail before the first cell trains: the store and target, the splits, that every p
    leaves enough minority rows, and the nested classifier and generator options of every method.

    Returns:
        (store, train/val/test rows, how they were chosen, the stored value of the minority class).
    """
    store = Store.open(cfg.store)
    if cfg.target not in store.label_names:
        raise ConfigError(f"target {cfg.target!r} is not a label of {store.path}; labels: {', '.join(store.label_names)}")
    spec = store.spec(cfg.target)
    if spec.kind is not LabelKind.BINARY:
        raise ConfigError(f"target {cfg.target!r} is {spec.kind.value}; the study needs a binary label "
                          f"(binary labels: {', '.join(store.binary_labels())})")
    splits, how = run_splits(store, policy=cfg.split, seed=0, stratify=[cfg.target], need_test=True)
    for name in ("train", "val", "test"):
        if splits[name].size == 0:
            raise ConfigError(f"{store.path}: the {name} split is empty ({how}); use split: random")
    values = store.column(cfg.target)[splits["train"]]
    minority = _minority(cfg, store, values)
    n_min = int((values == minority).sum())
    smallest = min(int((values != minority).sum()) + int(np.floor(p * n_min + 0.5)) for p in cfg.p)
    _check_nested_options(cfg, smallest)
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
    return store, splits, how, minority


def _minority(cfg: ImbalanceStudyConfig, store: Store, values: np.ndarray) -> int:
    if cfg.minority is None:
        return 1 if (values == 1).sum() <= (values == 0).sum() else 0
    return resolve_value(store, store.spec(cfg.target), cfg.minority)


def _check_nested_options(cfg: ImbalanceStudyConfig, train_rows: int) -> None:
    """The classifier options (as every method changes them) and each generator's options, validated the way
    the cells will build them, so a typo fails now and not after hours of finished cells."""
    base = classifier_config(cfg, cfg.seeds[0], {})
    check_batches(base, train_rows)
    for method in cfg.methods:
        if method in GENERATIVE_METHODS:
            GenerativeRunConfig.from_dict(generator_config(cfg, method, seed=cfg.seeds[0]),
                                          where=f"generator options of {method} (generator.model_options.{method})")


def classifier_config(cfg: ImbalanceStudyConfig, seed: int, overrides: dict[str, Any]) -> ClassifierConfig:
    """The classifier of one cell: the study's classifier options, its target and seed, the method's changes."""
    data = json.loads(json.dumps(cfg.classifier))
    data.update({"store": cfg.store, "labels": [cfg.target], "seed": seed, "device": cfg.device})
    data.update(overrides)
    return ClassifierConfig.from_dict(data, where="study classifier options (classifier.*)")


def generator_config(cfg: ImbalanceStudyConfig, model: str, *, seed: int) -> dict[str, Any]:
    """The GenerativeRunConfig fields of a generative method's generator (see balancing._generative)."""
    g = cfg.generator
    return {"store": cfg.store, "model": model, "conditions": [cfg.target], "seed": seed,
            "batch_size": g.get("batch_size", 64), "device": cfg.device, "grid_every_epochs": 1000,
            "model_options": (g.get("model_options") or {}).get(model, {}),
            "trainer": {"epochs": g.get("epochs", 10), "time_budget_minutes": g.get("minutes"), "progress": False}}


# ---- one cell ------------------------------------------------------------------------------------
def run_cell(cfg: ImbalanceStudyConfig, ctx: StudyContext, method: str, splits: dict[str, np.ndarray],
             eval_store: Store | None) -> dict[str, Any]:
    """Train and evaluate one (p, seed, method); returns its results record."""
    t0 = time.monotonic()
    plan = METHODS.create(method, ctx)
    ccfg = classifier_config(cfg, ctx.seed, plan.overrides)
    run_dir = ctx.work_dir / method
    run_dir.mkdir(parents=True, exist_ok=True)
    ccfg.save(run_dir / "config.yaml")
    rows = {"train": plan.train_rows, "val": splits["val"], "test": splits["test"]}
    summary = train_classifier(ccfg, run_dir=run_dir, splits=rows, extra=plan.extra,
                               splits_how=f"the study's split; train keeps p={ctx.keep:g} of the minority (seed {ctx.seed})"
                                          + (f", then {method}" if method != "none" else ""))
    if plan.post_train is not None:
        plan.notes.update(plan.post_train(run_dir))
    rec: dict[str, Any] = {
        "method": method, "seed": ctx.seed, "train_rows": int(len(plan.train_rows)),
        "synthetic_rows": 0 if plan.extra is None else int(len(plan.extra[0])),
        "test": binary_scores(run_dir, ctx.store, splits["test"], ctx.target, ctx.minority),
        "epochs": summary["epochs"], "notes": plan.notes, "run_dir": str(run_dir),
    }
    if eval_store is not None:
        rec["external"] = binary_scores(run_dir, eval_store, np.arange(len(eval_store)), ctx.target, ctx.minority)
    if plan.extra is not None and len(plan.extra[0]):
        save_grid(plan.extra[0][:32], ctx.work_dir / f"synthetic_{method}.png", nrow=8)
    rec["seconds"] = round(time.monotonic() - t0, 1)
    return rec


def _cell_line(rec: dict[str, Any], seconds: float) -> str:
    """One finished cell for the log: its test figures (rounded for people) and how long it took."""
    figures = ", ".join(f"{m} {figure(rec['test'][m], 3)}" for m in ("balanced_accuracy", "minority_recall")
                        if m in rec.get("test", {}))
    return f"p={rec['p']:g} seed={rec['seed']} {rec['method']}: {figures or 'no test figures'} ({duration(seconds)})"


# ---- aggregation ---------------------------------------------------------------------------------
def aggregate(records: list[dict[str, Any]], *, where: str = "test") -> dict[str, Any]:
    """{p: {method: {metric: mean/ci95/std/n + test vs 'none'}}} from per-cell records."""
    cells: dict[float, dict[str, dict[int, dict[str, float]]]] = defaultdict(lambda: defaultdict(dict))
    notes: dict[tuple[float, str, int], dict[str, Any]] = {}
    for r in records:
        if where in r:
            cells[r["p"]][r["method"]][r["seed"]] = r[where]
            notes[(r["p"], r["method"], r["seed"])] = r.get("notes") or {}
    out: dict[str, Any] = {}
    for p, methods in sorted(cells.items()):
        base = methods.get(BASELINE, {})
        pm: dict[str, Any] = {}
        for method, by_seed in methods.items():
            seeds = sorted(by_seed)
            entry = {}
            for m in METRICS:
                vals = [by_seed[s][m] for s in seeds]
                entry[m] = mean_ci(vals, bounds=UNIT_RANGE)  # every study metric is a share
                if method != BASELINE and base:
                    common = [s for s in seeds if s in base]
                    entry[m]["vs_none"] = paired_test([by_seed[s][m] for s in common], [base[s][m] for s in common])
            entry["seeds"] = seeds
            for key in SAMPLE_QUALITY:  # generative methods: how the baseline classifier judged the samples
                vals = [notes[(p, method, s)][key] for s in seeds if key in notes.get((p, method, s), {})]
                if vals:
                    entry[key] = mean_ci(vals, bounds=UNIT_RANGE)
            pm[method] = entry
        out[f"{p:g}"] = pm
    return out




def real_minority_grid(store: Store, rows: np.ndarray, target: str, minority: int, path: Path) -> Path | None:
    """A grid of (up to 32) real minority training images: what the generators learned from."""
    minor = rows[store.column(target)[rows] == minority][:32]
    if len(minor) == 0:
        return None
    return save_grid(np.asarray(store.images[np.sort(minor)]), path, nrow=8)


# ---- the whole study -----------------------------------------------------------------------------
def _done(results_path: Path) -> dict[tuple[float, int, str], dict[str, Any]]:
    return {(r["p"], r["seed"], r["method"]): r for r in read_jsonl(results_path)}


def run_study(cfg: ImbalanceStudyConfig, *, run_dir: str | Path, progress: bool = True,
              accept_changed_inputs: bool = False) -> dict[str, Any]:
    """Run (or resume) every (p, seed, method) cell; aggregate; write summary.json and report.html. The stores
    are recorded by content hash in ``inputs.json`` and a resume checks them (:mod:`facelab.runs.inputs`;
    ``accept_changed_inputs``: go on with changed ones)."""
    run_dir = Path(run_dir)
    t0 = time.monotonic()
    store, splits, how, minority = validate_study(cfg)
    eval_store = Store.open(cfg.eval_data) if cfg.eval_data else None
    inputs = [store_input(store, "data"), *([store_input(eval_store, "eval_data")] if eval_store else [])]
    check_inputs(run_dir, inputs, accept=accept_changed_inputs, doing="resume", adopt=True,
                 command="experiment imbalance --resume")
    results_path = run_dir / "results.jsonl"
    done = _done(results_path)
    total = len(cfg.p) * len(cfg.seeds) * len(cfg.methods)
    with progress_bar(enabled=progress, transient=False) as prog:  # stderr: stdout is for --json
        bar = prog.add_task("study", total=total, completed=len(done))
        for p in cfg.p:
            for seed in cfg.seeds:
                reduced = simulate_imbalance(store, splits["train"], target=cfg.target, keep=p, minority=minority, seed=seed)
                cell_dir = run_dir / f"p{p:g}" / f"seed{seed}"
                cell_dir.mkdir(parents=True, exist_ok=True)
                save_view(cell_dir / "rows.json", {"train": reduced, "val": splits["val"], "test": splits["test"]}, store)
                if p == cfg.p[0] and seed == cfg.seeds[0]:
                    real_minority_grid(store, reduced, cfg.target, minority, run_dir / REAL_MINORITY)
                ctx = StudyContext(store=store, target=cfg.target, minority=minority, train_rows=reduced,
                                   val_rows=splits["val"], seed=seed, work_dir=cell_dir, keep=p,
                                   synthetic_amount=cfg.synthetic_amount, generator=cfg.generator, device=cfg.device,
                                   generator_config=lambda model, s=seed: generator_config(cfg, model, seed=s))
                for method in cfg.methods:
                    if (p, seed, method) in done:
                        continue
                    cell = f"p={p:g} seed={seed} {method}"
                    prog.update(bar, description=cell)
                    started = time.monotonic()
                    with epoch_lines_inside(cell) if progress else contextlib.nullcontext():
                        rec = {"p": p, **run_cell(cfg, ctx, method, splits, eval_store)}
                    append_jsonl(results_path, rec)
                    done[(p, seed, method)] = rec
                    if progress:
                        prog.console.print(_cell_line(rec, time.monotonic() - started), markup=False, highlight=False)
                    prog.update(bar, advance=1)
    records = list(done.values())
    external = aggregate(records, where="external") if eval_store is not None else None
    summary = ImbalanceStudySummary(
        run_dir=str(run_dir), store=cfg.store, target=cfg.target, minority=minority,
        splits={k: int(len(v)) for k, v in splits.items()}, splits_how=how, aggregate=aggregate(records),
        external=external, seconds=round(time.monotonic() - t0, 1))
    write_summary(run_dir, summary)
    atomic_write_text(run_dir / "results.md", results_markdown(summary.aggregate))
    return {**summary.to_dict(), "report": str(render_report(run_dir))}
