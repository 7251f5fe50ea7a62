"""Arithmetic precision of a run: ``train.precision`` (fp32, bf16, fp16, auto) and ``train.tf32``.

``auto`` picks bf16 only where this process's device runs it fast: a CUDA GPU that supports
bf16, or a CPU with bf16 instructions (AVX512_BF16 or AMX) whose bf16 matmul, timed here in
process CPU time, is clearly faster than fp32's; fp32 everywhere else. The choice and its
reason go to the run's first line and env.json; config.yaml records the chosen value, so a
resumed run computes in the same precision as the run it continues.

Under autocast only the matmuls and convolutions run in bf16/fp16: the master weights, the
optimizer state and the EMA stay fp32, and the losses are reduced in fp32 (engine/step.py).
"""

from __future__ import annotations

import contextlib
import platform
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..config import Config
from ..errors import ConfigError

ISA_FLAGS = ("fma", "avx2", "avx512f", "avx512_bf16", "amx_bf16")  # what perf.py records
BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # CPU instructions that compute in bf16
PROBE_N = 256  # the probe's square matmul: the size of the recipes' larger layers
FAST_ENOUGH = 1.3  # bf16 is chosen when its matmul is at least this much faster than fp32's


@dataclass(frozen=True)
class Choice:
    """The precision a run computes in, and why (``auto``'s reason, or ``asked``)."""

    asked: str
    chosen: str
    why: str

    def line(self) -> str:
        """``precision auto -> bf16 (avx512_bf16; bf16 matmul 2.1x fp32)``, or the value."""
        if self.asked != "auto":
            return f"precision {self.chosen}"
        return f"precision auto -> {self.chosen} ({self.why})"


def cpu_info() -> tuple[str, set[str]]:
    """The CPU's model name and its flags (from /proc/cpuinfo on Linux; torch's view else)."""
    model, flags = platform.processor() or platform.machine(), set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in (platform.machine(), ""):
                model = value.strip()
            elif key.strip() in ("flags", "Features") and not flags:
                flags = set(value.split())
    if not flags:  # not Linux: the capability torch's CPU kernels were dispatched for
        cap = torch.backends.cpu.get_cpu_capability().lower()  # e.g. "avx512", "avx2"
        flags = {"avx2"} if cap.startswith("avx") else set()
        flags |= {"avx512f"} if cap.startswith("avx512") else set()
        flags |= {"avx512_bf16"} if "bf16" in cap or "amx" in cap else set()
    return model, flags


def matmul_ratio(n: int = PROBE_N, reps: int = 5) -> float:
    """fp32 over bf16 process CPU time of an (n, n) @ (n, n) matmul, best of ``reps``:
    how many times faster bf16 runs here (timed in CPU time: a loaded machine's other
    processes do not count)."""
    times = {}
    for dtype in (torch.float32, torch.bfloat16):
        a = torch.randn(n, n, generator=torch.Generator().manual_seed(0)).to(dtype)
        torch.mm(a, a)  # warm-up: oneDNN picks and caches its kernel
        best = float("inf")
        for _ in range(reps):
            t = time.process_time()
            for _ in range(4):
                torch.mm(a, a)
            best = min(best, time.process_time() - t)
        times[dtype] = max(best, 1e-9)
    return times[torch.float32] / times[torch.bfloat16]


def choose(asked: str, device: torch.device) -> Choice:
    """Resolve ``train.precision`` for ``device``; fp16 on a CPU is a one-line error."""
    if asked == "fp16" and device.type != "cuda":
        raise ConfigError(
            "train.precision=fp16 is for CUDA GPUs (with a loss scaler); "
            "on the CPU use bf16 or fp32"
        )
    if asked != "auto":
        return Choice(asked, asked, "asked")
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return Choice(asked, "bf16", f"{torch.cuda.get_device_name(device)} supports bf16")
        return Choice(asked, "fp32", "this GPU has no bf16 support")
    if device.type != "cpu":
        return Choice(asked, "fp32", f"no bf16 rule for {device.type}")
    _, flags = cpu_info()
    have = [f for f in BF16_FLAGS if f in flags]
    if not have:
        return Choice(asked, "fp32", "this CPU has no avx512_bf16 or amx_bf16")
    ratio = matmul_ratio()
    what = f"{'+'.join(have)}; bf16 matmul {ratio:.1f}x fp32"
    return Choice(asked, "bf16" if ratio >= FAST_ENOUGH else "fp32", what)


def resolve(cfg: Config, device: torch.device) -> tuple[Config, Choice]:
    """``cfg`` with ``train.precision`` resolved for ``device``, and the choice; also applies
    ``train.tf32`` (CUDA matmuls and convolutions; nothing on the CPU)."""
    c = choose(cfg.train.precision, device)
    if cfg.train.precision == "auto" and device.type == "cpu" and _joined():
        c = _agree(c)  # a timed probe may differ between processes: rank 0's choice holds
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = cfg.train.tf32
        torch.backends.cudnn.allow_tf32 = cfg.train.tf32
    return replace(cfg, train=replace(cfg.train, precision=c.chosen)), c


def _joined() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _agree(c: Choice) -> Choice:
    """Rank 0's choice on every process of a CPU (gloo) job."""
    names = ("fp32", "bf16")
    flag = torch.tensor([names.index(c.chosen)])
    torch.distributed.broadcast(flag, src=0)
    chosen = names[int(flag)]
    return c if chosen == c.chosen else Choice(c.asked, chosen, f"rank 0's choice; here {c.why}")


def tf32_note(cfg: Config, device: torch.device) -> str | None:
    """The note for ``train.tf32=true`` where it does nothing (not CUDA), else None."""
    if cfg.train.tf32 and device.type != "cuda":
        return f"note: train.tf32 is for CUDA GPUs; ignored on {device.type}"
    return None


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 or fp16 autocast on ``device`` when asked for, else nothing (fp32)."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "fp16":
        return torch.autocast(device.type, dtype=torch.float16)
    return contextlib.nullcontext()


def make_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """fp16's loss scaler (its small exponent range underflows unscaled gradients), else None."""
    if precision != "fp16":
        return None
    return torch.amp.GradScaler(device.type)
