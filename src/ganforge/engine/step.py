"""One training iteration: a D step, then a G step, on one real batch and one noise batch.

G runs once per iteration: its output is detached for D's update and reused, through the
updated D, for G's update (the seeds' loops run G a second time to get the same tensor).
The techniques of docs/techniques.md hook in here: the loss by name, DiffAugment on all D
inputs, WGAN-GP and lazy R1 penalties, n D steps per G step; EMA lives beside G in Models.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils._foreach_utils import _group_tensors_by_device_and_dtype

from ..augment import POLICIES, diff_augment
from ..checkpoint import Models
from ..config import Config
from ..errors import ConfigError
from ..losses import d_loss, g_loss, get_loss
from ..nets import generate, judge
from .heap import tune_malloc
from .optim import optimizer_step
from .precision import autocast


def set_threads(cfg: Config, device: torch.device) -> None:
    """Apply ``train.threads`` and ``train.malloc_tune`` on the CPU. On a shared or loaded
    machine one thread per process avoids the OpenMP barrier stalls that make small nets
    several times slower; glibc's fixed malloc thresholds stop each step's page faults."""
    if device.type == "cpu" and cfg.train.threads is not None:
        torch.set_num_threads(cfg.train.threads)
    if device.type == "cpu":
        tune_malloc(cfg.train.malloc_tune)


def check_techniques(cfg: Config, shape: tuple[int, ...], batch: int) -> None:
    """Refuse combinations of options that cannot work, before any data is touched."""
    lc = cfg.loss
    loss = get_loss(lc.name)  # an import path is imported here, before any data is read
    if not loss.labelled and (lc.real_label != 1 or lc.fake_label != 0 or lc.label_noise):
        raise ConfigError(
            f"loss.real_label/fake_label/label_noise are label tricks of bce and minimax; "
            f"loss.name={lc.name} has no targets: remove them or use loss.name=bce"
        )
    if cfg.model.pack > 1 and lc.label_noise:
        raise ConfigError(
            "loss.label_noise: per-sample target noise does not fit a packed D (model.pack > 1); "
            "remove loss.label_noise or set model.pack=1"
        )
    if cfg.train.augment and len(shape) != 3:
        raise ConfigError("train.augment: DiffAugment is for images; remove it for 2-D data")
    for name in cfg.train.augment:
        if not callable(POLICIES.get(name, "train.augment")):
            raise ConfigError(f"train.augment: {name!r} is not a function f(x, generator)")
    if batch % cfg.model.pack:
        raise ConfigError(
            f"model.pack={cfg.model.pack}: the per-process batch {batch} does not divide into "
            "packs; make train.batch_size a multiple of model.pack"
        )


class EMA(AveragedModel):
    """torch's ``AveragedModel`` (weights and buffers, a ``multi_avg_fn``) with an update that
    reads nothing from the device: torch's asks ``n_averaged == 0`` and ``> 0`` of the device
    tensor every step. The count is mirrored on the host and read back from the tensor only
    after something else wrote it (a checkpoint loaded, a rollback); the update is torch's,
    op for op, so the averages are the same bit for bit."""

    def __init__(self, g: nn.Module, multi_avg_fn: Callable[..., None]) -> None:
        super().__init__(g, multi_avg_fn=multi_avg_fn, use_buffers=True)
        self._host_n = (0, self.n_averaged._version)  # (count, the tensor's version it holds)

    def updates(self) -> int:
        """``n_averaged`` as an int; a read of the device only after another writer."""
        n, version = self._host_n
        if version != self.n_averaged._version:
            n = int(self.n_averaged)
            self._host_n = (n, self.n_averaged._version)
        return n

    def update_parameters(self, model: nn.Module) -> None:
        n = self.updates()
        mine = [
            t.detach() for t in itertools.chain(self.module.parameters(), self.module.buffers())
        ]
        theirs = itertools.chain(model.parameters(), model.buffers())
        cur = [t.detach().to(e.device) for e, t in zip(mine, theirs, strict=False)]
        if n == 0:  # the first update copies G
            for e, c in zip(mine, cur, strict=False):
                e.copy_(c)
        else:
            assert self.multi_avg_fn is not None
            groups = _group_tensors_by_device_and_dtype([mine, cur])  # type: ignore[arg-type]
            for (es, cs), _ in groups.values():
                self.multi_avg_fn(es, cs, n)  # type: ignore[arg-type]
        self.n_averaged += 1
        self._host_n = (n + 1, self.n_averaged._version)


def make_ema(g: nn.Module, cfg: Config) -> AveragedModel | None:
    """An exponential moving average of G's weights and buffers (``model.ema``), or None."""
    if cfg.model.ema is None:
        return None
    if cfg.model.ema_start == "auto":  # the decay warms up (train/ema.py)
        from .ema import warmup_multi_avg_fn

        return EMA(g, warmup_multi_avg_fn(cfg.model.ema))
    return EMA(g, get_ema_multi_avg_fn(cfg.model.ema))


def _penalty_grad(d: nn.Module, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    """Per-sample squared norm of dD/dx, (N,), kept in the graph (double backward)."""
    x = x.detach().requires_grad_(True)
    out = judge(d, x, y)
    (grad,) = torch.autograd.grad(out.float().sum(), x, create_graph=True)
    return grad.float().flatten(1).square().sum(1)


def gradient_penalty(
    d: nn.Module,
    real: torch.Tensor,
    fake: torch.Tensor,
    gen: torch.Generator,
    y: torch.Tensor | None = None,
) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al. 2017): E[(|grad D(x_hat)| - 1)^2] on random interpolates."""
    shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    eps = torch.rand(shape, generator=gen, device=real.device, dtype=real.dtype)
    x_hat = eps * real.detach() + (1 - eps) * fake.detach()
    return ((_penalty_grad(d, x_hat, y) + 1e-12).sqrt() - 1.0).square().mean()


def r1_penalty(d: nn.Module, real: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): E[|grad D(x)|^2] on real data."""
    return _penalty_grad(d, real, y).mean()


ADA_TARGET = 0.6  # the share of real images D may call real before augmenting more
ADA_IMAGES = 100_000  # images over which p may move from 0 to 1 (ADA: 500,000, for GPU-days)


def adapt_augment(p: torch.Tensor, verdict: torch.Tensor, batch: int) -> torch.Tensor:
    """``train.augment_p=auto`` (ADA's rule, Karras et al. 2020): r = E[sign(verdict)], the
    share of real images D calls real minus those it calls fake (``verdict``: the loss's
    ``real_verdict``, the logit or for a relativistic loss the logit less the fakes' mean,
    one per real image); p rises by batch / 100,000
    when r > 0.6 (D is learning the real images by heart) and falls otherwise, within [0, 1].
    The pace is 5x ADA's (0 to 1 in 100,000 images, not 500,000): a CPU run sees a few
    hundred thousand images in all, and a small folder is learnt by heart within them.
    In place, on the device (no host sync); under torchrun r is averaged over the processes
    so that every process keeps the same p. Returns p's new value (a copy, for the log)."""
    r = torch.sign(verdict.float()).mean()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(r)
        r = r / torch.distributed.get_world_size()
    p.add_(torch.sign(r - ADA_TARGET) * (batch / ADA_IMAGES)).clamp_(0.0, 1.0)
    return p.detach().clone()


def _backward(m: Models, loss: torch.Tensor) -> None:
    """Backpropagate ``loss``; under fp16 (``m.scaler``) scaled, so that small gradients do
    not underflow fp16's range (optimizer_step unscales them before clipping and stepping)."""
    if m.scaler is None:
        loss.backward()
    else:
        m.scaler.scale(loss).backward()


def train_step(
    m: Models,
    cfg: Config,
    real: torch.Tensor,
    z: torch.Tensor,
    step: int,
    label_noise: tuple[torch.Tensor, torch.Tensor] | None = None,
    y: torch.Tensor | None = None,
    gen: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Update D, then G on every ``train.d_steps``-th step; return detached scalars.

    ``real``: (B, *shape) in the model's range; ``z``: (B, z_dim); ``label_noise``: the
    (B, 1) additive noise of D's real and fake targets, when the recipe uses it; ``y``: (B,)
    labels of a conditional recipe (the fakes are made for the same labels); ``gen``: the
    generator of DiffAugment's and WGAN-GP's random draws. No host sync here.
    """
    lc, tc = cfg.loss, cfg.train
    loss = get_loss(lc.name)
    amp = autocast(real.device, tc.precision)
    if tc.channels_last and real.dim() == 4:  # the layout of the conv weights (build_models)
        real = real.contiguous(memory_format=torch.channels_last)
    real_noise, fake_noise = label_noise if label_noise is not None else (None, None)
    g_step = (step + 1) % tc.d_steps == 0
    r1_now = lc.r1 > 0 and step % lc.r1_every == 0

    # the share of images augmented: adaptive (a tensor), or the config's fixed number
    # (auto with no augmentation, or Models made without the tensor: no images to choose)
    fixed = 1.0 if tc.augment_p == "auto" else float(tc.augment_p)
    p = m.augment_p if m.augment_p is not None else fixed

    def aug(x: torch.Tensor) -> torch.Tensor:
        if not tc.augment:
            return x
        assert gen is not None  # the loop draws one whenever train.augment is set
        return diff_augment(x, tc.augment, gen, p)

    out: dict[str, torch.Tensor] = {}
    # ---- D step: real toward real, detached fake toward fake
    with amp:
        with torch.no_grad() if not g_step else contextlib.nullcontext():
            fake = generate(m.g, z, y)  # G's graph is kept only when G steps too
        real_in, fake_in = aug(real), aug(fake.detach())
        if lc.d_batch == "concat":  # one pass over [fake; real], as seed 003
            yy = None if y is None else torch.cat([y, y])
            logits = judge(m.d, torch.cat([fake_in, real_in]), yy)
            fake_logits, real_logits = logits.chunk(2)
        else:
            real_logits = judge(m.d, real_in, y)
            fake_logits = judge(m.d, fake_in, y)
        # One concatenated batch gives one mean over 2B targets: the average of the two terms.
        average = lc.d_average or lc.d_batch == "concat"
        loss_d = d_loss(
            lc.name,
            real_logits.float(),
            fake_logits.float(),
            lc.real_label,
            lc.fake_label,
            real_noise,
            fake_noise,
            average,
        )
        total_d = loss_d
        if loss.gradient_penalty:
            assert gen is not None  # the loop draws one for a gradient penalty
            gp = gradient_penalty(m.d, real_in, fake_in, gen, y)
            total_d = total_d + lc.gp_weight * gp
            out["gp"] = gp.detach()
        if r1_now:  # lazy R1: every r1_every steps, scaled by r1_every (StyleGAN2)
            r1 = r1_penalty(m.d, real_in, y)
            total_d = total_d + 0.5 * lc.r1 * lc.r1_every * r1
            out["r1"] = r1.detach()
    m.opt_d.zero_grad(set_to_none=True)
    _backward(m, total_d)
    optimizer_step(m.opt_d, cfg.optim.d, step, m.scaler)
    out["loss_d"] = loss_d.detach()
    if m.augment_p is not None:
        verdict = loss.real_verdict(real_logits.detach().float(), fake_logits.detach().float())
        out["augment_p"] = adapt_augment(m.augment_p, verdict, tc.batch_size)
    out["d_real"] = torch.sigmoid(real_logits.detach().float()).mean()
    out["d_fake"] = torch.sigmoid(fake_logits.detach().float()).mean()
    if not g_step:
        return out

    # ---- G step through the updated D; D's weights need no gradient here
    m.d.requires_grad_(False)
    try:
        with amp:
            real_now = None
            if loss.g_needs_real:  # G's loss compares with D's view of real data
                with torch.no_grad():
                    real_now = judge(m.d, real_in, y).float()
            loss_g = g_loss(lc.name, judge(m.d, aug(fake), y).float(), real_now)
        m.opt_g.zero_grad(set_to_none=True)
        _backward(m, loss_g)
        optimizer_step(m.opt_g, cfg.optim.g, step // tc.d_steps, m.scaler)
    finally:
        m.d.requires_grad_(True)
    out["loss_g"] = loss_g.detach()
    return out
