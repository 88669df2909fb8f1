"""Typed configs: pydantic models with strict keys and a YAML round-trip."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

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


class StrictConfig(BaseModel):
    """Base for every facelab config: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any], *, where: str = "config") -> C:
        """Validate ``data``; raise ConfigError naming ``where`` and every bad key."""
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            lines = [f"  {'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in e.errors()]
            raise ConfigError(f"invalid {where}:\n" + "\n".join(lines)) from None

    @classmethod
    def from_yaml(cls: type[C], path: str | Path, overrides: dict[str, Any] | None = None) -> C:
        """Load a YAML file of overrides over the defaults (plus optional ``overrides``)."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of keys to values at the top level")
        data.update(overrides or {})
        return cls.from_dict(data, where=str(path))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def save(self, path: str | Path) -> None:
        """Write the resolved config as YAML, atomically."""
        atomic_write_text(Path(path), self.to_yaml())
