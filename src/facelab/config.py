"""Typed configs: pydantic models with strict keys and a YAML round-trip, and the one way to resolve them.

Every command builds its config the same way (:func:`resolve_config`): the model's defaults, overridden by a
YAML file, overridden by the command's flags, overridden by ``-o key=value`` options (:func:`parse_options`);
a resumed run reads its saved config.yaml back the same way (:func:`resume_config`).

    >>> class Tiny(StrictConfig):
    ...     epochs: int = 10
    ...     labels: list[str] | None = None
    >>> resolve_config(Tiny, flags={"epochs": 3}, options=["labels=Male,Smiling"]).model_dump()
    {'epochs': 3, 'labels': ['Male', 'Smiling']}
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from facelab.errors import ConfigError
from facelab.utils.io import atomic_write_text

C = TypeVar("C", bound="StrictConfig")


def overlay(defaults: dict[str, Any], overrides: Any) -> Any:
    """``overrides`` merged key by key over ``defaults``: nested mappings merge, other values replace.

    Lets a config field whose default is not the type's default (a classifier's trainer monitors
    ``val_mean_accuracy``) take a partial mapping such as ``{"epochs": 2}`` without losing the rest.
    Anything but a mapping (an already built config) is returned unchanged.
    """
    if not isinstance(overrides, dict):
        return overrides
    out = dict(defaults)
    for k, v in overrides.items():
        out[k] = overlay(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_options(items: Sequence[str] | None) -> dict[str, Any]:
    """``-o key=value`` pairs as a nested mapping: values are YAML (numbers, lists, mappings), dotted keys nest.

    ``-o trainer.epochs=3 -o labels=Male,Smiling`` -> ``{"trainer": {"epochs": 3}, "labels": "Male,Smiling"}``;
    a list field takes a comma-separated text as a list (see :class:`StrictConfig`).

    Raises:
        ConfigError: an item without ``=``, an empty key, or a value that is not valid YAML.
    """
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"option {item!r} is not KEY=VALUE (e.g. -o n=5000 -o prevalence.Male=0.1)")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"option {item!r}: empty key part in {key!r}")
        try:
            value = _yaml_value(raw) if raw else None
        except yaml.YAMLError:
            raise ConfigError(f"option {item!r}: the value is not valid YAML (quote it, e.g. -o '{key}=\"{raw}\"')") from None
        node = out
        for p in parts[:-1]:
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                raise ConfigError(f"option {item!r}: {p!r} was already given a value, it cannot also have keys")
            node = child
        node[parts[-1]] = value
    return out


_EXPONENT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def _yaml_value(raw: str) -> Any:
    """A YAML value, where ``1e-3`` is the number people mean (YAML 1.1 reads it as text: it wants ``1.0e-3``)."""
    return yaml_number(yaml.safe_load(raw))


def yaml_number(value: Any) -> Any:
    """``value``, or the float that a text such as ``1e-3`` means: YAML 1.1 (PyYAML) reads ``1e-3`` as text and
    only ``1.0e-3`` as a number. For values a field's type does not convert, e.g. the choices of a sweep."""
    return float(value) if isinstance(value, str) and _EXPONENT.match(value.strip()) else value


def _takes_list(annotation: Any) -> bool:
    """Whether a field annotation is a list/tuple/set (possibly optional), so a comma text means a list."""
    origin = typing.get_origin(annotation)
    if origin in (list, tuple, set, frozenset):
        return True
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return bool(args) and all(_takes_list(a) for a in args)
    return False


class StrictConfig(BaseModel):
    """Base for every facelab config: unknown keys are errors, values are validated on assignment.

    A list field given a text takes it as a comma-separated list (``-o labels=Male,Smiling``,
    ``-o classes=bird,horse``, ``attributes: Male, Smiling``): one rule for every config and source option.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    @model_validator(mode="before")
    @classmethod
    def _comma_lists(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for name, field in cls.model_fields.items():
            value = out.get(name)
            if isinstance(value, str) and _takes_list(field.annotation):
                out[name] = [part.strip() for part in value.split(",") if part.strip()]
        return out

    @classmethod
    def from_dict(cls: type[C], data: Any, *, where: str = "config") -> C:
        """Validate ``data``; raise ConfigError naming ``where`` and every bad key."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"invalid {where}: expected a mapping of keys to values, got {type(data).__name__}")
        try:
            return cls.model_validate(dict(data))
        except ValidationError as e:
            lines = [f"  {'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in e.errors()]
            raise ConfigError(f"invalid {where}:\n" + "\n".join(lines)) from None

    @classmethod
    def from_yaml(cls: type[C], path: str | Path, overrides: dict[str, Any] | None = None) -> C:
        """Load a YAML file of overrides over the defaults (plus optional ``overrides``)."""
        data = read_yaml(path)
        data.update(overrides or {})
        return cls.from_dict(data, where=str(path))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def save(self, path: str | Path) -> None:
        """Write the resolved config as YAML, atomically."""
        atomic_write_text(Path(path), self.to_yaml())


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML file holding a mapping (an empty file is an empty mapping).

    Raises:
        ConfigError: the file is missing, unreadable, not YAML, or not a mapping at the top level.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read it ({e})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top level, got a "
                          f"{type(data).__name__} (e.g. `epochs: 3`, not `- epochs: 3`)")
    return data


def _nest(flags: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted flag names as nested mappings, flags that were not given (None) left out."""
    out: dict[str, Any] = {}
    for key, value in flags.items():
        if value is None:
            continue
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def resolve_config(cls: type[C], *, yaml_file: str | Path | None = None, flags: Mapping[str, Any] | None = None,
                   options: Sequence[str] | None = None, where: str | None = None) -> C:
    """The one way a command's config is made: ``cls`` defaults < ``yaml_file`` < ``flags`` < ``options``.

    Args:
        cls: the config model.
        yaml_file: a YAML file of overrides (``--config``).
        flags: the command's own flags by (dotted) field name, e.g. ``{"trainer.epochs": 3}``; None = not given.
        options: ``-o key=value`` items (:func:`parse_options`).
        where: what the error messages call the result (default: the YAML file, or "options").

    Raises:
        ConfigError: a bad file, option or value, naming it.
    """
    data = read_yaml(yaml_file) if yaml_file is not None else {}
    data = overlay(overlay(data, _nest(flags or {})), parse_options(options))
    return cls.from_dict(data, where=where or (str(yaml_file) if yaml_file is not None else "options"))


def resume_config(cls: type[C], run_dir: str | Path, *, changes: Mapping[str, Any] | None = None) -> C:
    """The saved config.yaml of ``run_dir``, with ``changes`` (dotted field names, None = unchanged) applied and
    written back when there are any (a resumed run keeps what trained its checkpoint; only budgets grow).

    Raises:
        ConfigError: no config.yaml (not a run folder), or an invalid one.
    """
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{run_dir}: no config.yaml, so not a facelab run folder to resume")
    nested = _nest(changes or {})
    cfg = cls.from_dict(overlay(read_yaml(path), nested), where=f"{path} (with the resume options)")
    if nested:
        cfg.save(path)
    return cfg
