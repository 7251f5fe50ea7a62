"""Class-conditional networks: build-time wrappers around any unconditional G and D.

With ``model.num_classes`` set, ``build_generator`` and ``build_discriminator`` wrap the
family's nets (as spectral norm and packing do), so the trunks are the very layers of
``mlp.py`` and ``dcgan.py`` (``<family>-cond`` / ``<family>-proj``, the names of earlier
versions, still mean the family):

- G: ``g(z, y)``. The label enters twice (each can be turned off):
  a learned label embedding concatenated to z (Mirza & Osindero 2014, ``embed_dim``), and
  conditional batch norm (``cbn``): every BatchNorm of the family's G normalises without its
  own affine and takes a per-class scale and shift instead (de Vries et al. 2017; Dumoulin
  et al. 2017), both initialised to plain BN's 1 and 0.
- D ``<family>-proj``: ``d(x, y)``, the projection discriminator (Miyato & Koyama 2018). The
  family's D up to its last layer gives features phi(x); the logit is the family's last
  layer on phi plus the inner product <w_y, phi> with a learned per-class vector w_y.

G's options ``embed_dim`` (default 10) and ``cbn`` (default true) are read from
``model.g_args``. A builder that takes ``num_classes`` itself is conditional already and is
not wrapped. Labels are int64 class indices of shape (N,) in [0, num_classes).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import GanforgeError
from ..seeding import sync_free


def _batched(y: torch.Tensor) -> bool:
    """Whether ``y`` is a torch.func batched tensor (inside vmap)."""
    is_batched = getattr(getattr(torch._C, "_functorch", None), "is_batchedtensor", None)
    return bool(is_batched is not None and is_batched(y))


def check_labels(y: torch.Tensor, n: int, num_classes: int) -> None:
    """Labels must be (n,) integers; on the CPU also in [0, num_classes) (on a GPU the range
    check would wait for the device every step, and the training loop checks the data)."""
    if y.dtype != torch.int64 or y.shape != (n,):
        raise GanforgeError(
            f"class labels must be an int64 tensor of shape ({n},), "
            f"got {y.dtype} of shape {tuple(y.shape)}"
        )
    if _batched(y):  # under torch.func.vmap (many trials at once) no value can be read
        return
    if not sync_free(y.device) and n and (int(y.min()) < 0 or int(y.max()) >= num_classes):
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
        if isinstance(m, ClassBatchNorm) or getattr(m, "labelled", False):
            x = m(x, y)  # a block with class BatchNorms inside takes the labels itself
        elif isinstance(m, nn.Sequential):
            x = _run(m, x, y)
        else:
            x = m(x)
    return x


class ConditionalGenerator(nn.Module):
    """G(z, y): [z, embed(y)] through the family's G, whose BatchNorms are class-conditional."""

    def __init__(self, body: nn.Module, num_classes: int, embed_dim: int) -> None:
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


def conditional_generator(
    body: nn.Module, num_classes: int, embed_dim: int, cbn: bool
) -> nn.Module:
    """Wrap a family's G (built for z_dim + embed_dim inputs) as G(z, y)."""
    if embed_dim < 0:
        raise ValueError(f"embed_dim must be 0 (off) or positive, got {embed_dim}")
    n_bn = _class_bn(body, num_classes) if cbn else 0
    if not embed_dim and not n_bn:
        raise ValueError("G would ignore the labels: set embed_dim > 0 or cbn: true")
    return ConditionalGenerator(body, num_classes, embed_dim)


def projection_discriminator(plain: nn.Module, num_classes: int) -> nn.Module:
    """Split a family's D before its last weight layer and add the class projection."""
    layers = list(plain.children())
    weights = [i for i, m in enumerate(layers) if isinstance(m, (nn.Linear, nn.Conv2d))]
    if not isinstance(plain, nn.Sequential) or not weights:
        raise ValueError(
            f"a projection head needs a Sequential D ending in a linear or conv layer, not "
            f"{type(plain).__name__}; give a D that takes num_classes itself"
        )
    last = weights[-1]
    trunk, head = nn.Sequential(*layers[:last]), nn.Sequential(*layers[last:])
    w = layers[last].weight  # (1, F) linear, or (1, C, k, k) conv over the whole last map
    assert isinstance(w, torch.Tensor)
    return ProjectionDiscriminator(trunk, head, w[0].numel(), num_classes)


# Constants of the noise hash of SelfConditioned.pick: a Mersenne prime modulus and the
# Park-Miller multiplier; every factor is reduced below 2^31 first, so no int64 overflows.
_P, _A = 2**31 - 1, 48_271


class SelfConditioned(nn.Module):
    """G(z) of a self-conditioned run (``model.clusters``): a G conditioned on k-means
    clusters of the training data that, called without labels, draws each sample's cluster
    in proportion to the clusters' sizes (the ``prior`` buffer, set before training).

    The draw is a hash of the noise vector: the same z gives the same cluster on any device
    (integer arithmetic on z rounded to 2^-16, which is exact in float32), and since nearby
    z land in unrelated clusters, the noise of one cluster's samples is still N(0, I), as in
    training, where G gets each real example's cluster. ``g(z, y)`` chooses the clusters.
    """

    prior: torch.Tensor  # (k,) float: each cluster's probability
    weights: torch.Tensor  # (z_dim,) int64: the hash's weights

    def __init__(self, g: nn.Module, num_clusters: int, z_dim: int) -> None:
        super().__init__()
        self.g, self.num_clusters = g, num_clusters
        self.register_buffer("prior", torch.full((num_clusters,), 1.0 / num_clusters))
        # the hash's fixed weights, one per noise coordinate (not saved: always the same)
        seeded = torch.Generator().manual_seed(0)
        weights = torch.randint(1, 2**31 - 1, (z_dim,), generator=seeded)
        self.register_buffer("weights", weights, persistent=False)

    def set_prior(self, sizes: torch.Tensor) -> None:
        """The clusters' sizes (or any non-negative weights), as sampling probabilities."""
        p = sizes.double()
        if p.shape != self.prior.shape or not bool((p >= 0).all()) or not float(p.sum()) > 0:
            raise ValueError(f"cluster sizes must be {self.num_clusters} non-negative counts")
        self.prior.copy_((p / p.sum()).to(self.prior.dtype))

    def pick(self, z: torch.Tensor) -> torch.Tensor:
        """(N,) clusters for (N, z_dim) noise, each cluster with probability prior[k]."""
        q = torch.round(z.detach().float().flatten(1) * 65536).long() % _P  # exact in float32
        h = (q * self.weights % _P).sum(1) % _P  # (N,) in [0, P)
        for _ in range(3):  # Park-Miller steps spread neighbouring sums over [0, P)
            h = h * _A % _P
        u = h.double() / _P  # (N,) ~ U[0, 1)
        cdf = torch.cumsum(self.prior.double(), 0)[:-1]  # (k - 1,) upper ends of clusters 0..k-2
        return (u.unsqueeze(1) >= cdf.unsqueeze(0)).sum(1)  # (N,) int64

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.g(z, self.pick(z) if y is None else y)
