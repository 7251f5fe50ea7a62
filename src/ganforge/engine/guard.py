"""What keeps a run safe: one writer per run directory, clean stops on signals, and a
stop at the first non-finite number.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

import torch

from ..errors import Diverged, GanforgeError, Preempted
from ..runfiles import holds_run


class StopNow(BaseException):
    """Raised by the signal handler inside ``StopSignals.immediate()``: a phase that cannot
    wait for the end of a training step (loading data, an evaluation, the report) ends at
    once. A BaseException, so that no ``except Exception`` on the way swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class RunLock:
    """An exclusive lock on ``RUN_DIR/.lock``: a second training into the same run refuses.

    The lock is held by the open file (flock), so it is released when the process ends,
    however it ends; a stale lock file never blocks a later run.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / ".lock"
        self.fd: int | None = None
        self.made = False

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.made = not self.path.exists()  # removed again when nothing of a run is left
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise GanforgeError(
                f"{self.path.parent} is being trained by another process; wait for it to "
                "finish or choose another --out"
            ) from None
        # nothing is written into the lock file (status.json names the process): a refused
        # command leaves the run directory byte-identical, and a full disk cannot stop it here
        self.fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            run_dir = self.path.parent
            if [p.name for p in run_dir.iterdir()] == [".lock"]:  # failed before any output
                self.path.unlink()
                run_dir.rmdir()
            elif self.made and holds_run(run_dir) is None:  # a folder of other files: as it was
                self.path.unlink()
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def _terminals() -> list[int]:
    """Which of stdout and stderr are terminals (asked while the terminal is alive: after a
    hang-up ``isatty`` itself fails)."""
    out = []
    for fd in (1, 2):
        with contextlib.suppress(OSError):
            if os.isatty(fd):
                out.append(fd)
    return out


def _detach_terminal(fds: list[int]) -> None:
    """Point ``fds`` (stdout, stderr on a terminal) at /dev/null: after a hang-up (a closed
    SSH session) a write to the old terminal fails with EIO, which must not stop the run
    before its checkpoint; the reason still goes to status.json."""
    for fd in fds:
        with contextlib.suppress(OSError):
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, fd)
            os.close(null)


class StopSignals:
    """Turn SIGTERM / SIGINT / SIGHUP into a request the loop honours after the current step.

    SIGHUP is what a closed terminal (a dropped SSH session) sends: the same clean stop.
    Inside ``immediate()`` (long phases without steps) the request raises ``StopNow`` at once.

    A second signal of the same kind while stopping falls back to the previous handler's
    behaviour, so a stuck run can still be interrupted; one of the other kind does not: a
    Ctrl-C under torchrun reaches the workers as SIGINT, then from the agent as SIGTERM, and
    the workers must still save their checkpoint. Previous handlers are restored on exit.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}
        self._immediate = False
        self._ttys: list[int] = []

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum == signum:  # asked twice: stop now
            previous = self._previous.get(signum)
            if callable(previous):
                previous(signum, frame)
            raise KeyboardInterrupt
        if self.signum is None:  # the first signal names the stop
            self.signum = signum
        if signum == signal.SIGHUP:  # the terminal is gone: writing to it would fail
            _detach_terminal(self._ttys)
        if self._immediate:
            self._immediate = False  # raised once; the phase's clean-up runs undisturbed
            raise StopNow(self.signum)

    def __enter__(self) -> StopSignals:
        import threading

        self._ttys = _terminals()
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

    @contextlib.contextmanager
    def immediate(self, enabled: bool = True) -> Iterator[None]:
        """Within this block a stop request raises ``StopNow`` at once (also one that came
        before the block began) instead of waiting for the end of a step."""
        if not enabled:
            yield
            return
        if self.signum is not None:
            raise StopNow(self.signum)
        self._immediate = True
        try:
            yield
        finally:
            self._immediate = False

    @contextlib.contextmanager
    def phase(
        self,
        during: str,
        step: int | None,
        run_dir: Path,
        on_stop: Callable[[], None] | None = None,
        enabled: bool = True,
        saved: bool = True,
        complete: bool = False,
    ) -> Iterator[None]:
        """A long phase a signal cuts short: ``on_stop`` (e.g. save a checkpoint) runs, then
        ``Preempted`` (one line, exit code 128 + the signal) names the phase.

        ``enabled`` False (under torchrun, where ranks must agree on a stop) leaves the
        request to the loop's next step.
        """
        try:
            with self.immediate(enabled):
                yield
        except StopNow as e:
            if on_stop is not None:
                on_stop()
            raise Preempted(e.signum, step, run_dir, during, saved, complete) from None


def check_losses(
    out: dict[str, torch.Tensor], step: int, since: dict[str, torch.Tensor] | None = None
) -> None:
    """Raise Diverged naming the step, network and loss term of a non-finite value.

    ``since``: the sums of the steps since the last log step (the accelerator path checks at
    log steps only; a non-finite value of any step between makes its sum non-finite)."""
    terms = [*out.items(), *(since or {}).items()]  # the step's own value named first
    values = torch.stack([v.float() for _, v in terms])
    if bool(torch.isfinite(values).all()):
        return
    for key, v in terms:
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
