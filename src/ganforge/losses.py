"""Adversarial losses: registered ``Loss`` objects, pure functions of discriminator logits.

A ``Loss`` says what D minimises (``d(real, fake)``), what G minimises (``g(fake, real)``),
and what the training step must provide: targets for label tricks (``labelled``), D's view
of real data in G's step (``g_needs_real``), the WGAN-GP gradient penalty on interpolates
(``gradient_penalty``). ``real`` and ``fake`` are D's raw outputs (N, 1).

Adding a loss is one object here, or one in your own module named by import path:
``--set loss.name=mypkg.losses:my_loss``. The penalties that need D itself live in
``ganforge.engine.step``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .errors import ConfigError
from .registry import Registry

Tensor = torch.Tensor


@dataclass(frozen=True)
class Loss:
    """An adversarial loss and what it needs from the training step."""

    d: Callable[..., Tensor]  # d(real, fake[, real_t, fake_t]) -> D's loss
    g: Callable[[Tensor, Tensor | None], Tensor]  # g(fake, real or None) -> G's loss
    labelled: bool = False  # d takes targets: label smoothing and noise apply (bce, minimax)
    g_needs_real: bool = False  # G's loss compares with D's logits on real data
    gradient_penalty: bool = False  # WGAN-GP: a penalty on interpolates (loss.gp_weight)
    # D's verdict on each real image as this loss reads it, from (real, fake) logits: > 0
    # is "real". train.augment_p=auto raises p while it is > 0 for most real images.
    real_verdict: Callable[[Tensor, Tensor], Tensor] = lambda real, fake: real


LOSSES: Registry[Loss] = Registry("loss")


def register(name: str, loss: Loss) -> Loss:
    LOSSES.register(name)(loss)
    return loss


def get_loss(name: str, key: str = "loss.name") -> Loss:
    """The registered (or imported, ``module:attr``) Loss ``name``; a one-line error if it
    is not a Loss."""
    loss = LOSSES.get(name, key)
    if not isinstance(loss, Loss):
        raise ConfigError(
            f"{key}: {name!r} is a {type(loss).__name__}, not a ganforge.losses.Loss; "
            "wrap your functions as Loss(d=..., g=...)"
        )
    return loss


def bce_g_loss(fake_logits: Tensor, real_logits: Tensor | None = None) -> Tensor:
    """Non-saturating G loss: -log D(G(z)), i.e. BCE of fake logits toward 1."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def _bce_d(real: Tensor, fake: Tensor, real_t: Tensor, fake_t: Tensor) -> Tensor:
    """Sigmoid cross-entropy of real toward ``real_t`` and fake toward ``fake_t`` (summed)."""
    return F.binary_cross_entropy_with_logits(real, real_t) + F.binary_cross_entropy_with_logits(
        fake, fake_t
    )


def _relativistic(a: Tensor, b: Tensor) -> Tensor:
    """RaGAN with cross-entropy: ``a`` should look more real than ``b`` on average."""
    return bce_g_loss(a - b.mean()) + F.binary_cross_entropy_with_logits(
        b - a.mean(), torch.zeros_like(b)
    )


def _needs_real(fake: Tensor, real: Tensor | None) -> Tensor:
    if real is None:
        raise ValueError("the relativistic G loss needs D's logits on real data")
    return _relativistic(fake, real)


BCE = register("bce", Loss(d=_bce_d, g=bce_g_loss, labelled=True))
# the saturating original: G minimises log(1 - D(G(z))) = -softplus(l)
MINIMAX = register(
    "minimax", Loss(d=_bce_d, g=lambda f, r=None: -F.softplus(f).mean(), labelled=True)
)
# Lim & Ye 2017; Miyato et al. 2018
HINGE = register(
    "hinge",
    Loss(
        d=lambda r, f: F.relu(1.0 - r).mean() + F.relu(1.0 + f).mean(),
        g=lambda f, r=None: -f.mean(),
    ),
)
# critic: maximise E[D(real)] - E[D(fake)]; the gradient penalty is added apart
WGAN_GP = register(
    "wgan-gp",
    Loss(d=lambda r, f: f.mean() - r.mean(), g=lambda f, r=None: -f.mean(), gradient_penalty=True),
)
# Mao et al. 2017, targets b = 1 (real), a = 0 (fake), c = 1
LSGAN = register(
    "lsgan",
    Loss(
        d=lambda r, f: 0.5 * ((r - 1.0) ** 2).mean() + 0.5 * (f**2).mean(),
        g=lambda f, r=None: 0.5 * ((f - 1.0) ** 2).mean(),
    ),
)
# Jolicoeur-Martineau 2018, relativistic average GAN with cross-entropy
# (a real image is judged against the average fake, not against zero)
RELATIVISTIC = register(
    "relativistic",
    Loss(
        d=_relativistic,
        g=_needs_real,
        g_needs_real=True,
        real_verdict=lambda real, fake: real - fake.mean(),
    ),
)


def d_loss(
    name: str,
    real: Tensor,
    fake: Tensor,
    real_label: float = 1.0,
    fake_label: float = 0.0,
    real_noise: Tensor | None = None,
    fake_noise: Tensor | None = None,
    average: bool = False,
) -> Tensor:
    """D's loss under loss ``name``: for a labelled loss, real toward ``real_label`` and fake
    toward ``fake_label`` plus the optional target noise; the sum of both terms by default
    (seed 002), their mean with ``average`` (seed 004)."""
    loss = get_loss(name)
    if loss.labelled:
        real_t = torch.full_like(real, real_label)
        fake_t = torch.full_like(fake, fake_label)
        if real_noise is not None:
            real_t = real_t + real_noise
        if fake_noise is not None:
            fake_t = fake_t + fake_noise
        value = loss.d(real, fake, real_t, fake_t)
        return value / 2 if average else value
    return loss.d(real, fake)


def g_loss(name: str, fake: Tensor, real: Tensor | None = None) -> Tensor:
    """G's loss under loss ``name``; ``real`` logits only for losses that need them."""
    return get_loss(name).g(fake, real)
