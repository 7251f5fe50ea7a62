"""User-facing errors: the CLI prints these as one line, never as a traceback."""

from __future__ import annotations

import contextvars
import signal
from pathlib import Path


class GanforgeError(Exception):
    """A problem the user can fix; the message names the problem and the fix."""


class ConfigError(GanforgeError):
    """A config key, value or override is wrong."""


class ArgumentError(ConfigError, ValueError, TypeError):
    """An argument of a public function or a command is of the wrong type or out of range.

    Also a ``ValueError`` and a ``TypeError``, so that code written for Python's own
    conventions (``except ValueError``) still catches it.
    """


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
    """SIGTERM, SIGINT or SIGHUP arrived; a checkpoint was written before stopping.

    ``during`` names a phase that was cut short (data loading, an evaluation, the report);
    ``saved`` is False when there was nothing to save yet (the data was still loading), and
    ``complete`` True when the run had already finished (the report was being written).
    """

    def __init__(
        self,
        signum: int,
        step: int | None,
        run_dir: Path,
        during: str = "",
        saved: bool = True,
        complete: bool = False,
    ) -> None:
        name = signal.Signals(signum).name
        during = f" {during}" if during else ""
        if complete:
            text = (
                f"stopped by {name}{during}; the run is complete (step {step}, checkpoint "
                f"saved); write its report with 'ganforge report {run_dir}'"
            )
        elif not saved:
            again = (
                f"continue with 'ganforge train --resume {run_dir}'"
                if (run_dir / "config.yaml").exists()
                else "start the same command again to train"
            )
            text = f"stopped by {name}{during}, before any training step; nothing to save; {again}"
        else:
            text = (
                f"stopped by {name}{during} after step {step}; checkpoint saved; continue with "
                f"'ganforge train --resume {run_dir}'"
            )
        super().__init__(text)
        self.exit_code = 128 + signum  # 143 SIGTERM, 130 SIGINT, 129 SIGHUP, as shells report


class UntrustedCode(ConfigError):
    """A run's config names code to import (an import path) and the user has not said that
    they trust the run (--trust-code, trust_code=True, GANFORGE_TRUST_CODE=1)."""


# Whether the command line is the caller: messages then name its flags (--overwrite), else
# the Python keywords (overwrite=True). Set by ``ganforge.cli.main``.
COMMAND_LINE = contextvars.ContextVar("ganforge_command_line", default=False)


def option(flag: str, keyword: str) -> str:
    """How a message names an option: ``flag`` to the command line, ``keyword`` in Python."""
    return flag if COMMAND_LINE.get() else keyword
