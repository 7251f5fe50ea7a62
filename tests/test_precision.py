"""train.precision (fp32, bf16, fp16, auto) and train.tf32: choice, fp32 state, exact resume."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch
from test_reliability import FAST

from ganforge import checkpoint as ckpt
from ganforge.config import load_config
from ganforge.engine import loop, precision
from ganforge.engine.loop import build_models, train
from ganforge.engine.step import train_step
from ganforge.errors import ConfigError, GanforgeError
from ganforge.report.html import _facts
from ganforge.report.runlog import read_log

from killer import differences

CPU = torch.device("cpu")


def _flags(monkeypatch, flags: set[str], ratio: float = 2.1) -> None:
    monkeypatch.setattr(precision, "cpu_info", lambda: ("test CPU", flags))
    monkeypatch.setattr(precision, "matmul_ratio", lambda: ratio)


@pytest.mark.parametrize("value", ["fp64", "BF16", "half"])
def test_unknown_precision_is_one_line(value):
    with pytest.raises(ConfigError) as e:
        load_config("vanilla-fmnist", [f"train.precision={value}"])
    assert "train.precision" in str(e.value) and "\n" not in str(e.value)


def test_defaults_stay_fp32_and_tf32_off():
    cfg = load_config("vanilla-fmnist")
    assert (cfg.train.precision, cfg.train.tf32) == ("fp32", False)
    cfg = load_config("vanilla-fmnist", ["train.precision=auto", "train.tf32=true"])
    assert (cfg.train.precision, cfg.train.tf32) == ("auto", True)


def test_fp16_is_refused_on_the_cpu(tmp_path, tiny_images):
    with pytest.raises(ConfigError, match="fp16 is for CUDA"):
        precision.choose("fp16", CPU)
    cfg = load_config("vanilla-fmnist", FAST + ["train.iterations=2", "train.precision=fp16"])
    with pytest.raises(ConfigError) as e:
        train(cfg, tmp_path / "run", verbose=False, data=tiny_images)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_auto_on_cpus(monkeypatch):
    _flags(monkeypatch, {"avx2", "fma"})
    c = precision.choose("auto", CPU)
    assert (c.chosen, c.line()) == ("fp32", "precision auto -> fp32 (this CPU has no "
                                    "avx512_bf16 or amx_bf16)")  # fmt: skip
    _flags(monkeypatch, {"avx512f", "avx512_bf16"}, 2.1)
    c = precision.choose("auto", CPU)
    assert c.line() == "precision auto -> bf16 (avx512_bf16; bf16 matmul 2.1x fp32)"
    _flags(monkeypatch, {"amx_bf16"}, 1.1)  # the flag, but not clearly faster: fp32
    assert precision.choose("auto", CPU).chosen == "fp32"
    assert precision.choose("bf16", CPU).line() == "precision bf16"  # explicit wins


def test_auto_on_cuda_follows_bf16_support(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Test GPU")
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    line = precision.choose("auto", cuda).line()
    assert line == "precision auto -> bf16 (Test GPU supports bf16)"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert precision.choose("auto", cuda).chosen == "fp32"
    assert precision.choose("fp16", cuda).chosen == "fp16"


def test_matmul_probe_measures_a_ratio():
    r = precision.matmul_ratio(n=32, reps=1)
    assert 0 < r < float("inf")


def test_auto_is_recorded_in_first_line_env_config_and_report(
    tmp_path, tiny_images, monkeypatch, capsys
):
    _flags(monkeypatch, {"avx512_bf16"}, 2.1)
    cfg = load_config("vanilla-fmnist", FAST + ["train.iterations=2", "train.precision=auto"])
    train(cfg, tmp_path / "run", verbose=True, data=tiny_images)
    first = capsys.readouterr().out.strip().splitlines()[0]
    assert "precision auto -> bf16 (avx512_bf16; bf16 matmul 2.1x fp32)" in first
    env = json.loads((tmp_path / "run" / "env.json").read_text())
    assert env["precision"] == {
        "asked": "auto",
        "chosen": "bf16",
        "why": "avx512_bf16; bf16 matmul 2.1x fp32",
    }
    assert env["tf32"] is False
    assert "precision: bf16" in (tmp_path / "run" / "config.yaml").read_text()  # resumes so
    facts = dict(_facts(tmp_path / "run", {"train": {}}, read_log(tmp_path / "run"), env))
    assert facts["precision"] == "auto -> bf16 (avx512_bf16; bf16 matmul 2.1x fp32)"


def test_tf32_is_ignored_on_the_cpu_with_a_note(tmp_path, tiny_images, capsys):
    cfg = load_config("vanilla-fmnist", FAST + ["train.iterations=1", "train.tf32=true"])
    train(cfg, tmp_path / "run", verbose=True, data=tiny_images)
    assert "note: train.tf32 is for CUDA GPUs; ignored on cpu" in capsys.readouterr().out


def test_bf16_keeps_weights_optimizer_ema_and_losses_fp32(tiny_images):
    cfg = load_config("vanilla-fmnist", FAST + ["train.precision=bf16", "model.ema=0.9"])
    m = build_models(cfg, tiny_images.shape, CPU)
    assert m.scaler is None  # bf16 needs no loss scaling
    gen = torch.Generator().manual_seed(0)
    real = tiny_images.batch(torch.arange(32))
    z = torch.randn(32, cfg.model.z_dim, generator=gen)
    before = [p.detach().clone() for p in m.g.parameters()]
    out = train_step(m, cfg, real, z, 0)
    assert m.g_ema is not None
    m.g_ema.update_parameters(m.g)
    assert all(v.dtype == torch.float32 for v in out.values())  # the losses' reductions
    after = list(m.g.parameters())
    assert any(not torch.equal(a, p) for a, p in zip(before, after, strict=True))  # it stepped
    for net in (m.g, m.d, m.g_ema.module):
        assert {p.dtype for p in net.parameters()} == {torch.float32}
    for opt in (m.opt_g, m.opt_d):
        states = [t for s in opt.state.values() for t in s.values() if t.is_floating_point()]
        assert states and {t.dtype for t in states} == {torch.float32}


def test_bf16_run_stopped_and_resumed_is_bitwise_exact(tmp_path, tiny_images, monkeypatch):
    cfg = load_config("vanilla-fmnist", FAST + ["train.iterations=6", "train.precision=bf16"])
    train(cfg, tmp_path / "ref", verbose=False, data=tiny_images)
    real_step, calls = loop.train_step, {"n": 0}

    def step_then_signal(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # as a preemption would
        return real_step(*a, **kw)

    monkeypatch.setattr(loop, "train_step", step_then_signal)
    with pytest.raises(GanforgeError, match="after step 3"):
        train(cfg, tmp_path / "run", verbose=False, data=tiny_images)
    monkeypatch.setattr(loop, "train_step", real_step)
    train(cfg, tmp_path / "run", resume=True, verbose=False, data=tiny_images)
    assert differences(tmp_path / "ref", tmp_path / "run") == []


def _scaled_models(cfg, shape):
    m = build_models(cfg, shape, CPU)
    m.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    return m


def test_fp16_step_scales_and_its_scaler_is_checkpointed(tmp_path, tiny_images):
    """fp16's path (autocast + GradScaler), run on the CPU's fp16 autocast; the scaler's
    state goes into state.json and back; checkpoints without one still load."""
    cfg = load_config("vanilla-fmnist", FAST + ["optim.d.clip_value=0.01"])
    cfg16 = load_config("vanilla-fmnist", FAST + ["optim.d.clip_value=0.01"])
    object.__setattr__(cfg16.train, "precision", "fp16")  # past choose(): CPU autocast
    m = _scaled_models(cfg16, tiny_images.shape)
    assert m.scaler is not None
    real = tiny_images.batch(torch.arange(32))
    z = torch.randn(32, cfg.model.z_dim, generator=torch.Generator().manual_seed(0))
    before = [p.detach().clone() for p in m.d.parameters()]
    out = train_step(m, cfg16, real, z, 0)
    assert torch.isfinite(out["loss_d"]) and torch.isfinite(out["loss_g"])
    after = [p.detach() for p in m.d.parameters()]
    moved = [float((p - b).abs().max()) for b, p in zip(before, after, strict=True)]
    assert max(moved) > 0  # D stepped
    m.scaler.update(1234.0)  # a recognisable scale
    m.scaler._growth_tracker.fill_(7)  # type: ignore[union-attr]
    ckpt.save_checkpoint(tmp_path / "ck", "last", m, {"step": 1})
    meta = json.loads((tmp_path / "ck" / "last" / "state.json").read_text())
    assert meta["grad_scaler"]["scale"] == 1234.0 and meta["grad_scaler"]["_growth_tracker"] == 7

    fresh = _scaled_models(cfg16, tiny_images.shape)
    ckpt.load_checkpoint(tmp_path / "ck" / "last", fresh, CPU)
    assert fresh.scaler is not None
    assert (fresh.scaler.get_scale(), fresh.scaler.state_dict()["_growth_tracker"]) == (1234.0, 7)

    plain = build_models(cfg, tiny_images.shape, CPU)  # an fp32 run's checkpoint: no scaler
    ckpt.save_checkpoint(tmp_path / "old", "last", plain, {"step": 1})
    assert "grad_scaler" not in json.loads((tmp_path / "old/last/state.json").read_text())
    fresh = _scaled_models(cfg16, tiny_images.shape)
    ckpt.load_checkpoint(tmp_path / "old" / "last", fresh, CPU)
    assert fresh.scaler is not None and fresh.scaler.get_scale() == 2.0**10  # a fresh scale


def test_damaged_scaler_state_is_a_checkpoint_error(tmp_path, tiny_images):
    cfg = load_config("vanilla-fmnist", FAST)
    m = _scaled_models(cfg, tiny_images.shape)
    ckpt.save_checkpoint(tmp_path / "ck", "last", m, {"step": 1})
    path = tmp_path / "ck" / "last" / "state.json"
    meta = json.loads(path.read_text())
    meta["grad_scaler"]["scale"] = -1.0
    path.write_text(json.dumps(meta))
    manifest = tmp_path / "ck" / "last"
    _rehash(manifest)
    with pytest.raises(ckpt.CheckpointError, match="grad_scaler"):
        ckpt.load_checkpoint(manifest, _scaled_models(cfg, tiny_images.shape), CPU)


def _rehash(path):
    """Rewrite the manifest's hashes after an edit: a consistent save of a bad value."""
    man = json.loads((path / "manifest.json").read_text())
    man["files"] = {n: ckpt.sha256_file(path / n) for n in man["files"]}
    (path / "manifest.json").write_text(json.dumps(man))


def test_tf32_sets_the_cuda_switches_only_for_cuda(tiny_images):
    cfg = load_config("vanilla-fmnist", ["train.tf32=true"])
    switches = torch.backends.cuda.matmul, torch.backends.cudnn
    before = [s.allow_tf32 for s in switches]  # torch's defaults: matmul off, cuDNN on
    try:
        for s in switches:
            s.allow_tf32 = False
        precision.resolve(cfg, CPU)  # the CPU leaves them as they are
        assert not any(s.allow_tf32 for s in switches)
        precision.resolve(cfg, torch.device("cuda"))  # fp32: nothing else touches the GPU
        assert all(s.allow_tf32 for s in switches)
        precision.resolve(load_config("vanilla-fmnist"), torch.device("cuda"))
        assert not any(s.allow_tf32 for s in switches)
    finally:
        for s, value in zip(switches, before, strict=True):
            s.allow_tf32 = value


def test_auto_under_a_process_group_takes_rank_0s_choice(monkeypatch):
    """A CPU job agrees on rank 0's choice (a broadcast; here a group of one process)."""
    import socket

    import torch.distributed as tdist

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    _flags(monkeypatch, {"avx512_bf16"}, 2.1)
    cfg = load_config("vanilla-fmnist", ["train.precision=auto"])
    tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        out, c = precision.resolve(cfg, CPU)
    finally:
        tdist.destroy_process_group()
    assert (out.train.precision, c.chosen) == ("bf16", "bf16")
