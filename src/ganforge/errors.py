"""User-facing errors: the CLI prints these as one line, never as a traceback."""

from __future__ import annotations


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
