"""2-D metrics: mixture modes and quality, Gaussian moments, and the data sets behind them."""

from __future__ import annotations

import math

import pytest
import torch

from ganforge.config import DataConfig
from ganforge.data import load_data
from ganforge.data.generated import MIXTURES
from ganforge.metrics import points


def _mixture_sample(name: str, n: int, seed: int, components=None) -> torch.Tensor:
    means, std = MIXTURES[name]
    gen = torch.Generator().manual_seed(seed)
    if components is None:
        idx = torch.randint(len(means), (n,), generator=gen)
    else:
        idx = torch.tensor(components)[torch.randint(len(components), (n,), generator=gen)]
    return means[idx] + std * torch.randn(n, 2, generator=gen)


@pytest.mark.parametrize("name, k", [("ring-8", 8), ("grid-25", 25)])
def test_true_mixture_captures_every_mode_at_997_percent(name, k):
    x = _mixture_sample(name, 20_000, seed=1)
    m = points.point_metrics(name, x, None)
    assert m["modes"] == k and m["modes_of"] == k
    # Euclidean distance <= 3 std in 2-D: P = 1 - exp(-9/2) = 98.89% (99.73% is the 1-D rule)
    assert m["hq"] == pytest.approx(100 * (1 - math.exp(-4.5)), abs=0.3)
    assert m["reverse_kl"] < 0.01
    assert sum(m["mode_hist"]) == 20_000


def test_one_mode_gives_one_mode_and_log_k_reverse_kl():
    x = _mixture_sample("ring-8", 2500, seed=2, components=[3])
    m = points.point_metrics("ring-8", x, None)
    assert m["modes"] == 1
    assert m["reverse_kl"] == pytest.approx(math.log(8))
    assert m["mode_hist"][3] == 2500


def test_points_far_from_every_mean_are_low_quality_and_capture_nothing():
    x = _mixture_sample("ring-8", 2500, seed=3) * 1.5  # pushed off the unit circle
    m = points.point_metrics("ring-8", x, None)
    assert m["hq"] == 0.0 and m["modes"] == 0
    # the score (modes + hq/100) ranks a collapsed-but-sharp G above a blurry one
    sharp = points.point_metrics("ring-8", _mixture_sample("ring-8", 2500, 4, [0, 1]), None)
    assert sharp["score"] > m["score"]


def test_two_of_eight_modes_counted():
    x = _mixture_sample("ring-8", 2500, seed=5, components=[0, 4])
    m = points.point_metrics("ring-8", x, None)
    assert m["modes"] == 2
    assert m["reverse_kl"] == pytest.approx(math.log(4), abs=0.01)


@pytest.mark.parametrize("name, k, std", [("ring-8", 8, 0.01), ("grid-25", 25, 0.05)])
def test_mixture_data_sets_are_fixed_pools_of_the_protocol(name, k, std):
    a = load_data(DataConfig(name=name, points=100_000))
    b = load_data(DataConfig(name=name, points=100_000))
    assert a.x.shape == (100_000, 2) and torch.equal(a.x, b.x)  # the same pool every time
    means, _ = MIXTURES[name]
    assert len(means) == k
    # every component is used about equally, and its points scatter with the given std
    assert torch.bincount(a.labels, minlength=k).min() > 100_000 / k * 0.9
    resid = a.x - means[a.labels]
    assert resid.std().item() == pytest.approx(std, rel=0.02)
    assert points.point_metrics(name, a.x[:2500], None)["modes"] == k


def test_ring_and_grid_means():
    ring, _ = MIXTURES["ring-8"]
    assert torch.allclose(ring.norm(dim=1), torch.ones(8))
    assert torch.allclose(ring[2], torch.tensor([0.0, 1.0]), atol=1e-6)
    grid, _ = MIXTURES["grid-25"]
    assert sorted(set(grid[:, 0].tolist())) == [-4.0, -2.0, 0.0, 2.0, 4.0]
    assert len({tuple(p) for p in grid.tolist()}) == 25


def test_gaussian_2d_target_matches_the_data_set():
    pool = load_data(DataConfig(name="gaussian-2d", points=200_000)).x
    m = points.point_metrics("gaussian-2d", pool, None)
    assert m["mean_err"] < 0.02 and m["cov_rel_err"] < 0.03
    assert m["fd"] < 0.005


def test_gaussian_2d_errors_grow_with_a_wrong_fit():
    gen = torch.Generator().manual_seed(0)
    shifted = torch.randn(5000, 2, generator=gen) + torch.tensor([1.5, 2.0])  # identity cov
    m = points.point_metrics("gaussian-2d", shifted, None)
    assert m["mean_err"] == pytest.approx(0.5, abs=0.05)
    assert m["cov_rel_err"] > 0.5  # the off-diagonal 1.95 is missed entirely
    assert m["fd"] > 1.0
    assert points.primary("gaussian-2d") == ("fd", True)
    assert points.primary("ring-8") == ("score", False)


def test_other_2d_data_compare_against_the_pool():
    gen = torch.Generator().manual_seed(0)
    pool = torch.randn(4000, 2, generator=gen) * 2
    same = points.point_metrics("my-points", torch.randn(4000, 2, generator=gen) * 2, pool)
    other = points.point_metrics("my-points", torch.randn(4000, 2, generator=gen), pool)
    assert same["fd"] < 0.05 < other["fd"]


def test_pacgan_baseline_nets_have_the_paper_shapes():
    from ganforge.config import load_config
    from ganforge.nets import build_discriminator, build_generator, count_params
    from ganforge.nets.toy import Maxout

    cfg = load_config("ring-8")
    g, d = build_generator(cfg.model, (2,)), build_discriminator(cfg.model, (2,))
    # G: 2 -> 4 x (400, BN) -> 2; D: 3 maxout layers of 200 units x 5 pieces -> 1
    assert count_params(g) == (2 * 400 + 400 + 800) + 3 * (400 * 400 + 400 + 800) + 802
    assert count_params(d) == (2 * 1000 + 1000) + 2 * (200 * 1000 + 1000) + 201
    assert g(torch.randn(7, 2)).shape == (7, 2) and d(torch.randn(7, 2)).shape == (7, 1)
    m = Maxout(3, 2, 4)
    x = torch.randn(5, 3)
    expected = m.linear(x).view(5, 2, 4).max(2).values
    assert torch.equal(m(x), expected)
    cfg = load_config("grid-25")
    assert (cfg.data.points, cfg.train.batch_size, cfg.optim.g.betas) == (
        100_000,
        100,
        (0.8, 0.999),
    )
    assert cfg.optim.d.lr == cfg.optim.g.lr == 1e-4
    assert (cfg.eval.every, cfg.train.epochs) == (500, 5)
