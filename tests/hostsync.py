"""Count the host reads of device values (host syncs) of each training step, on the CPU.

``count_syncs(cfg, data)`` trains ``cfg`` under a ``TorchFunctionMode`` and a
``TorchDispatchMode`` and returns, per step, the reads that on an accelerator would wait for
the device:

- a value read on the host: ``aten._local_scalar_dense`` (``.item()``, ``bool`` / ``int`` /
  ``float`` / ``format`` of a tensor), ``.tolist()``, ``.numpy()``;
- a copy to the host: ``.cpu()`` / ``.to("cpu")``, ``aten._to_copy`` / ``aten.copy_`` onto
  the CPU from another device; and one from the host that waits: ``.to(device)`` of a host
  tensor without ``non_blocking=True`` (a ``torch.device`` names the run's device, the
  string ``"cpu"`` the host);
- a shape that depends on values: ``aten.nonzero``, ``aten.masked_select``, the
  ``aten.unique`` family, ``aten.index`` with a bool mask.

On the CPU every tensor is on the host, so the modes track where a tensor would live on an
accelerator: one made by a factory function (``torch.randperm``, ``torch.arange``...)
without a ``device`` argument, or computed from such tensors only, stays on the host there
(the epoch's order of a streamed folder, whose file indices are read on the host by
design); every other tensor (the models', the data's, and what is computed from them) is on
the device. Reads of host tensors are not counted.
"""

from __future__ import annotations

import os
import traceback
import weakref
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

import ganforge
from ganforge.engine.callbacks import Callback

READS = {"item", "tolist", "numpy", "__bool__", "__int__", "__float__", "__index__"}
READS |= {"__format__", "cpu"}
SHAPES = {"aten::nonzero", "aten::masked_select", "aten::_unique2", "aten::unique_dim"}
SHAPES |= {"aten::unique_consecutive", "aten::_unique", "aten::argwhere"}


def _tensors(tree: Any) -> list[torch.Tensor]:
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, (list, tuple)):
        return [t for x in tree for t in _tensors(x)]
    if isinstance(tree, dict):
        return [t for x in tree.values() for t in _tensors(x)]
    return []


class _Where(TorchFunctionMode):
    """Marks the tensors an accelerator run would keep on the host; counts Python reads."""

    def __init__(self, record: Callable[[str], None]) -> None:
        super().__init__()
        self.host: dict[int, weakref.ref] = {}  # id -> the host tensor (ids are reused)
        self.record = record
        self.reading = 0

    def device_tensor(self, t: torch.Tensor) -> bool:
        ref = self.host.get(id(t))
        return ref is None or ref() is not t

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        inputs = _tensors(args) + _tensors(kwargs)
        on_device = any(self.device_tensor(t) for t in inputs)
        read = name in READS or (name == "to" and _cpu_target(args[1:], kwargs))
        if read and on_device:
            self.record(f"{name}()" if name != "to" else "to(cpu)")
        moved = name in ("to", "cuda") and _device_target(args[1:], kwargs)
        if moved and inputs and not on_device and _blocking(args[1:], kwargs):
            self.record("to(device), blocking")  # on a GPU: the copy, then a stream sync
        self.reading += read  # the aten ops of this read are the same wait: not counted again
        try:
            out = func(*args, **kwargs)
        finally:
            self.reading -= read
        made_here = not inputs and "device" not in kwargs  # a factory on the host's default
        for t in _tensors(out):
            if moved:  # onto the run's device (Module.to moves each tensor so)
                self.host.pop(id(t), None)
            elif made_here or (inputs and not on_device):
                self.host[id(t)] = weakref.ref(t)
        return out


def _cpu_target(args: tuple, kwargs: dict) -> bool:
    """``.to("cpu")``: the host named as such (``.to(device)`` moves to the run's device)."""
    return any(isinstance(a, str) and a.startswith("cpu") for a in [*args, kwargs.get("device")])


def _device_target(args: tuple, kwargs: dict) -> bool:
    """``.to(device)`` with a ``torch.device``: by this module's convention the run's."""
    return any(isinstance(a, torch.device) for a in [*args, kwargs.get("device")])


def _blocking(args: tuple, kwargs: dict) -> bool:
    """A copy without ``non_blocking=True`` (keyword, or the argument after the device)."""
    return not kwargs.get("non_blocking", False) and not any(a is True for a in args[1:])


class _Ops(TorchDispatchMode):
    """Counts the aten ops that wait for the device (value reads, data-dependent shapes)."""

    def __init__(self, where: _Where) -> None:
        super().__init__()
        self.where, self.record = where, where.record

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func._schema.name
        inputs = _tensors(args)
        on_device = any(self.where.device_tensor(t) for t in inputs)
        if self.where.reading:
            pass
        elif name == "aten::_local_scalar_dense" and on_device:
            self.record(name)
        elif name in SHAPES and on_device:
            self.record(name)
        elif name == "aten::index" and on_device:
            if any(t.dtype == torch.bool for t in _tensors(args[1:])):
                self.record("aten::index(bool)")
        elif name in ("aten::_to_copy", "aten::copy_"):
            dst = kwargs.get("device") if name == "aten::_to_copy" else args[0].device
            src = args[0] if name == "aten::_to_copy" else args[1]
            if dst is not None and torch.device(dst).type == "cpu" and src.device.type != "cpu":
                self.record(f"{name}(cpu)")
        return func(*args, **kwargs)


class _Steps(Callback):
    """Tells the counter which step runs: after step s ends, step s + 1's ops begin."""

    def __init__(self, counter: SyncCounter) -> None:
        self.counter = counter

    def on_train_start(self, state: Any) -> None:
        self.counter.step = state.step + 1

    def on_step_end(self, state: Any, out: Any) -> None:
        self.counter.step = state.step + 1


class SyncCounter:
    """The host syncs of each step (1-based, the step's number once done) of a run."""

    def __init__(self) -> None:
        self.step = 0  # 0: before the first step (set-up)
        self.per_step: dict[int, Counter] = defaultdict(Counter)

    def train(self, cfg: Any, run_dir: Path, data: Any = None) -> dict[int, Counter]:
        where = _Where(self.record)
        with where, _Ops(where):
            ganforge.train(cfg, out=run_dir, verbose=False, data=data, callbacks=[_Steps(self)])
        return self.per_step

    def record(self, what: str) -> None:
        if TRACE:
            what += " at " + _caller()
        self.per_step[self.step][what] += 1


TRACE = os.environ.get("GANFORGE_SYNC_TRACE") == "1"  # name the line of each sync


def _caller() -> str:
    """The innermost line of ganforge (or torch's optim/swa) on the stack."""
    for frame in reversed(traceback.extract_stack()[:-3]):
        if "/ganforge/" in frame.filename or "swa_utils" in frame.filename:
            return f"{Path(frame.filename).name}:{frame.lineno}"
    return "?"


def quiet_steps(cfg: Any, total: int) -> list[int]:
    """The steady-state steps between log steps: all but the first and the log steps."""
    return [s for s in range(2, total) if s % cfg.train.log_every]


def syncs_between_logs(per_step: dict[int, Counter], cfg: Any, total: int) -> Counter:
    """The syncs of ``quiet_steps``, summed."""
    out: Counter = Counter()
    for s in quiet_steps(cfg, total):
        out.update(per_step.get(s, Counter()))
    return out
