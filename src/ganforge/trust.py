"""A run directory is data: opening one imports no code that its files name.

A config.yaml may name nets, losses, metrics, augment policies and data sets by import path
(``package.module:attribute``); importing and calling what a downloaded run names would run
any code its author chose. So a run's config is checked here before anything is built: a
name is allowed when it is registered (ganforge's own, or an installed plug-in's, see
``registry.load_plugins``) or is an import path that leads to such a registered object in
ganforge or a plug-in module. Any other import path is refused in one line that says how to
allow it: ``--trust-code`` on the command line, ``trust_code=True`` in Python, or the
environment variable ``GANFORGE_TRUST_CODE=1``.

What the user gives in the same call is trusted (``--set model.g=...``, ``generator=``), and
so is a config.yaml this process wrote itself (the report written at the end of training).
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .errors import UntrustedCode
from .registry import PLUGIN_GROUP, import_object, is_import_path, registered

ENV = "GANFORGE_TRUST_CODE"  # 1: trust the code every run names (as --trust-code)

# Config keys that name registered objects, and the registry kind of each.
NAME_KEYS = {
    "model.g": "generator",
    "model.d": "discriminator",
    "loss.name": "loss",
    "data.name": "data set",
    "train.augment": "augment policy",
    "eval.metrics": "metric",
}

_cli_trust: contextvars.ContextVar[bool] = contextvars.ContextVar("ganforge_trust", default=False)
_written: dict[str, str] = {}  # config.yaml files this process wrote: path -> sha256


def trusting_code(trust_code: bool | None = None) -> bool:
    """Whether to import what runs name: ``trust_code`` when given, else --trust-code of the
    running command, else ``GANFORGE_TRUST_CODE``."""
    if trust_code is not None:
        return bool(trust_code)
    return _cli_trust.get() or os.environ.get(ENV, "").strip().lower() in ("1", "true", "yes")


@contextlib.contextmanager
def trust_code_here(on: bool) -> Iterator[None]:
    """Within the block, runs' code is trusted when ``on`` (the CLI's --trust-code)."""
    token = _cli_trust.set(bool(on))
    try:
        yield
    finally:
        _cli_trust.reset(token)


def remember_written(path: Path, data: bytes) -> None:
    """Record that this process wrote ``data`` to ``path`` (a config it built from what the
    user gave), so that reading those same bytes back needs no --trust-code."""
    _written[str(Path(path).resolve())] = hashlib.sha256(data).hexdigest()


def _written_here(path: Path, data: bytes) -> bool:
    return _written.get(str(Path(path).resolve())) == hashlib.sha256(data).hexdigest()


def _names(value: Any) -> list[str]:
    """The names a config value holds: one string, a list, or a comma-separated string."""
    if isinstance(value, str):
        return [v.strip() for v in value.replace("[", "").replace("]", "").split(",")]
    if isinstance(value, (list, tuple)):
        return [v.strip() for v in value if isinstance(v, str)]
    return []


def _plugin_modules() -> list[str]:
    from importlib.metadata import entry_points

    return [ep.module for ep in entry_points(group=PLUGIN_GROUP)]


def _trusted_module(mod: str) -> bool:
    """ganforge's own modules (not ``__main__``) and the installed plug-ins' modules."""
    if "__main__" in mod.split("."):
        return False
    roots = ["ganforge", *_plugin_modules()]
    return any(mod == r or mod.startswith(r + ".") for r in roots)


def _allowed(path: str, kind: str) -> bool:
    """An import path into ganforge or a plug-in that leads to a registered ``kind``."""
    mod = path.partition(":")[0]
    if not _trusted_module(mod):
        return False
    try:
        return registered(import_object(path, kind), kind)
    except Exception:  # no such attribute: not a registered object
        return False


def leaf_keys(tree: Mapping[str, Any], prefix: str = "") -> set[str]:
    """The dotted keys of a nested mapping's leaves (``{"model": {"g": x}}`` -> model.g)."""
    out: set[str] = set()
    for k, v in tree.items():
        key = f"{prefix}{k}"
        out |= leaf_keys(v, key + ".") if isinstance(v, Mapping) and v else {key}
    return out


def _get(raw: Mapping[str, Any], key: str) -> Any:
    node: Any = raw
    for part in key.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def check_run_config(
    raw: Any,
    path: Path,
    data: bytes,
    trust_code: bool | None = None,
    given: Iterable[str] = (),
    resuming: bool = False,
) -> None:
    """Refuse (``UntrustedCode``, one line) a run's config mapping ``raw`` (read from the
    bytes ``data`` of ``path``) that names code to import, unless trusted. Keys in ``given``
    are set by the user in this call and replace what the file says."""
    if not isinstance(raw, Mapping) or trusting_code(trust_code) or _written_here(path, data):
        return
    given = set(given)
    for key, kind in NAME_KEYS.items():
        if key in given:
            continue
        for name in _names(_get(raw, key)):
            if is_import_path(name) and not _allowed(name, kind):
                again = f", or give it again (--set {key}=...)" if resuming else ""
                raise UntrustedCode(
                    f"{path}: {key} names code to import, {_short(name)}; a run directory is "
                    "data and ganforge imports no code it names: if you trust this run, add "
                    f"--trust-code (Python: trust_code=True; or {ENV}=1){again}"
                )


def check_run_dir(run_dir: Path, trust_code: bool | None = None) -> None:
    """``check_run_config`` of ``run_dir/config.yaml`` for commands that read the file
    leniently (the report): a missing or unreadable file is left to them."""
    from .files import load_yaml

    path = Path(run_dir) / "config.yaml"
    try:
        data = path.read_bytes()
        raw = load_yaml(data)
    except Exception:  # unreadable or not YAML: nothing is imported from it
        return
    check_run_config(raw, path, data, trust_code)


def _short(text: str, limit: int = 80) -> str:
    r = repr(text)
    return r if len(r) <= limit else r[: limit - 4] + "...'"
