"""Keep the C heap's freed memory for the next step (glibc's mallopt): ``train.malloc_tune``.

A CPU training step allocates and frees the same tensors every step. With glibc's defaults
the heap is trimmed back to the OS (brk) whenever more than ``M_TRIM_THRESHOLD`` lies free at
its top, and blocks above ``M_MMAP_THRESHOLD`` are mmapped and unmapped each time; the next
step then faults every page in again, zeroed by the kernel. On folder-plus that was 35,000
minor page faults and a fifth of the CPU time, in the kernel, per step
(docs/performance.md, "Page faults"). Fixed thresholds stop it: blocks up to 32 MiB (glibc's
largest allowed) come from the heap, and the heap is not trimmed below 1 GiB of free top.
The cost: the process keeps up to its peak heap until it exits instead of returning it.

Set once, at training start, through ctypes; it changes nothing but where freed memory goes
(results are bit for bit the same). Skipped where the C library is not glibc, and where the
user set glibc's own ``MALLOC_*_`` variables or ``GLIBC_TUNABLES`` malloc tunables (theirs
win). The settings last for the process: a second run in it finds them set already.
"""

from __future__ import annotations

import ctypes
import os
import platform

M_TRIM_THRESHOLD = -1  # glibc malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit: the most it accepts
TRIM_THRESHOLD = 1 << 30
USER_SETTINGS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_")

_done: bool = False


def user_set() -> bool:
    """Whether the environment already tunes glibc malloc (then ganforge leaves it alone)."""
    return any(k in os.environ for k in USER_SETTINGS) or "glibc.malloc" in os.environ.get(
        "GLIBC_TUNABLES", ""
    )


def tune_malloc(enabled: bool = True) -> bool:
    """Set glibc's trim and mmap thresholds once per process; True if they are set (now or by
    an earlier call). False where disabled, not glibc, or the user tunes malloc."""
    global _done
    if _done:
        return True
    if not enabled or user_set() or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)  # the process's own C library
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # the mmap threshold first: a fixed one also turns off glibc's dynamic raising of both
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    ok = mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok
    _done = ok
    return ok
