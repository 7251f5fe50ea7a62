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
