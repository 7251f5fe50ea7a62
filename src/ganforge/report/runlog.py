"""A run's ``log.jsonl`` and ``status.json``, read back; the run's state; curve helpers.

Kept free of matplotlib and torch so that the training loop and ``ganforge runs`` import it
cheaply. ``status.json`` is written by the loop at start ("running") and end ("finished",
"failed" or "interrupted"); a "running" status whose process is gone reads as "interrupted".
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..files import finite_number, load_json
from ..runfiles import atomic_write_text, lock_held

STATUS_FILE = "status.json"
STATES = ("running", "finished", "failed", "interrupted", "unknown")


@dataclass
class RunLog:
    """The records of ``log.jsonl``: training records and evaluation records, in file order."""

    train: list[dict[str, Any]] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)

    @property
    def last_step(self) -> int:
        steps = [r["step"] for r in self.train + self.evals if isinstance(r.get("step"), int)]
        return max(steps, default=0)


KEPT_AS_IS = ("eval", "best")  # the fields of a record that are not plain numbers


def parse_record(line: str | bytes) -> dict[str, Any] | None:
    """One ``log.jsonl`` line as a record, or None when it is not one.

    The one reader of log lines (the report, ``runs``, TensorBoard, resume): a record is a JSON
    object whose ``step`` is an integer >= 0. Fields of the wrong type are dropped, so readers
    need no checks: ``eval`` is kept only as an object, ``best`` only as a boolean, and every
    other field only as a finite number. A line cut by a crash, binary bytes, or a line nested
    too deeply is None.
    """
    try:
        if isinstance(line, bytes):
            line = line.decode("utf-8")
        rec = load_json(line)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(rec, dict):
        return None
    step = rec.get("step")
    if type(step) is not int or step < 0:
        return None
    out: dict[str, Any] = {}
    for key, value in rec.items():
        if key == "eval":
            if isinstance(value, dict):
                out[key] = value
        elif key == "best":
            if isinstance(value, bool):
                out[key] = value
        elif finite_number(value):
            out[key] = value
    return out


def log_lines(path: Path) -> list[tuple[bytes, dict[str, Any]]]:
    """Each line of a ``log.jsonl`` that holds a record, as (the line's bytes, the record).

    Raises OSError when the file cannot be read (absent: an empty list).
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    pairs = []
    for line in data.splitlines():
        rec = parse_record(line)
        if rec is not None:
            pairs.append((line, rec))
    return pairs


def read_log(run_dir: Path) -> RunLog:
    """The records of ``run_dir/log.jsonl`` (see ``parse_record``); an unreadable log is empty."""
    log = RunLog()
    try:
        pairs = log_lines(Path(run_dir) / "log.jsonl")
    except OSError:
        return log
    for _, rec in pairs:
        (log.evals if "eval" in rec else log.train).append(rec)
    return log


def numbers(tree: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Finite numeric leaves of a nested mapping, keys dotted (booleans are not numbers)."""
    out: dict[str, float] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(numbers(value, name + "."))
        elif finite_number(value):
            out[name] = float(value)
    return out


TIMINGS = ("eval_s",)  # numbers in evaluation records that time the evaluation, not the model


def metric_numbers(ev: Mapping[str, Any]) -> dict[str, float]:
    """The quality numbers of an evaluation record's ``eval`` mapping (timings left out)."""
    return {k: v for k, v in numbers(ev).items() if k not in TIMINGS}


def best_eval(evals: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The evaluation record of the best checkpoint: the last one flagged ``best``."""
    flagged = [r for r in evals if r.get("best")]
    return flagged[-1] if flagged else None


def smooth(values: Iterable[float], weight: float) -> list[float]:
    """Exponential moving average with bias correction (TensorBoard's smoothing).

    ``weight`` in [0, 1): 0 returns the values unchanged; the first point is never pulled
    toward zero, because the average is divided by the weight mass seen so far.
    """
    out, avg, mass = [], 0.0, 0.0
    for v in values:
        avg = weight * avg + (1 - weight) * v
        mass = weight * mass + (1 - weight)
        out.append(avg / mass if mass > 0 else v)
    return out


def auto_weight(n: int) -> float:
    """A smoothing weight for ``n`` points: none for a handful, up to 0.95 for long logs."""
    return min(0.95, max(0.0, 1.0 - 10.0 / n)) if n > 0 else 0.0


def wall_time(train: list[dict[str, Any]]) -> float:
    """Seconds of training: each resumed segment restarts ``time`` at zero, so segments add up."""
    total, last = 0.0, 0.0
    for rec in train:
        t = rec.get("time", 0.0)
        if t < last:  # a new segment (resume) began
            total += last
        last = t
    return total + last


def hms(seconds: float) -> str:
    """Seconds as h:mm:ss."""
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def median_img_s(train: list[dict[str, Any]]) -> float | None:
    """Median images/s over the logging windows (robust to the slow first window)."""
    vals = sorted(r["img_s"] for r in train if isinstance(r.get("img_s"), (int, float)))
    if not vals:
        return None
    mid = len(vals) // 2
    return vals[mid] if len(vals) % 2 else (vals[mid - 1] + vals[mid]) / 2


# ---------------------------------------------------------------- status


def read_status(run_dir: Path) -> dict[str, Any]:
    """The content of ``status.json`` (empty when absent or unreadable)."""
    try:
        data = load_json((Path(run_dir) / STATUS_FILE).read_bytes())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_status(run_dir: Path, status: str, **fields: Any) -> None:
    """Record the run's state with this process' id and host; earlier fields are kept."""
    if status not in STATES:
        raise ValueError(f"unknown run status {status!r}")
    path = Path(run_dir) / STATUS_FILE
    data = read_status(run_dir)
    now = time.strftime("%Y-%m-%dT%H:%M:%S")
    if status == "running":
        data.pop("error", None)
        data["started"] = now
    data.update(fields, status=status, pid=os.getpid(), host=socket.gethostname(), updated=now)
    atomic_write_text(path, json.dumps(data, indent=1))  # never half a status for a reader


def status_of_exception(exc: BaseException) -> str:
    """How a run that ended by ``exc`` is recorded: Ctrl-C or a stop signal (SIGTERM, SIGINT:
    the loop saves a checkpoint and raises ``Preempted``) is an interruption, else a failure."""
    from ..errors import Preempted  # imported here only when a run ends

    stopped = (KeyboardInterrupt, SystemExit, Preempted)
    return "interrupted" if isinstance(exc, stopped) else "failed"


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except (OSError, OverflowError):
        return False
    return True


def run_state(run_dir: Path) -> str:
    """finished / failed / interrupted / running, or unknown.

    A "running" run is running while a process holds its lock (``RUN_DIR/.lock``); one whose
    lock is free was killed: "interrupted", even when its pid now names another process.
    Without a lock file, a run whose process is gone (on this host) reads as killed. A run
    without a status file (older ganforge) counts as finished when its final grid exists.
    """
    st = read_status(run_dir)
    state = st.get("status")
    if state == "running":
        held = lock_held(Path(run_dir))
        if held is not None:
            return "running" if held else "interrupted"
        same_host = st.get("host") == socket.gethostname()
        pid = st.get("pid")
        if same_host and isinstance(pid, int) and not pid_alive(pid):
            return "interrupted"
        return "running"
    if state in STATES:
        return state
    return "finished" if (Path(run_dir) / "final.png").exists() else "unknown"
