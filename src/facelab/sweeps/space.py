"""The search space: each parameter as an Optuna distribution, a trial's values as the command's config.

Categorical choices that are lists or mappings (a model's ``channels``) travel through Optuna as their JSON text
(Optuna stores numbers, texts, booleans and null); :func:`config_values` turns a trial's params back into the
values the config trained with.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from facelab.config import StrictConfig, overlay
from facelab.errors import ConfigError
from facelab.sweeps.commands import COMMANDS
from facelab.sweeps.spec import CategoricalParam, FloatParam, IntParam, Param, SweepSpec

if TYPE_CHECKING:
    import optuna

PRIMITIVES = (type(None), bool, int, float, str)


def encode_choice(choice: Any) -> Any:
    """What Optuna stores for a categorical choice: the choice itself, or a list's / mapping's JSON text."""
    return choice if isinstance(choice, PRIMITIVES) else json.dumps(choice)


def decode_choice(param: CategoricalParam, stored: Any) -> Any:
    """The choice that Optuna's stored value stands for."""
    for c in param.choices:
        if not isinstance(c, PRIMITIVES) and encode_choice(c) == stored:
            return c
    return stored


def distribution(param: Param) -> optuna.distributions.BaseDistribution:
    import optuna

    if isinstance(param, FloatParam):
        return optuna.distributions.FloatDistribution(param.low, param.high, log=param.log, step=param.step)
    if isinstance(param, IntParam):
        return optuna.distributions.IntDistribution(param.low, param.high, log=param.log, step=param.step)
    return optuna.distributions.CategoricalDistribution([encode_choice(c) for c in param.choices])


def distributions(spec: SweepSpec) -> dict[str, optuna.distributions.BaseDistribution]:
    """Parameter name -> its Optuna distribution: what ``trial.params`` of every trial of the study hold."""
    return {name: distribution(p) for name, p in spec.space.items()}


def suggest(trial: optuna.Trial, spec: SweepSpec) -> dict[str, Any]:
    """Draw every parameter of ``trial`` from the sampler; returns the config values (decoded choices)."""
    dists = distributions(spec)
    return config_values(spec, {name: _suggest(trial, name, dists[name]) for name in spec.space})


def _suggest(trial: optuna.Trial, name: str, dist: Any) -> Any:
    import optuna

    if isinstance(dist, optuna.distributions.FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, log=dist.log, step=dist.step)
    if isinstance(dist, optuna.distributions.IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, log=dist.log, step=dist.step)
    return trial.suggest_categorical(name, dist.choices)


def config_values(spec: SweepSpec, params: dict[str, Any]) -> dict[str, Any]:
    """A trial's stored params as the values its config trained with."""
    out = {}
    for name, value in params.items():
        p = spec.space.get(name)
        out[name] = decode_choice(p, value) if isinstance(p, CategoricalParam) else value
    return out


def stored_params(spec: SweepSpec, values: dict[str, Any]) -> dict[str, Any]:
    """Config values as Optuna stores them (for ``study.enqueue_trial``)."""
    space = spec.space
    return {name: encode_choice(v) if isinstance(space[name], CategoricalParam) else v for name, v in values.items()}


def nest(values: dict[str, Any]) -> dict[str, Any]:
    """``{"trainer.optim.lr": 1e-3}`` -> ``{"trainer": {"optim": {"lr": 1e-3}}}``."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def trial_config(spec: SweepSpec, values: dict[str, Any], *, where: str = "trial config") -> StrictConfig:
    """The command's config for one trial: the base, the trial's values, the sweep's metric as the trainer's
    monitor (so the best checkpoint is the one the trial is scored by) and ``timeout`` as the time budget.

    Raises:
        ConfigError: a value the config refuses.
    """
    command = COMMANDS.get(spec.command)
    data = overlay(spec.base, nest(values))
    trainer: dict[str, Any] = {}
    if spec.metric is not None:
        trainer["monitor"] = spec.metric
    if spec.direction is not None:
        trainer["monitor_mode"] = "max" if spec.direction == "maximize" else "min"
    if spec.timeout is not None:
        budget = (data.get("trainer") or {}).get("time_budget_minutes")
        trainer["time_budget_minutes"] = min(spec.timeout / 60, budget if budget is not None else math.inf)
    data = overlay(data, {"trainer": trainer}) if trainer else data
    return command.config_cls.from_dict(data, where=where)


def probe_values(param: Param) -> list[Any]:
    """The values that show whether a parameter fits its field: both ends of a range, every choice."""
    if isinstance(param, FloatParam):
        return [param.low, param.high]
    if isinstance(param, IntParam):
        return [param.low, param.low + (param.high - param.low) // param.step * param.step]
    return list(param.choices)


def value_count(param: Param) -> int | None:
    """How many values a parameter takes (None: a float range without ``step``, which has no end of them)."""
    if isinstance(param, FloatParam):
        return None if param.step is None else int(math.floor((param.high - param.low) / param.step + 1e-9)) + 1
    if isinstance(param, IntParam):
        return (param.high - param.low) // param.step + 1
    return len(param.choices)


def space_size(spec: SweepSpec) -> int | None:
    """How many points the search space has (None: infinitely many)."""
    counts = [value_count(p) for p in spec.space.values()]
    return None if None in counts else math.prod(c for c in counts if c is not None)


def grid(spec: SweepSpec) -> dict[str, list[Any]]:
    """Every value of every parameter, for the grid sampler (as Optuna stores them).

    Raises:
        ConfigError: a float range without ``step`` (it has no finite grid).
    """
    out: dict[str, list[Any]] = {}
    for name, p in spec.space.items():
        if isinstance(p, FloatParam):
            if p.step is None:
                raise ConfigError(f"sampler grid: {name} is a float range without step; give step (e.g. "
                                  f"{{type: float, low: {p.low}, high: {p.high}, step: {(p.high - p.low) / 4:g}}}) "
                                  "or list its values as choices")
            out[name] = [p.low + i * p.step for i in range(value_count(p) or 0)]
        elif isinstance(p, IntParam):
            out[name] = list(range(p.low, p.high + 1, p.step))
        else:
            out[name] = [encode_choice(c) for c in p.choices]
    return out
