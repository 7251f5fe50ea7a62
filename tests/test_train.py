"""Training end to end on tiny data: outputs, determinism, resume."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from ganforge.config import load_config
from ganforge.data import TensorData
from ganforge.engine.loop import epoch_order, train
from ganforge.errors import DataError
from ganforge.nets import build_discriminator, build_generator, count_params

from runhelpers import assert_same_checkpoints

FAST = ["train.batch_size=32", "train.log_every=1", "train.device=cpu", "train.report=false"]


def _records(run_dir):
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def test_vanilla_parameter_counts():
    cfg = load_config("vanilla-fmnist")
    g = build_generator(cfg.model, (1, 28, 28))
    d = build_discriminator(cfg.model, (1, 28, 28))
    assert count_params(g) == 1_510_032
    assert count_params(d) == 533_505
    assert g(torch.randn(3, 100)).shape == (3, 1, 28, 28)
    assert d(torch.randn(3, 1, 28, 28)).shape == (3, 1)


def test_short_run_writes_everything(tmp_path, tiny_images):
    cfg = load_config("vanilla-fmnist", FAST + ["train.epochs=2", "train.grid=[2,3]"])
    result = train(cfg, tmp_path / "run", verbose=False, data=tiny_images)
    run = tmp_path / "run"
    recs = _records(run)
    assert len(recs) == 16 and recs[-1]["step"] == 16 and recs[-1]["epoch"] == 2
    for r in recs:
        for k in ("loss_d", "loss_g", "d_real", "d_fake", "img_s"):
            assert math.isfinite(r[k])
        assert 0 <= r["d_real"] <= 1
    assert sorted(p.name for p in (run / "samples").iterdir()) == [
        "epoch_0001.png",
        "epoch_0002.png",
    ]
    assert (run / "final.png").stat().st_size > 0
    assert (run / "config.yaml").exists() and "Total params: 1,510,032" in (
        run / "summary.txt"
    ).read_text()
    last = run / "checkpoints" / "last"
    assert {p.name for p in last.iterdir()} == {
        "g.safetensors",
        "d.safetensors",
        "state.safetensors",
        "state.json",
        "manifest.json",
    }
    assert json.loads((last / "state.json").read_text())["step"] == 16
    assert result["steps"] == 16 and result["images"] == 16 * 32


def test_training_changes_the_generator(tmp_path, tiny_images):
    cfg = load_config("vanilla-fmnist", FAST + ["train.iterations=3"])
    torch.manual_seed(0)
    train(cfg, tmp_path / "a", verbose=False, data=tiny_images)
    from ganforge.engine.loop import build_models

    initial = build_models(cfg, (1, 28, 28), torch.device("cpu")).g.state_dict()
    trained = load_file(tmp_path / "a" / "checkpoints" / "last" / "g.safetensors")
    changed = [
        k for k in initial if k.endswith("weight") and not torch.equal(initial[k], trained[k])
    ]
    assert changed, "no generator weight changed in 3 steps"


def test_same_seed_same_losses(tmp_path, tiny_images):
    cfg = load_config("vanilla-fmnist", FAST + ["train.iterations=10"])
    train(cfg, tmp_path / "a", verbose=False, data=tiny_images)
    train(cfg, tmp_path / "b", verbose=False, data=tiny_images)
    other = load_config("vanilla-fmnist", FAST + ["train.iterations=10", "train.seed=1"])
    train(other, tmp_path / "c", verbose=False, data=tiny_images)
    key = [(r["loss_d"], r["loss_g"]) for r in _records(tmp_path / "a")]
    assert len(key) == 10
    assert key == [(r["loss_d"], r["loss_g"]) for r in _records(tmp_path / "b")]
    assert key != [(r["loss_d"], r["loss_g"]) for r in _records(tmp_path / "c")]


def test_resume_continues_exactly(tmp_path, tiny_images):
    """Stopping after 5 steps and resuming to 12 equals a run of 12 (bitwise on CPU)."""
    base = FAST + ["train.sample_every=5"]
    full = load_config("vanilla-fmnist", base + ["train.iterations=12"])
    train(full, tmp_path / "full", verbose=False, data=tiny_images)
    part = load_config("vanilla-fmnist", base + ["train.iterations=5"])
    train(part, tmp_path / "part", verbose=False, data=tiny_images)
    train(full, tmp_path / "part", resume=True, verbose=False, data=tiny_images)
    assert_same_checkpoints(tmp_path / "full", tmp_path / "part")
    strip = [
        {k: v for k, v in r.items() if k not in ("img_s", "time")}
        for r in _records(tmp_path / "full")
    ]
    assert strip == [
        {k: v for k, v in r.items() if k not in ("img_s", "time")}
        for r in _records(tmp_path / "part")
    ]


def test_epoch_order_is_a_function_of_seed_and_epoch():
    a = epoch_order(3, 5, 100, shuffle=True)
    assert torch.equal(a, epoch_order(3, 5, 100, shuffle=True))
    assert sorted(a.tolist()) == list(range(100))
    assert not torch.equal(a, epoch_order(3, 6, 100, shuffle=True))
    assert not torch.equal(a, epoch_order(4, 5, 100, shuffle=True))
    assert torch.equal(epoch_order(3, 5, 10, shuffle=False), torch.arange(10))


def test_batch_larger_than_data_is_an_error(tmp_path):
    small = TensorData(torch.zeros(10, 1, 28, 28, dtype=torch.uint8), None, "test")
    cfg = load_config("vanilla-fmnist", ["train.batch_size=64"])
    with pytest.raises(DataError, match="larger than the data set"):
        train(cfg, tmp_path / "r", verbose=False, data=small)
