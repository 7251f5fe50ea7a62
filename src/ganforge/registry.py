"""Name -> object registries (nets, data sets, losses, ...), with errors that list the choices.

Every registry also accepts an import path, ``package.module:attribute``: the object is
imported on use, so a run that names one (in its config.yaml) reopens in any process where
that module is importable and the user trusts the run's code (``ganforge.trust`` checks a
run's config before any name in it is looked up). ``python:NAME`` marks an object that was
handed to ``ganforge.train`` in one process and cannot be imported back.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping of names to callables, filled by the ``register`` decorator."""

    def __init__(self, kind: str) -> None:
        self.kind = kind  # used in messages, e.g. "data set" or "generator"
        self._items: dict[str, T] = {}
        _BY_KIND[kind] = self

    def register(self, name: str) -> Callable[[T], T]:
        def add(fn: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = fn
            return fn

        return add

    def get(self, name: str, key: str | None = None) -> T:
        """The object registered as ``name`` (or imported from ``module:attr``); a one-line
        ConfigError naming ``key`` if unknown or not importable."""
        if is_import_path(name):
            return import_object(name, key or self.kind)
        if name.startswith(PYTHON_PREFIX):
            where = f"{key}: " if key else ""
            raise ConfigError(
                f"{where}{name[len(PYTHON_PREFIX) :]!r} was a Python object given to "
                "ganforge.train in another process; pass it again (e.g. "
                "ganforge.load(run, generator=...)) or define it in an importable module and "
                "name it as package.module:attribute"
            )
        if name not in self._items:
            load_plugins()  # installed packages may register more (entry points)
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


_BY_KIND: dict[str, Registry[Any]] = {}  # kind -> its registry


def registered(obj: Any, kind: str) -> bool:
    """Whether ``obj`` is one of the objects registered in the registry of ``kind``."""
    reg = _BY_KIND.get(kind)
    return reg is not None and any(v is obj for v in reg._items.values())


PYTHON_PREFIX = "python:"  # an object given in-process, recorded by name only
PLUGIN_GROUP = "ganforge.plugins"  # entry points whose modules register nets, losses, ...
_plugins_loaded = False


def load_plugins() -> None:
    """Import the modules of every ``ganforge.plugins`` entry point once, so the names they
    register are known (a package declares ``[project.entry-points."ganforge.plugins"]
    mynets = "mypkg.nets"``). A plugin that fails to import is a one-line ConfigError."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=PLUGIN_GROUP):
        try:
            ep.load()
        except Exception as e:  # a broken plugin names itself, not a traceback
            raise ConfigError(
                f"plugin {ep.name!r} ({ep.value}) failed to import: {type(e).__name__}: {e}; "
                "fix or uninstall it"
            ) from None


def is_import_path(name: str) -> bool:
    """``package.module:attribute`` (not the ``python:`` marker)."""
    mod, sep, attr = name.partition(":")
    return bool(sep and mod and attr) and not name.startswith(PYTHON_PREFIX)


@functools.lru_cache(maxsize=256)  # the training step asks for its loss every step
def import_object(path: str, key: str) -> Any:
    """The object at ``package.module:attr.sub``; a one-line ConfigError naming ``key``."""
    mod, _, attr = path.partition(":")
    try:
        obj: Any = importlib.import_module(mod)
    except ImportError as e:
        raise ConfigError(
            f"{key}: cannot import module {mod!r} ({e}); install the package that provides it "
            "(ganforge imports nothing from a run directory)"
        ) from None
    except Exception as e:  # the module itself failed while importing: say where
        raise ConfigError(
            f"{key}: importing {mod!r} failed ({type(e).__name__}: {e}); fix that module"
        ) from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{key}: module {mod!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def path_of(obj: Any) -> str | None:
    """The import path ``module:qualname`` that gives ``obj`` back in another process, or None
    (defined in ``__main__``, a notebook, or inside a function)."""
    mod, qual = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not mod or not qual or mod == "__main__" or "<" in qual:
        return None
    try:
        found: Any = importlib.import_module(mod)
        for part in qual.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError):
        return None
    return f"{mod}:{qual}" if found is obj else None
