"""Fully connected GAN of seed 002 (vanilla GAN on Fashion-MNIST)."""

from __future__ import annotations

import math

from torch import nn

from . import DISCRIMINATORS, GENERATORS


@GENERATORS.register("mlp")
def mlp_generator(
    z_dim: int,
    shape: tuple[int, ...],
    widths: tuple[int, ...] = (128, 256, 512, 1024),
    bn_eps: float = 1e-5,
    slope: float = 0.2,
) -> nn.Module:
    """z -> Linear/LReLU, then [Linear, BN, LReLU] per width, Linear -> tanh -> image.

    The first hidden layer has no batch norm, as in the seed. ``bn_eps`` defaults to
    PyTorch's 1e-5; the vanilla-fmnist recipe sets the seed's 0.8.
    """
    layers: list[nn.Module] = []
    width_in = z_dim
    for i, width in enumerate(widths):
        layers.append(nn.Linear(width_in, width))
        if i > 0:
            layers.append(nn.BatchNorm1d(width, eps=bn_eps))
        layers.append(nn.LeakyReLU(slope))
        width_in = width
    layers += [nn.Linear(width_in, math.prod(shape)), nn.Tanh(), nn.Unflatten(1, tuple(shape))]
    return nn.Sequential(*layers)


@GENERATORS.register("linear")
def linear_generator(z_dim: int, shape: tuple[int, ...]) -> nn.Module:
    """One affine map z -> x (seed 004's 2-D Gaussian generator)."""
    return nn.Sequential(nn.Linear(z_dim, math.prod(shape)), nn.Unflatten(1, tuple(shape)))


@DISCRIMINATORS.register("mlp")
def mlp_discriminator(
    shape: tuple[int, ...],
    widths: tuple[int, ...] = (512, 256),
    slope: float = 0.2,
    activation: str = "lrelu",
) -> nn.Module:
    """Flatten -> [Linear, activation] per width -> Linear to one logit."""
    act = {"lrelu": lambda: nn.LeakyReLU(slope), "tanh": nn.Tanh, "relu": nn.ReLU}
    if activation not in act:
        raise ValueError(f"activation {activation!r} is unknown; choose one of: {', '.join(act)}")
    layers: list[nn.Module] = [nn.Flatten()]
    width_in = math.prod(shape)
    for width in widths:
        layers += [nn.Linear(width_in, width), act[activation]()]
        width_in = width
    layers.append(nn.Linear(width_in, 1))
    return nn.Sequential(*layers)
