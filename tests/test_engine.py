"""The fast engine (train/step.py) computes the same update as a plainly written loop.

The plain loop follows the seeds' order: G makes a fake batch for D's step; D is trained on
real and detached fake (BCE, summed); then G runs *again* and is trained through the updated
D toward the "real" target. The engine runs G once and reuses the fake batch; in train mode
both forwards give the same tensor, so the parameters must agree. BatchNorm running stats of
G are updated twice by the plain loop and once by the engine: those buffers are compared with
the plain loop's state after its *first* G forward, which is what the engine must match.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from ganforge.checkpoint import load_checkpoint
from ganforge.config import load_config
from ganforge.engine.loop import build_models, train
from ganforge.engine.step import train_step

from runhelpers import assert_same_checkpoints, tiny_images

SHAPES = {"vanilla-fmnist": (1, 28, 28), "dcgan-mnist": (1, 28, 28)}


def _plain_step(g, d, opt_g, opt_d, real, z, d_average):
    """One iteration as the tutorials write it; returns G's buffers after the first forward."""
    fake = g(z)  # G forward for D's step
    g_buffers = {k: v.clone() for k, v in g.named_buffers()}
    real_logits, fake_logits = d(real), d(fake.detach())
    loss_d = F.binary_cross_entropy_with_logits(
        real_logits, torch.ones_like(real_logits)
    ) + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    if d_average:
        loss_d = loss_d / 2
    opt_d.zero_grad()
    loss_d.backward()
    opt_d.step()

    logits = d(g(z))  # G forward again, through the updated D
    loss_g = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
    opt_g.zero_grad()
    loss_g.backward()
    opt_g.step()
    return g_buffers


def _biases_before_batchnorm(net: torch.nn.Module) -> set[str]:
    """Names of the biases of layers directly followed by a BatchNorm in a Sequential."""
    kids = list(net.named_children())
    return {
        f"{name}.bias"
        for (name, layer), (_, nxt) in zip(kids, kids[1:], strict=False)
        if getattr(layer, "bias", None) is not None
        and isinstance(nxt, torch.nn.modules.batchnorm._BatchNorm)
    }


@pytest.mark.parametrize("recipe", sorted(SHAPES))
def test_engine_step_equals_plain_loop(recipe: str) -> None:
    torch.set_num_threads(1)  # identical reduction order in both runs
    cfg = load_config(recipe, ["train.batch_size=16", "train.device=cpu"])
    shape = SHAPES[recipe]
    engine = build_models(cfg, shape, torch.device("cpu"))
    plain = build_models(cfg, shape, torch.device("cpu"))  # same seed -> same initial weights
    for a, b in zip(engine.g.parameters(), plain.g.parameters(), strict=True):
        assert torch.equal(a, b)
    gen = torch.Generator().manual_seed(1)
    real = torch.rand(16, *shape, generator=gen) * 2 - 1
    z = torch.randn(16, cfg.model.z_dim, generator=gen)
    d_before = copy.deepcopy(plain.d.state_dict())

    torch.manual_seed(2)  # the same dropout masks (dcgan-mnist's D) in both runs
    train_step(engine, cfg, real, z, step=0)
    torch.manual_seed(2)
    # The seeds' optimizer: torch's default (per-tensor) Adam; the engine's is the fused kernel.
    opt_g, opt_d = (
        torch.optim.Adam(net.parameters(), lr=o.lr, betas=o.betas, eps=o.eps)
        for net, o in ((plain.g, cfg.optim.g), (plain.d, cfg.optim.d))
    )
    assert engine.opt_g.param_groups[0]["fused"] and not opt_g.param_groups[0]["fused"]
    g_buffers = _plain_step(plain.g, plain.d, opt_g, opt_d, real, z, cfg.loss.d_average)

    cancelled = _biases_before_batchnorm(engine.g)
    assert recipe != "dcgan-mnist" or len(cancelled) == 3  # dense, tconv1, tconv2
    for net in ("g", "d"):
        pe = dict(getattr(engine, net).named_parameters())
        pp = dict(getattr(plain, net).named_parameters())
        for name, p in pe.items():
            # A bias that feeds a BatchNorm is subtracted out again: its true gradient is 0 and
            # autograd's is float rounding noise (~1e-9), which Adam scales to a step of up to
            # lr. Two correct optimizers differ there by up to lr; the output test below holds.
            atol = 2 * cfg.optim.g.lr if net == "g" and name in cancelled else 1e-5
            torch.testing.assert_close(p, pp[name], rtol=0, atol=atol, msg=f"{net}.{name}")
    # D moved: the comparison is not between two untouched copies.
    assert any(not torch.equal(v, d_before[k]) for k, v in plain.d.state_dict().items())
    # D's buffers see the same batches in both; G's match the plain loop's first forward.
    for k, v in engine.d.named_buffers():
        torch.testing.assert_close(v, dict(plain.d.named_buffers())[k], rtol=0, atol=1e-5)
    for k, v in engine.g.named_buffers():
        torch.testing.assert_close(v, g_buffers[k], rtol=0, atol=1e-5)
    if any(k.endswith("num_batches_tracked") for k in g_buffers):  # BatchNorm in G
        tracked = {k: int(v) for k, v in plain.g.named_buffers() if "num_batches" in k}
        assert set(tracked.values()) == {2}  # the plain loop's second forward, knowingly
    # G as a function (train mode: batch statistics) agrees; last, as it moves BN statistics
    with torch.no_grad():
        torch.testing.assert_close(engine.g(z), plain.g(z), rtol=0, atol=1e-5)


# ---------------------------------------------------------------- channels_last (NHWC)


def _slim_dcgan(*overrides: str):
    """dcgan-fmnist-plus (slim dcgan-mnist nets) for tiny runs on 1x28x28 random images."""
    base = ["train.device=cpu", "train.batch_size=16", "train.report=false", "model.ema=null"]
    return load_config("dcgan-fmnist-plus", [*base, *overrides])


def test_channels_last_step_equals_the_nchw_step() -> None:
    """One engine step with NHWC conv weights and batches computes NCHW's gradients and G.

    Gradients, not parameters, are compared: Adam's first step is lr * g / (|g| + eps),
    about lr * sign(g), so gradient elements near zero turn rounding differences (~1e-9) into
    steps of up to lr. The slim nets have no dropout: bernoulli_ fills a tensor in memory
    order, so an NHWC dropout layer draws other masks (same distribution, other stream).
    """
    torch.set_num_threads(1)
    shape = (1, 28, 28)
    runs = {}
    for cl in (False, True):
        cfg = _slim_dcgan(f"train.channels_last={str(cl).lower()}")
        m = build_models(cfg, shape, torch.device("cpu"))
        conv_w = m.d.conv2.weight  # conv1 (1 input channel) is both NCHW and NHWC
        assert conv_w.is_contiguous(memory_format=torch.channels_last) == cl
        gen = torch.Generator().manual_seed(1)
        real = torch.rand(16, *shape, generator=gen) * 2 - 1
        z = torch.randn(16, cfg.model.z_dim, generator=gen)
        with torch.no_grad():
            out = m.g(z)
        train_step(m, cfg, real, z, step=0)  # D's gradients of its step; G's of its step
        runs[cl] = (m, out)
    (a, out_a), (b, out_b) = runs[False], runs[True]
    torch.testing.assert_close(out_a, out_b, rtol=0, atol=1e-5)
    for net in ("g", "d"):
        pb = dict(getattr(b, net).named_parameters())
        for name, p in getattr(a, net).named_parameters():
            assert p.grad is not None and p.grad.abs().max() > 0, f"{net}.{name}"
            torch.testing.assert_close(p.grad, pb[name].grad, rtol=0, atol=1e-6)


def test_resume_is_bitwise_exact_with_channels_last(tmp_path) -> None:
    """10 steps straight vs 5 then resume. Checkpoints hold NCHW tensors; the loaded Adam
    moments must take the NHWC layout of their weights, or the fused kernel mixes them up."""
    common = ["train.channels_last=true", "train.sample_every=5", "train.grid=[2,2]"]
    data = tiny_images()
    full = _slim_dcgan(*common, "train.iterations=10")
    train(full, tmp_path / "full", verbose=False, data=data)
    train(_slim_dcgan(*common, "train.iterations=5"), tmp_path / "part", verbose=False, data=data)
    train(full, tmp_path / "part", resume=True, verbose=False, data=data)
    assert_same_checkpoints(tmp_path / "full", tmp_path / "part")
    m = build_models(full, data.shape, torch.device("cpu"))
    load_checkpoint(tmp_path / "part" / "checkpoints" / "last", m, torch.device("cpu"))
    w = m.d.conv2.weight
    assert w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
    assert m.opt_d.state[w]["exp_avg"].stride() == w.stride()


def test_dcgan_64_trains_samples_and_resumes_in_nhwc(tmp_path) -> None:
    """The dcgan-64 recipe (channels_last on) end to end through the CLI on a tiny folder:
    train, resume to a longer run, sample; the checkpoints load into plain NCHW nets."""
    from PIL import Image

    from ganforge.cli import main

    folder = tmp_path / "sprites"
    folder.mkdir()
    gen = torch.Generator().manual_seed(3)
    for i in range(16):
        px = torch.randint(0, 256, (20, 20, 3), dtype=torch.uint8, generator=gen).numpy()
        Image.fromarray(px).save(folder / f"{i}.png")
    run = tmp_path / "run"
    common = ["--set", "data.size=16", "--set", "train.batch_size=8", "--set", "train.device=cpu"]
    common += ["--set", "train.report=false"]  # the HTML report is tested on its own
    args = ["train", "-r", "dcgan-64", "--data", str(folder), "--out", str(run), "-q", *common]
    assert main([*args, "--set", "train.iterations=2"]) == 0
    assert "channels_last: true" in (run / "config.yaml").read_text()
    assert main(["train", "--resume", str(run), "-q", "--set", "train.iterations=4"]) == 0
    assert main(["sample", str(run), "-n", "4", "-o", str(tmp_path / "s.png")]) == 0
    assert Image.open(tmp_path / "s.png").size[0] > 16
    last = load_file(run / "checkpoints" / "last" / "g.safetensors")
    assert all(v.is_contiguous() for v in last.values())
    assert json.loads((run / "checkpoints" / "last" / "state.json").read_text())["step"] == 4
