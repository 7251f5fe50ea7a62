"""Arguments of the public API and the commands, checked in one place.

Each check raises ``ArgumentError`` (a ``ConfigError``, also a ``ValueError`` and a
``TypeError``) with one line naming the argument, what was given and what is valid, before
any work: a torch or numpy error about the same mistake would name neither.
"""

from __future__ import annotations

import math
import operator
import os
from collections.abc import Iterable, Sequence
from typing import Any

from .errors import ArgumentError

SEED_LIMIT = 2**63  # seeds are mixed by numpy's SeedSequence and taken by torch's manual_seed
MEMORY_SHARE = 0.5  # samples held at once may take at most this share of the free memory


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def integer(value: Any, what: str, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int (a bool, a float or a string is refused), within [low, high]."""
    if isinstance(value, bool) or isinstance(value, float) or isinstance(value, str):
        index = None
    else:
        try:
            index = operator.index(value)
        except TypeError:
            index = None
    span = _span(low, high)
    if index is None:
        raise ArgumentError(f"{what}{_shown(value)}: expected an integer{span}")
    if (low is not None and index < low) or (high is not None and index > high):
        raise ArgumentError(f"{what}{index}: out of range; expected an integer{span}")
    return index


def _span(low: int | None, high: int | None) -> str:
    if low is not None and high is not None:
        return f" from {low:,} to {high:,}"
    if low is not None:
        return f" of at least {low:,}"
    return ""


def seed(value: Any, what: str = "seed=") -> int:
    """A noise seed: an integer in [0, 2**63) (what numpy's SeedSequence and torch take)."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < SEED_LIMIT:
        return value
    try:
        return integer(value, what, 0, SEED_LIMIT - 1)
    except ArgumentError:
        raise ArgumentError(
            f"{what}{_shown(value)}: a seed is an integer with 0 <= seed < 2**63"
        ) from None


def choice(value: Any, what: str, choices: Sequence[str]) -> str:
    """One of ``choices`` (strings)."""
    if not isinstance(value, str) or value not in choices:
        listed = f"{', '.join(choices[:-1])} or {choices[-1]}" if len(choices) > 1 else choices[0]
        raise ArgumentError(f"{what}{_shown(value)}: choose {listed}")
    return value


def flag(value: Any, what: str) -> bool:
    """True or False (not 0, 1 or a string: ``verbose="no"`` would be true)."""
    if not isinstance(value, bool):
        raise ArgumentError(f"{what}{_shown(value)}: expected True or False")
    return value


def path(value: Any, what: str) -> str:
    """A path: a non-empty str or an os.PathLike."""
    if isinstance(value, (str, os.PathLike)):
        text = os.fspath(value)
        if isinstance(text, str) and text:
            return text
    raise ArgumentError(f"{what}{_shown(value)}: expected a path (str or pathlib.Path)")


def strings(value: Any, what: str) -> list[str]:
    """A list of strings from an iterable of them; one string alone is refused (it would be
    read letter by letter)."""
    if value is None:
        return []
    if isinstance(value, str):
        raise ArgumentError(f"{what}{_shown(value)}: expected a list of strings, e.g. [{value!r}]")
    if isinstance(value, bytes) or not isinstance(value, Iterable):
        raise ArgumentError(f"{what}{_shown(value)}: expected a list of strings")
    items = list(value)
    for item in items:
        if not isinstance(item, str):
            raise ArgumentError(f"{what}: {_shown(item)} is not a string; give strings only")
    return items


def sequence(value: Any, what: str) -> list[Any]:
    """A list from a list or tuple (callbacks=...)."""
    if value is None:
        return []
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ArgumentError(f"{what}{_shown(value)}: expected a list, e.g. [ShowSamples()]")
    return list(value)


def free_memory() -> int:
    """Bytes of memory available to this process now (MemAvailable; 8 GiB when unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"


def count(value: Any, what: str, floats_each: int, low: int = 1, fix: str = "") -> int:
    """A number of samples: an integer >= ``low`` whose ``floats_each`` float32 values each
    fit in half the memory available now (refused before anything is allocated)."""
    n = integer(value, what, low)
    budget = int(free_memory() * MEMORY_SHARE)
    need = 4 * n * floats_each
    if need > budget:
        most = max(budget // (4 * floats_each), 0)
        raise ArgumentError(
            f"{what}{n:,}: {n:,} samples need {_size(need)} as float32, more than half the "
            f"memory available here ({_size(budget * 2)}); at most {most:,} at once"
            f"{fix or '; draw them in smaller batches (another seed for each)'}"
        )
    return n


def floats_of(shape: Sequence[int]) -> int:
    """Values in one example of ``shape``."""
    return math.prod(int(s) for s in shape)


def labels(value: Any, n: int, k: int) -> Any:
    """The (n,) int64 labels of a conditional run's samples: every class in turn (None), one
    class (an int) or n of them, each in [0, k)."""
    import torch

    if value is None:
        return torch.arange(n) % k
    if isinstance(value, int) and not isinstance(value, bool):
        value = torch.full((n,), value, dtype=torch.long)
    try:
        y = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError):
        y = None
    if y is None or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ArgumentError(
            f"labels={type(value).__name__}: give one class in 0-{k - 1} (an int) or {n} of "
            "them (integers)"
        )
    y = y.long().flatten()
    if len(y) != n or int(y.min()) < 0 or int(y.max()) >= k:
        span = f" in [{int(y.min())}, {int(y.max())}]" if len(y) else ""
        raise ArgumentError(
            f"labels=: give one class in 0-{k - 1} or {n} of them; got {tuple(y.shape)}{span}"
        )
    return y
