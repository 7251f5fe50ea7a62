"""Name -> builder registries (nets, data sets, ...), with errors that list the choices."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T", bound=Callable)


class Registry(Generic[T]):
    """A mapping of names to callables, filled by the ``register`` decorator."""

    def __init__(self, kind: str) -> None:
        self.kind = kind  # used in messages, e.g. "data set" or "generator"
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(fn: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = fn
            return fn

        return add

    def get(self, name: str, key: str | None = None) -> T:
        """The callable registered as ``name``; a ConfigError naming ``key`` if unknown."""
        if name not in self._items:
            where = f"{key}: " if key else ""
            raise ConfigError(
                f"{where}unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}"
            )
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items
