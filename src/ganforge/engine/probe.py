"""Before the first step: G and D checked on a probe batch, the batch size against
BatchNorm, and the tidy-up of a new run that fails before that step (``FreshStart``).

A custom net (``ganforge.train(generator=...)``, ``--set model.g=pkg:builder``) that returns
the wrong shape, a tuple, non-finite values or something detached from its parameters fails
deep inside the first step with a torch message that names neither net. The probe runs G and
D once on a batch of two (two packs under ``model.pack``) and says what was expected and what
came. It draws from a private generator and restores every buffer it touched (BatchNorm's
running statistics, spectral norm's vectors) and the global random state, so a built-in
recipe trains bit for bit as without it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import Config
from ..errors import ConfigError, Preempted
from ..nets import generate, judge, sample_noise
from ..runfiles import remove_tree

PROBE = 2  # examples per probe batch (per pack): BatchNorm in training needs two


def has_batchnorm(net: nn.Module) -> bool:
    """Whether ``net`` holds a BatchNorm layer (which needs two examples per batch)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())


def check_batch(cfg: Config, g: nn.Module, d: nn.Module, batch: int) -> None:
    """A per-process batch of one with BatchNorm in G or D cannot train: refused in one line
    (torch would stop at the first step with "Expected more than 1 value per channel")."""
    for name, net, rows in (("G", g, batch), ("D", d, batch // cfg.model.pack)):
        if rows == 1 and has_batchnorm(net):
            per = f" ({rows} per process)" if batch != cfg.train.batch_size else ""
            raise ConfigError(
                f"train.batch_size={cfg.train.batch_size}{per}: {name} of {cfg.recipe} has "
                "BatchNorm layers, which need at least 2 examples per batch in training; set "
                f"train.batch_size={2 * cfg.model.pack} or more"
            )


@contextlib.contextmanager
def _untouched(nets: tuple[nn.Module, ...], device: torch.device) -> Iterator[None]:
    """Every buffer of ``nets`` and the global random state as they were before."""
    saved = [[b.detach().clone() for b in net.buffers()] for net in nets]
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.enable_grad():
        try:
            yield
        finally:
            with torch.no_grad():
                for net, buffers in zip(nets, saved, strict=True):
                    for b, old in zip(net.buffers(), buffers, strict=True):
                        b.copy_(old)


def _shape(t: torch.Tensor) -> str:
    return str(tuple(t.shape))


def _call(what: str, fn, args: str):  # noqa: ANN001, ANN202
    """``fn()``; an error inside a custom net becomes one line naming the net and its input."""
    try:
        return fn()
    except ConfigError:
        raise
    except (RuntimeError, TypeError, ValueError, IndexError, AttributeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"{what} failed on a probe batch {args}: {first}") from None


def _output(what: str, out: object, want: tuple[int, ...], of: str) -> torch.Tensor:
    """``out`` must be a finite float tensor of shape ``want``."""
    if not isinstance(out, torch.Tensor):
        raise ConfigError(f"{what} returned a {type(out).__name__}, not one tensor; {of}")
    if tuple(out.shape) != want:
        raise ConfigError(
            f"{what} output has shape {_shape(out)} for a probe batch of {want[0]}; {of}"
        )
    if not out.is_floating_point():
        raise ConfigError(f"{what} output is {out.dtype}; it must be floating point ({of})")
    if not bool(torch.isfinite(out).all()):
        raise ConfigError(f"{what} output is not finite (NaN or inf) on a probe batch")
    return out


def _trains(what: str, out: torch.Tensor, net: nn.Module, x: torch.Tensor | None) -> None:
    """Gradients flow from ``out`` to ``net``'s parameters (and to its input ``x``)."""
    params = [p for p in net.parameters() if p.requires_grad]
    if not params:
        raise ConfigError(f"{what} has no trainable parameters; it cannot learn")
    inputs = params if x is None else [x, *params]
    if not out.requires_grad:
        cut = "its input and its parameters" if x is not None else "its parameters"
        raise ConfigError(
            f"{what} output is detached from {cut} (no gradient flows through it); do not "
            "call .detach(), .item() or torch.no_grad() in forward"
        )
    grads = torch.autograd.grad(out.float().sum(), inputs, allow_unused=True)
    if x is not None and grads[0] is None:
        raise ConfigError(
            f"{what} output does not depend on its input (no gradient reaches it); G could "
            "not learn from it: do not detach the input in forward"
        )
    if all(g is None for g in grads[1 if x is not None else 0 :]):
        raise ConfigError(f"{what} output does not depend on its parameters; it cannot learn")


def probe(cfg: Config, g: nn.Module, d: nn.Module, shape: tuple[int, ...], device: torch.device):
    """Run G and D once on a probe batch; raise one line at the first thing that is wrong."""
    n = PROBE * cfg.model.pack
    gen = torch.Generator(device).manual_seed(0)
    z = sample_noise(n, cfg.model.z_dim, cfg.model.z_dist, gen, device)  # as training draws
    y = None
    if cfg.model.conditioned is not None:
        y = torch.arange(n, device=device) % cfg.model.conditioned
    kind = "images" if len(shape) == 3 else "examples"
    of = f"the data's {kind} are {shape}, so it must return {(n, *shape)}"
    with _untouched((g, d), device):
        fake = _call("the generator", lambda: generate(g, z, y), f"z {_shape(z)}")
        fake = _output("the generator", fake, (n, *shape), of)
        _trains("the generator", fake, g, None)
        x = torch.randn(n, *shape, generator=gen, device=device).requires_grad_(True)
        logits = _call("the discriminator", lambda: judge(d, x, y), f"of {_shape(x)}")
        rows = n // cfg.model.pack
        one = f"it must return one logit per example, {(rows, 1)}"
        logits = _output("the discriminator", logits, (rows, 1), one)
        _trains("the discriminator", logits, d, x)


class FreshStart:
    """A new run that fails before its first step (a loss, a callback or a net that breaks
    at once, a signal twice) leaves its folder as it found it: the files this command made
    there are removed, so the same command with the setting fixed can start at once.

    A stop by signal (``Preempted``) is kept: its message says how to continue. Nothing is
    removed once a step has completed or a checkpoint exists; ``state`` is the loop's
    ``TrainState`` (set once made); ``enabled`` False (a resume, ranks other than 0) does nothing.
    """

    def __init__(self, run_dir: Path, enabled: bool) -> None:
        self.run_dir = run_dir
        self.before = set(os.listdir(run_dir)) if enabled and run_dir.is_dir() else None
        self.state: Any = None

    def __enter__(self) -> FreshStart:
        return self

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: object) -> None:
        if self.before is None or exc is None or isinstance(exc, Preempted):
            return
        if self.state is not None and self.state.step > 0:
            return
        checkpoints = self.run_dir / "checkpoints"
        if checkpoints.is_dir() and any(checkpoints.iterdir()):
            return
        with contextlib.suppress(OSError):  # the error on its way out is the one to report
            for name in sorted(set(os.listdir(self.run_dir)) - self.before):
                remove_tree(self.run_dir / name)
