"""Improved precision and recall (Kynkaanniemi et al. 2019) on k-NN manifolds of features.

The manifold of a set is the union of balls around each of its points, the radius being the
distance to its k-th nearest neighbour in the same set (k = 3). Precision: the share of
generated points inside the real manifold (are samples realistic?). Recall: the share of real
points inside the generated manifold (is the real variety covered?).
"""

from __future__ import annotations

import torch

K = 3
CHUNK = 2048  # rows of the distance matrix computed at once: CHUNK x N floats in memory


def knn_radii(x: torch.Tensor, k: int = K) -> torch.Tensor:
    """Distance of each row of ``x`` (N, D) to its k-th nearest other row, shape (N,)."""
    radii = []
    for chunk in x.split(CHUNK):
        d = torch.cdist(chunk, x)
        # the k+1 smallest include the point itself (distance ~0); topk is far faster than
        # kthvalue for a small k
        radii.append(d.topk(k + 1, dim=1, largest=False).values[:, k])
    return torch.cat(radii)


def coverage_of(manifold: torch.Tensor, radii: torch.Tensor, queries: torch.Tensor) -> float:
    """Share of ``queries`` (M, D) inside at least one ball (centres ``manifold``, ``radii``)."""
    inside = 0
    for chunk in queries.split(CHUNK):
        d = torch.cdist(chunk, manifold)
        inside += int((d <= radii.unsqueeze(0)).any(1).sum())
    return inside / len(queries)


def precision_recall(
    real: torch.Tensor,
    fake: torch.Tensor,
    k: int = K,
    real_radii: torch.Tensor | None = None,
) -> dict[str, float]:
    """{"precision", "recall"} of generated features ``fake`` against ``real`` features.

    ``real_radii``: ``knn_radii(real, k)`` when already known (the reference is fixed across
    the evaluations of a run, so its radii are computed once).
    """
    real, fake = real.float(), fake.float()
    if min(len(real), len(fake)) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} points per set")
    if real_radii is None:
        real_radii = knn_radii(real, k)
    return {
        "precision": coverage_of(real, real_radii, fake),
        "recall": coverage_of(fake, knn_radii(fake, k), real),
    }
