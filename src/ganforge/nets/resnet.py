"""``resnet``: a G and D for image folders and small images that scale with the image size.

The image side H is halved down to a base of 4 to 7 pixels (28 -> 7 in 2 stages, 32 -> 4 in
3, 64 -> 4 in 4, 256 -> 4 in 6); G grows from the base by nearest-neighbour up-sampling
stages and D shrinks to it by average-pooling stages, ``ch * 2**k`` channels k stages
from full size. ``res=True`` makes each stage a residual block (two 3x3 convolutions and a
1x1 skip: SNGAN's G and D blocks, Miyato et al. 2018); ``res=False`` a plain stage of one
3x3 convolution (a DCGAN with up-sampling, at about half the cost). Spectral norm, the
label wrappers and EMA come from the model section, as for every family.

Shapes, 64x64 RGB, ch=32: z (N, 128) -> (N, 256, 4, 4) -> 8 -> 16 -> 32 -> (N, 32, 64, 64)
-> (N, 3, 64, 64); D: (N, 3, 64, 64) -> (N, 32, 64, 64) -> 32 -> 16 -> 8 -> (N, 256, 4, 4)
-> (N, 1).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F

from . import DISCRIMINATORS, GENERATORS
from .dcgan import image_shape


def stages(side: int) -> tuple[int, int]:
    """(base, n): the side halved n times while it is even and above 7 (28 -> (7, 2))."""
    n = 0
    while side > 7 and side % 2 == 0 and side // 2 >= 4:
        side, n = side // 2, n + 1
    if n == 0:
        raise ValueError(
            f"resnet needs an image side of 8 or more that halves at least once, got {side}"
        )
    return side, n


def _width(ch: int, k: int, cap: int) -> int:
    """Channels k stages from full size: doubling per stage, at most ``cap``."""
    return min(cap, ch * 2**k)


class Up(nn.Module):
    """G stage, (N, c_in, h, h) -> (N, c_out, 2h, 2h).

    res: BN, ReLU, up, conv3, BN, ReLU, conv3, plus up + conv1x1 of the input. Plain: up,
    conv3, BN, ReLU. ``labelled`` forwards the labels to BatchNorms that take them (the
    class-conditional wrapper replaces them in place, ``nets.cond``).
    """

    labelled = True

    def __init__(self, c_in: int, c_out: int, res: bool) -> None:
        super().__init__()
        self.res = res
        if res:
            self.bn1, self.conv1 = nn.BatchNorm2d(c_in), nn.Conv2d(c_in, c_out, 3, 1, 1)
            self.bn2, self.conv2 = nn.BatchNorm2d(c_out), nn.Conv2d(c_out, c_out, 3, 1, 1)
            self.skip = nn.Conv2d(c_in, c_out, 1)
        else:
            self.conv1, self.bn2 = nn.Conv2d(c_in, c_out, 3, 1, 1), nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        def bn(m: nn.Module, h: torch.Tensor) -> torch.Tensor:
            return m(h) if y is None or isinstance(m, nn.BatchNorm2d) else m(h, y)

        up = F.interpolate(x, scale_factor=2.0, mode="nearest")
        if not self.res:
            return F.relu(bn(self.bn2, self.conv1(up)))
        h = F.interpolate(F.relu(bn(self.bn1, x)), scale_factor=2.0, mode="nearest")
        h = self.conv2(F.relu(bn(self.bn2, self.conv1(h))))
        return h + self.skip(up)


class Down(nn.Module):
    """D stage, (N, c_in, h, h) -> (N, c_out, h/2, h/2).

    res: LReLU, conv3, LReLU, conv3, avg-pool, plus conv1x1 + avg-pool of the input. Plain:
    a k4 s2 conv and LReLU (DCGAN's D block without BN)."""

    def __init__(self, c_in: int, c_out: int, res: bool, slope: float) -> None:
        super().__init__()
        self.res, self.slope = res, slope
        if res:
            self.conv1 = nn.Conv2d(c_in, c_out, 3, 1, 1)
            self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1)
            self.skip = nn.Conv2d(c_in, c_out, 1)
        else:
            self.conv1 = nn.Conv2d(c_in, c_out, 4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.res:
            return F.leaky_relu(self.conv1(x), self.slope)
        h = self.conv1(F.leaky_relu(x, self.slope))
        h = self.conv2(F.leaky_relu(h, self.slope))
        return F.avg_pool2d(h, 2) + F.avg_pool2d(self.skip(x), 2)


@GENERATORS.register("resnet")
def resnet_generator(
    z_dim: int, shape: tuple[int, ...], ch: int = 32, cap: int = 256, res: bool = True
) -> nn.Module:
    """Dense -> (8ch or less, base, base), BN, ReLU; n up stages; BN, ReLU, conv3 -> C; tanh."""
    c, h, _ = image_shape(shape, "resnet")
    base, n = stages(h)
    layers: OrderedDict[str, nn.Module] = OrderedDict(
        dense=nn.Linear(z_dim, _width(ch, n, cap) * base * base),
        reshape=nn.Unflatten(1, (_width(ch, n, cap), base, base)),
    )
    if not res:  # plain stages start with their conv; normalise the dense output here
        layers["bn0"], layers["act0"] = nn.BatchNorm2d(_width(ch, n, cap)), nn.ReLU()
    for i in range(n):  # base * 2**i -> base * 2**(i+1)
        layers[f"up{i + 1}"] = Up(_width(ch, n - i, cap), _width(ch, n - i - 1, cap), res)
    if res:
        layers["bn"], layers["act"] = nn.BatchNorm2d(ch), nn.ReLU()
    layers["conv"] = nn.Conv2d(ch, c, 3, 1, 1)
    layers["tanh"] = nn.Tanh()
    return nn.Sequential(layers)


@DISCRIMINATORS.register("resnet")
def resnet_discriminator(
    shape: tuple[int, ...], ch: int = 32, cap: int = 256, res: bool = True, slope: float = 0.2
) -> nn.Module:
    """conv3 C -> ch; n down stages to (8ch or less, base, base); LReLU; Dense -> logit."""
    c, h, _ = image_shape(shape, "resnet")
    base, n = stages(h)
    layers: OrderedDict[str, nn.Module] = OrderedDict(stem=nn.Conv2d(c, ch, 3, 1, 1))
    for i in range(n):
        layers[f"down{i + 1}"] = Down(_width(ch, i, cap), _width(ch, i + 1, cap), res, slope)
    layers["act"] = nn.LeakyReLU(slope)
    layers["flatten"] = nn.Flatten()
    layers["dense"] = nn.Linear(_width(ch, n, cap) * base * base, 1)
    return nn.Sequential(layers)
