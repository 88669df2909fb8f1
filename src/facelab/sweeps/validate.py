"""Everything a sweep checks before its first trial: the base config, every parameter against the field it names
(built with both ends of its range and every choice), the metric's direction, the sampler's grid and the pruner.

A mistake found by trial 7 after an hour of training is a mistake found too late: :func:`prepare_spec` builds
the command's config (and its model) for a sample of every parameter, so that a sweep that starts can run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from facelab.config import StrictConfig
from facelab.errors import ConfigError, FacelabError
from facelab.sweeps.commands import COMMANDS, SweepCommand
from facelab.sweeps.space import grid, probe_values, space_size, trial_config
from facelab.sweeps.spec import CategoricalParam, FloatParam, IntParam, SweepSpec


def prepare_spec(spec: SweepSpec, *, check_command: bool = True) -> SweepSpec:
    """``spec`` resolved (the base config with every default, its paths absolute, the metric and direction
    filled in) and checked; what the sweep folder and the study record. ``check_command=False`` leaves out the
    command's own checks (the store, the pretrained run, the model built): the spec alone is checked.

    Raises:
        ConfigError: the first problem found, naming the parameter, value or field and the fix.
    """
    command = COMMANDS.get(spec.command)
    base_cfg = command.config_cls.from_dict(spec.base, where=f"the sweep's base config (base:, {spec.command})")
    base = _absolute_paths(base_cfg.model_dump(mode="json"), command)
    metric, direction = _objective(spec, base_cfg)
    resolved = spec.model_copy(update={"base": base, "metric": metric, "direction": direction})
    for name in resolved.space:
        check_field(base_cfg, name, command=spec.command)
    check_space(resolved, command, check_command=check_command)
    check_enqueued(resolved)
    check_algorithms(resolved)
    return resolved


def _objective(spec: SweepSpec, base_cfg: Any) -> tuple[str, str]:
    monitor, mode = base_cfg.trainer.monitor, base_cfg.trainer.monitor_mode
    metric = spec.metric or monitor
    if spec.direction is not None:
        return metric, spec.direction
    if metric == monitor:
        return metric, "maximize" if mode == "max" else "minimize"
    raise ConfigError(f"metric {metric!r} is not the trainer's monitor ({monitor}), so say which way is better: "
                      "direction: maximize or direction: minimize")


def _absolute_paths(base: dict[str, Any], command: SweepCommand) -> dict[str, Any]:
    """File paths of the base config made absolute when they exist from here (workers may start elsewhere)."""
    out = dict(base)
    for key in command.paths:
        value = out.get(key)
        if isinstance(value, str) and Path(value).expanduser().exists():
            out[key] = str(Path(value).expanduser().resolve())
    return out


def check_field(cfg: StrictConfig, name: str, *, command: str) -> None:
    """``name`` (dotted) names a field of ``cfg``, or a key inside a free-form options mapping (model_kwargs,
    model_options: the model checks those when it is built).

    Raises:
        ConfigError: a part of the name that is not a field, listing the fields there are.
    """
    node: Any = cfg
    walked: list[str] = []
    for part in name.split("."):
        where = ".".join(walked) or f"the {command} config"
        if isinstance(node, BaseModel):
            fields = type(node).model_fields
            if part not in fields:
                raise ConfigError(f"search space: {name!r} does not exist: {where} has no field {part!r}; its fields "
                                  f"are {', '.join(fields)}")
            node = getattr(node, part)
        elif isinstance(node, dict):
            return  # free-form options: the model refuses unknown ones when it is built (check_space)
        else:
            raise ConfigError(f"search space: {name!r} does not exist: {where} is a value ({node!r}), not a group "
                              "of fields")
        walked.append(part)


def check_space(spec: SweepSpec, command: SweepCommand, *, check_command: bool = True) -> None:
    """Build the trial config (and, with ``check_command``, the command's checks: store, model, batch) with both
    ends of every range and every choice, the other parameters at their first value; each value must keep its
    type in the config.

    Raises:
        ConfigError: naming the parameter and the value that fails, and why.
    """
    base = _build(spec, {}, "the sweep's base config (base:)")
    if check_command:
        _run_check(command, base, "the sweep's base config (base:)")  # a missing store is not a parameter's fault
    firsts = {name: probe_values(p)[0] for name, p in spec.space.items()}
    checked = {json.dumps(base.model_dump(mode="json"), sort_keys=True)}
    for name, p in spec.space.items():
        for value in probe_values(p):
            values = {**firsts, name: value}
            what = f"search space: {name} = {value!r}"
            cfg = _build(spec, values, what)
            _check_type(cfg, name, p, value, what)
            key = json.dumps(cfg.model_dump(mode="json"), sort_keys=True)
            if check_command and key not in checked:
                checked.add(key)
                _run_check(command, cfg, what)


def _build(spec: SweepSpec, values: dict[str, Any], what: str) -> StrictConfig:
    try:
        return trial_config(spec, values, where=what)
    except ConfigError as e:
        raise ConfigError(str(e).replace("invalid search space", "search space", 1)) from None


def _run_check(command: SweepCommand, cfg: StrictConfig, what: str) -> None:
    try:
        command.check(cfg)
    except FacelabError as e:
        raise ConfigError(f"{what}: {e}") from None
    except Exception as e:  # a model option of the wrong kind (e.g. a text for a dropout rate) fails in torch
        raise ConfigError(f"{what}: building the trial's model failed: {type(e).__name__}: {e}") from None


def _value_at(data: Any, name: str) -> Any:
    for part in name.split("."):
        data = data[part]
    return data


def _check_type(cfg: StrictConfig, name: str, param: Any, value: Any, what: str) -> None:
    """The config holds ``value`` as given: a text "64" silently read as the number 64 (or 2.5 read as 2) would
    train something other than what the study records."""
    built = _value_at(cfg.model_dump(mode="json"), name)
    if isinstance(param, FloatParam) and isinstance(built, int) and not isinstance(built, bool):
        raise ConfigError(f"{what}: {name} holds an integer ({built}); use type: int (with step) for it")
    if isinstance(built, bool) or isinstance(value, bool):
        same = type(built) is type(value) and built == value
    elif isinstance(built, (int, float)) and isinstance(value, (int, float)):
        same = float(built) == float(value)
    else:
        same = json.dumps(built) == json.dumps(value)
    if not same:
        kind = type(param).__name__.removesuffix("Param").lower()
        raise ConfigError(f"{what}: the {kind} value {value!r} ({type(value).__name__}) is not of the type of "
                          f"{name}, which holds {built!r} ({type(built).__name__}); give values of that type"
                          + (" (numbers unquoted)" if isinstance(value, str) else ""))


def check_enqueued(spec: SweepSpec) -> None:
    """Trials to run first must lie in the space (Optuna would silently sample others instead)."""
    for i, trial in enumerate(spec.enqueue):
        for name, value in trial.items():
            p = spec.space[name]
            if isinstance(p, CategoricalParam):
                ok = any(json.dumps(value) == json.dumps(c) for c in p.choices)
            elif isinstance(p, (FloatParam, IntParam)):
                ok = isinstance(value, (int, float)) and not isinstance(value, bool) and p.low <= value <= p.high
                ok = ok and (isinstance(p, FloatParam) or float(value).is_integer())
            if not ok:
                raise ConfigError(f"enqueue[{i}]: {name} = {value!r} is outside the space of {name}")


def check_algorithms(spec: SweepSpec) -> None:
    """No trial repeats another's point, so a finite space needs at least ``n_trials`` points; the grid sampler
    needs a finite grid small enough to walk; the pruner must be buildable."""
    from facelab.sweeps.distinct import ENUMERABLE

    if spec.sampler.walks:
        grid(spec)  # a float range without step: named, with the fix
    points = space_size(spec)
    if spec.sampler.walks and points is not None and points > ENUMERABLE:
        raise ConfigError(f"sampler grid: the grid has {points:,} points, more than the {ENUMERABLE:,} a grid can "
                          "walk; give coarser steps or fewer choices, or use sampler: {name: random} or tpe")
    if points is not None and points < spec.n_trials:
        what = "grid" if spec.sampler.walks else "search space"
        raise ConfigError(f"sampler {spec.sampler.name}: the {what} has {points} points, fewer than n_trials "
                          f"{spec.n_trials}, and no trial repeats another's point; lower n_trials to {points} or "
                          "widen the space")
    spec.pruner.build(epochs=max_epochs(spec))


def max_epochs(spec: SweepSpec) -> int:
    """The most epochs a trial trains (the pruners' resource)."""
    p = spec.space.get("trainer.epochs")
    planned = int(spec.base.get("trainer", {}).get("epochs", 1))
    return max([planned, *[int(v) for v in probe_values(p)]] if p is not None else [planned])
