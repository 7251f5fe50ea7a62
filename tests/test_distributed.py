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
from ganforge.cli import main
from ganforge.config import load_config
from ganforge.engine import distributed
from ganforge.engine.loop import train
from ganforge.errors import ConfigError, PeerLost

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
    """Kill rank 1 of a `train --nproc 2` job: rank 0 stops at once with one line, exit code 4,
    and the launcher sums up in one line naming rank 1 and its signal."""
    run_dir, logs = tmp_path / "run", tmp_path / "logs"
    args = [*ARGS, "--set", "train.iterations=1000000", "--set", "train.log_every=20"]
    env = _env() | {"PET_LOG_DIR": str(logs), "PET_REDIRECTS": "2"}  # each rank's stderr: a file
    proc = subprocess.Popen(
        [sys.executable, "-m", "ganforge", "train", "--nproc", "2", *args, "--out", str(run_dir)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while not (run_dir / "log.jsonl").is_file() or not (run_dir / "log.jsonl").stat().st_size:
            assert proc.poll() is None and time.monotonic() < deadline, "job did not start"
            time.sleep(0.2)
        workers = _workers(proc.pid)  # the launcher is torchrun's agent: the workers' parent
        assert sorted(workers) == [0, 1]
        os.kill(workers[1], signal.SIGKILL)
        t0 = time.monotonic()
        _, err = proc.communicate(timeout=60)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGKILL, (proc.returncode, err[-2000:])
    assert elapsed < 40, elapsed  # no collective hangs
    assert all(not p.exists() for p in (Path(f"/proc/{pid}") for pid in workers.values()))
    # the launcher: torchrun's log lines, then one summary line instead of its traceback
    assert err.splitlines()[-1] == (
        "ganforge: error: the job failed: rank 1 killed by SIGKILL; "
        "rank 0 then lost contact and stopped (code 4)"
    ), err[-2000:]
    assert "Traceback" not in err and "ChildFailedError" not in err, err[-2000:]
    # the survivor (rank 0): exactly one line on stderr, no traceback
    (survivor,) = logs.glob("*/attempt_0/0/stderr.log")
    lines = survivor.read_text().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("ganforge: error: rank 0 of 2: lost contact with another process")
    assert "(its connection closed: it ended or was killed) after step " in lines[0]
    assert lines[0].endswith(
        f"continue from the last checkpoint with 'ganforge train --resume {run_dir} --nproc 2'"
    )
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "failed" and status["error"] == lines[0][len("ganforge: error: ") :]


def test_ctrl_c_stops_every_rank_with_a_checkpoint(tmp_path: Path) -> None:
    """Ctrl-C in a terminal signals the whole process group: the workers get SIGINT, then
    torchrun's agent sends them SIGTERM. The workers still agree on a step and save it."""
    run_dir = tmp_path / "run"
    args = [*ARGS, "--set", "train.iterations=1000000", "--set", "train.log_every=20"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "ganforge", "train", "--nproc", "2", *args, "--out", str(run_dir)],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    try:
        deadline = time.monotonic() + 90
        while not (run_dir / "log.jsonl").is_file() or not (run_dir / "log.jsonl").stat().st_size:
            assert proc.poll() is None and time.monotonic() < deadline, "job did not start"
            time.sleep(0.2)
        workers = _workers(proc.pid)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 128 + signal.SIGINT, (proc.returncode, err[-2000:])
    assert err.splitlines()[-1] == "ganforge: stopped by SIGINT", err[-2000:]
    assert all(not p.exists() for p in (Path(f"/proc/{pid}") for pid in workers.values()))
    state = json.loads((run_dir / "checkpoints" / "last" / "state.json").read_text())
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "interrupted", status
    assert state["step"] >= 20, state["step"]  # past the first log record: a real save


def test_peer_failures_are_told_from_bugs() -> None:
    gloo_closed = RuntimeError(
        "[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:561] Connection closed by peer "
        "[127.0.0.1]:30903. This is typically caused by a remote worker crashing."
    )
    gloo_timeout = RuntimeError(
        "[/pytorch/third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting "
        "3000ms for recv operation to complete"
    )
    reason = distributed.lost_peer_reason
    assert reason(gloo_closed, 900) == "its connection closed: it ended or was killed"
    assert reason(gloo_timeout, 30) == "no answer within train.dist_timeout=30 s"
    nccl = torch.distributed.DistBackendError("NCCL communicator was aborted on rank 1")
    assert reason(nccl, 900) == "its connection closed: it ended or was killed"
    assert reason(torch.distributed.DistNetworkError("store gone"), 900) is not None
    # ordinary errors stay bugs: no backend named, or a backend error that is not about a peer
    assert reason(RuntimeError("Connection closed by peer"), 900) is None
    assert reason(RuntimeError("mat1 and mat2 shapes cannot be multiplied"), 900) is None
    assert reason(RuntimeError("DataLoader timed out after 5 seconds"), 900) is None
    assert reason(RuntimeError("gloo: expected tensors of equal size"), 900) is None
    assert reason(ValueError("gloo connection closed"), 900) is None
    # one process: never converted; two: a PeerLost with exit code 4 naming rank and resume
    assert distributed.peer_lost(gloo_closed, distributed.Dist(), Path("r"), 900) is None
    old = signal.getsignal(signal.SIGTERM)
    try:
        lost = distributed.peer_lost(gloo_closed, distributed.Dist(1, 2), Path("runs/x"), 900)
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN  # the agent's SIGTERM
    finally:
        signal.signal(signal.SIGTERM, old)
    assert isinstance(lost, PeerLost) and lost.exit_code == 4
    assert str(lost).startswith("rank 1 of 2: lost contact with another process")
    assert str(lost).endswith("'ganforge train --resume runs/x --nproc 2'")


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
    from torch.distributed import run as torchrun

    calls = []
    monkeypatch.setattr(torchrun, "run", lambda a: calls.append(a))
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["train", "-r", "gaussian-2d", "--nproc", "3", "--seed", "4", "-q"]) == 0
    (a,) = calls
    assert a.standalone and a.nproc_per_node == "3"
    assert a.module and a.training_script == "ganforge"
    rest = a.training_script_args[a.training_script_args.index("train") + 1 :]
    assert "--nproc" not in rest and rest[:5] == ["-r", "gaussian-2d", "--seed", "4", "-q"]
    assert rest[5] == "--out" and rest[6].startswith("runs/gaussian-2d-")  # chosen once, here


def test_nproc_sums_up_a_failed_job(monkeypatch, capsys, tmp_path: Path) -> None:
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    def fail(codes: dict[int, int]):
        def run(_args) -> None:
            failures = {r: ProcessFailure(r, 100 + r, c, "<N/A>") for r, c in codes.items()}
            raise ChildFailedError("ganforge", failures)

        return run

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    argv = ["train", "-r", "gaussian-2d", "--nproc", "3", "--out", str(tmp_path / "r")]
    monkeypatch.setattr(torchrun, "run", fail({0: 4, 1: -9, 2: 4}))
    assert main(argv) == 128 + 9
    assert capsys.readouterr().err == (
        "ganforge: error: the job failed: rank 1 killed by SIGKILL; ranks 0, 2 then lost "
        "contact and stopped (code 4)\n"
    )
    monkeypatch.setattr(torchrun, "run", fail({0: 3, 1: 3}))  # Diverged on every rank
    assert main(argv) == 3
    assert capsys.readouterr().err == (
        "ganforge: error: the job failed: rank 0 exited with code 3; rank 1 exited with code 3\n"
    )
