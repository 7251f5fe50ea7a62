"""``ganforge evaluate``'s history: one record per evaluation in ``RUN_DIR/metrics.jsonl``.

``metrics.json`` stays the latest evaluation (for readers of earlier versions); the history
keeps every (checkpoint, metrics, n) evaluated, so a second ``evaluate`` with another n or
checkpoint no longer overwrites the first. Also: each metric's direction, and the
real-vs-real floor of FD (docs/metrics.md) to read an FD against.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from ..files import load_json
from ..runfiles import AppendLog

HISTORY = "metrics.jsonl"

# Real-vs-real floors measured by benchmarks/quality.py (docs/metrics.md, "Real-vs-real
# floor"): real train images scored as if generated, against the test split, n of each.
FLOORS: dict[str, dict[int, dict[str, float]]] = {
    "fashion-mnist": {
        10_000: {"fd": 0.555, "precision": 0.875, "recall": 0.874, "is": 7.96},
        3_000: {"fd": 2.2, "precision": 0.88, "recall": 0.90},
    }
}


def direction(name: str) -> str | None:
    """'lower' or 'higher' (is better), or None for counts and histograms: as each metric
    declares its values (``metrics.metric``)."""
    from .metric import direction as lower_is_better

    lower = lower_is_better(name.rsplit(".", 1)[-1])
    return None if lower is None else "lower" if lower else "higher"


def arrow(name: str) -> str:
    """A short direction mark: '(lower is better)' etc., or ''."""
    d = direction(name)
    return f"({d} is better)" if d else ""


def floor(data: str, n: int | None, reference: str = "test") -> dict[str, float] | None:
    """The real-vs-real values of data set ``data`` at ``n`` samples (test reference), or
    None where not measured."""
    if reference != "test" or n is None:
        return None
    return FLOORS.get(data, {}).get(int(n))


def record_of(result: dict[str, Any]) -> dict[str, Any]:
    """The history record of an ``evaluate_run`` result."""
    proto = result.get("protocol", {})
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "data": result.get("data"),
        "checkpoint": proto.get("checkpoint"),
        "n": proto.get("n"),
        "metrics": result.get("metrics", {}),
        "protocol": {k: v for k, v in proto.items() if k != "checkpoint"},
    }


def append(run_dir: Path, result: dict[str, Any]) -> Path:
    """Append one record to ``RUN_DIR/metrics.jsonl`` in a single write (``AppendLog``): a
    reader sees whole lines; a crash leaves at worst one cut last line, which readers skip
    and the next append cuts off first, so it never swallows the next record."""
    path = Path(run_dir) / HISTORY
    with AppendLog(path) as log:
        log.write(json.dumps(record_of(result)) + "\n")
        assert log.fd is not None
        os.fsync(log.fd)
    return path


def read(run_dir: Path) -> list[dict[str, Any]]:
    """The history records, oldest first; unreadable lines are skipped. An older run with
    only ``metrics.json`` gives that one evaluation."""
    path = Path(run_dir) / HISTORY
    out: list[dict[str, Any]] = []
    try:
        lines = path.read_bytes().decode("utf-8", "replace").splitlines()
    except OSError:
        lines = []
    for ln in lines:
        try:
            rec = load_json(ln)
        except ValueError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("metrics"), dict):
            out.append(rec)
    if out:
        return out
    try:
        data = load_json((Path(run_dir) / "metrics.json").read_text())
    except (OSError, ValueError):
        return []
    return [record_of(data)] if isinstance(data, dict) and "metrics" in data else []


def fd_of(metrics: dict[str, Any]) -> float | None:
    """The Frechet distance of a metrics mapping, by whichever name it was computed."""
    for key in ("fd", "fid"):
        v = metrics.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    return None


def latest_fd(run_dir: Path) -> float | None:
    """FD of the newest ``ganforge evaluate`` of a run (None if never evaluated)."""
    for rec in reversed(read(run_dir)):
        fd = fd_of(rec["metrics"])
        if fd is not None:
            return fd
    return None


def lines(result: dict[str, Any]) -> list[str]:
    """What ``ganforge evaluate`` prints: one metric a line with its direction, the floor
    beside FD where it is known."""
    proto = result.get("protocol", {})
    n = proto.get("n")
    ref = proto.get("reference")
    split = ref.get("split", "test") if isinstance(ref, dict) else "test"
    fl = floor(str(result.get("data", "")), n, split) or {}
    out = []
    for k, v in result.get("metrics", {}).items():
        if not isinstance(v, (int, float)) or isinstance(v, bool) or k == "eval_s":
            continue
        text = f"  {k:<16} {v:>10.4g}  {arrow(k)}"
        if k in fl:
            text += f"  real-vs-real {fl[k]:.4g} at n={n:,}"
        elif k in ("fd", "fid") and proto.get("feature_extractors"):  # images
            text += "  real-vs-real floor: see docs/metrics.md"
        out.append(text.rstrip())
    return out
