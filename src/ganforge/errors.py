"""User-facing errors: the CLI prints these as one line, never as a traceback."""

from __future__ import annotations

import signal
from pathlib import Path


class GanforgeError(Exception):
    """A problem the user can fix; the message names the problem and the fix."""


class ConfigError(GanforgeError):
    """A config key, value or override is wrong."""


class DataError(GanforgeError):
    """A data set cannot be found or read."""


class CheckpointError(GanforgeError):
    """A checkpoint or run directory is missing, incomplete or corrupted."""


EXIT_PEER_LOST = 4  # a dedicated exit code: this process stopped because another one failed


class PeerLost(GanforgeError):
    """Another process of a multi-process job died or stopped answering; this one stops too.

    Its own exit code tells a launcher (and ``train --nproc``'s summary) that this process is a
    follower of the failure, not its cause.
    """

    exit_code = EXIT_PEER_LOST


EXIT_DIVERGED = 3  # a dedicated exit code for non-finite losses or parameters


class Diverged(GanforgeError):
    """A loss or parameter became NaN or infinite."""

    exit_code = EXIT_DIVERGED


class Preempted(GanforgeError):
    """SIGTERM or SIGINT arrived; a checkpoint was written before stopping."""

    def __init__(self, signum: int, step: int, run_dir: Path) -> None:
        name = signal.Signals(signum).name
        super().__init__(
            f"stopped by {name} after step {step}; checkpoint saved; continue with "
            f"'ganforge train --resume {run_dir}'"
        )
        self.exit_code = 128 + signum  # 143 for SIGTERM, 130 for SIGINT, as shells report
