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
from typing import Any, TypeAlias

import torch
from torch import nn

from ..config import ModelConfig
from ..errors import ConfigError
from ..registry import Registry

GENERATORS: Registry[Callable[..., nn.Module]] = Registry("generator")
DISCRIMINATORS: Registry[Callable[..., nn.Module]] = Registry("discriminator")


def _call(builder: Callable[..., nn.Module], key: str, args: dict[str, Any], **fixed: Any):
    """Call a builder, turning an unknown or missing keyword into a ConfigError.

    ``fixed`` (z_dim, shape, num_classes: ganforge's own values) are passed where the
    builder's signature names them, all of them when it takes ``**kwargs``, so a plain
    ``def build() -> nn.Module`` works too. ``args`` (the recipe's or run's ``g_args`` /
    ``d_args``) go only to parameters the signature names, never through ``**kwargs``, and
    only as plain values (numbers, strings, true/false, null, lists and mappings of those).
    """
    name = getattr(builder, "__qualname__", "the builder")
    try:
        params = inspect.signature(builder).parameters
    except (TypeError, ValueError):  # a builtin or C callable: nothing to check arguments by
        raise ConfigError(
            f"{key.rsplit('_', 1)[0]}: cannot read the parameters of {name}; name a Python "
            "function or class that builds the network"
        ) from None
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if not var_kw:
        fixed = {k: v for k, v in fixed.items() if k in params}
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    allowed = [p for p, v in params.items() if v.kind in named and p not in fixed]
    unknown = sorted(set(args) - set(allowed), key=str)
    if unknown:
        raise ConfigError(
            f"unknown key {key}.{unknown[0]}; valid keys here: {', '.join(allowed) or '(none)'}"
            f" ({name} takes them; the recipe's {key} may be for another net: clear them "
            f"with --set {key}={{}})"
        )
    args = {k: _checked_arg(builder, key, k, _plain(v, f"{key}.{k}")) for k, v in args.items()}
    try:
        net = builder(**fixed, **args)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ConfigError(
            f"{key}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from None
    if not isinstance(net, nn.Module):
        raise ConfigError(
            f"{key.rsplit('_', 1)[0]}: the builder returned {type(net).__name__}, not an "
            "nn.Module; return the network"
        )
    return net


def _plain(value: Any, key: str) -> Any:
    """``value`` when it is plain data (int, float, bool, str, None, lists / tuples and
    mappings with string keys of those); else a one-line ConfigError naming ``key``."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        for v in value:
            _plain(v, key)
        return value
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                break
            _plain(v, f"{key}.{k}")
        else:
            return value
    raise ConfigError(
        f"{key}: a {type(value).__name__} is not a plain value; give a number, a string, "
        "true/false, null, or a list or mapping of those"
    )


# Ranges of the builders' keyword arguments, by name (every int is a layer size or count).
ARG_RANGES: dict[str, dict[str, float]] = {
    "dropout": {"ge": 0, "lt": 1},
    "bn_eps": {"gt": 0},
    "slope": {"ge": 0, "le": 1},
    "embed_dim": {"ge": 0, "le": 4096},  # 0: no label embedding concatenated to z
    "shuffle": {"ge": 0, "le": 8},  # resnet: sub-pixel stages (0: none)
    "mbstd": {"ge": 0, "le": 4096},  # resnet: minibatch-std group size (0: off)
    "base": {"ge": 4, "le": 4096},  # resnet: the largest side G starts from
}
MAX_SIZE = 4096  # widths, channels, units, depth: larger would not fit in memory anyway


def _checked_arg(builder: Callable[..., nn.Module], key: str, name: str, value: Any) -> Any:
    """One keyword argument coerced to the builder's annotation and checked against its range,
    the way config fields are: a bad value is a one-line ConfigError before any layer is made."""
    from ..config import _check, _coerce

    try:
        hint = typing.get_type_hints(builder).get(name, Any)
    except Exception:  # a builder of one's own with annotations that do not resolve
        hint = Any
    value = _coerce(value, hint, f"{key}.{name}")
    ints = [v for v in (value if isinstance(value, tuple) else (value,)) if type(v) is int]
    if name in ARG_RANGES:
        _check(value, ARG_RANGES[name], f"{key}.{name}")
    elif ints:
        _check(tuple(ints), {"ge": 1, "le": MAX_SIZE}, f"{key}.{name}")
    return value


def _takes(builder: Callable[..., nn.Module], name: str) -> bool:
    """Whether ``builder`` accepts keyword ``name`` (or any keyword)."""
    try:
        params = inspect.signature(builder).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _family(name: str, suffix: str, registry: Registry) -> str:
    """``mlp-cond`` -> ``mlp``: the conditional names of earlier versions mean the family."""
    base = name.removesuffix(suffix)
    return base if base != name and base in registry else name


# a custom net: a module, or a builder of one
NetSpec: TypeAlias = nn.Module | Callable[..., nn.Module] | None


def _conditional(builder: Callable[..., nn.Module], cfg: ModelConfig, key: str) -> dict:
    """``num_classes`` for a conditional recipe, after checking the builder takes it."""
    if cfg.conditioned is None:
        return {}
    try:
        params = inspect.signature(builder).parameters
    except (TypeError, ValueError):
        params = {}
    takes_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if "num_classes" not in params and not takes_kw:
        name = getattr(cfg, key.split(".")[1])
        raise ConfigError(
            f"{key} {name!r} is not class-conditional; remove model.num_classes or choose a "
            "conditional network (see docs/techniques.md)"
        )
    return {"num_classes": cfg.conditioned}


def build_generator(cfg: ModelConfig, shape: tuple[int, ...], net: NetSpec = None) -> nn.Module:
    """G mapping (N, z_dim) noise (and (N,) labels when conditional) to (N, *shape) samples.

    ``net``: a custom G (a module, used as it is, or a builder) in place of ``model.g``. With
    ``model.num_classes`` the family's G is wrapped as G(z, y) (``nets.cond``) unless its
    builder takes ``num_classes`` itself; with ``model.clusters`` that G is wrapped once more
    (``cond.SelfConditioned``) so that G(z) draws the clusters itself.
    """
    g = net if isinstance(net, nn.Module) else _build_g(cfg, shape, net)
    if cfg.clusters is not None:  # self-conditioned: g(z) draws the clusters
        g = cond.SelfConditioned(g, cfg.clusters, cfg.z_dim)
    return g


def _build_g(cfg: ModelConfig, shape: tuple[int, ...], net: NetSpec) -> nn.Module:
    """The family's G (or a custom builder's), wrapped as G(z, y) when conditioned."""
    builder = net or GENERATORS.get(_family(cfg.g, "-cond", GENERATORS), "model.g")
    k, args = cfg.conditioned, dict(cfg.g_args)
    if k is not None and _takes(builder, "num_classes"):  # conditional by itself
        g = _call(builder, "model.g_args", args, z_dim=cfg.z_dim, shape=tuple(shape), num_classes=k)
    elif k is not None:
        embed = _checked_arg(builder, "model.g_args", "embed_dim", args.pop("embed_dim", 10))
        cbn = args.pop("cbn", True)
        if type(embed) is not int or not isinstance(cbn, bool):
            raise ConfigError("model.g_args: embed_dim must be an integer and cbn true or false")
        body = _call(builder, "model.g_args", args, z_dim=cfg.z_dim + embed, shape=tuple(shape))
        try:
            g = cond.conditional_generator(body, k, embed, cbn)
        except ValueError as e:
            raise ConfigError(f"model.g_args: {e}") from None
    else:
        g = _call(builder, "model.g_args", args, z_dim=cfg.z_dim, shape=tuple(shape))
    if cfg.init_std is not None and net is None:  # a builder from Python keeps its own init
        normal_init(g, cfg.init_std)
    return g


def build_discriminator(cfg: ModelConfig, shape: tuple[int, ...], net: NetSpec = None) -> nn.Module:
    """D mapping (N, *shape) samples (and labels) to (N, 1) logits, or (N / pack, 1) when
    packed; spectrally normalised when asked for. ``net``: a custom D (module or builder);
    the projection head, spectral norm and packing wrap it as they wrap the registered ones."""
    k = cfg.conditioned
    if cfg.pack > 1 and k is not None:
        raise ConfigError(
            "model.pack: packing is not supported with model.num_classes or model.clusters; use one"
        )
    inner = (shape[0] * cfg.pack, *shape[1:])  # packed samples are stacked along channels
    if isinstance(net, nn.Module):
        d = net
    else:
        builder = net or DISCRIMINATORS.get(_family(cfg.d, "-proj", DISCRIMINATORS), "model.d")
        native = k is not None and _takes(builder, "num_classes")
        extra = {"num_classes": k} if native else {}
        d = _call(builder, "model.d_args", cfg.d_args, shape=inner, **extra)
        if k is not None and not native:
            try:
                d = cond.projection_discriminator(d, k)
            except ValueError as e:
                raise ConfigError(f"model.d: {e}") from None
        if cfg.init_std is not None and net is None:
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


def generate_batched(
    g: nn.Module, z: torch.Tensor, y: torch.Tensor | None, batch: int, device: torch.device
) -> torch.Tensor:
    """G(z) (or G(z, y)) as float32 on the CPU, run on ``device`` ``batch`` rows at a time,
    so that n samples need memory for n outputs but G's activations for one batch only."""
    out: torch.Tensor | None = None
    for i in range(0, len(z), batch):
        yb = None if y is None else y[i : i + batch].to(device)
        part = generate(g, z[i : i + batch].to(device), yb).float().cpu()
        if len(z) <= batch:
            return part
        if out is None:
            out = torch.empty((len(z), *part.shape[1:]))
        out[i : i + batch] = part
    assert out is not None, "no samples asked for"
    return out


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
from . import cond, dcgan, keras, mlp, resnet, toy  # noqa: E402,F401
