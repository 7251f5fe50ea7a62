"""What keeps a run safe: one writer per run directory, clean stops on signals, and a
stop at the first non-finite number.
"""

from __future__ import annotations

import fcntl
import math
import os
import signal
from pathlib import Path
from types import FrameType

import torch

from ..errors import Diverged, GanforgeError


class RunLock:
    """An exclusive lock on ``RUN_DIR/.lock``: a second training into the same run refuses.

    The lock is held by the open file (flock), so it is released when the process ends,
    however it ends; a stale lock file never blocks a later run.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / ".lock"
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise GanforgeError(
                f"{self.path.parent} is being trained by another process; wait for it to "
                "finish or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            run_dir = self.path.parent
            if [p.name for p in run_dir.iterdir()] == [".lock"]:  # failed before any output
                self.path.unlink()
                run_dir.rmdir()
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


class StopSignals:
    """Turn SIGTERM / SIGINT into a request the loop honours after the current step.

    A second signal of the same kind while stopping falls back to the previous handler's
    behaviour, so a stuck run can still be interrupted; one of the other kind does not: a
    Ctrl-C under torchrun reaches the workers as SIGINT, then from the agent as SIGTERM, and
    the workers must still save their checkpoint. Previous handlers are restored on exit.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum == signum:  # asked twice: stop now
            previous = self._previous.get(signum)
            if callable(previous):
                previous(signum, frame)
            raise KeyboardInterrupt
        if self.signum is None:  # the first signal names the stop
            self.signum = signum

    def __enter__(self) -> StopSignals:
        import threading

        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, previous in self._previous.items():
            signal.signal(s, previous)  # type: ignore[arg-type]
        self._previous.clear()

    @property
    def requested(self) -> bool:
        return self.signum is not None


def check_losses(out: dict[str, torch.Tensor], step: int) -> None:
    """Raise Diverged naming the step, network and loss term of a non-finite value."""
    values = torch.stack([v.float() for v in out.values()])
    if bool(torch.isfinite(values).all()):
        return
    for key, v in out.items():
        if not math.isfinite(float(v)):
            net = {
                "loss_d": "discriminator",
                "d_real": "discriminator",
                "d_fake": "discriminator",
                "gp": "discriminator",
                "r1": "discriminator",
            }.get(key, "generator")
            raise Diverged(
                f"training diverged at step {step}: {net} {key} = {float(v)}; nothing "
                "non-finite was saved; lower the learning rate (optim.d.lr / optim.g.lr) or "
                "set train.rollback to retry from the last checkpoint automatically"
            )


def check_parameters(nets: dict[str, torch.nn.Module], step: int) -> None:
    """Raise Diverged if any parameter or buffer of the named nets is not finite."""
    for label, net in nets.items():
        for name, t in list(net.named_parameters()) + list(net.named_buffers()):
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise Diverged(
                    f"training diverged at step {step}: {label} parameter {name} is not "
                    "finite; nothing non-finite was saved; lower the learning rate or set "
                    "train.rollback"
                )
