"""train.malloc_tune (engine/heap.py): glibc's fixed thresholds stop the heap being trimmed
and faulted in again each step, and ganforge leaves malloc alone when told to."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from ganforge.config import load_config

HEAP = Path(__file__).resolve().parents[1] / "src" / "ganforge" / "engine" / "heap.py"

# A fresh process (malloc's state is per process): loads heap.py alone (no torch), optionally
# tunes, then 20 rounds of 40 blocks of 96 KiB (under glibc's default 128 KiB mmap
# threshold: from the brk heap) written and freed; with the default 128 KiB trim threshold
# each round's free trims the heap and the next round faults every page in again.
CHILD = r"""
import ctypes, importlib.util, json, resource, sys
spec = importlib.util.spec_from_file_location("heap", sys.argv[1])
heap = importlib.util.module_from_spec(spec); spec.loader.exec_module(heap)
tuned = heap.tune_malloc(sys.argv[2] == "1") if sys.argv[2] != "skip" else None
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p; libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
size = 96 << 10
def round_():
    ps = [libc.malloc(size) for _ in range(40)]
    for p in ps:
        ctypes.memset(p, 1, size)
    for p in reversed(ps):
        libc.free(p)
round_()  # the first round faults in any case
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    round_()
f1 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
print(json.dumps({"tuned": tuned, "faults": f1 - f0}))
"""

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")


def child(arg: str, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    clean.pop("GLIBC_TUNABLES", None)
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(HEAP), arg],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


@glibc
def test_tuned_heap_is_not_faulted_in_again_each_round():
    default, tuned = child("skip"), child("1")
    assert tuned["tuned"] is True
    # 20 rounds x 3.75 MiB = 19,200 pages faulted again with glibc's defaults
    assert default["faults"] > 10_000, default
    assert tuned["faults"] < 1_000, tuned


@glibc
def test_switched_off_or_user_tuned_malloc_is_left_alone():
    off = child("0")
    assert off["tuned"] is False and off["faults"] > 10_000, off
    user = child("1", MALLOC_TOP_PAD_="0")
    assert user["tuned"] is False, user
    tunable = child("1", GLIBC_TUNABLES="glibc.malloc.trim_threshold=131072")
    assert tunable["tuned"] is False, tunable


def test_malloc_tune_is_a_train_setting():
    assert load_config("folder-plus", []).train.malloc_tune is True
    assert load_config("folder-plus", ["train.malloc_tune=false"]).train.malloc_tune is False
