"""``ganforge runs``: finished, interrupted, failed and running runs, told apart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from ganforge.cli import main
from ganforge.data import TensorData, load_data
from ganforge.engine.loop import train
from ganforge.errors import Diverged, Preempted
from ganforge.report.runlog import read_status, run_state, status_of_exception, write_status
from ganforge.report.runs import list_runs

from runhelpers import add_evals, gaussian_config, gaussian_run


@dataclass(frozen=True)
class Breaking(TensorData):
    """Data whose ``stop_at``-th batch raises ``error`` (a Ctrl-C, a crash)."""

    stop_at: int = 6
    error: type[BaseException] = KeyboardInterrupt
    calls: list = None  # type: ignore[assignment]  # shared counter (the class is frozen)

    def batch(self, index: torch.Tensor) -> torch.Tensor:
        self.calls.append(1)
        if len(self.calls) >= self.stop_at:
            raise self.error("stopped by the test")
        return super().batch(index)


def _breaking_run(run_dir: Path, error: type[BaseException]) -> None:
    cfg = gaussian_config("train.report=false")
    data = load_data(cfg.data)
    broken = Breaking(data.x, data.labels, data.source, stop_at=10, error=error, calls=[])
    with pytest.raises(error):
        train(cfg, run_dir, verbose=False, data=broken)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A runs folder: one finished run (with FD records), one Ctrl-C'd, one crashed."""
    root = tmp_path_factory.mktemp("runs")
    gaussian_run(root / "a-finished", "train.report=false")  # the table needs no page
    add_evals(root / "a-finished", [30.0, 12.5, 20.0], best=1)
    _breaking_run(root / "b-interrupted", KeyboardInterrupt)
    _breaking_run(root / "c-failed", RuntimeError)
    (root / "not-a-run").mkdir()
    return root


def test_states_are_recorded(root):
    runs = {r.name: r for r in list_runs(root)}
    assert sorted(runs) == ["a-finished", "b-interrupted", "c-failed"]
    fin, intr, fail = runs["a-finished"], runs["b-interrupted"], runs["c-failed"]
    assert (fin.status, intr.status, fail.status) == ("finished", "interrupted", "failed")
    assert fin.steps == fin.total == 24 and fin.recipe == "gaussian-2d"
    assert intr.total == 24 and intr.steps == 8  # logged every 4 steps; stopped in step 10
    assert (fin.last_fd, fin.best_fd) == (20.0, 12.5)  # best is the flagged record
    assert intr.last_fd is None and fin.wall_s > 0
    assert read_status(root / "c-failed")["error"] == "stopped by the test"


def test_how_an_ending_is_recorded(tmp_path):
    assert status_of_exception(Preempted(signal.SIGTERM, 5, tmp_path)) == "interrupted"
    assert status_of_exception(KeyboardInterrupt()) == "interrupted"
    assert status_of_exception(Diverged("loss is nan")) == "failed"
    assert status_of_exception(RuntimeError("boom")) == "failed"


def test_a_killed_process_reads_as_interrupted(tmp_path):
    run = tmp_path / "killed"
    run.mkdir()
    (run / "config.yaml").write_text("recipe: gaussian-2d\n")
    write_status(run, "running", total_steps=100)
    assert run_state(run) == "running"  # this very process: alive (and no lock file)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    status = json.loads((run / "status.json").read_text())
    (run / "status.json").write_text(json.dumps({**status, "pid": gone.pid}))
    assert run_state(run) == "interrupted"
    [info] = list_runs(tmp_path)
    assert (info.status, info.steps, info.total) == ("interrupted", 0, 100)


def test_runs_asks_the_lock_not_the_pid(tmp_path, capsys):
    """A killed run whose pid now names a live process (here: this test's own) reads as
    interrupted when its lock is free; a run whose lock is held reads as running."""
    from ganforge.engine.guard import RunLock

    run = tmp_path / "reused"
    run.mkdir()
    (run / "config.yaml").write_text("recipe: gaussian-2d\n")
    (run / ".lock").touch()  # left by the killed training, whose flock went with it
    write_status(run, "running", total_steps=100)  # pid: this live process
    assert json.loads((run / "status.json").read_text())["pid"] == os.getpid()
    assert run_state(run) == "interrupted"
    before = sorted((p.name, p.stat().st_mtime_ns) for p in run.iterdir())
    with RunLock(run):
        assert run_state(run) == "running"
        assert main(["runs", str(tmp_path)]) == 0
        assert "running" in capsys.readouterr().out
    assert run_state(run) == "interrupted"
    assert main(["runs", str(tmp_path)]) == 0
    assert "interrupted" in capsys.readouterr().out
    assert sorted((p.name, p.stat().st_mtime_ns) for p in run.iterdir()) == before


def test_cli_table(root, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["runs", str(root)]) == 0
    out = capsys.readouterr().out
    lines = {ln.split()[1]: ln for ln in out.splitlines() if ln.startswith("│")}
    assert "finished" in lines["a-finished"] and "24 / 24" in lines["a-finished"]
    assert "20.000" in lines["a-finished"] and "12.500" in lines["a-finished"]
    assert "interrupted" in lines["b-interrupted"] and "8 / 24" in lines["b-interrupted"]
    assert "failed" in lines["c-failed"]
    assert "not-a-run" not in out


def test_cli_empty_and_missing(tmp_path, capsys):
    assert main(["runs", str(tmp_path)]) == 0
    assert "no runs" in capsys.readouterr().out
    assert main(["runs", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.startswith("ganforge: error:")
