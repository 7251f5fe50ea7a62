"""GAN techniques of the training step: losses by name, gradient penalties, lazy R1, n D
steps, TTUR, EMA of G, DiffAugment, spectral norm, PacGAN, and their config checks.

Every test pins a value that a wiring mistake would change: loss values are computed by
hand with ``math``, penalties against a linear D whose input gradient is known exactly,
step schedules by comparing a step with the technique against the same step without it.
"""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from ganforge import augment
from ganforge.augment import color, cutout, diff_augment, translation
from ganforge.checkpoint import load_weights
from ganforge.config import Config, load_config
from ganforge.data import TensorData
from ganforge.engine import callbacks, loop
from ganforge.engine import step as step_mod
from ganforge.engine.loop import build_models, train
from ganforge.engine.step import (
    Models,
    check_techniques,
    gradient_penalty,
    make_ema,
    r1_penalty,
    train_step,
)
from ganforge.errors import ConfigError
from ganforge.losses import d_loss, g_loss
from ganforge.nets import Packed, build_discriminator

from runhelpers import assert_same_checkpoints

CPU = torch.device("cpu")
LOSS_NAMES = ("bce", "minimax", "hinge", "wgan-gp", "lsgan", "relativistic")


def softplus(t: float) -> float:
    """log(1 + e^t), by hand."""
    return math.log1p(math.exp(t))


def col(*values: float, grad: bool = False) -> torch.Tensor:
    """A (N, 1) logits column."""
    return torch.tensor(values, dtype=torch.float64).view(-1, 1).requires_grad_(grad)


# ---------------------------------------------------------------- small configs and models


def points_config(*overrides: str) -> Config:
    """gaussian-2d (linear G, small tanh MLP D) on the CPU, batch 8."""
    base = ["train.device=cpu", "train.batch_size=8", "train.iterations=8", "train.report=false"]
    return load_config("gaussian-2d", [*base, *overrides])


def linear_d_config(*overrides: str) -> Config:
    """gaussian-2d with D(x) = w.x + b (no hidden layer): |grad_x D|^2 = |w|^2 exactly."""
    return points_config("model.d_args.widths=[]", *overrides)


def image_config(*overrides: str) -> Config:
    """vanilla-fmnist with narrow MLPs, for 1x8x8 images."""
    base = [
        "train.device=cpu",
        "train.batch_size=8",
        "train.iterations=8",
        "train.report=false",
        "model.z_dim=8",
        "model.g_args.widths=[16,32]",
        "model.d_args.widths=[16]",
    ]
    return load_config("vanilla-fmnist", [*base, *overrides])


def point_data(n: int = 64) -> TensorData:
    gen = torch.Generator().manual_seed(1)
    return TensorData(torch.randn(n, 2, generator=gen) + torch.tensor([1.0, 2.0]), None, "t")


def image_data(n: int = 64, size: int = 8) -> TensorData:
    gen = torch.Generator().manual_seed(2)
    x = torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8, generator=gen)
    return TensorData(x, torch.arange(n) % 10, "t")


def set_linear_d(m: Models, w: list[float], b: float = 0.25) -> nn.Linear:
    """Give the linear D of ``linear_d_config`` chosen weights; returns its Linear."""
    lin = m.d[1]
    assert isinstance(lin, nn.Linear) and lin.in_features == len(w)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([w]))
        lin.bias.fill_(b)
    return lin


def batch(shape: tuple[int, ...], seed: int, n: int = 8) -> torch.Tensor:
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))


def params(net: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in net.parameters()]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


class GradRecorder:
    """Stands in for ``step.optimizer_step``: keeps each optimizer's gradients, then steps."""

    def __init__(self) -> None:
        self.real = step_mod.optimizer_step
        self.grads: list[tuple[torch.optim.Optimizer, list[torch.Tensor]]] = []

    def __call__(self, opt, cfg, t, scaler=None) -> None:
        ps = [p for group in opt.param_groups for p in group["params"]]
        self.grads.append((opt, [p.grad.detach().clone() for p in ps]))
        self.real(opt, cfg, t, scaler)

    def of(self, opt: torch.optim.Optimizer) -> list[torch.Tensor]:
        found = [g for o, g in self.grads if o is opt]
        assert len(found) == 1
        return found[0]


class Recorder(nn.Module):
    """Wraps a net and keeps a copy of every input it is called with."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.inputs: list[torch.Tensor] = []
        self.grad_flags: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        self.grad_flags.append(x.requires_grad)
        return self.inner(x)


# ---------------------------------------------------------------- losses: values by hand

REAL, FAKE = (2.0, 0.5), (-2.0, 0.0)  # D's logits on two real and two fake samples


def _expected_d(name: str) -> float:
    (r1, r2), (f1, f2) = REAL, FAKE
    if name in ("bce", "minimax"):  # -log sigmoid(r) = softplus(-r); -log(1 - sigmoid(f))
        return (softplus(-r1) + softplus(-r2)) / 2 + (softplus(f1) + softplus(f2)) / 2
    if name == "hinge":
        return (max(0, 1 - r1) + max(0, 1 - r2)) / 2 + (max(0, 1 + f1) + max(0, 1 + f2)) / 2
    if name == "wgan-gp":
        return (f1 + f2) / 2 - (r1 + r2) / 2
    if name == "lsgan":
        return 0.5 * ((r1 - 1) ** 2 + (r2 - 1) ** 2) / 2 + 0.5 * (f1**2 + f2**2) / 2
    mr, mf = (r1 + r2) / 2, (f1 + f2) / 2  # relativistic average
    return (softplus(-(r1 - mf)) + softplus(-(r2 - mf))) / 2 + (
        softplus(f1 - mr) + softplus(f2 - mr)
    ) / 2


def _expected_g(name: str) -> float:
    (r1, r2), (f1, f2) = REAL, FAKE
    if name == "bce":  # -log sigmoid(f)
        return (softplus(-f1) + softplus(-f2)) / 2
    if name == "minimax":  # log(1 - sigmoid(f)) = -softplus(f)
        return -(softplus(f1) + softplus(f2)) / 2
    if name in ("hinge", "wgan-gp"):
        return -(f1 + f2) / 2
    if name == "lsgan":
        return 0.5 * ((f1 - 1) ** 2 + (f2 - 1) ** 2) / 2
    mr, mf = (r1 + r2) / 2, (f1 + f2) / 2
    return (softplus(-(f1 - mr)) + softplus(-(f2 - mr))) / 2 + (
        softplus(r1 - mf) + softplus(r2 - mf)
    ) / 2


def test_hand_values_spot_check():
    """The hand formulas above on the numbers of the brief (hinge D = 0.75, ...)."""
    assert _expected_d("hinge") == pytest.approx(0.75)
    assert _expected_d("wgan-gp") == pytest.approx(-2.25)
    assert _expected_d("lsgan") == pytest.approx(1.3125)
    assert _expected_g("lsgan") == pytest.approx(2.5)
    assert _expected_g("hinge") == pytest.approx(1.0)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_d_loss_matches_hand_value(name):
    got = d_loss(name, col(*REAL), col(*FAKE))
    assert got.item() == pytest.approx(_expected_d(name), abs=1e-12)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_g_loss_matches_hand_value(name):
    got = g_loss(name, col(*FAKE), col(*REAL))
    assert got.item() == pytest.approx(_expected_g(name), abs=1e-12)


def test_bce_label_tricks_by_hand():
    """One-sided smoothing (real target 0.9), a fake target, additive noise, averaging."""
    (r1, r2), (f1, f2) = REAL, FAKE

    def xent(logit: float, t: float) -> float:  # -(t log s + (1 - t) log(1 - s))
        return t * softplus(-logit) + (1 - t) * softplus(logit)

    smooth = (xent(r1, 0.9) + xent(r2, 0.9)) / 2 + (xent(f1, 0.1) + xent(f2, 0.1)) / 2
    got = d_loss("bce", col(*REAL), col(*FAKE), real_label=0.9, fake_label=0.1)
    assert got.item() == pytest.approx(smooth, abs=1e-12)
    noisy = (xent(r1, 0.95) + xent(r2, 1.0)) / 2 + (xent(f1, 0.2) + xent(f2, 0.0)) / 2
    got = d_loss("bce", col(*REAL), col(*FAKE), 0.9, 0.0, col(0.05, 0.1), col(0.2, 0.0))
    assert got.item() == pytest.approx(noisy, abs=1e-12)
    plain = _expected_d("bce")
    got = d_loss("minimax", col(*REAL), col(*FAKE), average=True)
    assert got.item() == pytest.approx(plain / 2, abs=1e-12)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_minimising_d_loss_raises_real_and_lowers_fake(name):
    # real logits below 1 and fake ones in (0, 1): every hinge term is active and each
    # LSGAN logit is on the far side of its target (1 for real, 0 for fake)
    real, fake = col(0.3, -0.2, 0.5, grad=True), col(0.1, 0.4, 0.6, grad=True)
    d_loss(name, real, fake).backward()
    assert (real.grad < 0).all(), f"{name}: a descent step would lower D's real logits"
    assert (fake.grad > 0).all(), f"{name}: a descent step would raise D's fake logits"


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_minimising_g_loss_raises_fake(name):
    real, fake = col(0.3, -0.2, 0.5), col(0.1, -0.4, 0.6, grad=True)
    g_loss(name, fake, real).backward()
    assert (fake.grad < 0).all(), f"{name}: a descent step on G would lower D(G(z))"


def test_loss_errors():
    with pytest.raises(ValueError, match="relativistic"):
        g_loss("relativistic", col(0.0))
    with pytest.raises(ConfigError, match="hinge"):  # the message lists the choices
        d_loss("nope", col(0.0), col(0.0))


# ---------------------------------------------------------------- penalties on a linear D


def _linear_image_d(w: torch.Tensor) -> nn.Module:
    d = nn.Sequential(nn.Flatten(), nn.Linear(w.numel(), 1))
    with torch.no_grad():
        d[1].weight.copy_(w.view(1, -1))
        d[1].bias.fill_(-0.3)
    return d


def test_r1_is_squared_weight_norm_and_backpropagates():
    w = torch.tensor([0.5, -1.0, 2.0, 0.25])  # |w|^2 = 5.3125
    d = _linear_image_d(w)
    real = batch((1, 2, 2), seed=3, n=5)
    r1 = r1_penalty(d, real)
    assert r1.item() == pytest.approx(5.3125, rel=1e-6)
    r1.backward()  # double backward: d|w|^2/dw = 2w, nothing on the bias
    assert torch.allclose(d[1].weight.grad.view(-1), 2 * w, rtol=1e-5)
    assert d[1].bias.grad is None or d[1].bias.grad.abs().max() == 0


@pytest.mark.parametrize(
    ("w", "expected"), [([0.5, -1.0, 2.0, 0.25], None), ([0.6, 0.0, 0.0, -0.8], 0.0)]
)
def test_gradient_penalty_is_norm_minus_one_squared(w, expected):
    w = torch.tensor(w)
    expected = (math.sqrt(float(w.square().sum())) - 1) ** 2 if expected is None else expected
    d = _linear_image_d(w)
    gp = gradient_penalty(d, batch((1, 2, 2), 4, 6), batch((1, 2, 2), 5, 6), torch.Generator())
    assert gp.item() == pytest.approx(expected, abs=1e-5)
    if expected:
        gp.backward()  # d(|w| - 1)^2/dw = 2 (|w| - 1) w / |w|
        norm = float(w.norm())
        assert torch.allclose(d[1].weight.grad.view(-1), 2 * (norm - 1) * w / norm, rtol=1e-5)


# ---------------------------------------------------------------- train_step schedules


def test_lazy_r1_only_on_its_steps_with_gamma_k_over_two_scale(monkeypatch):
    """loss.r1=0.5, r1_every=3: R1 (= |w|^2 for a linear D) on steps 3 and 6 only, adding
    0.5 * gamma * k * 2w = gamma * k * w to D's weight gradient; other steps are identical
    to a run without R1."""
    gamma, k = 0.5, 3
    with_r1 = linear_d_config(f"loss.r1={gamma}", f"loss.r1_every={k}")
    without = linear_d_config("loss.r1=0")
    base = build_models(without, (2,), CPU)
    set_linear_d(base, [1.5, -2.0])  # |w|^2 = 6.25
    for s in range(2):  # fill Adam's moments so that a different gradient moves D differently
        train_step(base, without, batch((2,), 10 + s), batch((2,), 20 + s), s)
    for s in range(2, 9):
        real, z = batch((2,), 10 + s), batch((2,), 20 + s)
        w_before = base.d[1].weight.detach().clone()
        a, b = copy.deepcopy(base), copy.deepcopy(base)
        rec = GradRecorder()
        monkeypatch.setattr(step_mod, "optimizer_step", rec)
        out_a = train_step(a, with_r1, real, z, s)
        out_b = train_step(b, without, real, z, s)
        monkeypatch.setattr(step_mod, "optimizer_step", rec.real)
        ga, gb = rec.of(a.opt_d), rec.of(b.opt_d)
        if s % k == 0:
            assert "r1" in out_a
            assert out_a["r1"].item() == pytest.approx(float(w_before.square().sum()), rel=1e-5)
            assert torch.allclose(ga[0] - gb[0], gamma * k * w_before, rtol=1e-4, atol=1e-6)
            assert torch.allclose(ga[1], gb[1], atol=1e-7)  # the bias has no input gradient
            assert not same(params(a.d), params(b.d)), f"step {s}: R1 did not move D"
        else:
            assert "r1" not in out_a, f"step {s}: R1 applied off its schedule"
            assert same(ga, gb) and same(params(a.d), params(b.d))
        assert "r1" not in out_b
        base = a  # go on along the R1 run


def test_wgan_gp_penalty_enters_d_update(monkeypatch):
    """gp_weight 10 vs 0: "gp" = (|w| - 1)^2 and D's weight gradient differs by
    10 * 2 (|w| - 1) w / |w|; D's update differs."""
    ten = linear_d_config("loss.name=wgan-gp", "loss.gp_weight=10")
    zero = linear_d_config("loss.name=wgan-gp", "loss.gp_weight=0")
    base = build_models(ten, (2,), CPU)
    set_linear_d(base, [1.5, -2.0])  # |w| = 2.5 before two warm-up steps
    for s in range(2):
        train_step(base, zero, batch((2,), s), batch((2,), 5 + s), s, gen=torch.Generator())
    w = base.d[1].weight.detach().clone()
    a, b = copy.deepcopy(base), copy.deepcopy(base)
    rec = GradRecorder()
    monkeypatch.setattr(step_mod, "optimizer_step", rec)
    real, z = batch((2,), 7), batch((2,), 8)
    out_a = train_step(a, ten, real, z, 2, gen=torch.Generator().manual_seed(0))
    out_b = train_step(b, zero, real, z, 2, gen=torch.Generator().manual_seed(0))
    norm = float(w.norm())
    assert out_a["gp"].item() == pytest.approx((norm - 1) ** 2, rel=1e-5)
    assert out_a["loss_d"].item() == pytest.approx(out_b["loss_d"].item())  # gp kept apart
    diff = rec.of(a.opt_d)[0] - rec.of(b.opt_d)[0]
    assert torch.allclose(diff, 10 * 2 * (norm - 1) * w / norm, rtol=1e-4)
    assert not same(params(a.d), params(b.d))


def test_d_steps_updates_g_every_kth_step():
    cfg = points_config("train.d_steps=3")
    m = build_models(cfg, (2,), CPU)
    g_steps = []
    for s in range(7):
        g0, d0 = params(m.g), params(m.d)
        out = train_step(m, cfg, batch((2,), s), batch((2,), 50 + s), s)
        assert not same(params(m.d), d0), f"D did not step at step {s}"
        if not same(params(m.g), g0):
            g_steps.append(s)
        assert ("loss_g" in out) == (s in (2, 5)), f"step {s}: {sorted(out)}"
    assert g_steps == [2, 5]


def test_ttur_learning_rates_reach_the_optimizers():
    cfg = points_config("optim.d.lr=0.003", "optim.g.lr=0.0007")
    m = build_models(cfg, (2,), CPU)
    assert [g["lr"] for g in m.opt_d.param_groups] == [0.003]
    assert [g["lr"] for g in m.opt_g.param_groups] == [0.0007]
    d_ids = {id(p) for g in m.opt_d.param_groups for p in g["params"]}
    g_ids = {id(p) for g in m.opt_g.param_groups for p in g["params"]}
    assert d_ids == {id(p) for p in m.d.parameters()}
    assert g_ids == {id(p) for p in m.g.parameters()}


# ---------------------------------------------------------------- EMA of G


def test_sampler_is_g_until_the_ema_has_averaged():
    cfg = points_config("model.ema=0.9")
    m = build_models(cfg, (2,), CPU)
    assert m.sampler() is m.g
    train_step(m, cfg, batch((2,), 0), batch((2,), 1), 0)
    assert m.sampler() is m.g  # the loop has not averaged yet
    m.g_ema.update_parameters(m.g)
    assert m.sampler() is m.g_ema.module and m.sampler() is not m.g
    assert make_ema(m.g, points_config()) is None


@pytest.mark.parametrize("d_steps", [1, 2])
def test_ema_weights_grids_and_checkpoint(tmp_path, monkeypatch, d_steps):
    """model.ema=0.8, ema_start=2 over 6 steps: the EMA averages on G steps from step 2 on
    (steps 2-5, or 3 and 5 with 2 D steps): a copy of G at the first, then 0.8 ema + 0.2 G;
    grids before it show G, later ones and final.png the EMA; the checkpoint's g_ema and
    load_weights(..., "sampler") are that average."""
    decay, start, total = 0.8, 2, 6
    cfg = points_config(
        f"train.iterations={total}",
        "train.sample_every=1",
        f"train.checkpoint_every={total}",
        f"train.log_every={total}",
        "train.grid=[2,2]",
        f"train.d_steps={d_steps}",
        f"model.ema={decay}",
        f"model.ema_start={start}",
    )
    g_after: list[dict[str, torch.Tensor]] = []
    seen: dict[str, Models] = {}
    grids: list[tuple[str, str]] = []  # (file name, which net drew it)

    def step_spy(m, *args, **kw):
        out = loop_step(m, *args, **kw)
        seen["m"] = m
        g_after.append({k: v.detach().clone() for k, v in m.g.state_dict().items()})
        return out

    def samples_spy(g, z, path, *args, **kw):
        m = seen["m"]
        who = "g" if g is m.g else "ema" if g is m.g_ema.module else "other"
        grids.append((path.name, who))
        return loop_save(g, z, path, *args, **kw)

    loop_step, loop_save = loop.train_step, callbacks.save_samples
    monkeypatch.setattr(loop, "train_step", step_spy)
    monkeypatch.setattr(callbacks, "save_samples", samples_spy)
    train(cfg, tmp_path / "run", verbose=False, data=point_data())

    assert len(g_after) == total
    updates = [s for s in range(total) if (s + 1) % d_steps == 0 and s >= start]
    assert updates == ([2, 3, 4, 5] if d_steps == 1 else [3, 5])
    expected = dict(g_after[updates[0]])  # the first update copies G
    for s in updates[1:]:
        expected = {k: decay * expected[k] + (1 - decay) * g_after[s][k] for k in expected}
    last = tmp_path / "run" / "checkpoints" / "last"
    ema, g = load_file(last / "g_ema.safetensors"), load_file(last / "g.safetensors")
    assert ema.keys() == expected.keys()
    for k in expected:
        assert torch.allclose(ema[k], expected[k], rtol=1e-6, atol=1e-7), k
        assert torch.equal(g[k], g_after[-1][k])
    assert any(not torch.allclose(ema[k], g[k]) for k in g), "the EMA equals G"
    assert json.loads((last / "state.json").read_text())["ema_updates"] == len(updates)
    sampler = load_weights(last, "sampler")
    assert all(torch.equal(sampler[k], ema[k]) for k in ema)
    want = [(f"step_{d:06d}.png", "ema" if d - 1 >= updates[0] else "g") for d in range(1, 7)]
    assert grids == [*want, ("final.png", "ema")]
    assert (tmp_path / "run" / "final.png").stat().st_size > 0


# ---------------------------------------------------------------- exact resume with techniques


def _log(run) -> dict[int, dict]:
    """log.jsonl records by step, without the timing fields."""
    recs = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return {r["step"]: {k: v for k, v in r.items() if k not in ("img_s", "time")} for r in recs}


@pytest.mark.parametrize("ema_start", [2, 6])
def test_resume_is_bitwise_exact_with_techniques(tmp_path, ema_start):
    """10 steps straight vs 5 then resume, with EMA, DiffAugment, WGAN-GP and 2 D steps:
    the split lands between a D-only step and a G step; with ema_start=6 the EMA has not
    started at the split (no g_ema in the first checkpoint). The logs match record for
    record; loss_g is logged on G steps only."""
    common = [
        "train.sample_every=5",
        "train.log_every=1",
        "train.grid=[2,2]",
        "model.ema=0.9",
        f"model.ema_start={ema_start}",
        "train.augment=[color,translation,cutout]",
        "loss.name=wgan-gp",
        "train.d_steps=2",
    ]
    data = image_data()
    full = image_config(*common, "train.iterations=10")
    train(full, tmp_path / "full", verbose=False, data=data)
    train(image_config(*common, "train.iterations=5"), tmp_path / "part", verbose=False, data=data)
    has_ema = (tmp_path / "part" / "checkpoints" / "last" / "g_ema.safetensors").exists()
    assert has_ema == (ema_start < 5)
    train(full, tmp_path / "part", resume=True, verbose=False, data=data)
    assert_same_checkpoints(tmp_path / "full", tmp_path / "part", ("g", "d", "g_ema", "state"))
    full_log, part_log = _log(tmp_path / "full"), _log(tmp_path / "part")
    assert full_log == part_log and sorted(full_log) == list(range(1, 11))
    assert all("gp" in r for r in full_log.values())
    assert [s for s, r in full_log.items() if "loss_g" in r] == [2, 4, 6, 8, 10]


def test_d_steps_run_finishes_when_the_last_window_has_no_g_step(tmp_path):
    """d_steps=2, log_every=1, 3 steps: step 3 is D-only, so its record has no loss_g;
    train() still returns (b03f5e2 raised KeyError 'loss_g' in its summary)."""
    cfg = points_config("train.d_steps=2", "train.iterations=3", "train.log_every=1")
    result = train(cfg, tmp_path / "run", verbose=False, data=point_data())
    log = _log(tmp_path / "run")
    assert ["loss_g" in log[s] for s in (1, 2, 3)] == [False, True, False]
    assert result["steps"] == 3 and result["loss_g"] in (None, log[2]["loss_g"])


def test_loop_gives_each_step_fresh_augment_and_penalty_draws(tmp_path, monkeypatch):
    """The generator for DiffAugment and WGAN-GP is seeded per step: no two steps share
    draws (the same crop on every step would be a much weaker augmentation)."""
    states = []

    def spy(m, cfg, real, z, step, label_noise=None, y=None, gen=None):
        states.append(None if gen is None else gen.get_state())
        return real_step(m, cfg, real, z, step, label_noise, y, gen)

    real_step = loop.train_step
    monkeypatch.setattr(loop, "train_step", spy)
    cfg = points_config("loss.name=wgan-gp", "train.iterations=4", "train.log_every=4")
    train(cfg, tmp_path / "run", verbose=False, data=point_data())
    assert len(states) == 4 and all(s is not None for s in states)
    assert len({bytes(s.tolist()) for s in states}) == 4


# ---------------------------------------------------------------- DiffAugment


def _images(n: int = 6, c: int = 3, h: int = 16, w: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed)) + 0.5


@pytest.mark.parametrize(
    "policies", [["color"], ["translation"], ["cutout"], ["color", "translation", "cutout"]]
)
def test_augment_is_a_function_of_the_generator(policies):
    x = _images()

    def run(seed):
        return diff_augment(x, policies, torch.Generator().manual_seed(seed))

    a, b, c = run(0), run(0), run(1)
    assert a.shape == x.shape
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a, x)
    assert torch.equal(diff_augment(x, [], torch.Generator()), x)


@pytest.mark.parametrize(("h", "w", "ratio"), [(16, 16, None), (16, 8, None), (16, 16, 0.25)])
def test_translation_moves_a_pixel_within_the_ratio(h, w, ratio):
    n, py, px = 200, h // 2, w // 2
    x = torch.zeros(n, 3, h, w)
    x[:, :, py, px] = torch.tensor([1.0, 2.0, 3.0])  # one bright pixel, different per channel
    kw = {} if ratio is None else {"ratio": ratio}
    out = translation(x, torch.Generator().manual_seed(0), **kw)
    r = 0.125 if ratio is None else ratio
    sh, sw = round(h * r), round(w * r)
    shifts = set()
    for i in range(n):
        nz = out[i].nonzero()
        assert len(nz) == 3, "the pixel was lost or duplicated (it cannot reach the edge)"
        assert torch.equal(nz[:, 0], torch.tensor([0, 1, 2]))
        ys, xs = nz[:, 1].unique(), nz[:, 2].unique()
        assert len(ys) == 1 and len(xs) == 1, "channels moved differently"
        dy, dx = int(ys) - py, int(xs) - px
        assert abs(dy) <= sh and abs(dx) <= sw
        assert torch.equal(out[i, :, py + dy, px + dx], torch.tensor([1.0, 2.0, 3.0]))
        shifts.add((dy, dx))
    assert {abs(dy) for dy, _ in shifts} == set(range(sh + 1))  # the whole range is used
    assert {abs(dx) for _, dx in shifts} == set(range(sw + 1))


def test_translation_drops_pixels_off_the_edge_and_zero_fills():
    n = 200
    x = torch.zeros(n, 1, 16, 16)
    x[:, 0, 0, 0] = 1.0  # a corner pixel: half the shifts push it off the image
    out = translation(x, torch.Generator().manual_seed(3))
    lost = 0
    for i in range(n):
        nz = out[i, 0].nonzero()
        if len(nz) == 0:
            lost += 1
            continue
        assert len(nz) == 1
        y, xx = nz[0].tolist()
        assert 0 <= y <= 2 and 0 <= xx <= 2 and out[i, 0, y, xx] == 1.0
    assert 0 < lost < n
    # a full image shifted by (dy, dx) keeps a block and zero-fills the rest
    ones = translation(torch.ones(n, 1, 16, 16), torch.Generator().manual_seed(3))
    for i in range(n):
        rows = int((ones[i, 0].sum(1) > 0).sum())
        cols = int((ones[i, 0].sum(0) > 0).sum())
        assert rows >= 14 and cols >= 14
        assert ones[i].sum() == rows * cols  # the kept part is one rectangle of ones


@pytest.mark.parametrize(("h", "w"), [(16, 16), (16, 8), (15, 9)])
def test_cutout_zeroes_one_clipped_square(h, w):
    n = 300
    x = _images(n, 2, h, w, seed=4)  # all values >= 0.5: any zero is the cutout's
    out = cutout(x, torch.Generator().manual_seed(5))
    ch, cw = int(h * 0.5 + 0.5), int(w * 0.5 + 0.5)
    full = 0
    for i in range(n):
        zero = out[i] == 0
        assert torch.equal(zero[0], zero[1]), "channels cut differently"
        assert torch.equal(out[i][~zero], x[i][~zero]), "pixels outside the square changed"
        rows = zero[0].any(1).nonzero().view(-1)
        cols = zero[0].any(0).nonzero().view(-1)
        assert len(rows) and len(cols)
        r0, r1, c0, c1 = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
        assert zero[0].sum() == (r1 - r0 + 1) * (c1 - c0 + 1)  # one filled rectangle
        assert zero[0, r0 : r1 + 1, c0 : c1 + 1].all()
        height, width = r1 - r0 + 1, c1 - c0 + 1
        assert height == ch or (height < ch and (r0 == 0 or r1 == h - 1))
        assert width == cw or (width < cw and (c0 == 0 or c1 == w - 1))
        full += height == ch and width == cw
    assert full > n // 10  # most squares lie inside the image


def test_color_on_a_flat_gray_image_is_a_brightness_shift():
    """One channel, constant image: saturation and contrast leave it flat, brightness adds
    the same b in [-0.5, 0.5) to every pixel, a different b per sample."""
    x = torch.full((64, 1, 4, 4), 0.2)
    out = color(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    shift = out - x
    per_image = shift.flatten(1)
    assert torch.allclose(per_image, per_image[:, :1].expand_as(per_image), atol=1e-6)
    b = per_image[:, 0]
    assert (b >= -0.5 - 1e-6).all() and (b < 0.5 + 1e-6).all()
    assert b.std() > 0.1  # spread over the range, one draw per sample
    rgb = _images(8, 3, 4, 4)
    assert not torch.allclose(color(rgb, torch.Generator().manual_seed(1)), rgb)


@pytest.mark.parametrize("policy", ["color", "translation", "cutout"])
def test_gradients_flow_through_each_augmentation(policy):
    x = _images(4, 3, 8, 8).requires_grad_(True)
    weights = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(9))
    (diff_augment(x, [policy], torch.Generator().manual_seed(0)) * weights).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for i in range(4):  # every sample receives a gradient
        assert x.grad[i].abs().sum() > 0
    if policy == "cutout":  # the gradient is the mask: zero exactly where the cut was
        out = cutout(x.detach(), torch.Generator().manual_seed(0))
        assert torch.equal(x.grad == 0, out == 0)


def test_train_step_feeds_d_augmented_inputs_and_g_through_them(monkeypatch):
    """D's real and fake inputs are the DiffAugment of the raw batch and of G(z), drawn in
    that order from ``gen``; G's step feeds D an augmented fake that carries G's graph."""
    policies = ["translation", "cutout"]
    cfg = image_config("train.augment=[translation,cutout]")
    m = build_models(cfg, (1, 8, 8), CPU)
    m.d = Recorder(m.d)
    g_before = copy.deepcopy(m.g)
    real, z = batch((1, 8, 8), 0).clamp(-1, 1), batch((8,), 1)
    rec = GradRecorder()
    monkeypatch.setattr(step_mod, "optimizer_step", rec)
    train_step(m, cfg, real, z, 0, gen=torch.Generator().manual_seed(7))
    replay = torch.Generator().manual_seed(7)
    with torch.no_grad():
        fake = g_before(z)  # train mode: batch statistics, as in the step
    want_real = diff_augment(real, policies, replay)
    want_fake = diff_augment(fake, policies, replay)
    want_g_fake = diff_augment(fake, policies, replay)
    d_in = m.d.inputs
    assert len(d_in) == 3  # real, fake (D step), fake (G step)
    assert not torch.equal(d_in[0], real) and torch.equal(d_in[0], want_real)
    assert torch.allclose(d_in[1], want_fake, atol=1e-6)
    assert torch.allclose(d_in[2], want_g_fake, atol=1e-6)
    assert not torch.allclose(d_in[2], d_in[1])  # fresh draws for G's step
    assert m.d.grad_flags == [False, False, True]  # G's step keeps the graph through aug
    g_grads = rec.of(m.opt_g)
    assert all(g.abs().sum() > 0 for g in g_grads)

    plain = image_config()  # control: without augment D sees the raw real batch
    m2 = build_models(plain, (1, 8, 8), CPU)
    m2.d = Recorder(m2.d)
    train_step(m2, plain, real, z, 0)
    assert torch.equal(m2.d.inputs[0], real)


# ---------------------------------------------------------------- spectral norm


def _sigmas(d: nn.Module) -> dict[str, float]:
    out = {}
    for name, mod in d.named_modules():
        if isinstance(mod, (nn.Linear, nn.Conv2d)):
            w = mod.weight.detach()  # the parametrized weight, as the forward uses it
            out[name] = float(torch.linalg.matrix_norm(w.reshape(w.shape[0], -1), ord=2))
    return out


@pytest.mark.parametrize(("recipe", "shape"), [("dcgan-mnist", (1, 28, 28)), ("gaussian-2d", (2,))])
def test_spectral_norm_holds_each_layer_near_one(recipe, shape):
    sigmas = {}
    for on in (True, False):
        cfg = load_config(recipe, [f"model.spectral_norm={str(on).lower()}"])
        torch.manual_seed(0)
        d = build_discriminator(cfg.model, shape)
        d.train()
        for i in range(30):  # one power iteration per forward
            d(batch(shape, i, n=2))
        sigmas[on] = _sigmas(d)
    assert len(sigmas[True]) >= 3
    for name, s in sigmas[True].items():
        assert s == pytest.approx(1.0, rel=0.05), f"{recipe} {name}: sigma {s}"
    assert max(abs(s - 1) for s in sigmas[False].values()) > 0.2


# ---------------------------------------------------------------- PacGAN


def test_pack_stacks_consecutive_samples_for_points():
    cfg = points_config("model.pack=2")
    d = build_discriminator(cfg.model, (2,))
    assert isinstance(d, Packed)
    d.d = Recorder(d.d)
    x = batch((2,), 0, n=6)
    out = d(x)
    assert out.shape == (3, 1)
    (seen,) = d.d.inputs
    assert seen.shape == (3, 4)
    for i in range(3):  # pack i holds samples 2i, 2i+1, side by side
        assert torch.equal(seen[i], torch.cat([x[2 * i], x[2 * i + 1]]))
    first = [mod for mod in d.modules() if isinstance(mod, nn.Linear)][0]
    plain = build_discriminator(points_config().model, (2,))
    assert first.in_features == 2 * plain[1].in_features == 4


def test_pack_stacks_consecutive_images_along_channels():
    cfg = load_config("dcgan-mnist", ["model.pack=3"])
    d = build_discriminator(cfg.model, (1, 28, 28))
    d.d = Recorder(d.d)
    x = batch((1, 28, 28), 1, n=6)
    assert d(x).shape == (2, 1)
    (seen,) = d.d.inputs
    assert seen.shape == (2, 3, 28, 28)
    for i in range(2):
        for j in range(3):
            assert torch.equal(seen[i, j], x[3 * i + j, 0])
    assert d.d.inner.conv1.in_channels == 3
    with pytest.raises(ConfigError, match="model.pack"):
        d(x[:5])


def test_pack_in_train_step_judges_packs():
    cfg = points_config("model.pack=4")
    m = build_models(cfg, (2,), CPU)
    m.d.d = Recorder(m.d.d)
    out = train_step(m, cfg, batch((2,), 0), batch((2,), 1), 0)
    assert all(t.shape == (2, 4 * 2) for t in m.d.d.inputs)  # 8 samples -> 2 packs of 4
    assert math.isfinite(out["loss_d"].item()) and "loss_g" in out


def test_pack_must_divide_the_batch():
    cfg = points_config("model.pack=3")
    with pytest.raises(ConfigError, match="model.pack=3"):
        check_techniques(cfg, (2,), 8)
    check_techniques(cfg, (2,), 9)


def test_pack_with_label_noise_is_refused():
    # the loop draws (B, 1) target noise; a packed D gives (B / pack, 1) logits
    with pytest.raises(ConfigError, match="loss.label_noise"):
        check_techniques(points_config("model.pack=2", "loss.label_noise=0.1"), (2,), 8)
    check_techniques(points_config("model.pack=2"), (2,), 8)


# ---------------------------------------------------------------- refused combinations


def test_label_tricks_need_a_labelled_loss():
    with pytest.raises(ConfigError, match="loss.real_label"):
        check_techniques(points_config("loss.name=hinge", "loss.real_label=0.9"), (2,), 8)
    with pytest.raises(ConfigError, match="loss.name=wgan-gp"):
        check_techniques(points_config("loss.name=wgan-gp", "loss.label_noise=0.1"), (2,), 8)
    check_techniques(points_config("loss.name=minimax", "loss.real_label=0.9"), (2,), 8)


def test_augment_needs_images():
    with pytest.raises(ConfigError, match="train.augment"):
        check_techniques(points_config("train.augment=[color]"), (2,), 8)
    check_techniques(image_config("train.augment=[color]"), (1, 8, 8), 8)


def test_train_refuses_before_training(tmp_path):
    cfg = points_config("train.augment=[translation]")
    with pytest.raises(ConfigError, match="train.augment"):
        train(cfg, tmp_path / "run", verbose=False, data=point_data())
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_config_rejects_bad_technique_values():
    with pytest.raises(ConfigError, match="bogus") as e:
        load_config("vanilla-fmnist", ["train.augment=[color,bogus]"])
    assert "color, cutout, translation" in str(e.value)
    with pytest.raises(ConfigError, match="model.ema: must be less than 1"):
        load_config("vanilla-fmnist", ["model.ema=1.0"])
    with pytest.raises(ConfigError, match="model.pack"):
        load_config("vanilla-fmnist", ["model.pack=0"])
    cfg = load_config("vanilla-fmnist", ["train.augment=[cutout,color]", "model.ema=0.999"])
    assert cfg.train.augment == ("cutout", "color") and cfg.model.ema == 0.999
    assert set(augment.POLICIES.names()) == {"color", "translation", "cutout"}


def test_max_seconds_ends_the_run_normally_at_the_budget(tmp_path, monkeypatch):
    """train.max_seconds: the step that crosses the budget is the last one, and it is
    logged, sampled and checkpointed like the end of any run."""
    import ganforge.engine.loop as loop_mod

    clock = iter(float(t) for t in range(10_000))  # each perf_counter call: one more second
    monkeypatch.setattr(loop_mod.time, "perf_counter", lambda: next(clock))
    cfg = points_config("train.iterations=1000", "train.max_seconds=6", "train.log_every=1000")
    result = train(cfg, tmp_path / "run", verbose=False, data=point_data())
    assert 1 <= result["steps"] < 1000
    state = json.loads((tmp_path / "run/checkpoints/last/state.json").read_text())
    assert state["step"] == result["steps"]
    assert _log(tmp_path / "run")[result["steps"]]["step"] == result["steps"]
    assert (tmp_path / "run/final.png").is_file()


def test_max_cpu_seconds_ends_the_run_at_the_step_that_crosses_it(tmp_path, monkeypatch):
    """train.max_cpu_seconds: process CPU time, counted from this session's first step; the
    step that crosses it is the last, logged, sampled and checkpointed like any end."""
    import ganforge.engine.loop as loop_mod

    clock = iter(float(t) for t in range(10_000))  # each process_time call: one more CPU second
    monkeypatch.setattr(loop_mod.time, "process_time", lambda: next(clock))
    cfg = points_config("train.iterations=1000", "train.max_cpu_seconds=6", "train.log_every=1000")
    result = train(cfg, tmp_path / "run", verbose=False, data=point_data())
    assert result["steps"] == 6  # read once at the start (0 s), then once per step
    state = json.loads((tmp_path / "run/checkpoints/last/state.json").read_text())
    assert state["step"] == 6
    assert _log(tmp_path / "run")[6]["step"] == 6
    assert (tmp_path / "run/final.png").is_file()
    status = json.loads((tmp_path / "run/status.json").read_text())
    assert status["status"] == "finished"


@pytest.mark.parametrize("key", ["max_seconds", "max_cpu_seconds"])
def test_time_budgets_are_refused_under_torchrun(tmp_path, monkeypatch, key):
    """Ranks could disagree on when a clock crosses the budget: one line, before any step."""
    from ganforge.engine import distributed

    monkeypatch.setattr(loop.distributed, "setup", lambda *a: (distributed.Dist(0, 2, 0), None))
    monkeypatch.setattr(loop.distributed, "shutdown", lambda: None)
    with pytest.raises(ConfigError, match=f"train.{key} is for single-process runs"):
        train(points_config(f"train.{key}=5"), tmp_path / "run", verbose=False, data=point_data())
    assert not (tmp_path / "run/checkpoints").exists()
    with pytest.raises(ConfigError, match="max_cpu_seconds"):
        load_config("gaussian-2d", ["train.max_cpu_seconds=0"])


# ---------------------------------------------------------------- adaptive augmentation


def test_adaptive_share_moves_by_batch_over_100k_images_toward_d_overfitting():
    """ADA's rule at ganforge's pace: p rises by batch / 100,000 when more than 60% (net) of
    the real logits are positive, falls otherwise, and stays within [0, 1]."""
    p = torch.zeros(())
    real_real = torch.ones(10, 1)
    assert float(step_mod.adapt_augment(p, real_real, 100)) == pytest.approx(100 / 100_000)
    mixed = torch.tensor([[1.0]] * 7 + [[-1.0]] * 3)  # r = 0.4 < 0.6: back down, not below 0
    step_mod.adapt_augment(p, mixed, 100)
    step_mod.adapt_augment(p, mixed, 100)
    assert float(p) == 0.0
    p.fill_(1.0)
    step_mod.adapt_augment(p, real_real, 100)
    assert float(p) == 1.0


@pytest.mark.parametrize(("name", "relative"), [("hinge", False), ("relativistic", True)])
def test_adaptive_share_reads_the_losses_verdict_on_real_images(monkeypatch, name, relative):
    """ADA's r is the sign of D's verdict on each real image as the loss reads it: the
    logit, or for a relativistic loss the logit less the mean of the fakes' logits."""
    seen = []
    monkeypatch.setattr(step_mod, "adapt_augment", lambda p, v, b: seen.append(v) or p.clone())
    cfg = image_config("train.augment=[translation]", "train.augment_p=auto", f"loss.name={name}")
    m = build_models(cfg, (1, 8, 8), CPU)
    outputs = []
    m.d.register_forward_hook(lambda mod, args, out: outputs.append(out.detach().float()))
    real, z = batch((1, 8, 8), 0).clamp(-1, 1), batch((8,), 1)
    train_step(m, cfg, real, z, 0, gen=torch.Generator().manual_seed(7))
    real_logits, fake_logits = outputs[0], outputs[1]  # D's step: real, then fake
    want = real_logits - fake_logits.mean() if relative else real_logits
    assert len(seen) == 1 and torch.equal(seen[0], want)


def test_a_share_of_0_augments_nothing_and_1_everything():
    """augment_p=0: D sees the raw batches (the draws for the choice do not change the
    step: weights equal those of a run without augmentation); augment_p=1: the images are
    the full DiffAugment of the batch, as without the option."""
    real, z = batch((1, 8, 8), 0).clamp(-1, 1), batch((8,), 1)
    seen = {}
    for name, sets in {
        "none": [],
        "p0": ["train.augment=[translation,cutout]", "train.augment_p=0"],
    }.items():
        cfg = image_config(*sets)
        m = build_models(cfg, (1, 8, 8), CPU)
        m.d = Recorder(m.d)
        train_step(m, cfg, real, z, 0, gen=torch.Generator().manual_seed(7))
        seen[name] = m.d.inputs[0]
    assert torch.equal(seen["none"], seen["p0"])
    cfg = image_config("train.augment=[translation,cutout]", "train.augment_p=1")
    m = build_models(cfg, (1, 8, 8), CPU)
    m.d = Recorder(m.d)
    train_step(m, cfg, real, z, 0, gen=torch.Generator().manual_seed(7))
    want = diff_augment(real, ["translation", "cutout"], torch.Generator().manual_seed(7))
    assert torch.equal(m.d.inputs[0], want)


@pytest.mark.parametrize("p", [0.3, torch.tensor(0.7)])
def test_a_share_computed_on_the_chosen_images_equals_keeping_them_from_the_whole(p):
    """With p < 1 the CPU transforms only the chosen images; that is, bit for bit and in the
    gradient, the whole batch transformed with the chosen images kept (the path that needs no
    host sync). Some images are augmented and some are not."""
    policies = ["color", "translation", "cutout"]
    x = (torch.rand(32, 3, 16, 16, generator=torch.Generator().manual_seed(2)) - 0.5) * 2
    weights = torch.randn(32, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    outs, grads = [], []
    for chosen_only in (True, False):
        xx = x.clone().requires_grad_(True)
        out = diff_augment(xx, policies, torch.Generator().manual_seed(4), p, chosen_only)
        (out * weights).sum().backward()
        outs.append(out.detach())
        grads.append(xx.grad)
    assert torch.equal(outs[0], outs[1])
    assert torch.equal(grads[0], grads[1])
    same = (outs[0] == x).flatten(1).all(1)
    assert 0 < int(same.sum()) < 32  # both kinds in the batch
    assert torch.equal(grads[0][same], weights[same])  # unaugmented: the identity's gradient


def test_a_share_with_a_policy_of_your_own_transforms_the_whole_batch(monkeypatch):
    """A policy of one's own is a single function of (x, gen): it sees the whole batch and
    the chosen images are kept, on every device."""
    seen = []

    def mine(x, gen):
        seen.append(x.shape[0])
        return x + 1

    monkeypatch.setattr(augment.POLICIES, "_items", dict(augment.POLICIES._items))
    augment.POLICIES.register("test-mine")(mine)
    x = torch.zeros(16, 1, 4, 4)
    out = diff_augment(x, ["test-mine"], torch.Generator().manual_seed(0), 0.5)
    assert seen == [16]
    assert set(out.flatten(1).mean(1).tolist()) == {0.0, 1.0}


def test_adaptive_augmentation_is_logged_saved_and_resumed_exactly(tmp_path, monkeypatch):
    """augment_p=auto: p starts at 0 and moves every step (logged); a checkpoint holds it
    (state.json) and a resumed run continues from it: 24 steps straight equal 12 + 12. So
    that p matters within 24 steps, the rule's target is set below any r (p always rises)
    and its pace to 0.05 a step (16 images of 320)."""
    monkeypatch.setattr(step_mod, "ADA_TARGET", -2.0)
    monkeypatch.setattr(step_mod, "ADA_IMAGES", 320)
    common = [
        "train.sample_every=12",
        "train.log_every=1",
        "train.grid=[2,2]",
        "train.augment=[translation,cutout]",
        "train.augment_p=auto",
        "train.batch_size=16",
    ]
    data = image_data()
    full = image_config(*common, "train.iterations=24")
    train(full, tmp_path / "full", verbose=False, data=data)
    log = _log(tmp_path / "full")
    ps = [log[s]["augment_p"] for s in sorted(log)]
    assert ps == pytest.approx([min(1.0, 0.05 * s) for s in range(1, 25)])
    saved = json.loads((tmp_path / "full/checkpoints/last/state.json").read_text())
    assert saved["augment_p"] == pytest.approx(ps[-1])
    train(image_config(*common, "train.iterations=12"), tmp_path / "part", verbose=False, data=data)
    train(full, tmp_path / "part", resume=True, verbose=False, data=data)
    assert_same_checkpoints(tmp_path / "full", tmp_path / "part", ("g", "d", "state"))
    assert _log(tmp_path / "full") == _log(tmp_path / "part")
    part = json.loads((tmp_path / "part/checkpoints/last/state.json").read_text())
    assert part["augment_p"] == saved["augment_p"]
