"""The Keras GAN of seed 003 (CIFAR-10 ships), with Keras' layer defaults.

Keras' ``LeakyReLU()`` has slope 0.3 and its layers start from Glorot-uniform weights and
zero biases; both are kept. ``padding='valid'`` is no padding.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from . import DISCRIMINATORS, GENERATORS
from .dcgan import conv_same, glorot_init, image_shape, tconv_same

KERAS_SLOPE = 0.3  # tf.keras.layers.LeakyReLU's default alpha


@GENERATORS.register("cifar-ships")
def cifar_ships_generator(
    z_dim: int, shape: tuple[int, ...], slope: float = KERAS_SLOPE
) -> nn.Module:
    """Dense -> 128 x H/2 x H/2; conv k5 256; transposed conv k4 s2 to H; two conv k5 256;
    conv k7 to C channels, tanh. LReLU after every layer but the last; 'same' padding."""
    c, h, _ = image_shape(shape, "cifar-ships", 2)
    s = h // 2  # 16 for 32x32
    g = nn.Sequential(
        OrderedDict(
            dense=nn.Linear(z_dim, 128 * s * s),
            act0=nn.LeakyReLU(slope),
            reshape=nn.Unflatten(1, (128, s, s)),
            conv1=conv_same(128, 256, 5),
            act1=nn.LeakyReLU(slope),
            tconv2=tconv_same(256, 256, 4, 2),  # s -> 2s = H
            act2=nn.LeakyReLU(slope),
            conv3=conv_same(256, 256, 5),
            act3=nn.LeakyReLU(slope),
            conv4=conv_same(256, 256, 5),
            act4=nn.LeakyReLU(slope),
            conv5=conv_same(256, c, 7),
            tanh=nn.Tanh(),
        )
    )
    return glorot_init(g)


@DISCRIMINATORS.register("cifar-ships")
def cifar_ships_discriminator(
    shape: tuple[int, ...], slope: float = KERAS_SLOPE, dropout: float = 0.4
) -> nn.Module:
    """Conv k3 (valid) C -> 128, three conv k4 s2 (valid) 128 -> 128, each LReLU;
    flatten, dropout, Dense -> logit (the seed's sigmoid is in the loss)."""
    c, h, w = image_shape(shape, "cifar-ships")
    side_h, side_w = h - 2, w - 2  # k3 valid: 32 -> 30
    for _ in range(3):  # k4 s2 valid: 30 -> 14 -> 6 -> 2
        side_h, side_w = (side_h - 4) // 2 + 1, (side_w - 4) // 2 + 1
    if min(side_h, side_w) < 1:
        raise ValueError(f"cifar-ships needs images of at least 32x32, got shape {tuple(shape)}")
    d = nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(c, 128, 3),
            act1=nn.LeakyReLU(slope),
            conv2=nn.Conv2d(128, 128, 4, 2),
            act2=nn.LeakyReLU(slope),
            conv3=nn.Conv2d(128, 128, 4, 2),
            act3=nn.LeakyReLU(slope),
            conv4=nn.Conv2d(128, 128, 4, 2),
            act4=nn.LeakyReLU(slope),
            flatten=nn.Flatten(),  # 512 for 32x32
            dropout=nn.Dropout(dropout),
            dense=nn.Linear(128 * side_h * side_w, 1),
        )
    )
    return glorot_init(d)
