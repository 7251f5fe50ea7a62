"""ganforge: train, evaluate and show generative adversarial networks.

    import ganforge
    run = ganforge.train("vanilla-fmnist", train={"epochs": 2})
    run.grid(64)                       # a PIL image of samples
    run.evaluate(["fd", "pr"], n=2000)  # sample quality
    run = ganforge.load("runs/...")     # reopen any run directory

See docs/api.md.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Nothing is ever unpickled, also inside libraries: torch-fidelity and torch's hub load
# weights with weights_only=False; this makes every load of the process weights-only
# (tensors and plain containers; any other global is refused). The opposite setting is removed,
# as torch refuses to run with both.
os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)

# The errors: one family, all GanforgeError (docs/api.md#errors); cheap to import.
from .errors import (  # noqa: E402
    ArgumentError,
    CheckpointError,
    ConfigError,
    DataError,
    Diverged,
    GanforgeError,
    PeerLost,
    Preempted,
)

__all__ = [
    "ArgumentError",
    "Callback",
    "CheckpointError",
    "CheckpointMismatch",
    "Config",
    "ConfigError",
    "DataError",
    "Diverged",
    "GanforgeError",
    "PeerLost",
    "Preempted",
    "Run",
    "ShowSamples",
    "WriteError",
    "__version__",
    "load",
    "load_config",
    "resume",
    "train",
]

if TYPE_CHECKING:
    from .api import Run, load, resume, train
    from .checkpoint import CheckpointMismatch
    from .config import Config, load_config
    from .engine.callbacks import Callback, ShowSamples
    from .runfiles import WriteError

# Imported on first use, so that `import ganforge` (and the CLI's start) stays light.
_LAZY = {
    "train": "api",
    "resume": "api",
    "load": "api",
    "Run": "api",
    "Config": "config",
    "load_config": "config",
    "Callback": "engine.callbacks",
    "ShowSamples": "engine.callbacks",
    "CheckpointMismatch": "checkpoint",
    "WriteError": "runfiles",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    if name == "recipes":
        return _recipes
    raise AttributeError(f"module 'ganforge' has no attribute {name!r}")


def _recipes() -> list[str]:
    """The names of the shipped recipes."""
    from .config import recipe_names

    return recipe_names()


def __dir__() -> list[str]:
    return sorted(__all__)
