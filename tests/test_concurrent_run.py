"""A run directory used by two processes at once: results land in the run they were computed
from when ``train --overwrite`` moves it aside meanwhile, and a checkpoint read while training
rotates it is one whole checkpoint, never "corrupted"."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import ganforge
from ganforge import api, export
from ganforge.cli import main
from ganforge.errors import CheckpointError
from ganforge.metrics import evaluate
from ganforge.report import html
from ganforge.runfiles import set_aside

from runhelpers import gaussian_run, image_run

RESULTS = ("metrics.json", "metrics.jsonl", "report.html", "grid.png", "sampled", "generator.pt")


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished 24-step gaussian-2d run, copied by each test that moves it."""
    run = tmp_path_factory.mktemp("src") / "run"
    return gaussian_run(run, "train.report=false", "train.sample_every=100000")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """A finished 6-step image run (for ``sample --format dir``)."""
    return image_run(tmp_path_factory.mktemp("src") / "run", "train.report=false")


def _replace_once(run: Path, moved: list[Path]):
    """What ``train --out RUN --overwrite`` does to RUN: move it aside and start a new run at
    its path (here a folder with a config.yaml, as the new run's first write makes)."""

    def replace() -> None:
        if not moved:
            moved.append(set_aside(run))
            run.mkdir()
            shutil.copy(moved[0] / "config.yaml", run / "config.yaml")

    return replace


def _wrap(monkeypatch, owner, name: str, before=None, after=None) -> None:
    real = getattr(owner, name)

    def wrapped(*a, **k):
        if before:
            before()
        out = real(*a, **k)
        if after:
            after()
        return out

    monkeypatch.setattr(owner, name, wrapped)


# the call after which (results computed, not yet written) the run is moved aside
MOVES = {
    "evaluate": (
        evaluate,
        "evaluate_generator",
        ["evaluate", "{run}", "--n", "100"],
        ["metrics.json"],
    ),
    "report": (html, "build_page", ["report", "{run}"], ["report.html"]),
    "sample": (api.Run, "sample", ["sample", "{run}", "-o", "{run}/grid.png"], ["grid.png"]),
    "sample-dir": (
        export,
        "load_sampler",
        ["sample", "{run}", "--format", "dir", "-n", "4", "-o", "{run}/sampled"],
        ["sampled/000003.png"],
    ),
    "export": (
        export,
        "example_inputs",
        ["export", "{run}", "--format", "torchscript"],
        ["generator.pt"],
    ),
}


@pytest.mark.parametrize("command", list(MOVES))
def test_results_land_in_the_run_they_were_computed_from(command, request, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(
        request.getfixturevalue("images" if command == "sample-dir" else "finished"), run
    )
    owner, name, argv, files = MOVES[command]
    moved: list[Path] = []
    with pytest.MonkeyPatch.context() as mp:
        _wrap(mp, owner, name, after=_replace_once(run, moved))
        assert main([a.format(run=run) for a in argv]) == 0
    out = capsys.readouterr().out
    assert moved, "the run was never moved: the hook missed"
    old = moved[0]
    for f in files:
        assert (old / f).is_file(), f"{f} is not in the run it was computed from"
    assert str(old.name) in out  # the line printed names where the file went
    assert [p for p in RESULTS if (run / p).exists()] == []  # nothing in the new run
    if command == "evaluate":
        written = json.loads((old / "metrics.json").read_text())
        assert written["protocol"]["checkpoint"]["step"] == 24
        assert written["run_dir"] == str(old)
        assert len((old / "metrics.jsonl").read_text().splitlines()) == 1


def test_a_run_replaced_and_removed_meanwhile_is_refused(finished, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    moved: list[Path] = []
    replace = _replace_once(run, moved)

    def replace_and_remove() -> None:
        replace()
        shutil.rmtree(moved[0])

    with pytest.MonkeyPatch.context() as mp:
        _wrap(mp, evaluate, "evaluate_generator", after=replace_and_remove)
        assert main(["evaluate", str(run), "--n", "100"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "was replaced while it was evaluated" in err[0], err
    assert "nothing written" in err[0]
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml"]


def test_a_move_while_the_run_is_read_reads_it_again_there(finished, tmp_path):
    """Moved between reading config.yaml and the checkpoint: both come from the old run."""
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    moved: list[Path] = []
    import ganforge.ckpt_read as ckpt_read

    with pytest.MonkeyPatch.context() as mp:
        _wrap(mp, ckpt_read, "read_config", after=_replace_once(run, moved))
        loaded = ganforge.load(run, "last")
    assert moved and loaded.dir == moved[0].parent / moved[0].name
    assert loaded.checkpoint == moved[0] / "checkpoints" / "last"


# ---------------------------------------------------------------- reading while training


def _trainer(run: Path, steps: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(Path(ganforge.__file__).parents[1]),
    }
    argv = [sys.executable, "-m", "ganforge", "train", "-r", "gaussian-2d", "--out", str(run)]
    argv += ["-q", "--device", "cpu", "--set", "data.points=64", "--set", "train.report=false"]
    argv += ["--set", f"train.iterations={steps}", "--set", "train.checkpoint_every=1"]
    argv += ["--set", "train.log_every=100", "--set", "train.sample_every=100000"]
    return subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)


def test_a_checkpoint_rotated_while_it_is_read_is_never_corrupted(tmp_path, capsys):
    """A training saving a checkpoint every step, read in a loop by ``ganforge.load`` and by
    ``ganforge sample``: every read gives one whole checkpoint."""
    run = tmp_path / "run"
    proc = _trainer(run, 100_000)
    try:
        deadline = time.monotonic() + 60
        while not (run / "checkpoints" / "previous").is_dir():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the training never wrote two checkpoints"
            time.sleep(0.05)
        errors, steps = [], set()
        for i in range(40):
            try:
                if i % 5:
                    loaded = ganforge.load(run, "last")
                    loaded.sample(8, seed=0)
                    steps.add(loaded.counters()["step"])
                else:
                    code = main(["sample", str(run), "-n", "4", "-o", str(tmp_path / "s.png")])
                    err = capsys.readouterr().err
                    if code:
                        errors.append(err)
            except CheckpointError as e:
                errors.append(str(e))
        assert proc.poll() is None, "the training ended before the reads did"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert errors == []
    assert len(steps) > 5  # the reads really met a rotating checkpoint


def test_a_damaged_checkpoint_is_still_corrupted(finished, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    g = run / "checkpoints" / "last" / "g.safetensors"
    data = bytearray(g.read_bytes())
    data[-3] ^= 0xFF
    g.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"g\.safetensors fails its SHA-256 check \(corr"):
        ganforge.load(run, "last")
    assert main(["sample", str(run), "-o", str(tmp_path / "s.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fails its SHA-256 check (corrupted)" in err[0]
