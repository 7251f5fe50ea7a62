"""Reliability: exact resume after kills, crash-safe checkpoints, signals, divergence, locks."""

from __future__ import annotations

import json
import os
import pickle
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ganforge import checkpoint as ckpt
from ganforge.cli import main
from ganforge.config import load_config
from ganforge.engine import loop
from ganforge.engine.guard import RunLock, StopSignals
from ganforge.engine.loop import build_models, train
from ganforge.engine.resume import resume_point
from ganforge.errors import EXIT_DIVERGED, CheckpointError, Diverged, GanforgeError

from conftest import write_idx
from killer import cli, differences, strip_log, train_with_kills

FAST = [
    "train.batch_size=32",
    "train.log_every=1",
    "train.device=cpu",
    "data.download=false",
    "train.report=false",
]
SRC = Path(__file__).resolve().parents[1] / "src"


def _assert_same_checkpoint(a: Path, b: Path) -> None:
    assert differences(a, b) == []


# ---------------------------------------------------------------- exact resume under SIGKILL


def test_sigkill_at_random_moments_then_resume_is_bitwise_exact(tmp_path):
    """Six SIGKILLs at random steps (some land in a save: one every 5 steps), each followed
    by --resume; the end state equals an uninterrupted run bit for bit. gaussian-2d needs no
    data files and has tiny checkpoints."""
    total = 600
    common = [
        "-r",
        "gaussian-2d",
        "--set",
        f"train.iterations={total}",
        "--set",
        "train.checkpoint_every=5",
        "--set",
        "train.log_every=1",
        "--set",
        "train.sample_every=300",
        "--set",
        "train.report=false",
        "--device",
        "cpu",
        "-q",
    ]
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}  # tiny nets: 1 is faster
    ref = tmp_path / "ref"
    subprocess.run(
        cli("train", "--out", str(ref), *common), check=True, env=env, capture_output=True
    )

    run = tmp_path / "run"
    rng = random.Random(7)
    kills = train_with_kills(run, common, rng.sample(range(20, total - 20), 6), env, rng)
    assert len(kills) == 6
    _assert_same_checkpoint(ref, run)


# ---------------------------------------------------------------- signals


@pytest.mark.parametrize(
    "sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGHUP, 129)]
)
def test_signal_saves_a_checkpoint_and_exits(tmp_path, sig, code):
    data = write_idx(tmp_path / "fm", n_train=64)
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}  # tiny nets: 1 is faster
    proc = subprocess.Popen(
        cli(
            "train",
            "--out",
            str(run),
            "--data",
            str(data),
            "--set",
            "train.batch_size=16",
            "--set",
            "train.iterations=1000000",
            "--set",
            "train.log_every=1",
            "--device",
            "cpu",
            "--set",
            "data.download=false",
        ),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in proc.stdout:  # wait until training is under way
        if line.startswith("step "):
            break
    t0 = time.perf_counter()
    proc.send_signal(sig)
    proc.wait(timeout=60)
    assert time.perf_counter() - t0 < 15
    assert proc.returncode == code
    assert "checkpoint saved" in proc.stderr.read()
    state = json.loads((run / "checkpoints" / "last" / "state.json").read_text())
    assert state["step"] > 0
    assert json.loads((run / "status.json").read_text())["status"] in ("interrupted", "failed")


def test_signal_handlers_are_restored():
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with StopSignals() as stop:
        assert signal.getsignal(signal.SIGTERM) != before[0]
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        assert stop.requested
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_only_the_same_signal_twice_stops_at_once():
    """SIGINT then SIGTERM (Ctrl-C under torchrun: the terminal, then the agent) keeps the
    graceful stop; a second SIGINT (Ctrl-C twice) interrupts at once."""
    with StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        assert stop.requested and stop.signum == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)


def test_preempted_run_resumes_exactly(tmp_path, tiny_images, monkeypatch):
    """A stop requested at step 5 (as a signal would) then a resume equals an unbroken run."""
    cfg = load_config("vanilla-fmnist", FAST + ["train.iterations=12"])
    train(cfg, tmp_path / "ref", verbose=False, data=tiny_images)

    real_step = loop.train_step
    calls = {"n": 0}

    def step_then_signal(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 5:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_step(*a, **kw)

    monkeypatch.setattr(loop, "train_step", step_then_signal)
    with pytest.raises(GanforgeError) as e:
        train(cfg, tmp_path / "run", verbose=False, data=tiny_images)
    assert e.value.exit_code == 143 and "after step 5" in str(e.value)
    monkeypatch.setattr(loop, "train_step", real_step)
    train(cfg, tmp_path / "run", resume=True, verbose=False, data=tiny_images)
    _assert_same_checkpoint(tmp_path / "ref", tmp_path / "run")


# ---------------------------------------------------------------- divergence


def _poison(monkeypatch, at_call: int, once: bool = True, target: str = "loss"):
    real_step = loop.train_step
    calls = {"n": 0}

    def step(models, *a, **kw):
        calls["n"] += 1
        out = real_step(models, *a, **kw)
        if calls["n"] == at_call or (not once and calls["n"] > at_call):
            if target == "loss":
                out["loss_g"] = torch.tensor(float("nan"))
            else:
                with torch.no_grad():
                    next(models.g.parameters()).fill_(float("inf"))
        return out

    monkeypatch.setattr(loop, "train_step", step)


def test_nan_loss_stops_in_that_step(tmp_path, tiny_images, monkeypatch):
    cfg = load_config("vanilla-fmnist", FAST + ["train.iterations=20", "train.sample_every=4"])
    _poison(monkeypatch, at_call=7)
    with pytest.raises(Diverged) as e:
        train(cfg, tmp_path / "run", verbose=False, data=tiny_images)
    msg = str(e.value)
    assert "step 7" in msg and "generator" in msg and "loss_g" in msg
    assert e.value.exit_code == EXIT_DIVERGED
    state = json.loads((tmp_path / "run" / "checkpoints" / "last" / "state.json").read_text())
    assert state["step"] == 4  # the last good one; nothing after the NaN was saved
    assert max(r["step"] for r in strip_log(tmp_path / "run")) == 6


def test_non_finite_parameters_never_become_a_checkpoint(tmp_path, tiny_images, monkeypatch):
    cfg = load_config(
        "vanilla-fmnist",
        FAST + ["train.iterations=20", "train.sample_every=4", "train.log_every=100"],
    )
    _poison(monkeypatch, at_call=8, target="param")
    with pytest.raises(Diverged, match="generator parameter"):
        train(cfg, tmp_path / "run", verbose=False, data=tiny_images)
    last = tmp_path / "run" / "checkpoints" / "last"
    assert json.loads((last / "state.json").read_text())["step"] == 4
    assert all(torch.isfinite(t).all() for t in load_file(last / "g.safetensors").values())


def test_rollback_retries_at_half_the_learning_rate(tmp_path, tiny_images, monkeypatch):
    cfg = load_config(
        "vanilla-fmnist", FAST + ["train.iterations=12", "train.sample_every=4", "train.rollback=2"]
    )
    _poison(monkeypatch, at_call=7)
    result = train(cfg, tmp_path / "run", verbose=False, data=tiny_images)
    assert result["rollbacks"] == 1 and result["steps"] == 12
    state = json.loads((tmp_path / "run" / "checkpoints" / "last" / "state.json").read_text())
    assert state["optim"]["g"]["param_groups"][0]["lr"] == pytest.approx(1e-4)
    assert [r["step"] for r in strip_log(tmp_path / "run")] == list(range(1, 13))


def test_rollback_gives_up_after_its_limit(tmp_path, tiny_images, monkeypatch):
    cfg = load_config(
        "vanilla-fmnist", FAST + ["train.iterations=12", "train.sample_every=4", "train.rollback=2"]
    )
    _poison(monkeypatch, at_call=7, once=False)
    with pytest.raises(Diverged):
        train(cfg, tmp_path / "run", verbose=False, data=tiny_images)


def test_divergence_exit_code_from_thecli(tmp_path, monkeypatch, capsys):
    data = write_idx(tmp_path / "fm", n_train=64)
    _poison(monkeypatch, at_call=2)
    code = main(
        [
            "train",
            "--data",
            str(data),
            "--out",
            str(tmp_path / "r"),
            "-q",
            "--device",
            "cpu",
            "--set",
            "train.batch_size=16",
            "--set",
            "train.iterations=5",
        ]
    )
    assert code == EXIT_DIVERGED
    assert "diverged at step 2" in capsys.readouterr().err


# ---------------------------------------------------------------- checkpoint files


@pytest.fixture
def trained(tmp_path, tiny_images) -> Path:
    cfg = load_config("vanilla-fmnist", FAST + ["train.iterations=6", "train.sample_every=3"])
    train(cfg, tmp_path / "run", verbose=False, data=tiny_images)
    return tmp_path / "run"


def _models():
    cfg = load_config("vanilla-fmnist", FAST)
    return build_models(cfg, (1, 28, 28), torch.device("cpu"))


def test_flipped_bytes_never_load_silently(trained):
    """Fuzz: 150 random byte flips across the checkpoint's files -> a clear error each time."""
    last = trained / "checkpoints" / "last"
    files = sorted(p for p in last.iterdir())
    rng = random.Random(0)
    errors = 0
    for _ in range(150):
        path = rng.choice(files)
        original = path.read_bytes()
        i = rng.randrange(len(original))
        corrupt = bytearray(original)
        corrupt[i] ^= rng.randrange(1, 256)
        path.write_bytes(bytes(corrupt))
        try:
            ckpt.load_checkpoint(last, _models(), torch.device("cpu"))
        except CheckpointError as e:
            errors += 1
            assert "\n" not in str(e)
        finally:
            path.write_bytes(original)
    assert errors == 150
    ckpt.load_checkpoint(last, _models(), torch.device("cpu"))  # the restored one loads


def test_truncated_or_incomplete_checkpoint_is_skipped_on_resume(trained, tiny_images, capsys):
    g = trained / "checkpoints" / "last" / "g.safetensors"
    g.write_bytes(g.read_bytes()[:1000])
    messages = []
    models = _models()
    counters = resume_point(trained, models, torch.device("cpu"), messages.append)
    assert counters["step"] == 3  # "previous" (the checkpoint before "last")
    assert "skipping checkpoint" in messages[0] and "last" in messages[0]
    (trained / "checkpoints" / "previous" / "manifest.json").unlink()
    counters = resume_point(trained, _models(), torch.device("cpu"), messages.append)
    assert counters["step"] == 0 and "no usable checkpoint" in messages[-1]


def test_disk_full_keeps_the_previous_checkpoint(trained, monkeypatch):
    last = trained / "checkpoints" / "last"
    before = {p.name: p.read_bytes() for p in last.iterdir()}
    calls = {"n": 0}
    real = ckpt.save_file

    def full_disk(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        return real(*a, **kw)

    monkeypatch.setattr(ckpt, "save_file", full_disk)
    with pytest.raises(CheckpointError, match="No space left on device.*previous one is kept"):
        ckpt.save_checkpoint(trained / "checkpoints", "last", _models(), {"step": 99})
    assert {p.name: p.read_bytes() for p in last.iterdir()} == before
    assert not list((trained / "checkpoints").glob(".tmp-*"))


def test_leftovers_of_an_interrupted_save_are_cleaned(trained):
    cdir = trained / "checkpoints"
    (cdir / ".tmp-last-123").mkdir()
    (cdir / ".tmp-last-123" / "g.safetensors").write_bytes(b"partial")
    os.replace(cdir / "last", cdir / ".old-last")  # crashed between the two renames
    ckpt.clean_leftovers(cdir)
    assert not (cdir / ".tmp-last-123").exists()
    assert (cdir / "last" / "manifest.json").exists() and not (cdir / ".old-last").exists()


# ---------------------------------------------------------------- no code on load


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickles_are_never_loaded(trained, tmp_path, capsys):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Evil(marker))
    last = trained / "checkpoints" / "last"
    for name in ("g.safetensors", "d.safetensors", "state.safetensors"):
        (last / name).write_bytes(payload)
    # a manifest that vouches for the pickles, so only the format itself protects us
    manifest = json.loads((last / "manifest.json").read_text())
    manifest["files"].update({n: ckpt.sha256_file(last / n) for n in manifest["files"]})
    (last / "manifest.json").write_text(json.dumps(manifest))
    (trained / "checkpoints" / "previous" / "g.safetensors").write_bytes(payload)
    commands = [
        ["sample", str(trained), "-o", str(tmp_path / "s.png")],
        ["sample", str(trained), "--checkpoint", "last", "-o", str(tmp_path / "s.png")],
        ["train", "--resume", str(trained), "-q", "--set", "train.iterations=7"],
        ["evaluate", str(trained)],
        ["report", str(trained)],
    ]
    for argv in commands:
        try:
            main(argv)
        except Exception as e:  # a crash is a bug too, but the point here is the marker
            pytest.fail(f"{argv[0]} raised {type(e).__name__}: {e}")
        assert not marker.exists(), f"{argv[0]} ran code from a pickle"


def test_no_unsafe_torch_load_in_the_source():
    offenders = []
    for path in SRC.rglob("*.py"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if "torch.load(" in line and "weights_only=True" not in line:
                offenders.append(f"{path}:{n}")
            if "pickle.load" in line or "pickle.loads" in line:
                offenders.append(f"{path}:{n}")
    assert not offenders


# ---------------------------------------------------------------- one writer


def test_second_writer_is_refused(trained, capsys):
    with RunLock(trained):
        code = main(["train", "--resume", str(trained), "-q"])
    assert code == 2
    assert "being trained by another process" in capsys.readouterr().err
    with RunLock(trained):  # released again: the lock can be taken
        pass
