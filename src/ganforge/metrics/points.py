"""Metrics of 2-D samples: moments against a Gaussian target, modes of a Gaussian mixture.

gaussian-2d (seed 004): the generated mean and covariance against the exact ones of the run's
own target (``data.gaussian_a`` / ``gaussian_b``), their errors, and the Frechet distance
between the two Gaussians (0 for a perfect fit).

ring-8 / grid-25 (the PacGAN and VEEGAN protocol): each generated point is assigned to its
nearest mixture mean. It is "high quality" when within 3 standard deviations of that mean
(Euclidean distance <= 3 std). ``modes`` counts the means with at least one high-quality point;
``hq`` is the percentage of high-quality points; ``reverse_kl`` is KL(generated || uniform) of
the histogram of nearest means over all points (0 when every mode gets an equal share; log K
when all points sit at one mode).

Other 2-D data sets get the Frechet distance against the moments of their training pool.
"""

from __future__ import annotations

from typing import Any

import torch

from ..config import DataConfig
from ..data.generated import MIXTURES, gaussian_target
from .frechet import frechet_distance, statistics

HQ_STD = 3.0  # high quality: within this many standard deviations of the nearest mean
N_POINTS = 2500  # generated points per evaluation in the PacGAN protocol


def mixture_metrics(points: torch.Tensor, means: torch.Tensor, std: float) -> dict[str, Any]:
    """modes, hq (%), reverse_kl and the per-mode histogram of points (N, 2)."""
    k = len(means)
    dist = torch.cdist(points.double(), means.double())  # (N, K)
    nearest_d, nearest = dist.min(1)
    hq = nearest_d <= HQ_STD * std
    counts = torch.bincount(nearest, minlength=k).double()
    p = counts / counts.sum()
    nz = p > 0
    reverse_kl = float((p[nz] * (p[nz] * k).log()).sum())
    modes = int(torch.bincount(nearest[hq], minlength=k).gt(0).sum())
    hq_pct = 100.0 * float(hq.double().mean())
    return {
        "modes": modes,
        "modes_of": k,
        "hq": round(hq_pct, 3),
        "reverse_kl": reverse_kl,
        "score": modes + hq_pct / 100.0,  # picks the best checkpoint: modes, then quality
        "mode_hist": [int(c) for c in counts],
    }


def gaussian_metrics(points: torch.Tensor, mean: Any, cov: Any) -> dict[str, Any]:
    """Generated mean and covariance, their errors against (mean, cov), and the FD."""
    mu, sigma = statistics(points)
    mean_t, cov_t = torch.tensor(mean, dtype=torch.float64), torch.tensor(cov, dtype=torch.float64)
    mu_t, sigma_t = torch.from_numpy(mu), torch.from_numpy(sigma)
    nonzero = cov_t != 0  # an axis-aligned target has zero entries: no relative error there
    rel = ((sigma_t - cov_t).abs()[nonzero] / cov_t.abs()[nonzero]).max()
    return {
        "fd": frechet_distance(mu, sigma, mean_t.numpy(), cov_t.numpy()),
        "mean": [round(v, 4) for v in mu.tolist()],
        "cov": [[round(v, 4) for v in row] for row in sigma.tolist()],
        "mean_err": float((mu_t - mean_t).norm()),  # Euclidean distance of the means
        "cov_err": float((sigma_t - cov_t).norm()),  # Frobenius norm of the difference
        "cov_rel_err": float(rel),  # largest relative error of one covariance entry
    }


def point_metrics(
    name: str, points: torch.Tensor, pool: torch.Tensor | None, data: DataConfig | None = None
) -> dict[str, Any]:
    """The 2-D metrics of data set ``name`` for generated ``points`` (N, 2); gaussian-2d is
    scored against the exact target of the run's data config ``data`` (default: the seed's)."""
    points = points.double().cpu()
    if name in MIXTURES:
        means, std = MIXTURES[name]
        return mixture_metrics(points, means, std)
    if name == "gaussian-2d":
        return gaussian_metrics(points, *gaussian_target(data or DataConfig(name=name)))
    if pool is None:
        raise ValueError(f"{name}: no target known; pass the training pool")
    mu, sigma = statistics(pool.double().cpu())
    return gaussian_metrics(points, mu.tolist(), sigma.tolist())


def primary(name: str) -> tuple[str, bool]:
    """(metric that picks the best checkpoint, lower is better) for a 2-D data set.

    Mixtures: ``score`` = modes + hq / 100 (more modes first, then more high-quality points).
    Gaussians: the FD to the target.
    """
    if name in MIXTURES:
        return "score", False
    return "fd", True
