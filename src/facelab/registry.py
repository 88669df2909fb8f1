"""Name -> factory registries, so that adding a model/source/metric is one file plus a decorator."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from facelab.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of factories (classes or functions).

    Example:
        >>> MODELS = Registry("model")
        >>> @MODELS.register("tiny")
        ... class Tiny: ...
        >>> MODELS.create("tiny")
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering ``obj`` under ``name``; duplicate names are a programming error."""

        def deco(obj: Callable[..., T]) -> Callable[..., T]:
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> Callable[..., T]:
        """Return the factory for ``name`` or raise a ConfigError listing the known names."""
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "(none)"
            raise ConfigError(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}") from None

    def create(self, name: str, *args, **kwargs) -> T:
        """Instantiate the factory registered as ``name``."""
        return self.get(name)(*args, **kwargs)

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
