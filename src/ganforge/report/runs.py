"""``ganforge runs``: one line per run directory under a folder; ``runs/latest``."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..files import load_json, load_yaml
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
    eval_fd: float | None = None  # FD of the newest `ganforge evaluate` (metrics.jsonl)
    problem: str = ""  # why a damaged run is damaged


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
        raw = load_yaml((run_dir / "config.yaml").read_bytes())
    except (OSError, yaml.YAMLError):
        return "?"
    return str(raw.get("recipe", "?")) if isinstance(raw, dict) else "?"


def _total(run_dir: Path) -> int | None:
    total = read_status(run_dir).get("total_steps")
    if isinstance(total, int):
        return total
    try:  # runs from before status.json: only an explicit iteration count is known
        raw = load_yaml((run_dir / "config.yaml").read_bytes())
        it = raw["train"]["iterations"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None
    return it if isinstance(it, int) else None


def damage(run_dir: Path) -> str:
    """Why a run directory cannot be read as a run ('' when it can): a config.yaml that is
    not a YAML mapping, a status.json that is not a JSON object, a log.jsonl that is not
    text or whose lines (other than a last one cut by a crash) are not JSON."""
    try:
        raw = load_yaml((run_dir / "config.yaml").read_bytes())
    except (OSError, ValueError, yaml.YAMLError):
        return "config.yaml is not readable YAML"
    if not isinstance(raw, dict):
        return "config.yaml is not a mapping"
    status = run_dir / "status.json"
    if status.exists():
        try:
            data = load_json(status.read_bytes().decode("utf-8"))
        except (OSError, ValueError):
            data = None
        if not isinstance(data, dict):
            return "status.json is not a JSON object"
    log = run_dir / "log.jsonl"
    if log.exists():
        try:
            lines = log.read_bytes().decode("utf-8").splitlines()
        except (OSError, ValueError):
            return "log.jsonl is not text"
        for ln in lines[:-1]:
            try:
                load_json(ln)
            except ValueError:
                return "log.jsonl has lines that are not JSON"
    return ""


def _damaged(run_dir: Path, problem: str) -> RunInfo:
    return RunInfo(run_dir.name, run_dir, "?", 0, None, None, None, 0.0, "damaged", None, problem)


def run_info(run_dir: Path) -> RunInfo:
    """Summarize one run directory; a damaged one is listed as such, never an exception."""
    from ..metrics.history import latest_fd

    problem = damage(run_dir)
    if problem:
        return _damaged(run_dir, problem)
    try:
        return _run_info(run_dir, latest_fd(run_dir))
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as err:
        return _damaged(run_dir, f"unreadable ({type(err).__name__})")


def _run_info(run_dir: Path, eval_fd: float | None) -> RunInfo:
    log = read_log(run_dir)
    with_fd = [r for r in log.evals if _fd(r) is not None]
    best = best_eval(with_fd)
    fds = [v for v in (_fd(r) for r in with_fd) if v is not None]
    best_fd = _fd(best) if best else min(fds, default=None)
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
        eval_fd=eval_fd,
    )


def is_run(path: Path) -> bool:
    """A run directory holds the resolved config the loop writes first."""
    return path.is_dir() and (path / "config.yaml").is_file()


def list_runs(root: Path) -> list[RunInfo]:
    """The runs directly under ``root`` (or ``root`` itself if it is a run), oldest first."""
    root = Path(root)
    if is_run(root):
        return [run_info(root.resolve() if root.is_symlink() else root)]  # runs/latest
    dirs = [p for p in root.iterdir() if is_run(p) and not p.is_symlink()] if root.is_dir() else []
    dirs.sort(key=lambda p: ((p / "config.yaml").stat().st_mtime, p.name))
    return [run_info(p) for p in dirs]


# ---------------------------------------------------------------- runs/latest

LATEST = "latest"


def _point(link: Path, target: str) -> None:
    """Make ``link`` a symlink to ``target`` atomically (a new link renamed over the old)."""
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)


@contextlib.contextmanager
def latest_link(run_dir: Path, default_root: Path = Path("runs")) -> Iterator[None]:
    """While a new run in the default runs folder trains, ``runs/latest`` points at it (a
    relative symlink, so ``runs/latest`` works in every command). A run that fails before
    writing anything (its folder removed) gives the link back to the previous run."""
    run_dir = Path(run_dir)
    link = default_root / LATEST
    ours = (
        run_dir.name != LATEST
        and os.environ.get("RANK", "0") == "0"
        and run_dir.parent.resolve() == default_root.resolve()
        and (not link.exists() or link.is_symlink())  # never replace a real folder or file
    )
    if not ours:
        yield
        return
    previous = os.readlink(link) if link.is_symlink() else None
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        _point(link, run_dir.name)
    except OSError:  # a file system without symlinks: the run matters more than the link
        yield
        return
    try:
        yield
    finally:
        if not run_dir.exists():
            with contextlib.suppress(OSError):
                if previous is not None:
                    _point(link, previous)
                else:
                    link.unlink()


# ---------------------------------------------------------------- the table

COLORS = {
    "finished": "green",
    "failed": "red",
    "interrupted": "yellow",
    "running": "cyan",
    "damaged": "magenta",
}


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def print_runs(root: Path, runs: list[RunInfo], console: object | None = None) -> None:
    """The ``ganforge runs`` table. Run names are never cut: when the table with a name
    column does not fit the terminal, each run's name gets a line of its own above its
    numbers. FD: the last and best logged during training, and that of the newest
    ``ganforge evaluate``."""
    from rich.console import Console
    from rich.table import Table

    from .runlog import hms

    con = console if isinstance(console, Console) else Console()
    cols = ("recipe", "steps", "train FD", "best FD", "eval FD", "time", "status")
    right = ("steps", "train FD", "best FD", "eval FD", "time")

    def cells(r: RunInfo) -> list[str]:
        if r.status == "damaged":
            return ["?", "", "", "", "", "", f"[{COLORS['damaged']}]damaged[/]: {r.problem}"]
        steps = f"{r.steps:,} / {r.total:,}" if r.total else f"{r.steps:,} / ?"
        return [
            r.recipe,
            steps,
            _num(r.last_fd),
            _num(r.best_fd),
            _num(r.eval_fd),
            hms(r.wall_s),
            f"[{COLORS.get(r.status, 'white')}]{r.status}[/]",
        ]

    rows = [cells(r) for r in runs]
    ok = [row for r, row in zip(runs, rows, strict=True) if r.status != "damaged"]
    widths = [max([len(c)] + [len(_plain(row[i])) for row in ok]) for i, c in enumerate(cols)]
    name_w = max(len("run"), *(len(r.name) for r in runs))
    # rich's box: 3 characters per column (border and padding), plus one
    if name_w + sum(widths) + 3 * (len(cols) + 1) + 1 <= con.width:
        table = Table(title=f"ganforge runs in {root}", title_justify="left")
        table.add_column("run", no_wrap=True)
        for c in cols:  # a long damage note may wrap; numbers and states never do
            table.add_column(c, justify="right" if c in right else "left", no_wrap=c != "status")
        for r, row in zip(runs, rows, strict=True):
            table.add_row(r.name, *row)
        con.print(table)
        return

    # too narrow: each run's whole name on a line of its own, its numbers indented below
    def line(row: list[str]) -> str:
        out = []
        for i, (c, v) in enumerate(zip(cols, row, strict=True)):
            pad = " " * (widths[i] - len(_plain(v)))
            out.append(pad + v if c in right else v + pad)
        return "  " + "  ".join(out)

    con.print(f"ganforge runs in {root}", highlight=False)
    con.print("[bold]" + line(list(cols)) + "[/]", highlight=False)
    for r, row in zip(runs, rows, strict=True):
        con.print(f"[bold]{r.name}[/]", highlight=False, overflow="ignore", crop=False)
        text = "  " + row[-1] if r.status == "damaged" else line(row).rstrip()
        con.print(text, highlight=False, overflow="fold")


def _plain(markup: str) -> str:
    """A cell's text without rich markup (for widths)."""
    from rich.text import Text

    return Text.from_markup(markup).plain
