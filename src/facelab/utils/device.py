"""The one place a device name from the user becomes a ``torch.device``, checked against what exists here."""

from __future__ import annotations

import re

import torch

from facelab.errors import ConfigError

_CUDA = re.compile(r"^cuda(:(\d+))?$")


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cpu``, ``cuda`` or ``cuda:N`` checked to exist.

    Raises:
        ConfigError: an unknown name, or a GPU that this machine does not have (the message says which exist).
    """
    if isinstance(name, torch.device):
        name = str(name)
    text = name.strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    m = _CUDA.match(text)
    if m is None:
        raise ConfigError(f"device {name!r} is not known; use auto, cpu, cuda or cuda:N")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise ConfigError(f"device {name!r}: this machine has no CUDA GPU that torch can use; use --device cpu "
                          "(or auto, which picks a GPU when there is one)")
    index = int(m.group(2) or 0)
    if index >= count:
        raise ConfigError(f"device {name!r}: this machine has {count} CUDA GPU(s) (cuda:0 to cuda:{count - 1})")
    return torch.device(f"cuda:{index}")
