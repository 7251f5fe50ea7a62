"""Every recipe trains end to end; each recipe's seed-specific options reach the training."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from ganforge import nets
from ganforge.config import load_config, recipe_names
from ganforge.data import TensorData, data_shape, select
from ganforge.engine.loop import build_models, train
from ganforge.engine.optim import optimizer_step
from ganforge.engine.step import train_step

# Small, fast stand-ins for the recipes' nets where a test is about the training options.
CHEAP_NETS = ["model.g=linear", "model.d=mlp", "model.g_args={}", "model.d_args={widths: [8]}"]


def random_data(shape: tuple[int, ...], n: int, seed: int = 0) -> TensorData:
    """``n`` random examples: uint8 images, or float points for 2-D data."""
    gen = torch.Generator().manual_seed(seed)
    if len(shape) == 1:
        return TensorData(torch.randn(n, *shape, generator=gen), None, "random")
    x = torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=gen)
    return TensorData(x, torch.arange(n) % 10, "random")


@pytest.mark.parametrize("name", recipe_names())
def test_two_step_smoke_run(name: str, tmp_path):
    shape = data_shape(load_config(name).data)
    b = 8 if len(shape) == 1 else 2  # the big image nets cost seconds per step on a CPU
    sets = [f"train.batch_size={b}", "train.iterations=2", "train.log_every=1"]
    sets += ["train.device=cpu", "train.sample_every=null", "eval.every=null"]
    if len(shape) == 3:
        sets.append("train.grid=[2, 2]")
    cfg = load_config(name, sets)
    run = tmp_path / name
    result = train(cfg, run, verbose=False, data=random_data(shape, 2 * b))

    assert result["steps"] == 2
    lines = (run / "log.jsonl").read_text().splitlines()
    records = [r for r in map(json.loads, lines) if "eval" not in r]  # training records
    assert [r["step"] for r in records] == [1, 2]
    assert all(math.isfinite(r[k]) for r in records for k in ("loss_d", "loss_g"))
    assert list((run / "samples").glob("*.png")) and (run / "final.png").stat().st_size > 0
    assert (run / "checkpoints" / "last").is_dir()
    assert f"recipe: {name}" in (run / "config.yaml").read_text()


# The seeds' optimizers: (name, lr, betas or RMSprop's rho, eps) of D and of G.
ADAM_DEFAULT = (0.9, 0.999)
SEED_OPTIMIZERS = {
    "vanilla-fmnist": [("adam", 2e-4, (0.5, 0.999), 1e-8)] * 2,
    "dcgan-mnist": [("adam", 1e-4, ADAM_DEFAULT, 1e-8)] * 2,
    "dcgan-svhn": [("adam", 2e-4, (0.5, 0.999), 1e-8)] * 2,
    "dcgan-svhn-gray": [("adam", 2e-4, (0.5, 0.999), 1e-8)] * 2,
    "cifar-ships": [("rmsprop", 8e-4, 0.9, 1e-7), ("rmsprop", 4e-4, 0.9, 1e-7)],
    "gaussian-2d": [("adam", 0.05, ADAM_DEFAULT, 1e-8), ("adam", 0.005, ADAM_DEFAULT, 1e-8)],
    "dcgan-64": [("adam", 0.005, (0.5, 0.999), 1e-8)] * 2,
}


def test_every_seed_recipe_is_shipped():
    assert set(SEED_OPTIMIZERS) == set(SEED_D_LOSS) <= set(recipe_names())


@pytest.mark.parametrize("name", sorted(SEED_OPTIMIZERS))
def test_optimizers_are_the_seeds(name: str):
    cfg = load_config(name, CHEAP_NETS)
    m = build_models(cfg, data_shape(cfg.data), torch.device("cpu"))
    for opt, (kind, lr, moment, eps) in zip((m.opt_d, m.opt_g), SEED_OPTIMIZERS[name], strict=True):
        group = opt.param_groups[0]
        assert isinstance(opt, torch.optim.RMSprop if kind == "rmsprop" else torch.optim.Adam)
        assert group["lr"] == pytest.approx(lr) and group["eps"] == pytest.approx(eps)
        assert group["alpha" if kind == "rmsprop" else "betas"] == pytest.approx(moment)


def test_cifar_ships_clips_gradients_and_decays_the_learning_rate():
    cfg = load_config("cifar-ships", CHEAP_NETS)
    m = build_models(cfg, (3, 32, 32), torch.device("cpu"))
    for i, p in enumerate(m.d.parameters()):
        p.grad = torch.full_like(p, 100.0 if i % 2 else -100.0)
    t = 10**8  # Keras' legacy decay halves the rate after 1 / decay = 1e8 updates
    optimizer_step(m.opt_d, cfg.optim.d, t)
    assert all(p.grad.abs().max() == 1.0 for p in m.d.parameters())  # clipvalue 1.0
    assert m.opt_d.param_groups[0]["lr"] == pytest.approx(8e-4 / 2)


def record_inputs(monkeypatch, builder: str) -> list[torch.Tensor]:
    """Patch ``nets.<builder>`` so every net it builds records its forward inputs."""
    seen: list[torch.Tensor] = []
    build = getattr(nets, builder)

    def recording_build(*args, **kwargs):
        net = build(*args, **kwargs)
        net.register_forward_pre_hook(lambda _m, a: seen.append(a[0].detach().clone()))
        return net

    monkeypatch.setattr(nets, builder, recording_build)
    return seen


@pytest.mark.parametrize(
    "name, z_dim, dist", [("dcgan-svhn", 100, "uniform"), ("cifar-ships", 128, "normal")]
)
def test_latent_noise_reaching_g(name: str, z_dim: int, dist: str, tmp_path, monkeypatch):
    seen = record_inputs(monkeypatch, "build_generator")
    cfg = load_config(name, [*CHEAP_NETS, "train.batch_size=16", "train.iterations=3"])
    train(cfg, tmp_path / "run", verbose=False, data=random_data((3, 32, 32), 32))
    z = torch.cat([s for s in seen if s.abs().sum() > 0])  # the summary's zeros left out
    assert z.shape[1] == z_dim and z.shape[0] >= 3 * 16
    if dist == "uniform":  # U[-1, 1]: bounded, standard deviation 1/sqrt(3)
        assert z.abs().max() <= 1 and z.std().item() == pytest.approx(3**-0.5, rel=0.1)
    else:
        assert z.abs().max() > 2 and z.std().item() == pytest.approx(1.0, rel=0.1)


def bce(logits: torch.Tensor, target: torch.Tensor | float) -> torch.Tensor:
    """Sigmoid cross-entropy by hand: t * softplus(-x) + (1 - t) * softplus(x), averaged."""
    return (target * F.softplus(-logits) + (1 - target) * F.softplus(logits)).mean()


# What each seed's D loss is: real target, how the two halves combine, label noise scale.
SEED_D_LOSS = {
    "vanilla-fmnist": (1.0, "sum", 0.0),
    "dcgan-mnist": (1.0, "sum", 0.0),
    "dcgan-svhn": (0.9, "sum", 0.0),  # one-sided label smoothing
    "dcgan-svhn-gray": (0.9, "sum", 0.0),
    "cifar-ships": (1.0, "mean", 0.05),  # one concatenated batch: the mean of both halves
    "gaussian-2d": (1.0, "mean", 0.0),  # (real + fake) / 2
    "dcgan-64": (1.0, "mean", 0.0),
}


@pytest.mark.parametrize("name", sorted(SEED_D_LOSS))
def test_d_loss_is_the_seeds(name: str):
    real_label, combine, noise_scale = SEED_D_LOSS[name]
    cfg = load_config(name, CHEAP_NETS)  # deterministic nets: no dropout, no batch norm
    assert cfg.loss.label_noise == noise_scale  # the loop draws noise_scale * U[0, 1)
    shape = data_shape(cfg.data)
    m = build_models(cfg, shape, torch.device("cpu"))
    with torch.no_grad():  # logits near 2, not 0, so that a label tweak shows in the loss
        [layer for layer in m.d.modules() if isinstance(layer, torch.nn.Linear)][-1].bias += 2
    gen = torch.Generator().manual_seed(1)
    b = 8
    real = random_data(shape, b).batch(torch.arange(b))
    z = nets.sample_noise(b, cfg.model.z_dim, cfg.model.z_dist, gen, "cpu")
    noise = None
    if noise_scale:
        noise = tuple(torch.rand(2, b, 1, generator=gen) * noise_scale)

    with torch.no_grad():
        r, f = m.d(real), m.d(m.g(z))
    real_t, fake_t = (real_label, 0.0) if noise is None else (real_label + noise[0], noise[1])
    expected = bce(r, real_t) + bce(f, fake_t)
    plain = bce(r, 1.0) + bce(f, 0.0)  # the vanilla rule, which every tweak must change
    if combine == "mean":
        expected = expected / 2
    out = train_step(m, cfg, real, z, step=0, label_noise=noise)
    assert out["loss_d"].item() == pytest.approx(expected.item(), rel=1e-5)
    if (real_label, combine, noise_scale) != (1.0, "sum", 0.0):
        assert abs(expected - plain).item() > 0.05


def test_cifar_ships_walks_the_data_in_order(tmp_path, monkeypatch):
    """No shuffling: batches 0-2, 3-5, then around again (the 7th example is left over)."""
    d_inputs = record_inputs(monkeypatch, "build_discriminator")
    b = 3
    cfg = load_config("cifar-ships", [*CHEAP_NETS, f"train.batch_size={b}", "train.iterations=3"])
    data = random_data((3, 32, 32), 7)
    train(cfg, tmp_path / "run", verbose=False, data=data)
    d_batches = [x for x in d_inputs if x.shape[0] == 2 * b]  # the D steps: [G(z); x]
    assert len(d_batches) == 3
    for x, first in zip(d_batches, (0, 3, 0), strict=True):
        assert torch.equal(x[b:], data.batch(torch.arange(first, first + b)))


def test_gray_svhn_pads_mnist_to_32_in_black():
    cfg = load_config("dcgan-svhn-gray")
    assert data_shape(cfg.data) == (1, 32, 32)
    digits = random_data((1, 28, 28), 4)
    x = select(digits, cfg.data).batch(torch.arange(4))  # in the model's range [-1, 1]
    assert x.shape == (4, 1, 32, 32)
    assert torch.equal(x[:, :, 2:30, 2:30], digits.batch(torch.arange(4)))
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert (x[:, :, border] == -1).all()
