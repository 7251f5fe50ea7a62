"""One training iteration: a D step, then a G step, on one real batch and one noise batch.

G runs once per iteration: its output is detached for D's update and reused, through the
updated D, for G's update (the seeds' loops run G a second time to get the same tensor).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from ..config import Config
from ..losses import bce_d_loss, bce_g_loss
from .optim import optimizer_step


@dataclass
class Models:
    """The two networks and their optimizers: what a checkpoint holds besides counters."""

    g: nn.Module
    d: nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CPU or CUDA when asked for, else nothing."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def set_threads(cfg: Config, device: torch.device) -> None:
    """Apply ``train.threads`` on the CPU. On a shared or loaded machine one thread per
    process avoids the OpenMP barrier stalls that make small nets several times slower."""
    if device.type == "cpu" and cfg.train.threads is not None:
        torch.set_num_threads(cfg.train.threads)


def train_step(
    m: Models,
    cfg: Config,
    real: torch.Tensor,
    z: torch.Tensor,
    step: int,
    label_noise: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Update D then G once; return detached scalars (no host sync here).

    ``real``: (B, *shape) in the model's range; ``z``: (B, z_dim); ``label_noise``: the
    (B, 1) additive noise of D's real and fake targets, when the recipe uses it.
    """
    lc = cfg.loss
    amp = autocast(real.device, cfg.train.precision)
    real_noise, fake_noise = label_noise if label_noise is not None else (None, None)

    # ---- D step: real toward real_label, detached fake toward fake_label
    with amp:
        fake = m.g(z)
        if lc.d_batch == "concat":  # one pass over [fake; real], as seed 003
            logits = m.d(torch.cat([fake.detach(), real]))
            fake_logits, real_logits = logits.split([fake.shape[0], real.shape[0]])
        else:
            real_logits = m.d(real)
            fake_logits = m.d(fake.detach())
        # One concatenated batch gives one mean over 2B targets: the average of the two terms.
        average = lc.d_average or lc.d_batch == "concat"
        loss_d = bce_d_loss(
            real_logits.float(),
            fake_logits.float(),
            lc.real_label,
            lc.fake_label,
            real_noise,
            fake_noise,
            average,
        )
    m.opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    optimizer_step(m.opt_d, cfg.optim.d, step)

    # ---- G step through the updated D; D's weights need no gradient here
    m.d.requires_grad_(False)
    try:
        with amp:
            loss_g = bce_g_loss(m.d(fake).float())
        m.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        optimizer_step(m.opt_g, cfg.optim.g, step)
    finally:
        m.d.requires_grad_(True)

    return {
        "loss_d": loss_d.detach(),
        "loss_g": loss_g.detach(),
        "d_real": torch.sigmoid(real_logits.detach().float()).mean(),
        "d_fake": torch.sigmoid(fake_logits.detach().float()).mean(),
    }
