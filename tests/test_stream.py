"""Image folders streamed from disk (data.stream, data.memory_limit): the same batches as in
memory, step by step and rank by rank, exact resume mid-epoch, bad files named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from ganforge.cli import main
from ganforge.config import DataConfig, load_config
from ganforge.data import load_data
from ganforge.data.stream import StreamData
from ganforge.engine.distributed import Dist
from ganforge.engine.loop import Batches, Length
from ganforge.errors import DataError

RUN = ["--set", "data.size=8", "--set", "train.batch_size=8", "--set", "train.threads=1"]
RUN += ["--set", "train.report=false", "--set", "train.checkpoint_every=7", "--device", "cpu"]


def folder(root: Path, n: int = 40, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        px = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
        Image.fromarray(px).save(root / f"{i:03d}.png")
    return root


def test_memory_limit_decides_and_the_source_says_so(tmp_path):
    root = folder(tmp_path / "f")
    small = load_data(DataConfig(name="image-folder", path=str(root), size=8, memory_limit=1e-6))
    assert isinstance(small, StreamData) and len(small) == 40 and small.shape == (3, 8, 8)
    assert "streamed from disk" in small.source and "over data.memory_limit" in small.source
    roomy = load_data(DataConfig(name="image-folder", path=str(root), size=8, memory_limit=1.0))
    assert not isinstance(roomy, StreamData) and roomy.x.shape == (40, 3, 8, 8)
    always = load_data(DataConfig(name="image-folder", path=str(root), size=8, stream="always"))
    assert isinstance(always, StreamData) and "data.stream=always" in always.source
    assert torch.equal(always.take(torch.arange(40)), roomy.x)  # the same pixels


@pytest.mark.parametrize("world", [1, 2])
def test_streamed_batches_are_the_in_memory_ones_in_any_step_order(tmp_path, world):
    root = folder(tmp_path / "f")
    cfg = load_config("dcgan-64", [f"data.path={root}", "data.size=8", "train.batch_size=8"])
    memory = load_data(cfg.data)
    streamed = load_data(DataConfig(**{**cfg.data.__dict__, "stream": "always"}))
    length = Length.of(cfg, 40)
    for rank in range(world):
        dist = Dist(rank, world)
        a = Batches(cfg, memory, length, 8, dist)
        b = Batches(cfg, streamed, length, 8, dist)
        assert b.stream is not None
        for step in [0, 1, 2, 7, 6, 3, 12, 13, 4, 5, 0]:  # rollbacks and resumes jump about
            x, _ = a.at(step)
            y, _ = b.at(step)
            assert y.shape == (8 // world, 3, 8, 8) and torch.equal(x, y)


def test_each_epoch_order_is_made_once_while_the_prefetcher_looks_ahead(tmp_path, monkeypatch):
    """At an epoch's end the prefetcher asks for the next epoch's steps while the loop (the
    cluster labels of a streamed folder) still asks for this one's: both orders are kept,
    so each epoch's permutation is computed once, and the batches are those of one epoch
    order at a time."""
    from ganforge.engine import loop

    made = []

    def order(epoch):
        return torch.randperm(40, generator=torch.Generator().manual_seed(epoch))

    def counted(seed, epoch, n, shuffle):
        made.append(epoch)
        return order(epoch)

    monkeypatch.setattr(loop, "epoch_order", counted)
    root = folder(tmp_path / "f")
    cfg = load_config("dcgan-64", [f"data.path={root}", "data.size=8", "train.batch_size=8"])
    streamed = load_data(DataConfig(**{**cfg.data.__dict__, "stream": "always"}))
    length = Length.of(cfg, 40)  # 5 steps an epoch
    b = Batches(cfg, streamed, length, 8, Dist(0, 1))
    for step in range(15):
        ahead = b.indices(step + 3)  # as the prefetcher, 3 steps ahead
        now = b.indices(step)
        assert torch.equal(ahead, order((step + 3) // 5)[(step + 3) % 5 * 8 :][:8])
        assert torch.equal(now, order(step // 5)[step % 5 * 8 :][:8])
    assert made == [0, 1, 2, 3]  # once each, where it was asked for one at a time before


def test_a_streamed_run_is_the_in_memory_run_and_resumes_mid_epoch(tmp_path, capsys):
    root = folder(tmp_path / "f")
    runs = {}
    for name, extra in (("memory", "never"), ("stream", "always"), ("resumed", "always")):
        run = tmp_path / name
        steps = "7" if name == "resumed" else "12"  # 5 steps an epoch: 7 is mid-epoch
        argv = ["train", "-r", "dcgan-64", "--data", str(root), "--out", str(run), "-q", *RUN]
        assert (
            main([*argv, "--set", f"train.iterations={steps}", "--set", f"data.stream={extra}"])
            == 0
        )
        runs[name] = run
    assert (
        main(["train", "--resume", str(runs["resumed"]), "-q", "--set", "train.iterations=12"]) == 0
    )
    weights = {k: load_file(r / "checkpoints" / "last" / "g.safetensors") for k, r in runs.items()}
    for key, value in weights["memory"].items():
        assert torch.equal(value, weights["stream"][key]) and torch.equal(
            value, weights["resumed"][key]
        )


def test_a_bad_streamed_file_stops_the_run_in_one_line(tmp_path, capsys):
    root = folder(tmp_path / "f", n=16)
    (root / "007.png").write_bytes(b"not a png")
    argv = ["train", "-r", "dcgan-64", "--data", str(root), "--out", str(tmp_path / "r"), "-q"]
    assert main([*argv, *RUN, "--set", "train.iterations=4", "--set", "data.stream=always"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "007.png cannot be used as an image" in err
    assert "resume" in err


def test_padding_streamed_data_is_refused(tmp_path):
    root = folder(tmp_path / "f", n=4)
    with pytest.raises(DataError, match="data.pad is not supported on streamed data"):
        load_data(DataConfig(name="image-folder", path=str(root), stream="always", pad=2))
