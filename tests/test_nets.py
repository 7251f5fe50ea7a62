"""Architectures of every recipe: parameter counts, shapes, gradients; the layer helpers."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from ganforge import nets
from ganforge.config import ModelConfig, load_config, recipe_names
from ganforge.data import data_shape
from ganforge.engine.loop import build_models
from ganforge.engine.step import train_step
from ganforge.errors import ConfigError
from ganforge.nets.dcgan import conv_same, tconv_same

# (G, D) trainable parameters per recipe: RECIPES.md's table (the seeds' own counts where
# they print them). dcgan-svhn-gray is dcgan-svhn with one channel: the last transposed
# conv is 5*5*128*1 + 1 = 3,201 (not 9,603) and the first conv 5*5*1*64 + 64 = 1,664
# (not 4,864).
EXPECTED_PARAMS = {
    "vanilla-fmnist": (1_510_032, 533_505),
    "dcgan-mnist": (2_318_209, 212_865),
    "dcgan-svhn": (4_935_171, 1_034_113),
    "dcgan-svhn-gray": (4_935_171 - 9_603 + 3_201, 1_034_113 - 4_864 + 1_664),
    "cifar-ships": (9_410_307, 790_913),
    "gaussian-2d": (6, 37),
    "dcgan-64": (3_576_704, 2_765_696),
}
# The shapes the seeds train on, as the recipes' data settings must produce them.
EXPECTED_SHAPES = {
    "vanilla-fmnist": (1, 28, 28),
    "dcgan-mnist": (1, 28, 28),
    "dcgan-svhn": (3, 32, 32),
    "dcgan-svhn-gray": (1, 32, 32),
    "cifar-ships": (3, 32, 32),
    "gaussian-2d": (2,),
    "dcgan-64": (3, 64, 64),
}


def test_every_seed_recipe_is_shipped():
    assert set(EXPECTED_PARAMS) == set(EXPECTED_SHAPES) <= set(recipe_names())


@pytest.mark.parametrize("name", recipe_names())
def test_recipe_nets(name: str):
    cfg = load_config(name)
    shape = data_shape(cfg.data)
    m = build_models(cfg, shape, torch.device("cpu"))
    if name in EXPECTED_PARAMS:  # the seed recipes; others are checked for shapes and gradients
        assert shape == EXPECTED_SHAPES[name]
        assert (nets.count_params(m.g), nets.count_params(m.d)) == EXPECTED_PARAMS[name]

    # two packs: the smallest batch BatchNorm takes; big nets cost seconds per step on a CPU
    b = 2 * cfg.model.pack
    gen = torch.Generator().manual_seed(0)
    z = nets.sample_noise(b, cfg.model.z_dim, cfg.model.z_dist, gen, "cpu")
    real = torch.rand(b, *shape, generator=gen) * 2 - 1
    k = cfg.model.conditioned  # classes or clusters: a label per example in training
    y = None if k is None else torch.arange(b) % k
    for p in [*m.g.parameters(), *m.d.parameters()]:
        p.grad = None
    # one step that updates both nets (the last D step of a G step), with its random draws
    step = cfg.train.d_steps - 1
    out = train_step(m, cfg, real, z, step, y=y, gen=torch.Generator().manual_seed(1))
    assert all(torch.isfinite(v) for v in out.values())
    for net_name, net in (("G", m.g), ("D", m.d)):
        for pname, p in net.named_parameters():
            assert p.grad is not None, f"{name}: {net_name}.{pname} got no gradient"
            assert torch.isfinite(p.grad).all(), f"{name}: {net_name}.{pname} gradient not finite"

    m.g.eval()  # sampling mode (running statistics, no dropout), as the samples are drawn
    m.d.eval()
    with torch.no_grad():
        fake = nets.generate(m.g, z, y)
        logits = nets.judge(m.d, fake, y)
    assert fake.shape == (b, *shape) and torch.isfinite(fake).all()
    assert logits.shape == (b // cfg.model.pack, 1) and torch.isfinite(logits).all()
    if len(shape) == 3:  # the image generators end in tanh
        assert fake.abs().max() <= 1


@pytest.mark.parametrize("k, s", [(5, 1), (5, 2), (4, 2), (3, 2), (7, 1), (3, 3)])
@pytest.mark.parametrize("n", [1, 4, 7, 16])
def test_tconv_same_multiplies_the_side_by_the_stride(k: int, s: int, n: int):
    layer = tconv_same(2, 3, k, s)
    assert layer(torch.zeros(1, 2, n, n)).shape == (1, 3, n * s, n * s)


@pytest.mark.parametrize("k", [3, 5, 7])
@pytest.mark.parametrize("s", [1, 2])
@pytest.mark.parametrize("n", [7, 14, 28, 32])
def test_conv_same_divides_the_side_by_the_stride_rounding_up(k: int, s: int, n: int):
    layer = conv_same(2, 3, k, s)
    assert layer(torch.zeros(1, 2, n, n)).shape == (1, 3, math.ceil(n / s), math.ceil(n / s))


def test_same_padding_that_would_be_asymmetric_is_refused():
    with pytest.raises(ValueError, match="odd kernel"):
        conv_same(1, 1, 4)
    with pytest.raises(ValueError, match="k4 s1"):
        tconv_same(1, 1, 4, 1)


@pytest.mark.parametrize(
    "g, shape, message",
    [
        ("dcgan-svhn", (1, 28, 28), "multiple of 8"),
        ("dcgan-mnist", (1, 30, 30), "multiple of 4"),
        ("dcgan-64", (3, 48, 48), "power-of-two"),
        ("cifar-ships", (3, 28, 32), "square"),
        ("dcgan-mnist", (2,), "square"),
    ],
)
def test_impossible_shapes_are_config_errors(g: str, shape: tuple[int, ...], message: str):
    with pytest.raises(ConfigError, match=message):
        nets.build_generator(ModelConfig(g=g, d=g), shape)


@pytest.mark.parametrize(
    "net, shape, g_params",
    [
        # dcgan-64's ladder at 32x32: 100->256 (4), 256->128 (8), 128->64 (16), 64->3 (32);
        # each k4 transposed conv without bias, BN (2 per channel) after all but the last.
        (
            "dcgan-64",
            (3, 32, 32),
            16 * (100 * 256 + 256 * 128 + 128 * 64 + 64 * 3) + 2 * (256 + 128 + 64),
        ),
        # dcgan-mnist at 1x32x32 starts 8x8: dense 100 -> 256*64 with BN over its outputs.
        ("dcgan-mnist", (1, 32, 32), 2_318_209 + (100 + 1 + 2) * 256 * (64 - 49)),
    ],
)
def test_families_follow_the_data_shape(net: str, shape: tuple[int, ...], g_params: int):
    cfg = ModelConfig(g=net, d=net)
    g, d = nets.build_generator(cfg, shape), nets.build_discriminator(cfg, shape)
    assert nets.count_params(g) == g_params
    x = g(torch.randn(2, cfg.z_dim))
    assert x.shape == (2, *shape) and d(x).shape == (2, 1)


def test_flat_bn_is_the_s4tf_batch_norm():
    """S4TF's workaround: BN over all C*H*W units of the conv maps (7x7x128, 14x14x64)."""
    cfg = ModelConfig(g="dcgan-mnist", d="dcgan-mnist", g_args={"flat_bn": True})
    g = nets.build_generator(cfg, (1, 28, 28))
    per_channel = 2 * (128 + 64)
    flat = 2 * (7 * 7 * 128 + 14 * 14 * 64)
    assert nets.count_params(g) == 2_318_209 - per_channel + flat
    assert g(torch.randn(3, 100)).shape == (3, 1, 28, 28)


def test_keras_family_uses_keras_defaults():
    """LeakyReLU slope 0.3, Glorot-uniform weights (bound sqrt(6 / (fan_in + fan_out)))."""
    g = nets.build_generator(ModelConfig(g="cifar-ships", z_dim=128), (3, 32, 32))
    slopes = {m.negative_slope for m in g.modules() if isinstance(m, torch.nn.LeakyReLU)}
    assert slopes == {0.3}
    dense = g.dense
    bound = math.sqrt(6 / (128 + 128 * 16 * 16))
    assert dense.weight.abs().max() <= bound and dense.weight.abs().max() > 0.9 * bound
    assert torch.count_nonzero(dense.bias) == 0


def test_toy_generator_without_batch_norm():
    """grid-25-plus's G: 3 x (Linear 256, ReLU), no BN (2*256+256 + 2*(256*256+256) + 514)."""
    cfg = ModelConfig(g="toy", z_dim=2, g_args={"width": 256, "depth": 3, "bn": False})
    g = nets.build_generator(cfg, (2,))
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in g.modules())
    assert nets.count_params(g) == 132_866
    with_bn = nets.build_generator(replace(cfg, g_args={"width": 256, "depth": 3}), (2,))
    assert nets.count_params(with_bn) == 132_866 + 3 * 2 * 256
    assert g(torch.randn(1, 2)).shape == (1, 2)  # one example: no batch statistics needed


def test_dcgan_mnist_widths_slim_the_nets_and_bad_widths_are_config_errors():
    # dcgan-fmnist-plus's slim widths; the seed's defaults are checked in EXPECTED_PARAMS
    cfg = ModelConfig(g="dcgan-mnist", d="dcgan-mnist", g_args={"widths": [32, 16, 8]})
    cfg = ModelConfig(**{**cfg.__dict__, "d_args": {"widths": [16, 32], "dropout": 0.0}})
    shape = (1, 28, 28)
    g, d = nets.build_generator(cfg, shape), nets.build_discriminator(cfg, shape)
    assert (nets.count_params(g), nets.count_params(d)) == (177_777, 14_817)
    bad = ModelConfig(g="dcgan-mnist", g_args={"widths": [1, 2]})
    with pytest.raises(ConfigError, match="widths"):
        nets.build_generator(bad, shape)


# One example shape each registered net supports (a builder added without one fails below).
BUILDER_SHAPES = {
    "mlp": (1, 28, 28),
    "linear": (2,),
    "toy": (2,),
    "maxout": (2,),
    "dcgan-mnist": (1, 28, 28),
    "dcgan-svhn": (3, 32, 32),
    "dcgan-64": (3, 64, 64),
    "cifar-ships": (3, 32, 32),
    "resnet": (3, 32, 32),
}


BUILDERS = [("g", n) for n in nets.GENERATORS.names()]
BUILDERS += [("d", n) for n in nets.DISCRIMINATORS.names()]


@pytest.mark.parametrize("classes", [None, 3], ids=["plain", "conditional"])
@pytest.mark.parametrize(("kind", "name"), BUILDERS, ids=[f"{k}-{n}" for k, n in BUILDERS])
def test_every_registered_builder_builds_runs_and_conditions(kind, name, classes):
    """Each builder, plain and wrapped as class-conditional at build time (label embedding and
    class BN for G, projection head for D): output shapes and a gradient to every weight."""
    shape = BUILDER_SHAPES[name]
    cfg = ModelConfig(g=name, d=name, z_dim=8, num_classes=classes)
    y = None if classes is None else torch.tensor([0, 1, 2, 1])
    run = nets.generate if kind == "g" else nets.judge
    build = nets.build_generator if kind == "g" else nets.build_discriminator
    net = build(cfg, shape)
    x = torch.randn(4, 8) if kind == "g" else torch.randn(4, *shape)
    out = run(net, x, y)
    assert out.shape == ((4, *shape) if kind == "g" else (4, 1))
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    if classes is not None:  # the labels change the output
        net.eval()
        with torch.no_grad():
            assert not torch.equal(run(net, x, y), run(net, x, torch.tensor([1, 2, 0, 0])))
