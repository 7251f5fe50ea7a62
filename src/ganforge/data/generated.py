"""Data sets generated from a seed: small 2-D distributions for toy GANs."""

from __future__ import annotations

import torch

from ..config import DataConfig
from ..errors import ConfigError, option
from . import TensorData, dataset

DATA_SEED = 1234  # generated data sets are the same in every run


@dataset("gaussian-2d", (2,))
def gaussian_2d(cfg: DataConfig) -> TensorData:
    """Points X @ A + b with X ~ N(0, I): mean b, covariance A^T A (seed 004, D2L 17.1).

    A and b are ``data.gaussian_a`` and ``data.gaussian_b`` (the seed's [[1, 2], [-0.1, 0.5]]
    and [1, 2] by default); the evaluator scores against the same (``gaussian_target``).
    """
    gen = torch.Generator().manual_seed(DATA_SEED)
    a = torch.tensor(cfg.gaussian_a)
    b = torch.tensor(cfg.gaussian_b)
    x = torch.randn(cfg.points, 2, generator=gen) @ a + b
    return TensorData(x, None, "generated")


def gaussian_target(cfg: DataConfig) -> tuple[list[float], list[list[float]]]:
    """The exact mean b and covariance A^T A of gaussian-2d's distribution under ``cfg``."""
    a = torch.tensor(cfg.gaussian_a, dtype=torch.float64)
    return list(map(float, cfg.gaussian_b)), (a.T @ a).tolist()


def _ring_means(k: int = 8, radius: float = 1.0) -> torch.Tensor:
    angle = 2 * torch.pi * torch.arange(k, dtype=torch.float64) / k
    return (radius * torch.stack([angle.cos(), angle.sin()], 1)).float()


def _grid_means(values: tuple[float, ...] = (-4.0, -2.0, 0.0, 2.0, 4.0)) -> torch.Tensor:
    v = torch.tensor(values)
    return torch.cartesian_prod(v, v)


# Gaussian mixtures of the PacGAN / VEEGAN 2-D protocol: (means (K, 2), per-axis std).
MIXTURES: dict[str, tuple[torch.Tensor, float]] = {
    "ring-8": (_ring_means(), 0.01),
    "grid-25": (_grid_means(), 0.05),
}


def _mixture(name: str, cfg: DataConfig) -> TensorData:
    """A fixed pool of ``data.points`` points, each from a uniformly chosen component."""
    means, std = MIXTURES[name]
    gen = torch.Generator().manual_seed(DATA_SEED)
    component = torch.randint(len(means), (cfg.points,), generator=gen)
    x = means[component] + std * torch.randn(cfg.points, 2, generator=gen)
    return TensorData(x, component, "generated")  # labels: the component of each point


@dataset("ring-8", (2,))
def ring_8(cfg: DataConfig) -> TensorData:
    """8 Gaussians (std 0.01) at angles 2 pi i / 8 on the unit circle (PacGAN's 2D-ring)."""
    return _mixture("ring-8", cfg)


@dataset("grid-25", (2,))
def grid_25(cfg: DataConfig) -> TensorData:
    """25 Gaussians (std 0.05) at {-4, -2, 0, 2, 4}^2 (PacGAN's 2D-grid)."""
    return _mixture("grid-25", cfg)


def refuse_path(cfg: DataConfig) -> None:
    """A path given for a data set generated here (``--data``) would be ignored without a
    word: refused in one line (a points file was already taken as ``points`` data)."""
    from . import DATASETS

    if cfg.path is None or cfg.shape is not None or cfg.name not in DATASETS:
        return
    if getattr(DATASETS.get(cfg.name, "data.name"), "__module__", None) == __name__:
        raise ConfigError(
            f"{option(f'--data {cfg.path}', f'data={cfg.path!r}')}: {cfg.name} is generated in "
            "code and reads no files; drop it, or give a .npy or .csv file of (N, 2) points "
            "to train on those"
        )
