"""Data-parallel training over several processes (torchrun + DistributedDataParallel).

Without torchrun's variables (``WORLD_SIZE`` unset or 1) nothing here does anything: no
process group, no wrapper, and the training loop runs its single-process path unchanged.

Design (see docs/distributed.md):

- batches: every step takes the single-process global batch of the epoch's seeded order and
  gives rank ``r`` the slice ``r`` of it, so the union over ranks is the one-process batch;
- noise: the global batch's noise is drawn with the step's seeded generator on every rank and
  each rank keeps its slice (a little redundant work, but results do not depend on the world
  size: 2 ranks x B/2 equal 1 rank x B up to floating-point summation order);
- gradients: G and D are wrapped separately; D's forward inside G's step (D frozen) bypasses
  DDP, so D's reducer sees exactly one forward/backward per step while G's gradients still
  flow through D and are averaged by G's reducer;
- agreement: divergence and stop requests are agreed by one small all_reduce at check steps,
  so every rank stops, rolls back or checkpoints at the same step;
- failure of a peer: a collective that fails because another process died or stopped
  answering becomes ``PeerLost`` (one line, exit code 4) on every survivor, not a traceback.
"""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as tdist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..errors import ConfigError, PeerLost
from .guard import Diverged, check_losses

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")

# How a collective reports a peer that is gone: gloo raises a plain RuntimeError whose message
# names its transport file, NCCL and the c10d store raise DistError subclasses. Matching stays
# narrow so that an ordinary RuntimeError (a bug) still surfaces with its traceback.
_BACKEND_WORDS = ("gloo", "nccl", "c10d", "processgroup")
_TIMEOUT_WORDS = ("timed out", "timeout")
_CLOSED_WORDS = (
    "connection closed",
    "connection reset",
    "connection refused",
    "broken pipe",
    "remote process exited",
    "communicator was aborted",
)

_agreed_step: int | None = None  # the last step every rank confirmed (check_step), this job


@dataclass(frozen=True)
class Dist:
    """This process's place in the job; ``world == 1`` means the plain single-process path."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        """Rank 0: the only writer of the run directory."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.active:
            tdist.barrier()

    def shard(self, t: torch.Tensor, dim: int = 0) -> torch.Tensor:
        """This rank's contiguous slice of a global batch (size divisible by ``world``)."""
        if not self.active:
            return t
        n = t.shape[dim] // self.world
        return t.narrow(dim, self.rank * n, n)

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """The average over ranks of ``values`` (an all_reduce; call at log steps only)."""
        if not self.active:
            return values
        values = values.clone()
        tdist.all_reduce(values, op=tdist.ReduceOp.SUM)
        return values / self.world

    def agree(self, out: dict[str, torch.Tensor], stop: bool) -> tuple[bool, bool]:
        """(any rank non-finite, any rank asked to stop): one 2-element all_reduce (MAX)."""
        values = torch.stack([v.detach().float() for v in out.values()])
        stop_flag = torch.tensor(float(stop), device=values.device)
        flags = torch.stack([(~torch.isfinite(values)).any().float(), stop_flag])
        if self.active:
            tdist.all_reduce(flags, op=tdist.ReduceOp.MAX)
        return bool(flags[0] > 0), bool(flags[1] > 0)


def from_env() -> Dist:
    """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK; a 1-process ``Dist`` when absent."""
    if "WORLD_SIZE" not in os.environ:
        return Dist()
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", rank))
    except (KeyError, ValueError):
        raise ConfigError(
            "incomplete torchrun environment: RANK, WORLD_SIZE and LOCAL_RANK must be integers; "
            "launch with torchrun or 'ganforge train --nproc N'"
        ) from None
    return Dist(rank, world, local)


def setup(device: str, timeout_s: float) -> tuple[Dist, torch.device | None]:
    """Join the process group (NCCL on CUDA, gloo on CPU); return it and this rank's device.

    ``device`` is ``train.device`` (auto/cpu/cuda). A 1-process job returns ``(Dist(), None)``
    and the caller picks its device as before. Idempotent: a group already joined is reused.
    """
    global _agreed_step
    _agreed_step = None
    dist = from_env()
    if not dist.active:
        return dist, None
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise ConfigError("train.device: cuda was asked for but no CUDA GPU is visible")
        if dist.local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"LOCAL_RANK {dist.local_rank} but only {torch.cuda.device_count()} GPU(s) "
                "visible; use --nproc-per-node <= the number of GPUs"
            )
        dev = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    if not tdist.is_initialized():
        tdist.init_process_group(
            "nccl" if use_cuda else "gloo",
            timeout=timedelta(seconds=timeout_s),
            device_id=dev if use_cuda else None,
        )
    return dist, dev


def shutdown() -> None:
    """Leave the process group, if one was joined."""
    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()


def local_batch(batch_size: int, batch_per_rank: bool, dist: Dist) -> tuple[int, int]:
    """(global batch, per-rank batch) from ``train.batch_size`` and ``train.batch_per_rank``."""
    if batch_per_rank:
        return batch_size * dist.world, batch_size
    if batch_size % dist.world:
        raise ConfigError(
            f"train.batch_size={batch_size} (the global batch) does not divide over "
            f"{dist.world} processes; choose a multiple of {dist.world} or set "
            "train.batch_per_rank=true"
        )
    return batch_size, batch_size // dist.world


class _DDP(DistributedDataParallel):
    """DDP that steps aside while its module is frozen (D inside G's step).

    With every parameter's ``requires_grad`` off, the call goes to the plain module: no
    reducer bookkeeping (which would otherwise wait for gradients that never come) and no
    buffer broadcast. Gradients still flow *through* the module to its input (G's output).
    """

    def forward(self, *args, **kwargs):  # noqa: D401 - nn.Module protocol
        p = next(self.module.parameters(), None)
        if p is not None and not p.requires_grad:
            return self.module(*args, **kwargs)
        return super().forward(*args, **kwargs)


def wrap(net: nn.Module, dist: Dist, device: torch.device) -> nn.Module:
    """``net`` in DDP (the module itself stays the checkpoint's object: no ``module.`` keys)."""
    ids = [device.index] if device.type == "cuda" else None
    return _DDP(net, device_ids=ids)  # buffers (BatchNorm stats) follow rank 0 each forward


def sync_batchnorm(net: nn.Module, device: torch.device) -> nn.Module:
    """BatchNorm layers -> SyncBatchNorm (same parameter and buffer objects and keys)."""
    if device.type != "cuda":
        raise ConfigError(
            "train.sync_bn needs CUDA: PyTorch's SyncBatchNorm does not run on the CPU; "
            "drop train.sync_bn or train on GPUs"
        )
    return nn.SyncBatchNorm.convert_sync_batchnorm(net)


def check_step(dist: Dist, out: dict[str, torch.Tensor], step: int, stop: bool) -> bool:
    """Raise Diverged on every rank if any rank's losses are not finite; return whether any
    rank was asked to stop (all ranks then checkpoint and stop at this same step)."""
    global _agreed_step
    bad, stop_any = dist.agree(out, stop)
    _agreed_step = step
    if bad:
        check_losses(out, step)  # names the loss term when it is this rank's own
        raise Diverged(
            f"training diverged at step {step} on another process; nothing non-finite was "
            "saved; lower the learning rate or set train.rollback"
        )
    return stop_any


def stop_signal(signum: int | None) -> int:
    """The signal to report when another rank asked to stop and this one saw none."""
    return signum if signum is not None else signal.SIGTERM


def lost_peer_reason(exc: BaseException, timeout_s: float) -> str | None:
    """Why a collective failed when the cause is another process, or None for any other error.

    ``exc`` is what a collective raised (DDP's all_reduce inside backward, ``mean``, ``agree``,
    ``barrier``); ``timeout_s`` is ``train.dist_timeout``, named in the timeout case.
    """
    if not isinstance(exc, RuntimeError):
        return None
    text = str(exc).lower()
    from_backend = isinstance(exc, tdist.DistError)
    if not from_backend and not any(w in text for w in _BACKEND_WORDS):
        return None  # not from a collective: a bug, keep its traceback
    if any(w in text for w in _TIMEOUT_WORDS):
        return f"no answer within train.dist_timeout={timeout_s:g} s"
    if any(w in text for w in _CLOSED_WORDS):
        return "its connection closed: it ended or was killed"
    if isinstance(exc, (tdist.DistNetworkError, tdist.DistStoreError)):
        return "network or rendezvous store error"
    return None


def peer_lost(exc: BaseException, dist: Dist, run_dir: Path, timeout_s: float) -> PeerLost | None:
    """The one-line ``PeerLost`` error for ``exc`` if another process's failure caused it.

    Also ignores SIGTERM from here on when it returns an error: torchrun's agent sends SIGTERM
    to the survivors a moment after it sees a process die, and with the default disposition
    that signal would kill this process silently (exit -15) before it prints its line. The
    process is ending anyway; if it did hang, the agent's SIGKILL still ends it.
    """
    if not dist.active:
        return None
    reason = lost_peer_reason(exc, timeout_s)
    if reason is None:
        return None
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    where = f" after step {_agreed_step}" if _agreed_step is not None else ""
    return PeerLost(
        f"rank {dist.rank} of {dist.world}: lost contact with another process ({reason})"
        f"{where}; the job stops; continue from the last checkpoint with "
        f"'ganforge train --resume {run_dir} --nproc {dist.world}'"
    )
