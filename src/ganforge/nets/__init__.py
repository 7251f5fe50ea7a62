"""Generator and discriminator architectures, by registered name.

Builders take plain arguments (latent size, data shape, extra keyword arguments from the
recipe's ``model.g_args`` / ``model.d_args``) and return an ``nn.Module``; nets know nothing
of training. A discriminator returns one logit per example, shape (N, 1).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..config import ModelConfig
from ..errors import ConfigError
from ..registry import Registry

GENERATORS: Registry[Callable[..., nn.Module]] = Registry("generator")
DISCRIMINATORS: Registry[Callable[..., nn.Module]] = Registry("discriminator")


def _call(builder: Callable[..., nn.Module], key: str, args: dict[str, Any], **fixed: Any):
    """Call a builder, turning an unknown or missing keyword into a ConfigError."""
    params = inspect.signature(builder).parameters
    allowed = [p for p in params if p not in fixed]
    unknown = sorted(set(args) - set(allowed))
    if unknown:
        raise ConfigError(
            f"unknown key {key}.{unknown[0]}; valid keys here: {', '.join(allowed) or '(none)'}"
        )
    try:
        return builder(**fixed, **args)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{key}: {e}") from None


def build_generator(cfg: ModelConfig, shape: tuple[int, ...]) -> nn.Module:
    """G mapping (N, z_dim) noise to (N, *shape) samples."""
    g = _call(
        GENERATORS.get(cfg.g, "model.g"),
        "model.g_args",
        cfg.g_args,
        z_dim=cfg.z_dim,
        shape=tuple(shape),
    )
    if cfg.init_std is not None:
        normal_init(g, cfg.init_std)
    return g


def build_discriminator(cfg: ModelConfig, shape: tuple[int, ...]) -> nn.Module:
    """D mapping (N, *shape) samples to (N, 1) logits."""
    d = _call(DISCRIMINATORS.get(cfg.d, "model.d"), "model.d_args", cfg.d_args, shape=tuple(shape))
    if cfg.init_std is not None:
        normal_init(d, cfg.init_std)
    return d


def normal_init(net: nn.Module, std: float) -> None:
    """N(0, std) weights and zero biases for conv and linear layers (DCGAN's init).

    Batch-norm layers keep scale 1, shift 0 (the seeds' frameworks' default).
    """
    for m in net.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def count_params(net: nn.Module) -> int:
    """Trainable parameters (weights, biases, BN scale/shift; not running statistics)."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def sample_noise(
    n: int, z_dim: int, dist: str, generator: torch.Generator, device: torch.device | str
) -> torch.Tensor:
    """Latent batch (n, z_dim): standard normal, or uniform in [-1, 1]."""
    if dist == "uniform":
        return torch.rand(n, z_dim, generator=generator, device=device) * 2 - 1
    return torch.randn(n, z_dim, generator=generator, device=device)


# Register the families (import for the side effect).
from . import dcgan, keras, mlp, toy  # noqa: E402,F401
