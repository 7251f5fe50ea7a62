"""Data-parallel training: 2 CPU processes (gloo) under torchrun against 1 process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import ganforge
from ganforge import distributed
from ganforge.cli import main
from ganforge.config import load_config
from ganforge.errors import ConfigError
from ganforge.train.loop import train

SRC = str(Path(ganforge.__file__).resolve().parents[1])
# gaussian-2d: linear G, MLP D, no BatchNorm or dropout; global batch 8 = 2 ranks x 4.
# Adam's eps is raised from 1e-8: D's bias gradients start near 1e-9, where Adam's g/sqrt(v)
# amplifies float32 summation-order rounding (~1e-11) into ~1e-5 parameter differences.
ARGS = [
    "-r",
    "gaussian-2d",
    "--set",
    "optim.d.eps=1e-2",
    "--set",
    "optim.g.eps=1e-2",
    "--set",
    "data.points=64",
    "--set",
    "train.iterations=12",
    "--set",
    "train.log_every=4",
    "--set",
    "train.report=false",
    "--device",
    "cpu",
    "-q",
]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def _torchrun(nproc: int, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(nproc),
        "-m",
        "ganforge",
        "train",
        *args,
    ]


def _max_diff(a: Path, b: Path) -> float:
    """Largest absolute difference over G's and D's tensors of two checkpoints."""
    worst = 0.0
    for name in ("g", "d"):
        ta, tb = load_file(a / f"{name}.safetensors"), load_file(b / f"{name}.safetensors")
        assert ta.keys() == tb.keys()
        for k in ta:
            worst = max(worst, (ta[k] - tb[k]).abs().max().item())
    return worst


@pytest.fixture(scope="module")
def two_proc_run(tmp_path_factory) -> Path:
    """A 2-process run of gaussian-2d under torchrun (gloo)."""
    root = tmp_path_factory.mktemp("ddp")
    run_dir = root / "run2"
    cmd = _torchrun(2, *ARGS, "--out", str(run_dir))
    proc = subprocess.run(cmd, cwd=root, env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def test_two_processes_write_one_run_dir(two_proc_run: Path) -> None:
    root = two_proc_run.parent
    assert [p.name for p in root.iterdir()] == ["run2"]  # rank 1 wrote nothing anywhere
    env = json.loads((two_proc_run / "env.json").read_text())
    assert env["world_size"] == 2
    records = [json.loads(ln) for ln in (two_proc_run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [4, 8, 12]  # one writer: no duplicated lines
    assert records[-1]["images"] == 12 * 8  # global batch
    keys = load_file(two_proc_run / "checkpoints" / "last" / "d.safetensors").keys()
    assert not any(k.startswith("module.") for k in keys)  # unwrapped state dicts


def test_two_processes_equal_one_process(two_proc_run: Path, tmp_path: Path) -> None:
    overrides = [a for a in ARGS[3::2] if "=" in a] + ["train.device=cpu"]
    one = tmp_path / "run1"
    train(load_config("gaussian-2d", overrides), one, verbose=False)
    diff = _max_diff(two_proc_run / "checkpoints" / "last", one / "checkpoints" / "last")
    assert diff < 1e-5, diff
    logs = [
        [json.loads(ln) for ln in (d / "log.jsonl").read_text().splitlines()]
        for d in (two_proc_run, one)
    ]
    for r2, r1 in zip(*logs, strict=True):  # rank-averaged losses = the global batch's
        for k in ("loss_d", "loss_g", "d_real", "d_fake"):
            assert abs(r2[k] - r1[k]) < 1e-5, (k, r2[k], r1[k])


def test_checkpoint_of_two_processes_resumes_on_one(two_proc_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.png"
    assert main(["sample", str(two_proc_run), "-n", "16", "-o", str(out), "--device", "cpu"]) == 0
    assert out.stat().st_size > 0
    run = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(two_proc_run), str(run)], check=True)
    rc = main(["train", "--resume", str(run), "-q", "--set", "train.iterations=16"])
    assert rc == 0
    records = [json.loads(ln) for ln in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [4, 8, 12, 16]
    assert json.loads((run / "checkpoints" / "last" / "state.json").read_text())["step"] == 16


def _workers(parent: int) -> dict[int, int]:
    """rank -> pid of the worker processes torchrun started (a /proc scan of its children)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(next(ln for ln in status.splitlines() if ln.startswith("PPid:")).split()[1])
        if ppid != parent:
            continue
        for var in environ:
            if var.startswith(b"RANK="):
                found[int(var[5:])] = int(entry.name)
    return found


def test_killed_rank_ends_the_job(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = [*ARGS, "--set", "train.iterations=1000000", "--set", "train.log_every=20"]
    proc = subprocess.Popen(
        _torchrun(2, *args, "--out", str(run_dir)),
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while not (run_dir / "log.jsonl").is_file() or not (run_dir / "log.jsonl").stat().st_size:
            assert proc.poll() is None and time.monotonic() < deadline, "job did not start"
            time.sleep(0.2)
        workers = _workers(proc.pid)
        assert sorted(workers) == [0, 1]
        os.kill(workers[1], signal.SIGKILL)
        t0 = time.monotonic()
        _, err = proc.communicate(timeout=60)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert elapsed < 40, elapsed  # torchrun tears the survivor down; no collective hangs
    assert "SIGKILL" in err or "Signal 9" in err or "exitcode" in err, err[-2000:]
    assert all(not p.exists() for p in (Path(f"/proc/{pid}") for pid in workers.values()))


def test_global_batch_divides_over_ranks() -> None:
    two = distributed.Dist(rank=1, world=2)
    assert distributed.local_batch(8, False, two) == (8, 4)
    assert distributed.local_batch(8, True, two) == (16, 8)
    with pytest.raises(ConfigError, match="does not divide"):
        distributed.local_batch(7, False, two)
    batch = torch.arange(8)
    shards = [distributed.Dist(r, 2).shard(batch) for r in (0, 1)]
    assert torch.equal(torch.cat(shards), batch)  # the union is the single-process batch
    assert distributed.Dist().shard(batch) is batch  # one process: untouched


def test_sync_bn_needs_cuda() -> None:
    with pytest.raises(ConfigError, match="sync_bn needs CUDA"):
        distributed.sync_batchnorm(torch.nn.BatchNorm1d(3), torch.device("cpu"))


def test_torchrun_without_out_is_refused(monkeypatch, capsys) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["train", "-r", "gaussian-2d"]) == 2
    assert "--out" in capsys.readouterr().err


def test_nproc_launches_torchrun(monkeypatch, tmp_path: Path) -> None:
    calls = []
    monkeypatch.setattr(subprocess, "call", lambda cmd: calls.append(cmd) or 0)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["train", "-r", "gaussian-2d", "--nproc", "3", "--seed", "4", "-q"]) == 0
    (cmd,) = calls
    assert cmd[1:4] == ["-m", "torch.distributed.run", "--standalone"]
    assert cmd[4:6] == ["--nproc-per-node", "3"]
    rest = cmd[cmd.index("train") + 1 :]
    assert "--nproc" not in rest and rest[:5] == ["-r", "gaussian-2d", "--seed", "4", "-q"]
    assert rest[5] == "--out" and rest[6].startswith("runs/gaussian-2d-")  # chosen once, here
