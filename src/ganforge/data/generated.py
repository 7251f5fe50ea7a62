"""Data sets generated from a seed: small 2-D distributions for toy GANs."""

from __future__ import annotations

import torch

from ..config import DataConfig
from . import TensorData, dataset

DATA_SEED = 1234  # generated data sets are the same in every run


@dataset("gaussian-2d", (2,))
def gaussian_2d(cfg: DataConfig) -> TensorData:
    """Points X @ A + b with X ~ N(0, I): mean b, covariance A^T A (seed 004, D2L 17.1)."""
    gen = torch.Generator().manual_seed(DATA_SEED)
    a = torch.tensor([[1.0, 2.0], [-0.1, 0.5]])
    b = torch.tensor([1.0, 2.0])
    x = torch.randn(cfg.points, 2, generator=gen) @ a + b
    return TensorData(x, None, "generated")
