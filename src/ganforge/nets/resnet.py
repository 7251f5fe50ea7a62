"""``resnet``: a G and D for image folders and small images that scale with the image size.

The image side H is halved while it is above ``base`` (7 by default: 28 -> 7 in 2 stages,
32 -> 4 in 3, 64 -> 4 in 4; base 8: 64 -> 8 in 3); G grows from there by nearest-neighbour
up-sampling stages and D shrinks to it by average-pooling stages, ``ch * 2**k`` channels k
stages from full size. ``res=True`` makes each stage a residual block (two 3x3 convolutions
and a 1x1 skip: SNGAN's G and D blocks, Miyato et al. 2018); ``res=False`` a plain stage of
one 3x3 convolution (a DCGAN with up-sampling, at about half the cost). Spectral norm, the
label wrappers and EMA come from the model section, as for every family.

``shuffle=k`` makes the k stages nearest full size (at most all but one) sub-pixel ones
(Shi et al. 2016): G's last convolution, at side H / 2**k, gives C * 4**k channels that
``PixelShuffle`` rearranges into the (C, H, H) image, and D starts with ``PixelUnshuffle``,
(C, H, H) -> (C * 4**k, H / 2**k, H / 2**k), losing no pixel. The nets then cost about what
they cost at side H / 2**k, every output pixel still learned and every input pixel seen: no
feature map at full size, the dearest part of a CPU step. ``mbstd`` adds a minibatch-std
feature map to D (Karras et al. 2018); ``smooth`` a bilinear base image to G's sub-pixel end.

Shapes, 64x64 RGB, ch=32: z (N, 128) -> (N, 256, 4, 4) -> 8 -> 16 -> 32 -> (N, 32, 64, 64)
-> (N, 3, 64, 64); D: (N, 3, 64, 64) -> (N, 32, 64, 64) -> 32 -> 16 -> 8 -> (N, 256, 4, 4)
-> (N, 1). folder-plus-large (ch 8, base 8, shuffle 2): z -> (N, 64, 8, 8) -> (N, 32, 16, 16)
-> conv (N, 48, 16, 16) -> shuffle (N, 3, 64, 64); D: unshuffle (N, 48, 16, 16) -> (N, 32,
16, 16) -> (N, 64, 8, 8) -> (N, 1).
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F

from . import DISCRIMINATORS, GENERATORS
from .dcgan import image_shape


def stages(side: int, base: int = 7) -> tuple[int, int]:
    """(start, n): the side halved n times while it is even and above ``base`` (28 -> (7, 2),
    64 -> (4, 4), or (8, 3) with base 8)."""
    n = 0
    while side > base and side % 2 == 0 and side // 2 >= 4:
        side, n = side // 2, n + 1
    if n == 0:
        raise ValueError(
            f"resnet needs an image side of 8 or more that halves at least once, got {side}"
        )
    return side, n


def _sub_pixel(n: int, shuffle: int) -> int:
    """Sub-pixel stages of ``n``: ``shuffle``, or fewer where there are too few stages (one
    always stays a convolution stage: 32 -> 8 has 2, so shuffle 2 is 1)."""
    if shuffle < 0:
        raise ValueError(f"resnet's shuffle is a number of stages, 0 or more, got {shuffle}")
    return min(shuffle, n - 1)


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


class SubPixel(nn.Module):
    """G's last layer with ``shuffle`` k: conv3 c_in -> C * 4**k at side h, pixel shuffle to
    (C, h * 2**k, h * 2**k). ``smooth`` adds a conv3 c_in -> C at side h, bilinearly
    up-sampled: a smooth image that the shuffled detail is added to (the output skips of
    StyleGAN2's G, Karras et al. 2020, here at one scale)."""

    def __init__(self, c_in: int, c: int, shuffle: int, smooth: bool) -> None:
        super().__init__()
        self.scale = 2**shuffle
        self.conv = nn.Conv2d(c_in, c * 4**shuffle, 3, 1, 1)
        self.shuffle = nn.PixelShuffle(self.scale)
        self.smooth = nn.Conv2d(c_in, c, 3, 1, 1) if smooth else None

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = self.shuffle(self.conv(h))  # (N, C * 4**k, h, h) -> (N, C, h * 2**k, h * 2**k)
        if self.smooth is None:
            return x
        base = self.smooth(h)  # (N, C, h, h)
        return x + F.interpolate(base, scale_factor=float(self.scale), mode="bilinear")


class MinibatchStd(nn.Module):
    """One more feature map: the standard deviation of the features across groups of
    ``group`` images, averaged to a number per group (Karras et al. 2018). A G that draws
    the same image again and again gives D a lower value than real batches do, so D can
    punish too little variety directly. (N, C, h, w) -> (N, C + 1, h, w); a batch that
    ``group`` does not divide uses the largest group size that does.
    """

    def __init__(self, group: int) -> None:
        super().__init__()
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        g = math.gcd(n, self.group) or 1
        y = x.float().view(g, n // g, *x.shape[1:])  # image i is in group i % (n // g)
        std = (y.var(dim=0, unbiased=False) + 1e-8).sqrt()  # (n // g, C, h, w)
        feat = std.mean(dim=(1, 2, 3)).to(x.dtype)  # (n // g,)
        return torch.cat([x, feat.repeat(g).view(n, 1, 1, 1).expand(n, 1, h, w)], dim=1)


@GENERATORS.register("resnet")
def resnet_generator(
    z_dim: int,
    shape: tuple[int, ...],
    ch: int = 32,
    cap: int = 256,
    res: bool = True,
    shuffle: int = 0,
    base: int = 7,
    smooth: bool = False,
) -> nn.Module:
    """Dense -> (8ch or less, base, base), BN, ReLU; n up stages; BN, ReLU, conv3 -> C; tanh.

    With ``shuffle`` k the last k up stages are replaced by conv3 -> C * 4**k and a pixel
    shuffle by 2**k."""
    c, h, _ = image_shape(shape, "resnet")
    start, n = stages(h, base)
    s = _sub_pixel(n, shuffle)  # n - s up stages, then a shuffle by 2**s
    bottom = _width(ch, n, cap)  # channels at side base
    layers: OrderedDict[str, nn.Module] = OrderedDict(
        dense=nn.Linear(z_dim, bottom * start * start),
        reshape=nn.Unflatten(1, (bottom, start, start)),
    )
    if not res:  # plain stages start with their conv; normalise the dense output here
        layers["bn0"], layers["act0"] = nn.BatchNorm2d(bottom), nn.ReLU()
    for i in range(n - s):  # start * 2**i -> start * 2**(i+1)
        layers[f"up{i + 1}"] = Up(_width(ch, n - i, cap), _width(ch, n - i - 1, cap), res)
    top = _width(ch, s, cap)  # channels at side h / 2**s
    if res:
        layers["bn"], layers["act"] = nn.BatchNorm2d(top), nn.ReLU()
    if s:  # (N, top, h / 2**s, h / 2**s) -> (N, C, h, h)
        layers["out"] = SubPixel(top, c, s, smooth)
    else:
        layers["conv"] = nn.Conv2d(top, c, 3, 1, 1)
    layers["tanh"] = nn.Tanh()
    return nn.Sequential(layers)


@DISCRIMINATORS.register("resnet")
def resnet_discriminator(
    shape: tuple[int, ...],
    ch: int = 32,
    cap: int = 256,
    res: bool = True,
    slope: float = 0.2,
    shuffle: int = 0,
    base: int = 7,
    mbstd: int = 0,
) -> nn.Module:
    """conv3 C -> ch; n down stages to (8ch or less, base, base); LReLU; Dense -> logit.

    With ``shuffle`` k a pixel unshuffle by 2**k comes first and the stem takes C * 4**k
    channels to the width k stages from full size; the first k down stages are gone. With
    ``mbstd`` g > 0 a minibatch-std feature map over groups of g images comes before the
    dense layer."""
    c, h, _ = image_shape(shape, "resnet")
    start, n = stages(h, base)
    s = _sub_pixel(n, shuffle)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    if s:  # (N, C, h, h) -> (N, C * 4**s, h / 2**s, h / 2**s)
        layers["unshuffle"] = nn.PixelUnshuffle(2**s)
    layers["stem"] = nn.Conv2d(c * 4**s, _width(ch, s, cap), 3, 1, 1)
    for i in range(s, n):
        layers[f"down{i + 1}"] = Down(_width(ch, i, cap), _width(ch, i + 1, cap), res, slope)
    layers["act"] = nn.LeakyReLU(slope)
    if mbstd < 0:
        raise ValueError(f"mbstd is a group size: 0 (off) or more, got {mbstd}")
    if mbstd:
        layers["mbstd"] = MinibatchStd(mbstd)
    layers["flatten"] = nn.Flatten()
    layers["dense"] = nn.Linear((_width(ch, n, cap) + (mbstd > 0)) * start * start, 1)
    return nn.Sequential(layers)
