"""Convolutional GANs of seeds 000, 001 and 004 (DCGAN families), parametrised by data shape.

- ``dcgan-mnist``: the Swift-for-TensorFlow / TensorFlow-tutorial DCGAN (28x28 start 7x7).
- ``dcgan-svhn``: the TensorFlow DCGAN on SVHN (32x32 start 4x4), any channel count.
- ``dcgan-64``: the Dive-into-Deep-Learning DCGAN (64x64 from a 1x1 latent "image").

Also the layer helpers shared with the Keras family: TensorFlow-style "same" convolutions
and Keras' default initialisation.
"""

from __future__ import annotations

import math
from collections import OrderedDict

from torch import nn

from . import DISCRIMINATORS, GENERATORS

# ---------------------------------------------------------------- layer helpers


def conv_same(c_in: int, c_out: int, k: int, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    """Conv2d whose output side is ceil(input / stride), as TensorFlow's ``padding='same'``.

    Odd kernels only: symmetric padding (k - 1) / 2 gives the same size as TensorFlow
    (which, for even inputs and stride 2, pads one pixel less on the top/left side).
    """
    if k % 2 == 0:
        raise ValueError(f"a 'same' convolution needs an odd kernel here, got {k}")
    return nn.Conv2d(c_in, c_out, k, stride, padding=(k - 1) // 2, bias=bias)


def tconv_same(
    c_in: int, c_out: int, k: int, stride: int = 1, bias: bool = True
) -> nn.ConvTranspose2d:
    """ConvTranspose2d whose output side is exactly input * stride (TensorFlow's 'same').

    The full transposed output is (n - 1) * s + k; cropping ``p`` on each side and adding
    ``op`` on the far side gives n * s when op = s + 2p - k, with p = ceil((k - s) / 2).
    """
    pad = max(0, math.ceil((k - stride) / 2))
    out_pad = stride + 2 * pad - k
    if not 0 <= out_pad < max(stride, 1):
        raise ValueError(f"no 'same' padding for a k{k} s{stride} transposed convolution")
    return nn.ConvTranspose2d(
        c_in, c_out, k, stride, padding=pad, output_padding=out_pad, bias=bias
    )


def glorot_init(net: nn.Module) -> nn.Module:
    """Keras / TensorFlow / S4TF layer defaults: Glorot-uniform weights, zero biases."""
    for m in net.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return net


def image_shape(shape: tuple[int, ...], net: str, multiple: int = 1) -> tuple[int, int, int]:
    """(C, H, W) of a square image shape whose side is a multiple of ``multiple``."""
    if len(shape) != 3 or shape[1] != shape[2] or shape[1] % multiple:
        raise ValueError(
            f"{net} needs square images (C, H, H) with H a multiple of {multiple}, "
            f"got shape {tuple(shape)}; choose another model or resize/pad the data"
        )
    return shape[0], shape[1], shape[2]


def _bn2d(c: int, flat: bool, h: int) -> nn.Module:
    """Per-channel batch norm, or (``flat``) batch norm over every C*H*W unit, as S4TF."""
    if not flat:
        return nn.BatchNorm2d(c)
    return nn.Sequential(nn.Flatten(), nn.BatchNorm1d(c * h * h), nn.Unflatten(1, (c, h, h)))


def _widths(widths: tuple[int, ...], n: int, net: str) -> tuple[int, ...]:
    """``n`` positive channel counts, or a ValueError naming the net (a ConfigError upstream)."""
    widths = tuple(widths)
    if len(widths) != n or not all(isinstance(w, int) and w > 0 for w in widths):
        raise ValueError(f"{net} needs widths of {n} positive integers, got {list(widths)}")
    return widths


# ---------------------------------------------------------------- dcgan-mnist (seed 000)


@GENERATORS.register("dcgan-mnist")
def dcgan_mnist_generator(
    z_dim: int,
    shape: tuple[int, ...],
    slope: float = 0.2,
    flat_bn: bool = False,
    widths: tuple[int, int, int] = (256, 128, 64),
) -> nn.Module:
    """Dense -> w0 x H/4 x H/4, then k5 transposed convs s1, s2, s2 (w0 -> w1 -> w2 -> C).

    Every layer has a bias; BN + LReLU after all but the last, which ends in tanh.
    ``flat_bn`` reproduces S4TF's batch norm over flattened conv maps (more parameters).
    ``widths`` (w0, w1, w2) default to the seed's (256, 128, 64); slimmer nets train faster
    on a CPU (dcgan-fmnist-plus).
    """
    c, h, _ = image_shape(shape, "dcgan-mnist", 4)
    s = h // 4  # 7 for 28x28
    w0, w1, w2 = _widths(widths, 3, "dcgan-mnist G")
    g = nn.Sequential(
        OrderedDict(
            dense=nn.Linear(z_dim, w0 * s * s),
            bn0=nn.BatchNorm1d(w0 * s * s),  # over all w0*s*s (12,544) dense outputs, as the seed
            act0=nn.LeakyReLU(slope),
            reshape=nn.Unflatten(1, (w0, s, s)),
            tconv1=tconv_same(w0, w1, 5, 1),  # s x s
            bn1=_bn2d(w1, flat_bn, s),
            act1=nn.LeakyReLU(slope),
            tconv2=tconv_same(w1, w2, 5, 2),  # 2s x 2s
            bn2=_bn2d(w2, flat_bn, 2 * s),
            act2=nn.LeakyReLU(slope),
            tconv3=tconv_same(w2, c, 5, 2),  # 4s x 4s = H x H
            tanh=nn.Tanh(),
        )
    )
    return glorot_init(g)


@DISCRIMINATORS.register("dcgan-mnist")
def dcgan_mnist_discriminator(
    shape: tuple[int, ...],
    slope: float = 0.2,
    dropout: float = 0.3,
    widths: tuple[int, int] = (64, 128),
) -> nn.Module:
    """Two k5 s2 'same' convs (C -> w0 -> w1), each LReLU + dropout, then Dense -> logit.

    ``widths`` default to the seed's (64, 128).
    """
    c, h, w = image_shape(shape, "dcgan-mnist")
    w0, w1 = _widths(widths, 2, "dcgan-mnist D")
    flat = w1 * math.ceil(h / 4) * math.ceil(w / 4)  # 6272 for 28x28 and w1 = 128
    d = nn.Sequential(
        OrderedDict(
            conv1=conv_same(c, w0, 5, 2),
            act1=nn.LeakyReLU(slope),
            drop1=nn.Dropout(dropout),
            conv2=conv_same(w0, w1, 5, 2),
            act2=nn.LeakyReLU(slope),
            drop2=nn.Dropout(dropout),
            flatten=nn.Flatten(),
            dense=nn.Linear(flat, 1),
        )
    )
    return glorot_init(d)


# ---------------------------------------------------------------- dcgan-svhn (seed 001)


@GENERATORS.register("dcgan-svhn")
def dcgan_svhn_generator(z_dim: int, shape: tuple[int, ...]) -> nn.Module:
    """Dense -> 512 x H/8 x H/8, BN, ReLU; three k5 s2 transposed convs 256, 128, C; tanh."""
    c, h, _ = image_shape(shape, "dcgan-svhn", 8)
    s = h // 8  # 4 for 32x32
    return nn.Sequential(
        OrderedDict(
            dense=nn.Linear(z_dim, 512 * s * s),
            reshape=nn.Unflatten(1, (512, s, s)),
            bn0=nn.BatchNorm2d(512),
            act0=nn.ReLU(),
            tconv1=tconv_same(512, 256, 5, 2),
            bn1=nn.BatchNorm2d(256),
            act1=nn.ReLU(),
            tconv2=tconv_same(256, 128, 5, 2),
            bn2=nn.BatchNorm2d(128),
            act2=nn.ReLU(),
            tconv3=tconv_same(128, c, 5, 2),
            tanh=nn.Tanh(),
        )
    )


@DISCRIMINATORS.register("dcgan-svhn")
def dcgan_svhn_discriminator(shape: tuple[int, ...], slope: float = 0.2) -> nn.Module:
    """k5 s2 convs C -> 64 -> 128 -> 256 (BN on all but the first), LReLU; Dense -> logit."""
    c, h, w = image_shape(shape, "dcgan-svhn")
    flat = 256 * math.ceil(h / 8) * math.ceil(w / 8)  # 4096 for 32x32
    return nn.Sequential(
        OrderedDict(
            conv1=conv_same(c, 64, 5, 2),
            act1=nn.LeakyReLU(slope),
            conv2=conv_same(64, 128, 5, 2),
            bn2=nn.BatchNorm2d(128),
            act2=nn.LeakyReLU(slope),
            conv3=conv_same(128, 256, 5, 2),
            bn3=nn.BatchNorm2d(256),
            act3=nn.LeakyReLU(slope),
            flatten=nn.Flatten(),
            dense=nn.Linear(flat, 1),
        )
    )


# ---------------------------------------------------------------- dcgan-64 (seed 004)


def _doublings(shape: tuple[int, ...], net: str) -> tuple[int, int]:
    """(C, n) for an image of side 4 * 2**n, n >= 1 (64x64: n = 4)."""
    c, h, _ = image_shape(shape, net)
    n = round(math.log2(h)) - 2
    if h < 8 or 2 ** (n + 2) != h:
        raise ValueError(f"{net} needs a power-of-two image side of at least 8, got {h}")
    return c, n


@GENERATORS.register("dcgan-64")
def dcgan64_generator(z_dim: int, shape: tuple[int, ...], base: int = 64) -> nn.Module:
    """z as a z x 1 x 1 map; k4 transposed-conv blocks (no bias, BN, ReLU) up to H / 2; tanh.

    The first block (s1 p0) makes 4x4 with base * 2**(n - 1) channels; each next block
    (s2 p1) doubles the side and halves the channels; the last layer makes C x H x H.
    """
    c, n = _doublings(shape, "dcgan-64")
    layers: OrderedDict[str, nn.Module] = OrderedDict(reshape=nn.Unflatten(1, (z_dim, 1, 1)))
    width_in, width = z_dim, base * 2 ** (n - 1)  # 512 for 64x64
    for i in range(n):
        stride, pad = (1, 0) if i == 0 else (2, 1)
        layers[f"tconv{i + 1}"] = nn.ConvTranspose2d(width_in, width, 4, stride, pad, bias=False)
        layers[f"bn{i + 1}"] = nn.BatchNorm2d(width)
        layers[f"act{i + 1}"] = nn.ReLU()
        width_in, width = width, width // 2
    layers[f"tconv{n + 1}"] = nn.ConvTranspose2d(width_in, c, 4, 2, 1, bias=False)
    layers["tanh"] = nn.Tanh()
    return nn.Sequential(layers)


@DISCRIMINATORS.register("dcgan-64")
def dcgan64_discriminator(shape: tuple[int, ...], base: int = 64, slope: float = 0.2) -> nn.Module:
    """k4 s2 p1 conv blocks (no bias, BN - the first block too -, LReLU) down to 4x4,
    then a k4 conv to one 1x1 logit."""
    c, n = _doublings(shape, "dcgan-64")
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    width_in, width = c, base
    for i in range(n):
        layers[f"conv{i + 1}"] = nn.Conv2d(width_in, width, 4, 2, 1, bias=False)
        layers[f"bn{i + 1}"] = nn.BatchNorm2d(width)
        layers[f"act{i + 1}"] = nn.LeakyReLU(slope)
        width_in, width = width, width * 2
    layers[f"conv{n + 1}"] = nn.Conv2d(width_in, 1, 4, bias=False)  # 4x4 -> 1x1
    layers["flatten"] = nn.Flatten()  # (N, 1)
    return nn.Sequential(layers)
