"""The EMA of G: ema_start=auto, the warning of a too-short average, what the console and
report say, and a conditional grid that shows every class."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from ganforge.config import load_config
from ganforge.engine import ema
from ganforge.engine.callbacks import grid_labels
from ganforge.engine.loop import build_models, train
from ganforge.engine.progress import Progress
from ganforge.errors import ConfigError

BASE = ["data.points=64", "train.iterations=60", "train.log_every=20", "train.device=cpu"]
BASE += ["train.report=false", "model.ema=0.999"]


def _distance(a: dict, b: dict) -> float:
    return sum(float((a[k].float() - b[k].float()).norm()) for k in a if a[k].is_floating_point())


@pytest.mark.parametrize("start", ["0", "auto"])
def test_auto_start_follows_g_where_a_plain_ema_stays_at_the_initial_weights(tmp_path, start):
    cfg = load_config("gaussian-2d", [*BASE, f"model.ema_start={start}"])
    run = tmp_path / start
    train(cfg, run, verbose=False)
    last = run / "checkpoints" / "last"
    g_ema, g = load_file(last / "g_ema.safetensors"), load_file(last / "g.safetensors")
    init = {
        k: v.detach()
        for k, v in build_models(cfg, (2,), torch.device("cpu")).g.state_dict().items()
    }
    to_init, to_g = _distance(g_ema, init), _distance(g_ema, g)
    if start == "auto":
        assert to_g < 0.25 * to_init  # the average is of recent G
    else:
        assert to_init < 0.25 * to_g  # 60 updates at 0.999: still the initial G


def test_warmup_decay():
    assert ema.warmup_decay(0.999, 0) == pytest.approx(0.1)
    assert ema.warmup_decay(0.999, 90) == pytest.approx(0.91)
    assert ema.warmup_decay(0.999, 100_000) == 0.999


def test_config_accepts_auto_and_counts_only():
    assert load_config("gaussian-2d", ["model.ema_start=auto"]).model.ema_start == "auto"
    assert load_config("gaussian-2d", ["model.ema_start=500"]).model.ema_start == 500
    for bad in ("soon", "-1", "1.5"):
        with pytest.raises(ConfigError, match="model.ema_start") as e:
            load_config("gaussian-2d", [f"model.ema_start={bad}"])
        assert "\n" not in str(e.value)


def test_the_console_says_the_ema_and_warns_of_a_short_average(tmp_path, capsys):
    cfg = load_config("gaussian-2d", BASE)
    train(cfg, tmp_path / "r", verbose=True)
    out = capsys.readouterr().out
    assert "use the EMA of G (model.ema=0.999, model.ema_start=0)" in out
    assert "warning: the EMA will average only 60 G steps" in out and "3,000" in out
    assert "final.png: the EMA of G (60 updates) at step 60" in out
    auto = load_config("gaussian-2d", [*BASE, "model.ema_start=auto"])
    train(auto, tmp_path / "a", verbose=True)
    assert "warning" not in capsys.readouterr().out
    from ganforge.report.html import write_report

    page = write_report(tmp_path / "r").read_text()
    assert "the EMA of G (60 updates); model.ema=0.999, model.ema_start=0" in page


def test_no_ema_no_note():
    cfg = load_config("gaussian-2d", ["train.iterations=5"])
    assert ema.start_note(cfg, 5) == []

    class Length:
        total, steps_per_epoch = 5, 5

    assert "EMA" not in (Progress.for_run(cfg, Length, True).plan or "")


@pytest.mark.parametrize("grid", ["[10,8]", "[8,8]", "[4,12]", "[2,3]"])
def test_conditional_grid_shows_every_class(grid):
    cfg = load_config("cgan-fmnist", [f"train.grid={grid}"])
    y = grid_labels(cfg, "cpu")
    rows, cols = cfg.train.grid
    assert len(y) == rows * cols
    assert set(y.tolist()) == set(range(min(10, rows * cols)))


def test_cgan_recipe_grid_has_a_row_per_class():
    cfg = load_config("cgan-fmnist")
    y = grid_labels(cfg, "cpu").reshape(cfg.train.grid)
    assert y.shape[0] == 10 and all((y[r] == r).all() for r in range(10))
