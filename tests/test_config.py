"""Config: recipes, strict overrides, one-line errors naming the key."""

from __future__ import annotations

import pytest

from ganforge.config import (
    Config,
    load_config,
    read_config,
    recipe_names,
    save_config,
)
from ganforge.errors import ConfigError


def test_default_recipe_is_vanilla_fmnist():
    cfg = load_config()
    assert cfg.recipe == "vanilla-fmnist"
    assert cfg.train.batch_size == 128
    assert cfg.optim.g.lr == pytest.approx(2e-4) and cfg.optim.d.betas == (0.5, 0.999)
    assert cfg.model.g_args == {"bn_eps": 0.8}
    assert "vanilla-fmnist" in recipe_names()


def test_overrides_are_typed():
    cfg = load_config(
        "vanilla-fmnist",
        [
            "train.epochs=3",
            "optim.d.lr=1e-3",
            "optim.g.betas=[0.1,0.2]",
            "data.shuffle=false",
            "data.classes=[1,2]",
            "model.g_args.bn_eps=0.5",
            "train.iterations=null",
        ],
    )
    assert cfg.train.epochs == 3 and isinstance(cfg.train.epochs, int)
    assert cfg.optim.d.lr == 1e-3 and isinstance(cfg.optim.d.lr, float)  # "1e-3" read as float
    assert cfg.optim.g.betas == (0.1, 0.2)
    assert cfg.data.shuffle is False and cfg.data.classes == (1, 2)
    assert cfg.model.g_args == {"bn_eps": 0.5}


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.bach_size=3", "unknown key train.bach_size"),
        ("nope=1", "unknown key nope"),
        ("train.batch_size=0", "train.batch_size: must be greater than 0"),
        ("train.batch_size=abc", "train.batch_size: expected an integer"),
        ("train.batch_size=true", "train.batch_size: expected an integer"),
        ("optim.d.lr=-1", "optim.d.lr: must be greater than 0"),
        ("optim.g.name=sgd", "optim.g.name: 'sgd' is not allowed; choose one of: adam, rmsprop"),
        ("optim.g.betas=[1,2,3]", "optim.g.betas: expected 2 values"),
        ("train.device=tpu", "train.device"),
        ("loss.real_label=1.5", "loss.real_label: must be at most 1"),
        ("train.epochs", "write it as key=value"),
        ("=3", "the key is empty"),
        ("train=3", "train: expected a mapping"),
        ("train.epochs.x=3", "train.epochs is a value"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError) as e:
        load_config("vanilla-fmnist", [override])
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_unknown_recipe_lists_choices():
    with pytest.raises(ConfigError, match="unknown recipe 'nope'; choose one of: .*vanilla-fmnist"):
        load_config("nope")


def test_length_required():
    with pytest.raises(ConfigError, match="train.epochs or train.iterations"):
        load_config("vanilla-fmnist", ["train.epochs=null"])


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config("vanilla-fmnist", ["train.epochs=7", "data.classes=[3]"])
    save_config(cfg, tmp_path / "config.yaml")
    again = read_config(tmp_path / "config.yaml")
    assert again == cfg
    assert isinstance(again, Config)


def test_every_recipe_loads():
    for name in recipe_names():
        assert load_config(name).recipe == name
