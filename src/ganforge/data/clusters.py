"""Self-conditioning (``model.clusters``): k-means clusters of the training data as labels.

A GAN trained on unlabelled data can still be conditioned, on clusters of the data found
without labels (Liu et al. 2020, "Diverse Image Generation via Self-Conditioned GANs"): G
and D take the cluster of each real example, and a sample draws its cluster in proportion
to the clusters' sizes. The clusters split the data into parts that are each easier to
model than the whole, which is what class labels do for a conditional recipe.

ganforge clusters once, before training, with SciPy's k-means (k-means++ seeding, the run's
seed): images by their pixels area-averaged to at most 16x16 (per channel), points as they
are. Centroids are fitted on at most ``FIT`` examples and every example is then assigned to
its nearest centroid; a folder streamed from disk is decoded chunk by chunk for both, so
only the fitted examples' features (at most 20,000 x 768 numbers) are held in memory. The
clusters are a pure function of the data and the seed, so a resumed run and every process
of a distributed run find the same ones.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..errors import DataError
from . import TensorData

FIT = 20_000  # examples the centroids are fitted on (the assignment covers all of them)
SIDE = 16  # images are area-averaged to at most SIDE x SIDE before clustering
ITERATIONS = 20  # Lloyd iterations


@dataclass(frozen=True)
class Clusters:
    """Every example's cluster and the clusters' sizes."""

    labels: torch.Tensor  # (N,) int64 in [0, k)
    sizes: torch.Tensor  # (k,) int64: examples per cluster (a cluster may end up empty)

    def describe(self) -> str:
        """One line for the run's log."""
        k, used = len(self.sizes), int((self.sizes > 0).sum())
        small, big = int(self.sizes[self.sizes > 0].min()), int(self.sizes.max())
        empty = f", {k - used} empty" if used < k else ""
        return (
            f"model.clusters: G and D are conditioned on {k} k-means clusters of the "
            f"{len(self.labels):,} training examples (sizes {small:,}-{big:,}{empty}); "
            "each sample draws a cluster in proportion to its size"
        )


def features(x: torch.Tensor) -> np.ndarray:
    """(N, F) float32 features to cluster: images area-averaged to at most 16x16, or points."""
    if x.dim() == 4:
        side = min(SIDE, x.shape[-1], x.shape[-2])
        parts = [
            torch.nn.functional.adaptive_avg_pool2d(c.float(), side).flatten(1)
            for c in x.split(4096)
        ]  # in chunks: the data may be large and uint8
        f = torch.cat(parts)
    else:
        f = x.float().flatten(1)
    return f.cpu().numpy()


def find_clusters(x: torch.Tensor, k: int, seed: int) -> Clusters:
    """k-means clusters of the examples ``x`` ((N, C, H, W) images or (N, D) points); with
    fewer than ``k`` examples, one cluster per example and the others empty."""
    return _clusters(len(x), lambda index: x[index], k, seed)


def _clusters(n: int, take: Callable[[torch.Tensor], torch.Tensor], k: int, seed: int) -> Clusters:
    """k-means on the examples ``take(index)`` of ``0..n-1``, read in chunks: fitted on at most
    ``FIT`` of them (drawn with ``seed``), then every example labelled by its nearest mean, so
    that a streamed folder is decoded chunk by chunk and only the fitted features are held."""
    from scipy.cluster.vq import kmeans2, vq

    def feats(index: np.ndarray) -> np.ndarray:
        parts = np.array_split(index, max(1, -(-len(index) // 8192)))
        chunks = [features(take(torch.from_numpy(c))) for c in parts]
        f = np.concatenate(chunks) if chunks else np.zeros((0, 1), np.float32)
        if not np.isfinite(f).all():
            raise DataError("model.clusters: the data holds NaN or infinite values; clean the data")
        return f

    rng = np.random.default_rng(seed)
    fit = feats(np.arange(n) if n <= FIT else np.sort(rng.choice(n, FIT, replace=False)))
    with warnings.catch_warnings():  # an empty cluster is kept, with size 0
        warnings.simplefilter("ignore")
        # fewer examples than clusters: one cluster each, the rest stay empty
        centroids, _ = kmeans2(
            fit.astype(np.float64), min(k, n), iter=ITERATIONS, minit="++", rng=rng
        )
    means = centroids.astype(np.float32)
    if n <= FIT:  # every example was fitted: its features are at hand
        labels = vq(fit, means)[0]
    else:
        chunks = np.array_split(np.arange(n), -(-n // 8192))
        labels = np.concatenate([vq(feats(c), means)[0] for c in chunks])
    y = torch.from_numpy(labels.astype(np.int64))
    return Clusters(y, torch.bincount(y, minlength=k))


def with_clusters(data: TensorData, k: int, seed: int) -> tuple[TensorData, torch.Tensor]:
    """``data`` labelled by its clusters (any labels it had are set aside; the source line
    says so), and the clusters' sizes."""
    from .stream import StreamData

    if isinstance(data, StreamData):  # decoded chunk by chunk: FIT examples' features held
        found = _clusters(len(data), data.take, k, seed)
    else:
        found = find_clusters(data.x, k, seed)
    note = found.describe() + (
        "; the data's own labels are not used" if data.labels is not None else ""
    )
    return replace(
        data, labels=found.labels.to(data.x.device), source=f"{data.source}; {note}"
    ), found.sizes
