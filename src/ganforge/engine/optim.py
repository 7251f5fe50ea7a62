"""Optimizers as the seeds configure them, including Keras' clipvalue and legacy decay."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ..config import OptimConfig


def make_optimizer(params: Iterable[torch.nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    """Adam or RMSprop with the configured hyperparameters.

    Adam is torch's fused kernel where it exists (float parameters on the CPU or CUDA): the
    same update in one pass over each tensor instead of ~10 elementwise ops, which was a third
    of an MLP recipe's step on the CPU (docs/performance.md).
    """
    params = list(params)
    if cfg.name == "rmsprop":
        # Keras' RMSprop: eps outside the square root, as torch's; rho is torch's alpha.
        return torch.optim.RMSprop(params, lr=cfg.lr, alpha=cfg.alpha, eps=cfg.eps)
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, fused=fused or None)


def optimizer_step(
    opt: torch.optim.Optimizer,
    cfg: OptimConfig,
    t: int,
    scaler: torch.amp.GradScaler | None = None,
) -> None:
    """Apply clipping and decay for update number ``t`` (0-based), then step; with fp16's
    ``scaler`` the gradients are unscaled first and a step with inf/NaN gradients skipped."""
    if scaler is not None:
        scaler.unscale_(opt)  # clipping sees the true gradients
    if cfg.clip_value is not None:
        for group in opt.param_groups:
            torch.nn.utils.clip_grad_value_(group["params"], cfg.clip_value)
    if cfg.decay:
        # Keras legacy: lr_t = lr / (1 + decay * iterations); a pure function of t. The base
        # rate lives in the optimizer's state, where a divergence rollback may have lowered it.
        for group in opt.param_groups:
            base = group.setdefault("base_lr", cfg.lr)
            group["lr"] = base / (1.0 + cfg.decay * t)
    if scaler is None:
        opt.step()
    else:
        scaler.step(opt)
        scaler.update()
