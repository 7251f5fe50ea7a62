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

import pytest
import torch
import torch.nn.functional as F

from ganforge.config import load_config
from ganforge.train.loop import build_models
from ganforge.train.step import train_step

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
    g_buffers = _plain_step(plain.g, plain.d, plain.opt_g, plain.opt_d, real, z, cfg.loss.d_average)

    for net in ("g", "d"):
        pe = dict(getattr(engine, net).named_parameters())
        pp = dict(getattr(plain, net).named_parameters())
        for name, p in pe.items():
            torch.testing.assert_close(p, pp[name], rtol=0, atol=1e-5, msg=f"{net}.{name}")
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
