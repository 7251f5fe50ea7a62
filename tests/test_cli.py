"""The command line: train, sample, recipes, and one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
from PIL import Image

from ganforge.cli import main

from conftest import write_idx

TINY = [
    "--set",
    "train.report=false",
    "--set",
    "train.batch_size=32",
    "--set",
    "train.iterations=4",
    "--set",
    "data.download=false",
    "--device",
    "cpu",
    "-q",
]


@pytest.fixture
def run_dir(tmp_path):
    data = write_idx(tmp_path / "fm", n_train=64)
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(out), *TINY]) == 0
    return out


def test_train_then_sample_is_reproducible(run_dir, tmp_path, capsys):
    a, b, c = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"
    assert main(["sample", str(run_dir), "-n", "16", "-o", str(a), "--seed", "5"]) == 0
    assert main(["sample", str(run_dir), "-n", "16", "-o", str(b), "--seed", "5"]) == 0
    assert main(["sample", str(run_dir), "-n", "16", "-o", str(c), "--seed", "6"]) == 0
    pa, pb, pc = (Image.open(p).tobytes() for p in (a, b, c))
    assert pa == pb and pa != pc
    assert Image.open(a).size == (4 * 30 + 2, 4 * 30 + 2)  # 4x4 grid of 28px + 2px padding
    assert "wrote 16 samples" in capsys.readouterr().out


def test_existing_run_dir_is_refused(run_dir, tmp_path, capsys):
    assert main(["train", "--out", str(run_dir), *TINY]) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--resume" in err


def test_resume_to_a_longer_length(run_dir):
    assert main(["train", "--resume", str(run_dir), "--set", "train.iterations=6", "-q"]) == 0
    import json

    state = json.loads((run_dir / "checkpoints" / "last" / "state.json").read_text())
    assert state["step"] == 6


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "-r", "nope"], "unknown recipe 'nope'"),
        (["train", "--set", "train.batch_size=0"], "train.batch_size: must be greater than 0"),
        (["train", "--set", "optim.d.lr=-1"], "optim.d.lr: must be greater than 0"),
        (["train", "--set", "foo.bar=1"], "unknown key foo"),
        (["train", "--data", "/nonexistent/x"], "no such file or folder"),
        (["sample", "/nonexistent/run"], "no such run directory"),
        (["train", "--resume", "/nonexistent/run"], "no such run directory"),
    ],
)
def test_errors_are_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert err.count("\n") == 0 and "Traceback" not in err


def test_sample_without_checkpoint(tmp_path, capsys):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "config.yaml").write_text("recipe: vanilla-fmnist\n")
    assert main(["sample", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "no checkpoint found" in err and f"train --resume {tmp_path / 'r'}" in err


def test_recipes_lists_vanilla(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    assert "vanilla-fmnist" in out and "1,510,032" in out and "533,505" in out


def test_module_entry_point():
    out = subprocess.run(
        [sys.executable, "-m", "ganforge", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "train" in out and "sample" in out
