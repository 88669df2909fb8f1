"""The sweep spec: what each trial runs (a command and its base config), what varies (the search space), what is
optimised (metric, direction), how (sampler, pruner), how much (``n_trials``, ``timeout``) and where the study
lives (``storage``, ``study_name``).

    command: train
    base: {store: stores/celeba32, trainer: {epochs: 8}}      # or a YAML file: base: base.yaml
    space:
      trainer.optim.lr: {type: float, low: 3.0e-4, high: 1.0e-2, log: true}
      model_kwargs.drop_rate: {type: float, low: 0.0, high: 0.6}
      augment: [flip, geometric, standard]                    # a list is a categorical
    pruner: {name: median, n_startup_trials: 4, n_warmup_steps: 2}
    n_trials: 24

:func:`load_spec` reads it (the base resolved as the command's ``--config`` would be); the resolved spec, with
every default filled in, is the sweep folder's config.yaml and the study's ``facelab_spec`` user attribute.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from facelab.config import StrictConfig, overlay, parse_options, read_yaml, yaml_number
from facelab.errors import ConfigError
from facelab.sweeps.algorithms import MedianPruner, Pruner, Sampler, TpeSampler


class FloatParam(StrictConfig):
    """A float between ``low`` and ``high`` (inclusive), log-uniform with ``log``, on a grid with ``step``."""

    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _range(self) -> FloatParam:
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"log: true needs low > 0 (got {self.low})")
        if self.log and self.step is not None:
            raise ValueError("log and step cannot both be given")
        return self


class IntParam(StrictConfig):
    """An integer between ``low`` and ``high`` (inclusive) by ``step``, log-uniform with ``log``."""

    type: Literal["int"]
    low: int
    high: int
    step: int = Field(1, ge=1)
    log: bool = False

    @model_validator(mode="after")
    def _range(self) -> IntParam:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and (self.low < 1 or self.step != 1):
            raise ValueError("log: true needs low >= 1 and step 1")
        return self


MAX_CHOICES = 1000  # every choice is built and checked before the sweep starts


class CategoricalParam(StrictConfig):
    """One of ``choices``: numbers, texts, booleans, null, or lists and mappings (e.g. a model's channels)."""

    type: Literal["categorical"]
    choices: list[Any] = Field(min_length=1)

    @field_validator("choices")
    @classmethod
    def _few(cls, v: list[Any]) -> list[Any]:
        if len(v) > MAX_CHOICES:
            raise ValueError(f"{len(v)} choices, more than {MAX_CHOICES} (each is checked before the sweep starts); "
                             "give a range instead: {type: int, low: ..., high: ..., step: ...}")
        return v

    @field_validator("choices", mode="before")
    @classmethod
    def _numbers(cls, v: Any) -> Any:
        return [yaml_number(c) for c in v] if isinstance(v, list) else v


Param = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]
PARAM_TYPES = ("float", "int", "categorical")


class SweepSpec(StrictConfig):
    """A hyperparameter sweep; see the module docstring for an example."""

    command: str = "train"  # train | train-gen (facelab.sweeps.commands.COMMANDS)
    base: dict[str, Any] = Field(default_factory=dict)  # the command's config (load_spec reads a YAML file in)
    space: dict[str, Param] = Field(min_length=1)  # config field (dotted, e.g. trainer.optim.lr) -> its range
    metric: str | None = None  # default: the trainer's monitor (classifiers: val_mean_accuracy)
    direction: Literal["maximize", "minimize"] | None = None  # default: the monitor's mode
    sampler: Sampler = Field(default_factory=TpeSampler)
    pruner: Pruner = Field(default_factory=MedianPruner)
    n_trials: int = Field(20, ge=1)  # trials COMPLETE or PRUNED (failed ones are replaced)
    max_failed: int | None = Field(None, ge=1)  # stop when this many trials failed (default: n_trials)
    timeout: float | None = Field(None, gt=0)  # seconds of training per trial (the trainer's time budget)
    enqueue: list[dict[str, Any]] = Field(default_factory=list)  # trials to run first, e.g. today's recipe
    storage: str | None = None  # SQLAlchemy URL; default sqlite:///<sweep folder>/study.db
    study_name: str | None = None  # default: the sweep folder's name
    heartbeat_interval: int = Field(10, ge=1)  # seconds between a running trial's heartbeats
    grace_period: int | None = Field(None, ge=1)  # a trial silent this long is FAILED (default 3 heartbeats)

    @field_validator("space", mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        """``name: [a, b]`` is a categorical; a range without ``type`` says which types exist."""
        if not isinstance(v, dict):
            return v
        out = {}
        for name, p in v.items():
            if isinstance(p, list):
                p = {"type": "categorical", "choices": p}
            elif isinstance(p, dict) and p.get("type") not in PARAM_TYPES:
                raise ValueError(f"{name}: give type: float, int or categorical (got {p.get('type')!r}), e.g. "
                                 f"{{type: float, low: 1.0e-4, high: 1.0e-2, log: true}} or a list of choices")
            out[name] = p
        return out

    @model_validator(mode="after")
    def _enqueued_names(self) -> SweepSpec:
        for i, trial in enumerate(self.enqueue):
            unknown = sorted(set(trial) - set(self.space))
            if unknown:
                raise ValueError(f"enqueue[{i}] sets {unknown}, which the space does not vary ({sorted(self.space)})")
        return self

    @field_validator("study_name")
    @classmethod
    def _plain_name(cls, v: str | None) -> str | None:
        if v is not None and not is_plain_name(v):
            raise ValueError(f"{v!r}: give a plain name (no '/', no leading '.', at most 200 characters): a worker on "
                             "another machine puts its trial folders in runs/<study_name>")
        return v

    @model_validator(mode="after")
    def _grace(self) -> SweepSpec:
        if self.grace_period is not None and self.grace_period < 2 * self.heartbeat_interval:
            raise ValueError(f"grace_period {self.grace_period} s is shorter than two heartbeats "
                             f"({2 * self.heartbeat_interval} s): live trials would be failed as dead; give at least "
                             f"{2 * self.heartbeat_interval}")
        return self

    @property
    def grace_seconds(self) -> int:
        return self.grace_period or 3 * self.heartbeat_interval

    @property
    def max_failures(self) -> int:
        return self.max_failed or self.n_trials


def is_plain_name(name: str) -> bool:
    """Whether ``name`` is one folder name that stays inside its parent (a study's trial folders are named by it)."""
    return (0 < len(name) <= 200 and name == name.strip() and not name.startswith(".")
            and not any(c in name for c in "/\\\x00"))


MAX_NODES = 200_000  # values in a spec once YAML aliases are expanded


def check_size(data: Any, where: str) -> None:
    """A spec is a handful of values: YAML aliases (``&a`` ... ``*a``) nested to expand into millions (a "billion
    laughs" file) would hang every step that copies or checks them.

    Raises:
        ConfigError: more than :data:`MAX_NODES` values once expanded.
    """
    stack, seen = [data], 0
    while stack:
        node = stack.pop()
        seen += 1
        if seen > MAX_NODES:
            raise ConfigError(f"{where}: more than {MAX_NODES:,} values once its YAML aliases (&name, *name) are "
                              "expanded; a sweep spec is a handful of keys: write it out without nested aliases")
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def load_spec(path: str | Path, *, options: list[str] | None = None, flags: dict[str, Any] | None = None) -> SweepSpec:
    """Read a spec file: ``flags`` (top-level keys, None = not given) and ``-o`` ``options`` override it, and a
    ``base:`` YAML file (relative to the spec's folder) is read in, so ``-o base.store=...`` works either way.
    An option that names another sampler or pruner (``-o pruner.name=median``) replaces the file's, whose
    settings belong to the other kind; the other options of that part still apply.

    Raises:
        ConfigError: a missing or malformed file, an unknown key or a bad value, naming it.
    """
    path = Path(path)
    data = read_yaml(path)
    check_size(data, str(path))
    base = data.get("base")
    if isinstance(base, str):
        base_file = Path(base).expanduser()
        base_file = base_file if base_file.is_absolute() else path.parent / base_file
        data["base"] = read_yaml(base_file)
        check_size(data["base"], str(base_file))
    data = overlay(data, {k: v for k, v in (flags or {}).items() if v is not None})
    given = parse_options(options)
    for part in ("sampler", "pruner"):  # -o pruner.name=median on a percentile pruner: the median's own defaults
        new, old = (given.get(part) or {}), (data.get(part) or {})
        if isinstance(new, dict) and isinstance(old, dict) and new.get("name", old.get("name")) != old.get("name"):
            data[part] = {}
    return SweepSpec.from_dict(overlay(data, given), where=str(path))
