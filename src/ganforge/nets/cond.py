"""Class-conditional networks: conditional generators and projection discriminators.

Each conditional net wraps the unconditional family of the same name, so the trunks are the
very layers of ``mlp.py`` and ``dcgan.py``:

- G ``<family>-cond``: ``g(z, y)``. The label enters twice (each can be turned off):
  a learned label embedding concatenated to z (Mirza & Osindero 2014, ``embed_dim``), and
  conditional batch norm (``cbn``): every BatchNorm of the family's G normalises without its
  own affine and takes a per-class scale and shift instead (de Vries et al. 2017; Dumoulin
  et al. 2017), both initialised to plain BN's 1 and 0.
- D ``<family>-proj``: ``d(x, y)``, the projection discriminator (Miyato & Koyama 2018). The
  family's D up to its last layer gives features phi(x); the logit is the family's last
  layer on phi plus the inner product <w_y, phi> with a learned per-class vector w_y.

Families: ``mlp`` (vanilla-fmnist), ``dcgan-mnist`` (28x28), ``dcgan-svhn`` (32x32),
``dcgan-64``. Labels are int64 class indices of shape (N,) in [0, num_classes).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import GanforgeError
from . import DISCRIMINATORS, GENERATORS
from .dcgan import (
    dcgan64_discriminator,
    dcgan64_generator,
    dcgan_mnist_discriminator,
    dcgan_mnist_generator,
    dcgan_svhn_discriminator,
    dcgan_svhn_generator,
)
from .mlp import mlp_discriminator, mlp_generator


def check_labels(y: torch.Tensor, n: int, num_classes: int) -> None:
    """Labels must be (n,) integers; on the CPU also in [0, num_classes) (on a GPU the range
    check would wait for the device every step, and the training loop checks the data)."""
    if y.dtype != torch.int64 or y.shape != (n,):
        raise GanforgeError(
            f"class labels must be an int64 tensor of shape ({n},), "
            f"got {y.dtype} of shape {tuple(y.shape)}"
        )
    if y.device.type == "cpu" and n and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        bad = int(y.min()) if int(y.min()) < 0 else int(y.max())
        raise GanforgeError(
            f"class label {bad} is out of range: this net has model.num_classes={num_classes} "
            f"(labels 0-{num_classes - 1})"
        )


class ClassBatchNorm(nn.Module):
    """Batch norm with a per-class scale and shift: BN(x) * gamma[y] + beta[y].

    Built from the BatchNorm it replaces (same features, eps, momentum); gamma starts at 1
    and beta at 0 for every class, so at initialisation it is that BatchNorm.
    """

    def __init__(self, bn: nn.BatchNorm1d | nn.BatchNorm2d, num_classes: int) -> None:
        super().__init__()
        c = bn.num_features
        self.bn = type(bn)(c, eps=bn.eps, momentum=bn.momentum, affine=False)
        self.gamma = nn.Embedding(num_classes, c)
        self.beta = nn.Embedding(num_classes, c)
        nn.init.ones_(self.gamma.weight)
        nn.init.zeros_(self.beta.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        view = (-1, x.shape[1]) + (1,) * (x.dim() - 2)  # (N, C) or (N, C, 1, 1)
        return self.bn(x) * self.gamma(y).view(view) + self.beta(y).view(view)


def _class_bn(net: nn.Module, num_classes: int) -> int:
    """Replace every BatchNorm1d/2d inside ``net`` by a ClassBatchNorm; return how many."""
    count = 0
    for name, child in net.named_children():
        if isinstance(child, (nn.BatchNorm1d, nn.BatchNorm2d)):
            setattr(net, name, ClassBatchNorm(child, num_classes))
            count += 1
        else:
            count += _class_bn(child, num_classes)
    return count


def _run(seq: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Forward through a (nested) Sequential, handing the labels to the ClassBatchNorms."""
    for m in seq.children():
        if isinstance(m, ClassBatchNorm):
            x = m(x, y)
        elif isinstance(m, nn.Sequential):
            x = _run(m, x, y)
        else:
            x = m(x)
    return x


class ConditionalGenerator(nn.Module):
    """G(z, y): [z, embed(y)] through the family's G, whose BatchNorms are class-conditional."""

    def __init__(self, body: nn.Sequential, num_classes: int, embed_dim: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.embed = nn.Embedding(num_classes, embed_dim) if embed_dim else None
        self.body = body

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        check_labels(y, z.shape[0], self.num_classes)
        h = z if self.embed is None else torch.cat([z, self.embed(y)], dim=1)  # (N, z + e)
        return _run(self.body, h, y)


class ProjectionDiscriminator(nn.Module):
    """D(x, y) = head(phi(x)) + <w_y, flatten(phi(x))> (Miyato & Koyama 2018).

    ``trunk`` is the family's D without its last layer(s) ``head`` (the linear or conv layer
    to one logit, and a flatten after it). The class vectors w_y are the rows of a bias-free
    linear layer, so spectral normalisation and ``model.init_std`` treat them as D's other
    weights, as in the paper.
    """

    def __init__(
        self, trunk: nn.Sequential, head: nn.Sequential, features: int, num_classes: int
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.trunk, self.head = trunk, head
        self.proj = nn.Linear(features, num_classes, bias=False)  # weight (K, F): row k = w_k
        nn.init.xavier_uniform_(self.proj.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        check_labels(y, x.shape[0], self.num_classes)
        h = self.trunk(x)  # (N, F) or (N, C, 4, 4) for dcgan-64
        phi = h.flatten(1)  # (N, F)
        # <w_y, phi>: all K class scores, then the one of each example's class -> (N, 1)
        return self.head(h) + self.proj(phi).gather(1, y.view(-1, 1))


def _conditional_g(body: nn.Module, num_classes: int, embed_dim: int, cbn: bool) -> nn.Module:
    """Wrap a family's G (built for z_dim + embed_dim inputs) as G(z, y)."""
    if embed_dim < 0:
        raise ValueError(f"embed_dim must be 0 (off) or positive, got {embed_dim}")
    n_bn = _class_bn(body, num_classes) if cbn else 0
    if not embed_dim and not n_bn:
        raise ValueError("G would ignore the labels: set embed_dim > 0 or cbn: true")
    return ConditionalGenerator(body, num_classes, embed_dim)


def _projection_d(plain: nn.Sequential, num_classes: int) -> nn.Module:
    """Split a family's D before its last weight layer and add the class projection."""
    layers = list(plain.children())
    last = max(i for i, m in enumerate(layers) if isinstance(m, (nn.Linear, nn.Conv2d)))
    trunk, head = nn.Sequential(*layers[:last]), nn.Sequential(*layers[last:])
    w = layers[last].weight  # (1, F) linear, or (1, C, k, k) conv over the whole last map
    return ProjectionDiscriminator(trunk, head, w[0].numel(), num_classes)


# ---------------------------------------------------------------- mlp (vanilla-fmnist)


@GENERATORS.register("mlp-cond")
def mlp_cond_generator(
    z_dim: int,
    shape: tuple[int, ...],
    num_classes: int,
    widths: tuple[int, ...] = (128, 256, 512, 1024),
    bn_eps: float = 1e-5,
    slope: float = 0.2,
    embed_dim: int = 10,
    cbn: bool = True,
) -> nn.Module:
    """The ``mlp`` G on [z, embed(y)] (``embed_dim`` 0: z alone), class-conditional BN
    (``cbn``) in its BN layers (all hidden layers but the first)."""
    body = mlp_generator(z_dim + embed_dim, shape, tuple(widths), bn_eps, slope)
    return _conditional_g(body, num_classes, embed_dim, cbn)


@DISCRIMINATORS.register("mlp-proj")
def mlp_proj_discriminator(
    shape: tuple[int, ...],
    num_classes: int,
    widths: tuple[int, ...] = (512, 256),
    slope: float = 0.2,
    activation: str = "lrelu",
) -> nn.Module:
    """The ``mlp`` D; phi(x) is its last hidden layer (256 wide by default)."""
    return _projection_d(mlp_discriminator(shape, tuple(widths), slope, activation), num_classes)


# ---------------------------------------------------------------- the DCGAN families
# Each takes the family's own keyword arguments and passes them on.


@GENERATORS.register("dcgan-mnist-cond")
def dcgan_mnist_cond_generator(
    z_dim: int,
    shape: tuple[int, ...],
    num_classes: int,
    slope: float = 0.2,
    flat_bn: bool = False,
    embed_dim: int = 10,
    cbn: bool = True,
    widths: tuple[int, int, int] = (256, 128, 64),
) -> nn.Module:
    """The ``dcgan-mnist`` G (28x28, its ``widths``) on [z, embed(y)] with class-conditional BN."""
    body = dcgan_mnist_generator(z_dim + embed_dim, shape, slope, flat_bn, tuple(widths))
    return _conditional_g(body, num_classes, embed_dim, cbn)


@DISCRIMINATORS.register("dcgan-mnist-proj")
def dcgan_mnist_proj_discriminator(
    shape: tuple[int, ...],
    num_classes: int,
    slope: float = 0.2,
    dropout: float = 0.3,
    widths: tuple[int, int] = (64, 128),
) -> nn.Module:
    """The ``dcgan-mnist`` D (its ``widths``); phi(x) is its flattened last conv map (6,272
    for 28x28 at the default widths)."""
    d = dcgan_mnist_discriminator(shape, slope, dropout, tuple(widths))
    return _projection_d(d, num_classes)


@GENERATORS.register("dcgan-svhn-cond")
def dcgan_svhn_cond_generator(
    z_dim: int, shape: tuple[int, ...], num_classes: int, embed_dim: int = 10, cbn: bool = True
) -> nn.Module:
    """The ``dcgan-svhn`` G (32x32) on [z, embed(y)] with class-conditional BN."""
    return _conditional_g(
        dcgan_svhn_generator(z_dim + embed_dim, shape), num_classes, embed_dim, cbn
    )


@DISCRIMINATORS.register("dcgan-svhn-proj")
def dcgan_svhn_proj_discriminator(
    shape: tuple[int, ...], num_classes: int, slope: float = 0.2
) -> nn.Module:
    """The ``dcgan-svhn`` D; phi(x) is its flattened last conv map (4,096 for 32x32)."""
    return _projection_d(dcgan_svhn_discriminator(shape, slope), num_classes)


@GENERATORS.register("dcgan-64-cond")
def dcgan64_cond_generator(
    z_dim: int,
    shape: tuple[int, ...],
    num_classes: int,
    base: int = 64,
    embed_dim: int = 10,
    cbn: bool = True,
) -> nn.Module:
    """The ``dcgan-64`` G on [z, embed(y)] (a (z + e) x 1 x 1 map) with class-conditional BN."""
    body = dcgan64_generator(z_dim + embed_dim, shape, base)
    return _conditional_g(body, num_classes, embed_dim, cbn)


@DISCRIMINATORS.register("dcgan-64-proj")
def dcgan64_proj_discriminator(
    shape: tuple[int, ...], num_classes: int, base: int = 64, slope: float = 0.2
) -> nn.Module:
    """The ``dcgan-64`` D; phi(x) is its last 4x4 map, flattened (its k4 logit conv is a
    linear map of the same features)."""
    return _projection_d(dcgan64_discriminator(shape, base, slope), num_classes)
