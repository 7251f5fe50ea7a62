"""Fashion-MNIST location order and loading, on tiny IDX files written by the test."""

from __future__ import annotations

import pytest
import torch

from ganforge import data
from ganforge.config import DataConfig
from ganforge.data import load_data
from ganforge.errors import DataError

from conftest import write_idx


def _cfg(**kw) -> DataConfig:
    return DataConfig(name="fashion-mnist", download=False, **kw)


def test_loads_gz_in_place_as_uint8(tmp_path):
    write_idx(tmp_path / "fm", n_train=40, n_test=10, gz=True)
    d = load_data(_cfg(path=str(tmp_path / "fm")))
    assert d.x.shape == (40, 1, 28, 28) and d.x.dtype == torch.uint8
    assert d.labels.tolist()[:12] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert d.source == str(tmp_path / "fm")
    test = load_data(_cfg(path=str(tmp_path / "fm"), split="test"))
    both = load_data(_cfg(path=str(tmp_path / "fm"), split="train+test"))
    assert len(test) == 10 and len(both) == 50


def test_torchvision_layout_is_used_without_copies(tmp_path):
    raw = write_idx(tmp_path / "root" / "FashionMNIST" / "raw", n_train=20)
    d = load_data(_cfg(path=str(tmp_path / "root")))
    assert len(d) == 20
    assert d.source == str(raw)


def test_scaling_to_model_range(tmp_path):
    write_idx(tmp_path / "fm", n_train=8)
    d = load_data(_cfg(path=str(tmp_path / "fm")))
    batch = d.batch(torch.arange(8))
    assert batch.dtype == torch.float32
    assert batch.min() >= -1 and batch.max() <= 1
    assert torch.allclose(batch, d.x[:8].float() / 127.5 - 1, atol=1e-6)


def test_location_order(tmp_path, monkeypatch):
    """--data beats $GANFORGE_DATA, which beats the system folder."""
    sys_dir = write_idx(tmp_path / "system", n_train=11)
    write_idx(tmp_path / "env" / "fashion-mnist", n_train=12)
    arg_dir = write_idx(tmp_path / "arg", n_train=13)
    monkeypatch.setattr(data, "SYSTEM_DIRS", {"fashion-mnist": [sys_dir]})
    assert len(load_data(_cfg())) == 11
    monkeypatch.setenv("GANFORGE_DATA", str(tmp_path / "env"))
    assert len(load_data(_cfg())) == 12
    assert len(load_data(_cfg(path=str(arg_dir)))) == 13


def test_select_classes_and_limit(tmp_path):
    write_idx(tmp_path / "fm", n_train=50)
    d = load_data(_cfg(path=str(tmp_path / "fm"), classes=(3, 7)))
    assert set(d.labels.tolist()) == {3, 7} and len(d) == 10
    assert len(load_data(_cfg(path=str(tmp_path / "fm"), limit=17))) == 17


def test_nothing_found_names_every_way():
    with pytest.raises(DataError) as e:
        load_data(_cfg())
    msg = str(e.value)
    assert "\n" not in msg
    for way in (
        "--data",
        "$GANFORGE_DATA",
        "apt-get install dataset-fashion-mnist",
        "data.download=true",
        "downloads are off",
    ):
        assert way in msg


def test_bad_data_path_is_one_line(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_data(_cfg(path=str(tmp_path / "missing")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no Fashion-MNIST IDX files"):
        load_data(_cfg(path=str(tmp_path / "empty")))


def test_truncated_idx_is_a_clear_error(tmp_path):
    folder = write_idx(tmp_path / "fm", n_train=8)
    path = folder / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: truncated \(84 of 6,272"):
        load_data(_cfg(path=str(folder)))
