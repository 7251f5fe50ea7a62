"""Adversarial losses: pure functions of discriminator logits (or critic scores).

``d_loss(name, real, fake)`` is what D minimises, ``g_loss(name, fake, real)`` what G
minimises; ``real`` and ``fake`` are D's raw outputs (N, 1) on real and generated samples.
Label tricks (bce and minimax) are arguments: ``real_label`` < 1 is one-sided label
smoothing, ``real_noise`` / ``fake_noise`` tensors added to the targets (seed 003's
0.05 * U[0, 1)). The gradient penalties that need D itself live in ``ganforge.engine.step``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import LOSSES

LABELLED = ("bce", "minimax")  # losses with targets, where label smoothing and noise apply


def bce_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating G loss: -log D(G(z)), i.e. BCE of fake logits toward 1."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def d_loss(
    name: str,
    real: torch.Tensor,
    fake: torch.Tensor,
    real_label: float = 1.0,
    fake_label: float = 0.0,
    real_noise: torch.Tensor | None = None,
    fake_noise: torch.Tensor | None = None,
    average: bool = False,
) -> torch.Tensor:
    """D's loss under adversarial loss ``name`` (see ``config.LOSSES``).

    bce and minimax (the same D): sigmoid cross-entropy of real toward ``real_label`` and fake
    toward ``fake_label``, plus the optional target noise; the sum of both terms by default
    (seed 002), their mean with ``average`` (seed 004).
    """
    if name in LABELLED:
        real_t = torch.full_like(real, real_label)
        fake_t = torch.full_like(fake, fake_label)
        if real_noise is not None:
            real_t = real_t + real_noise
        if fake_noise is not None:
            fake_t = fake_t + fake_noise
        loss = F.binary_cross_entropy_with_logits(
            real, real_t
        ) + F.binary_cross_entropy_with_logits(fake, fake_t)
        return loss / 2 if average else loss
    if name == "hinge":  # Lim & Ye 2017; Miyato et al. 2018
        return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()
    if name == "wgan-gp":  # critic: maximise E[D(real)] - E[D(fake)] (penalty added apart)
        return fake.mean() - real.mean()
    if name == "lsgan":  # Mao et al. 2017, targets b = 1 (real), a = 0 (fake)
        return 0.5 * ((real - 1.0) ** 2).mean() + 0.5 * (fake**2).mean()
    if name == "relativistic":  # Jolicoeur-Martineau 2018, RaGAN with cross-entropy
        return bce_g_loss(real - fake.mean()) + F.binary_cross_entropy_with_logits(
            fake - real.mean(), torch.zeros_like(fake)
        )
    raise ValueError(f"loss.name {name!r} is unknown; choose one of: {', '.join(LOSSES)}")


def g_loss(name: str, fake: torch.Tensor, real: torch.Tensor | None = None) -> torch.Tensor:
    """G's loss under adversarial loss ``name``; ``real`` logits only for relativistic."""
    if name == "bce":
        return bce_g_loss(fake)
    if name == "minimax":  # the saturating original: minimise log(1 - D(G(z)))
        return -F.softplus(fake).mean()  # log(1 - sigmoid(l)) = -softplus(l)
    if name in ("hinge", "wgan-gp"):
        return -fake.mean()
    if name == "lsgan":  # c = 1: G wants D to call its samples real
        return 0.5 * ((fake - 1.0) ** 2).mean()
    if name == "relativistic":
        if real is None:
            raise ValueError("the relativistic G loss needs D's logits on real data")
        return bce_g_loss(fake - real.mean()) + F.binary_cross_entropy_with_logits(
            real - fake.mean(), torch.zeros_like(real)
        )
    raise ValueError(f"loss.name {name!r} is unknown; choose one of: {', '.join(LOSSES)}")
