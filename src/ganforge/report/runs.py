"""``ganforge runs``: one line per run directory under a folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from .runlog import best_eval, read_log, read_status, run_state, wall_time

FD_KEYS = ("fd", "fid")  # the Frechet distance, by whichever name the evaluation used


@dataclass(frozen=True)
class RunInfo:
    """What the table shows of one run."""

    name: str
    path: Path
    recipe: str
    steps: int
    total: int | None
    last_fd: float | None
    best_fd: float | None
    wall_s: float
    status: str


def _fd(rec: dict | None) -> float | None:
    if not rec:
        return None
    for key in FD_KEYS:
        v = rec["eval"].get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    return None


def _recipe(run_dir: Path) -> str:
    try:
        raw = yaml.safe_load((run_dir / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return "?"
    return str(raw.get("recipe", "?")) if isinstance(raw, dict) else "?"


def _total(run_dir: Path) -> int | None:
    total = read_status(run_dir).get("total_steps")
    if isinstance(total, int):
        return total
    try:  # runs from before status.json: only an explicit iteration count is known
        raw = yaml.safe_load((run_dir / "config.yaml").read_text())
        it = raw["train"]["iterations"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None
    return it if isinstance(it, int) else None


def run_info(run_dir: Path) -> RunInfo:
    """Summarize one run directory."""
    log = read_log(run_dir)
    with_fd = [r for r in log.evals if _fd(r) is not None]
    best = best_eval(with_fd)
    best_fd = _fd(best) if best else min((_fd(r) for r in with_fd), default=None)
    return RunInfo(
        name=run_dir.name,
        path=run_dir,
        recipe=_recipe(run_dir),
        steps=log.last_step,
        total=_total(run_dir),
        last_fd=_fd(with_fd[-1]) if with_fd else None,
        best_fd=best_fd,
        wall_s=wall_time(log.train),
        status=run_state(run_dir),
    )


def is_run(path: Path) -> bool:
    """A run directory holds the resolved config the loop writes first."""
    return path.is_dir() and (path / "config.yaml").is_file()


def list_runs(root: Path) -> list[RunInfo]:
    """The runs directly under ``root`` (or ``root`` itself if it is a run), oldest first."""
    root = Path(root)
    if is_run(root):
        return [run_info(root)]
    dirs = [p for p in root.iterdir() if is_run(p)] if root.is_dir() else []
    dirs.sort(key=lambda p: ((p / "config.yaml").stat().st_mtime, p.name))
    return [run_info(p) for p in dirs]
