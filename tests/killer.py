"""Kill a training subprocess at chosen steps and resume it: shared by the reliability test
and benchmarks/kill_resume.py (which kills far more often)."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "ganforge", *args]


def logged_step(run: Path) -> int:
    """The step of the last complete log record (0 before the first)."""
    try:
        lines = (run / "log.jsonl").read_text().splitlines()
        return json.loads(lines[-1])["step"] if lines else 0
    except (OSError, ValueError, KeyError):
        return 0  # not there yet, or a line being written


def train_with_kills(
    run: Path, common: list[str], kill_steps: list[int], env: dict, rng: random.Random
) -> list[int]:
    """Start (or --resume) the run, SIGKILL it once it logged each of ``kill_steps`` (plus a
    random 0-20 ms, so kills land mid-step, mid-save or mid-log line), then let the last
    attempt finish. Returns the logged step at each kill."""
    kills = []
    for target in [*sorted(kill_steps), None]:
        args = (
            ["train", "--resume", str(run), "-q"]
            if (run / "config.yaml").exists()
            else ["train", "--out", str(run), *common]
        )
        proc = subprocess.Popen(
            cli(*args), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        if target is None:
            _, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err.decode()
            break
        deadline = time.monotonic() + 120
        while logged_step(run) < target and proc.poll() is None:
            assert time.monotonic() < deadline, "training made no progress"
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.02))
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills.append(logged_step(run))
    return kills


def strip_log(run: Path) -> list[dict]:
    """Log records without the timing fields (which differ between any two runs)."""
    recs = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("img_s", "time")} for r in recs]


def differences(a: Path, b: Path) -> list[str]:
    """What differs between two runs' last checkpoints and logs (empty: bitwise equal)."""
    out = []
    for name in ("g", "d", "state"):
        ta = load_file(a / "checkpoints" / "last" / f"{name}.safetensors")
        tb = load_file(b / "checkpoints" / "last" / f"{name}.safetensors")
        if ta.keys() != tb.keys():
            out.append(f"{name}: different tensors")
        out += [f"{name}:{k}" for k in ta if k in tb and not torch.equal(ta[k], tb[k])]
    sa = json.loads((a / "checkpoints" / "last" / "state.json").read_text())
    sb = json.loads((b / "checkpoints" / "last" / "state.json").read_text())
    out += [f"state.json:{k}" for k in sa.keys() | sb.keys() if sa.get(k) != sb.get(k)]
    if strip_log(a) != strip_log(b):
        out.append("log.jsonl")
    return out
