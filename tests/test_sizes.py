"""The image-folder recipe's nets at each supported side, 32 to 256: build, one forward pass,
and the parameter counts of the doubling ladder (docs/recipes.md, "Sizes")."""

from __future__ import annotations

import pytest
import torch

from ganforge import nets
from ganforge.config import load_config


def ladder_params(size: int, z: int = 100, c: int = 3, base: int = 64) -> tuple[int, int]:
    """(G, D) parameters of dcgan-64 at ``size``: n = log2(size) - 2 k4 blocks each way, no
    biases, BatchNorm (2 per channel) after every block but G's last layer."""
    n = size.bit_length() - 3
    g_widths = [base * 2 ** (n - 1 - i) for i in range(n)]  # 512, 256, 128, 64 at 64x64
    d_widths = [base * 2**i for i in range(n)]  # 64, 128, 256, 512 at 64x64
    chain = [z, *g_widths, c]
    g = 16 * sum(a * b for a, b in zip(chain, chain[1:], strict=False)) + 2 * sum(g_widths)
    chain = [c, *d_widths, 1]
    d = 16 * sum(a * b for a, b in zip(chain, chain[1:], strict=False)) + 2 * sum(d_widths)
    return g, d


SIZES = [32, 64, 128, 256]


@pytest.mark.parametrize(
    "size", SIZES, ids=[f"{s}px-G{ladder_params(s)[0]:_}-D{ladder_params(s)[1]:_}" for s in SIZES]
)
def test_dcgan64_builds_and_runs_at_each_size(size):
    torch.manual_seed(0)
    cfg = load_config("dcgan-64", [f"data.size={size}"])
    shape = (3, size, size)
    g = nets.build_generator(cfg.model, shape)
    d = nets.build_discriminator(cfg.model, shape)
    assert (nets.count_params(g), nets.count_params(d)) == ladder_params(size)
    with torch.no_grad():
        x = g(torch.randn(2, cfg.model.z_dim))
        assert x.shape == (2, *shape) and d(x).shape == (2, 1)
        assert x.abs().max() <= 1  # tanh


def test_the_formula_matches_the_documented_counts():
    assert ladder_params(64) == (3_576_704, 2_765_696)  # the recipe table
    assert ladder_params(128)[0] == 12_786_560  # "12.8 M parameters for G at 128 px"


@pytest.mark.parametrize("size", [28, *SIZES])
def test_folder_plus_builds_and_runs_at_each_size(size):
    """folder-plus's resnet nets at every side it is documented for (28: sngan-fmnist's):
    G's output and D's logit shapes, spectral norm on D's weights, a stage per halving."""
    from ganforge.nets.resnet import stages

    torch.manual_seed(0)
    cfg = load_config("folder-plus", [f"data.size={size}"])
    shape = (3, size, size)
    g = nets.build_generator(cfg.model, shape)
    d = nets.build_discriminator(cfg.model, shape)
    base, n = stages(size)
    assert base * 2**n == size
    ups = [m for m in g.modules() if type(m).__name__ == "Up"]
    assert len(ups) == n
    assert any(hasattr(m, "parametrizations") for m in d.modules())  # spectral norm
    with torch.no_grad():
        x = g(torch.randn(2, cfg.model.z_dim))
        assert x.shape == (2, *shape) and d(x).shape == (2, 1)
        assert x.abs().max() <= 1


@pytest.mark.parametrize("size", [28, *SIZES])
def test_folder_plus_large_builds_and_runs_at_each_size(size):
    """folder-plus-large's resnet nets at every side it is documented for (and 28): G's output and
    D's logit shapes, spectral norm on D's weights, the side halved to 8 or less and the
    last two halvings (one where there are only two) a pixel shuffle: no conv at full size."""
    from ganforge.nets.resnet import stages

    torch.manual_seed(0)
    cfg = load_config("folder-plus-large", [f"data.size={size}"])
    shape = (3, size, size)
    g = nets.build_generator(cfg.model, shape)
    d = nets.build_discriminator(cfg.model, shape)
    start, n = stages(size, 8)
    assert start * 2**n == size and start <= 8
    sub = min(2, n - 1)
    ups = [m for m in g.modules() if type(m).__name__ == "Up"]
    assert len(ups) == n - sub
    assert any(hasattr(m, "parametrizations") for m in d.modules())  # spectral norm
    sides: list[int] = []
    for net in (g, d):
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.register_forward_hook(lambda m, i, o: sides.append(o.shape[-1]))
    with torch.no_grad():
        x = g(torch.randn(2, cfg.model.z_dim))  # self-conditioned: G draws the clusters
        y = torch.tensor([0, cfg.model.clusters - 1])  # D takes each image's cluster
        assert x.shape == (2, *shape) and nets.judge(d, x, y).shape == (2, 1)
        assert x.abs().max() <= 1
    assert max(sides) == size // 2**sub
