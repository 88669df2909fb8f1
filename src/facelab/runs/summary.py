"""``summary.json``: what a finished run reports about itself, one typed model per kind of run.

Trainers and studies write it, ``facelab report``, ``facelab runs`` and evaluation read it back; both sides
go through these models, so a field cannot be misspelled on one side only. The file is strict JSON: a
metric that is undefined (NaN, e.g. an AUROC with one class present) is written as ``null``.

    >>> s = ClassifierSummary(run_dir="runs/train-a", model="vgg_scratch", labels=["Male"], params=10,
    ...                       train_rows=8, val_rows=2, device="cpu", epochs=1, steps=1, best=float("nan"),
    ...                       monitor="val_mean_accuracy", stop_reason="completed", seconds=1.0,
    ...                       train_seconds=1.0, fit_seconds=1.0)
    >>> s.to_dict()["best"] is None
    True
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from facelab.errors import FacelabError
from facelab.utils.io import atomic_write_text, finite_or_none

SUMMARY = "summary.json"


class RunSummary(BaseModel):
    """Fields every kind of run reports. Kinds subclass it; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    kind: str
    run_dir: str

    @field_validator("*", mode="before")
    @classmethod
    def _no_nan(cls, v: Any) -> Any:
        return finite_or_none(v)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (what ``--json`` prints and summary.json holds)."""
        return self.model_dump(mode="json")


class TrainingSummary(RunSummary):
    """A model trained by the Trainer (classifier or generative)."""

    model: str
    params: int
    train_rows: int
    val_rows: int = 0
    test_rows: int = 0
    device: str
    epochs: int
    steps: int
    best: float | None
    monitor: str
    stop_reason: str
    seconds: float
    train_seconds: float
    fit_seconds: float
    final: dict[str, Any] = Field(default_factory=dict)
    splits: str | None = None  # how the train/val/test rows were chosen (rows: splits.json)
    warnings: list[str] = Field(default_factory=list)
    processes: int = 1  # training processes (torchrun / --nproc); each step held processes x batch_size rows


class ClassifierSummary(TrainingSummary):
    kind: Literal["classifier"] = "classifier"
    labels: list[str]
    synthetic_rows: int = 0
    train_identities: int | None = None
    pretrained: str | None = None
    labels_file: dict[str, Any] | None = None  # the labels file laid over the store: path, sha256, known rows


class PretrainSummary(TrainingSummary):
    """A backbone pretrained without labels on one or more stores (``facelab pretrain``)."""

    kind: Literal["pretrain"] = "pretrain"
    stores: list[str]
    objective: str
    objective_kwargs: dict[str, Any] = Field(default_factory=dict)
    excluded_rows: dict[str, int] = Field(default_factory=dict)  # store -> rows of its official val/test left out
    images_per_s: float | None = None  # training images (each seen as two views) per second, last epoch


class GenerativeSummary(TrainingSummary):
    kind: Literal["generative"] = "generative"
    conditions: list[str] = Field(default_factory=list)
    grid: str


class BatchScheduleSummary(RunSummary):
    kind: Literal["batch_schedule"] = "batch_schedule"
    store: str
    labels: list[str]
    seeds: list[int]
    splits: dict[str, int]
    splits_how: str
    results: dict[str, dict[str, Any]]
    seconds: float


class ImbalanceStudySummary(RunSummary):
    """The class-imbalance study (``facelab experiment imbalance``); ``augment_study`` is its older name."""

    kind: Literal["imbalance_study", "augment_study"] = "imbalance_study"
    store: str
    target: str
    minority: int
    splits: dict[str, int]
    splits_how: str | None = None
    aggregate: dict[str, Any]
    external: dict[str, Any] | None = None  # the same aggregate on --eval-data
    seconds: float


class DemoSummary(RunSummary):
    kind: Literal["demo"] = "demo"
    store: str
    build: dict[str, Any]
    stats: dict[str, Any]
    plots: list[str]
    classifier: dict[str, Any]
    study: dict[str, Any]
    timings_s: dict[str, float]
    seconds: float


class SweepTrial(BaseModel):
    """One trial of a hyperparameter sweep, as the study database recorded it."""

    model_config = ConfigDict(extra="forbid")

    number: int
    state: Literal["RUNNING", "COMPLETE", "PRUNED", "FAIL", "WAITING"]
    value: float | None = None  # the sweep's metric (the run's best epoch); None unless COMPLETE
    params: dict[str, Any] = Field(default_factory=dict)  # config field (dotted) -> the value it trained with
    cpu_seconds: float | None = None  # CPU time of the worker process during the trial (all its threads)
    wall_seconds: float | None = None
    epochs: int | None = None  # epochs trained (fewer than planned when pruned)
    run_dir: str | None = None  # the trial's run folder, on the machine of its worker
    worker: str | None = None  # host:pid of the worker that ran it
    note: str | None = None  # why it was pruned or failed

    @field_validator("value", mode="before")
    @classmethod
    def _no_nan(cls, v: Any) -> Any:
        return finite_or_none(v)


class SweepSummary(RunSummary):
    """A hyperparameter sweep (``facelab sweep``): an Optuna study whose trials are run folders in ``run_dir``."""

    kind: Literal["sweep"] = "sweep"
    command: str  # train | train-gen: what every trial runs
    study_name: str
    storage: str  # the study database's URL, without its password
    metric: str
    direction: Literal["maximize", "minimize"]
    n_trials: int  # the target: trials COMPLETE or PRUNED
    states: dict[str, int]  # trial state -> count
    best_trial: int | None = None
    best_value: float | None = None
    best_params: dict[str, Any] = Field(default_factory=dict)
    best_run_dir: str | None = None
    best_config: str | None = None  # best.yaml: the best trial's config, for `facelab train --config`
    cpu_seconds: float  # summed over every trial
    importances: dict[str, float] = Field(default_factory=dict)  # fANOVA, over the COMPLETE trials
    plots: dict[str, str] = Field(default_factory=dict)  # name -> PNG under run_dir/plots
    notes: list[str] = Field(default_factory=list)  # what could not be computed, and why
    trials: list[SweepTrial]


#: summary.json "kind" -> its model
SUMMARY_KINDS: dict[str, type[RunSummary]] = {
    "classifier": ClassifierSummary, "generative": GenerativeSummary, "pretrain": PretrainSummary, "batch_schedule": BatchScheduleSummary,
    "imbalance_study": ImbalanceStudySummary, "augment_study": ImbalanceStudySummary, "demo": DemoSummary,
    "sweep": SweepSummary,
}


def write_summary(run_dir: str | Path, summary: RunSummary) -> Path:
    """Write ``summary`` to ``run_dir/summary.json`` atomically (strict JSON: NaN as null)."""
    path = Path(run_dir) / SUMMARY
    atomic_write_text(path, json.dumps(summary.to_dict(), indent=2, allow_nan=False) + "\n")
    return path


def read_summary(run_dir: str | Path) -> RunSummary:
    """The typed summary of a finished run.

    Raises:
        FacelabError: no summary.json (the run has not finished), not JSON, an unknown kind, or fields that
            do not match the kind's model.
    """
    path = Path(run_dir) / SUMMARY
    if not path.is_file():
        raise FacelabError(f"{run_dir}: no {SUMMARY} (not a finished facelab run folder)")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise FacelabError(f"{path}: not readable as JSON ({e})") from None
    kind = data.get("kind") if isinstance(data, dict) else None
    if kind is None:
        raise FacelabError(f"{path} does not say which kind of run it is (no 'kind' field)")
    model = SUMMARY_KINDS.get(kind)
    if model is None:
        raise FacelabError(f"{path}: unknown run kind {kind!r}; known kinds: {', '.join(sorted(SUMMARY_KINDS))}")
    try:
        return model.model_validate(_legacy(data))
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()[:5])
        raise FacelabError(f"{path}: not a valid {kind} summary ({problems})") from None


def _legacy(data: dict[str, Any]) -> dict[str, Any]:
    """Summaries written by earlier versions: drop what they stored that is not part of the summary."""
    return {k: v for k, v in data.items() if k != "report"}
