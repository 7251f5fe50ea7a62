"""The 2-D baseline GAN of the PacGAN / VEEGAN mixture experiments (ring-8, grid-25).

G: noise -> ``depth`` x [Linear(width), BN, ReLU] -> Linear to the data dimension.
D: ``depth`` maxout layers (``units`` outputs, each the max of ``pieces`` linear pieces)
-> Linear to one logit. No batch norm in D.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from . import DISCRIMINATORS, GENERATORS


class Maxout(nn.Module):
    """Linear map to ``units * pieces`` values, then the max over each group of ``pieces``."""

    def __init__(self, width_in: int, units: int, pieces: int) -> None:
        super().__init__()
        self.units, self.pieces = units, pieces
        self.linear = nn.Linear(width_in, units * pieces)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x).view(x.shape[0], self.units, self.pieces)  # (N, units, pieces)
        return y.amax(2)


@GENERATORS.register("toy")
def toy_generator(
    z_dim: int, shape: tuple[int, ...], width: int = 400, depth: int = 4, bn: bool = True
) -> nn.Module:
    """PacGAN's 2-D generator: ``depth`` x (Linear ``width``, BN, ReLU), then Linear;
    ``bn=False`` leaves the batch norms out (grid-25-plus)."""
    layers: list[nn.Module] = []
    width_in = z_dim
    for _ in range(depth):
        norm = [nn.BatchNorm1d(width)] if bn else []
        layers += [nn.Linear(width_in, width), *norm, nn.ReLU()]
        width_in = width
    layers += [nn.Linear(width_in, math.prod(shape)), nn.Unflatten(1, tuple(shape))]
    return nn.Sequential(*layers)


@DISCRIMINATORS.register("maxout")
def maxout_discriminator(
    shape: tuple[int, ...], units: int = 200, pieces: int = 5, depth: int = 3
) -> nn.Module:
    """PacGAN's 2-D discriminator: ``depth`` maxout layers, then Linear to one logit."""
    layers: list[nn.Module] = [nn.Flatten()]
    width_in = math.prod(shape)
    for _ in range(depth):
        layers.append(Maxout(width_in, units, pieces))
        width_in = units
    layers.append(nn.Linear(width_in, 1))
    return nn.Sequential(*layers)
