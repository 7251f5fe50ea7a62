"""Metrics of class predictions: classifier Inception Score and class coverage.

Classifier IS: exp(E_x KL(p(y|x) || p(y))) over all samples in one set (no splits), with the
domain classifier in place of Inception; between 1 and the number of classes.

Class coverage: the histogram of predicted classes (argmax) of generated samples against the
histogram of the classifier's predictions on the real reference set (so a perfect generator
scores KL ~ 0 whatever the classifier's own errors). ``coverage`` counts the classes that get
at least 10% of their expected share, among the ``classes_expected`` classes holding at least
1% of the real predictions (a class-filtered data set expects few classes).
"""

from __future__ import annotations

import math

import torch

MIN_SHARE = 0.1  # a class is covered when it gets >= 10% of its expected share
EXPECTED = 0.01  # a class is expected when >= 1% of real images are predicted as it


def inception_score(probs: torch.Tensor) -> float:
    """exp(mean KL(p(y|x) || p(y))) of class probabilities (N, K)."""
    p = probs.double().clamp_min(1e-12)
    marginal = p.mean(0, keepdim=True)
    kl = (p * (p.log() - marginal.log())).sum(1)
    return float(torch.exp(kl.mean()))


def histogram(probs: torch.Tensor) -> torch.Tensor:
    """Share of samples (K,) predicted as each class (argmax)."""
    counts = torch.bincount(probs.argmax(1), minlength=probs.shape[1]).double()
    return counts / counts.sum()


def class_coverage(fake_probs: torch.Tensor, real_probs: torch.Tensor) -> dict[str, object]:
    """Coverage count, KL(generated || real) of the class histograms, and both histograms.

    The real histogram is Laplace-smoothed (+1 per class) so that the KL stays finite when
    the generator makes a class the real set never shows.
    """
    k = real_probs.shape[1]
    hist_fake, hist_real = histogram(fake_probs), histogram(real_probs)
    n_real = len(real_probs)
    smooth = (hist_real * n_real + 1) / (n_real + k)
    nz = hist_fake > 0
    kl = float((hist_fake[nz] * (hist_fake[nz] / smooth[nz]).log()).sum())
    expected = hist_real >= EXPECTED
    covered = expected & (hist_fake >= MIN_SHARE * hist_real)
    return {
        "coverage": int(covered.sum()),
        "classes_expected": int(expected.sum()),
        "class_kl": kl if math.isfinite(kl) else float("inf"),
        "class_hist": [round(float(v), 4) for v in hist_fake],
        "class_hist_real": [round(float(v), 4) for v in hist_real],
    }
