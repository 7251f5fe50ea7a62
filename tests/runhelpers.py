"""Short real training runs for the report, TensorBoard and ``ganforge runs`` tests."""

from __future__ import annotations

import json
from pathlib import Path

import torch

import ganforge
from ganforge.config import Config, load_config
from ganforge.data import TensorData


def gaussian_config(*overrides: str) -> Config:
    """gaussian-2d on 64 points: 8 steps an epoch, 3 epochs, a record every 4 steps."""
    base = ["data.points=64", "train.epochs=3", "train.log_every=4", "train.device=cpu"]
    return load_config("gaussian-2d", [*base, *overrides])


def gaussian_run(run_dir: Path, *overrides: str) -> Path:
    """A finished gaussian-2d run (samples are real-vs-generated scatter plots)."""
    ganforge.train(gaussian_config(*overrides), out=run_dir, verbose=False)
    return run_dir


def tiny_images(n: int = 64) -> TensorData:
    """``n`` random 1x28x28 uint8 images with labels."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=gen)
    return TensorData(x, torch.arange(n) % 10, "test")


def image_run(run_dir: Path, *overrides: str) -> Path:
    """A finished vanilla-fmnist run on random images: 6 steps, a 4x4 grid every 2 steps."""
    base = [
        "train.batch_size=16",
        "train.iterations=6",
        "train.sample_every=2",
        "train.log_every=2",
        "train.grid=[4,4]",
        "train.device=cpu",
    ]
    cfg = load_config("vanilla-fmnist", [*base, *overrides])
    ganforge.train(cfg, out=run_dir, verbose=False, data=tiny_images())
    return run_dir


def add_evals(run_dir: Path, fds: list[float], best: int) -> list[dict]:
    """Append evaluation records (as the metrics code writes them) after the training ones;
    record number ``best`` is flagged as the best checkpoint."""
    recs = []
    for i, fd in enumerate(fds):
        ev = {"fd": fd, "precision": 0.5 + i / 10, "extra": {"kl": 0.1 * i}, "eval_s": 0.5}
        recs.append({"step": 8 * (i + 1), "epoch": i + 1, "images": 64 * (i + 1), "eval": ev})
        recs[-1]["best"] = i == best
    with open(run_dir / "log.jsonl", "a") as f:
        f.writelines(json.dumps(r) + "\n" for r in recs)
    return recs


def log_records(run_dir: Path) -> list[dict]:
    """All records of a run's log.jsonl."""
    return [json.loads(ln) for ln in (run_dir / "log.jsonl").read_text().splitlines() if ln]


def cli_idx_run(root: Path, *recipe: str) -> Path:
    """A 4-step run through ``ganforge train`` (optionally ``-r RECIPE``) on tiny
    Fashion-MNIST-format files (64 train, 64 test) under ``root``; the HTML report is skipped
    (it is tested on its own)."""
    from ganforge.cli import main

    from conftest import write_idx

    data = write_idx(root / "idx", n_train=64, n_test=64)
    run = root / "run"
    code = main(
        [
            "train", *recipe, "--out", str(run), "--data", str(data), "-q",
            "--set", "train.iterations=4", "--set", "train.batch_size=16",
            "--set", "train.device=cpu", "--set", "train.grid=[2,2]",
            "--set", "train.report=false",
        ]
    )  # fmt: skip
    assert code == 0
    return run


def assert_same_checkpoints(a: Path, b: Path, names: tuple[str, ...] = ("g", "d", "state")) -> None:
    """The last checkpoints of runs ``a`` and ``b`` hold bitwise equal tensors (exact resume)."""
    from safetensors.torch import load_file

    for name in names:
        ta = load_file(a / "checkpoints" / "last" / f"{name}.safetensors")
        tb = load_file(b / "checkpoints" / "last" / f"{name}.safetensors")
        assert ta.keys() == tb.keys()
        for k in ta:
            assert torch.equal(ta[k], tb[k]), f"{name}:{k} differs after resume"
