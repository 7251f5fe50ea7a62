"""Adversarial losses: pure functions of discriminator logits.

Label tricks are arguments: ``real_label`` < 1 is one-sided label smoothing, ``noise``
is a tensor added to the targets (seed 003's 0.05 * U[0, 1)).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bce_d_loss(
    real_logits: torch.Tensor,
    fake_logits: torch.Tensor,
    real_label: float = 1.0,
    fake_label: float = 0.0,
    real_noise: torch.Tensor | None = None,
    fake_noise: torch.Tensor | None = None,
    average: bool = False,
) -> torch.Tensor:
    """D's sigmoid cross-entropy: real toward ``real_label``, fake toward ``fake_label``.

    The sum of both terms by default (seed 002); their mean with ``average`` (seed 004).
    """
    real_t = torch.full_like(real_logits, real_label)
    fake_t = torch.full_like(fake_logits, fake_label)
    if real_noise is not None:
        real_t = real_t + real_noise
    if fake_noise is not None:
        fake_t = fake_t + fake_noise
    loss = F.binary_cross_entropy_with_logits(
        real_logits, real_t
    ) + F.binary_cross_entropy_with_logits(fake_logits, fake_t)
    return loss / 2 if average else loss


def bce_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating G loss: -log D(G(z)), i.e. BCE of fake logits toward 1."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
