"""Generator and discriminator architectures, by registered name.

Builders take plain arguments (latent size, data shape, extra keyword arguments from the
recipe's ``model.g_args`` / ``model.d_args``) and return an ``nn.Module``; nets know nothing
of training. A discriminator returns one logit per example, shape (N, 1).

Conditional nets (``model.num_classes``) take the labels as a second argument, ``g(z, y)``
and ``d(x, y)``; ``generate`` and ``judge`` call either kind.
"""

from __future__ import annotations

import inspect
import typing
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
    unknown = sorted(set(args) - set(allowed), key=str)
    if unknown:
        raise ConfigError(
            f"unknown key {key}.{unknown[0]}; valid keys here: {', '.join(allowed) or '(none)'}"
        )
    args = {name: _checked_arg(builder, key, name, value) for name, value in args.items()}
    try:
        return builder(**fixed, **args)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ConfigError(
            f"{key}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from None


# Ranges of the builders' keyword arguments, by name (every int is a layer size or count).
ARG_RANGES: dict[str, dict[str, float]] = {
    "dropout": {"ge": 0, "lt": 1},
    "bn_eps": {"gt": 0},
    "slope": {"ge": 0, "le": 1},
    "embed_dim": {"ge": 0, "le": 4096},  # 0: no label embedding concatenated to z
}
MAX_SIZE = 4096  # widths, channels, units, depth: larger would not fit in memory anyway


def _checked_arg(builder: Callable[..., nn.Module], key: str, name: str, value: Any) -> Any:
    """One keyword argument coerced to the builder's annotation and checked against its range,
    the way config fields are: a bad value is a one-line ConfigError before any layer is made."""
    from ..config import _check, _coerce

    hint = typing.get_type_hints(builder).get(name, Any)
    value = _coerce(value, hint, f"{key}.{name}")
    ints = [v for v in (value if isinstance(value, tuple) else (value,)) if type(v) is int]
    if name in ARG_RANGES:
        _check(value, ARG_RANGES[name], f"{key}.{name}")
    elif ints:
        _check(tuple(ints), {"ge": 1, "le": MAX_SIZE}, f"{key}.{name}")
    return value


def _conditional(builder: Callable[..., nn.Module], cfg: ModelConfig, key: str) -> dict:
    """``num_classes`` for a conditional recipe, after checking the builder takes it."""
    if cfg.num_classes is None:
        return {}
    if "num_classes" not in inspect.signature(builder).parameters:
        name = getattr(cfg, key.split(".")[1])
        raise ConfigError(
            f"{key} {name!r} is not class-conditional; remove model.num_classes or choose a "
            "conditional network (see docs/techniques.md)"
        )
    return {"num_classes": cfg.num_classes}


def build_generator(cfg: ModelConfig, shape: tuple[int, ...]) -> nn.Module:
    """G mapping (N, z_dim) noise (and (N,) labels when conditional) to (N, *shape) samples."""
    builder = GENERATORS.get(cfg.g, "model.g")
    extra = _conditional(builder, cfg, "model.g")
    g = _call(builder, "model.g_args", cfg.g_args, z_dim=cfg.z_dim, shape=tuple(shape), **extra)
    if cfg.init_std is not None:
        normal_init(g, cfg.init_std)
    return g


def build_discriminator(cfg: ModelConfig, shape: tuple[int, ...]) -> nn.Module:
    """D mapping (N, *shape) samples (and labels) to (N, 1) logits, or (N / pack, 1) when
    packed; spectrally normalised when asked for."""
    builder = DISCRIMINATORS.get(cfg.d, "model.d")
    extra = _conditional(builder, cfg, "model.d")
    if cfg.pack > 1 and extra:
        raise ConfigError("model.pack: packing is not supported with model.num_classes; use one")
    inner = (shape[0] * cfg.pack, *shape[1:])  # packed samples are stacked along channels
    d = _call(builder, "model.d_args", cfg.d_args, shape=inner, **extra)
    if cfg.init_std is not None:
        normal_init(d, cfg.init_std)
    if cfg.spectral_norm:
        spectral_normalize(d)
    return Packed(d, cfg.pack) if cfg.pack > 1 else d


class Packed(nn.Module):
    """PacGAN: D sees ``m`` samples at once, stacked along the channel (or feature) axis.

    (N, C, H, W) -> (N / m, m * C, H, W); (N, D) -> (N / m, m * D). N must divide by m.
    """

    def __init__(self, d: nn.Module, m: int) -> None:
        super().__init__()
        self.d, self.m = d, m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if n % self.m:
            raise ConfigError(
                f"model.pack={self.m}: a batch of {n} does not divide into packs; "
                "make train.batch_size a multiple of model.pack"
            )
        # consecutive samples form a pack: rows i*m .. i*m+m-1
        return self.d(x.reshape(n // self.m, self.m * x.shape[1], *x.shape[2:]))


def spectral_normalize(net: nn.Module) -> None:
    """Spectral normalisation (one power iteration per forward) of every conv and linear
    weight: each layer's Lipschitz constant is held near 1 (Miyato et al. 2018)."""
    from torch.nn.utils.parametrizations import spectral_norm

    for m in list(net.modules()):
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d)):
            spectral_norm(m)


def generate(g: nn.Module, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """G(z), or G(z, y) for a conditional generator."""
    return g(z) if y is None else g(z, y)


def judge(d: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """D's logits of x, or of (x, y) for a conditional discriminator."""
    return d(x) if y is None else d(x, y)


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
from . import cond, dcgan, keras, mlp, toy  # noqa: E402,F401
