"""MNIST, SVHN and CIFAR-10 loaders on tiny files written in the real formats.

(Fashion-MNIST has its own tests; the conftest isolates the cache, $GANFORGE_DATA and the
system folders for every test.)
"""

from __future__ import annotations

import pickle
import socket
import struct
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from ganforge import data
from ganforge.config import DataConfig
from ganforge.data import data_shape, images, load_data
from ganforge.errors import DataError

from conftest import write_idx


def write_svhn(folder: Path, n: int = 12, split: str = "train", seed: int = 0) -> Path:
    """An SVHN ``<split>_32x32.mat``: X (32, 32, 3, n) uint8, y (n, 1) with 10 for digit 0."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
    y = (np.arange(n) % 10 + 1).astype(np.uint8).reshape(n, 1)  # 1..10, as the .mat files
    scipy.io.savemat(folder / f"{split}_32x32.mat", {"X": x, "y": y})
    return folder


def write_cifar(root: Path, per_batch: int = 10, n_test: int = 10, seed: int = 0) -> Path:
    """``root/cifar-10-batches-py/`` with 5 train batches, test_batch and batches.meta.

    Each batch is a pickled dict like the real ones: "data" (n, 3072) uint8 rows in
    R-G-B planes of 32x32, "labels" a list of ints (plus the unused keys).
    """
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for k, name in enumerate(names):
        n = n_test if name == "test_batch" else per_batch
        batch = {
            "batch_label": f"batch {k}",
            "labels": [int(v) for v in (np.arange(n) + k) % 10],
            "data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
            "filenames": [f"img_{k}_{i}.png" for i in range(n)],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    meta = {"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": per_batch}
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return folder


def _cfg(name: str, **kw) -> DataConfig:
    return DataConfig(name=name, download=False, **kw)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to use the network")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)


# ---------------------------------------------------------------- MNIST


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("layout", ["flat", "torchvision"])
def test_mnist_reads_idx_in_both_layouts(tmp_path, gz, layout):
    folder = tmp_path / "m" / ("MNIST/raw" if layout == "torchvision" else "")
    write_idx(folder, n_train=30, n_test=7, gz=gz, seed=3)
    d = load_data(_cfg("mnist", path=str(tmp_path / "m")))
    assert d.x.shape == (30, 1, 28, 28) and d.x.dtype == torch.uint8
    assert d.labels.dtype == torch.int64 and d.labels.tolist()[:11] == [*range(10), 0]
    # the pixels are the file's bytes after the 16-byte header
    name = "train-images-idx3-ubyte"
    raw = (folder / f"{name}.gz").read_bytes() if gz else (folder / name).read_bytes()
    if gz:
        import gzip

        raw = gzip.decompress(raw)
    assert struct.unpack(">IIII", raw[:16]) == (0x803, 30, 28, 28)
    assert d.x[5, 0].flatten().tolist() == list(raw[16 + 5 * 784 : 16 + 6 * 784])


def test_mnist_splits(tmp_path):
    folder = write_idx(tmp_path / "m", n_train=20, n_test=6)
    test = load_data(_cfg("mnist", path=str(folder), split="test"))
    both = load_data(_cfg("mnist", path=str(folder), split="train+test"))
    train = load_data(_cfg("mnist", path=str(folder)))
    assert len(test) == 6 and len(both) == 26
    assert torch.equal(both.x[:20], train.x) and torch.equal(both.x[20:], test.x)


def test_mnist_padded_to_32_as_the_gray_svhn_recipe(tmp_path):
    folder = write_idx(tmp_path / "m", n_train=10)
    plain = load_data(_cfg("mnist", path=str(folder)))
    cfg = _cfg("mnist", path=str(folder), pad=2)
    padded = load_data(cfg)
    assert padded.x.shape == (10, 1, 32, 32) and data_shape(cfg) == (1, 32, 32)
    assert torch.equal(padded.x[:, :, 2:30, 2:30], plain.x)
    border = padded.x.clone()
    border[:, :, 2:30, 2:30] = 0
    assert border.max() == 0  # black borders


# ---------------------------------------------------------------- SVHN


def test_svhn_mat_layout_and_label_ten_is_zero(tmp_path):
    folder = write_svhn(tmp_path / "s", n=12)
    mat = scipy.io.loadmat(folder / "train_32x32.mat")
    d = load_data(_cfg("svhn", path=str(folder)))
    assert d.x.shape == (12, 3, 32, 32) and d.x.dtype == torch.uint8
    assert d.labels.dtype == torch.int64
    assert d.labels.tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2]  # 10 -> 0
    # (n, c, h, w) of ours is X[h, w, c, n] of the .mat
    assert torch.equal(d.x[4, 1], torch.from_numpy(mat["X"][:, :, 1, 4]))
    assert torch.equal(d.x[11, 2], torch.from_numpy(mat["X"][:, :, 2, 11]))


def test_svhn_train_plus_test_and_mat_path(tmp_path):
    folder = write_svhn(tmp_path / "s", n=8)
    write_svhn(folder, n=5, split="test", seed=1)
    assert len(load_data(_cfg("svhn", path=str(folder), split="train+test"))) == 13
    # --data may name the .mat file itself
    assert len(load_data(_cfg("svhn", path=str(folder / "test_32x32.mat"), split="test"))) == 5


def test_svhn_missing_split_and_wrong_shape(tmp_path):
    folder = write_svhn(tmp_path / "s", n=4)
    with pytest.raises(DataError, match="no SVHN .mat files there; expected test_32x32.mat"):
        load_data(_cfg("svhn", path=str(folder), split="test"))
    bad = tmp_path / "bad"
    bad.mkdir()
    x = np.zeros((28, 28, 3, 4), dtype=np.uint8)
    scipy.io.savemat(bad / "train_32x32.mat", {"X": x, "y": np.ones((4, 1), np.uint8)})
    with pytest.raises(DataError, match=r"X is \(28, 28, 3, 4\), expected \(32, 32, 3, N\)"):
        load_data(_cfg("svhn", path=str(bad)))


# ---------------------------------------------------------------- CIFAR-10


def test_cifar_pixels_labels_and_both_folder_forms(tmp_path):
    folder = write_cifar(tmp_path / "c", per_batch=10, n_test=10)
    with open(folder / "data_batch_2", "rb") as f:
        batch2 = pickle.load(f, encoding="latin1")
    for path in (tmp_path / "c", folder):  # the parent or the batches folder itself
        d = load_data(_cfg("cifar10", path=str(path)))
        assert d.x.shape == (50, 3, 32, 32) and d.x.dtype == torch.uint8
        assert d.labels.dtype == torch.int64 and d.labels[10:20].tolist() == batch2["labels"]
        # a row is 1024 red, then green, then blue values, each 32 rows of 32
        row = torch.from_numpy(batch2["data"][3])
        assert torch.equal(d.x[13], row.reshape(3, 32, 32))


def test_cifar_ships_class_filter_over_train_and_test(tmp_path):
    folder = write_cifar(tmp_path / "c", per_batch=20, n_test=30)
    d = load_data(_cfg("cifar10", path=str(folder), split="train+test", classes=(8,)))
    # labels (i + k) % 10: 2 eights in each batch of 20, 3 in the test batch of 30
    assert len(d) == 5 * 2 + 3 and set(d.labels.tolist()) == {8}
    train = load_data(_cfg("cifar10", path=str(folder), classes=(8,)))
    test = load_data(_cfg("cifar10", path=str(folder), split="test", classes=(8,)))
    assert (len(train), len(test)) == (10, 3)
    assert torch.equal(d.x, torch.cat([train.x, test.x]))


def test_cifar_damaged_batch_is_one_clear_line(tmp_path):
    folder = write_cifar(tmp_path / "c")
    (folder / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="data_batch_3: not a CIFAR-10 python batch") as e:
        load_data(_cfg("cifar10", path=str(folder)))
    assert "\n" not in str(e.value)
    (folder / "test_batch").unlink()
    with pytest.raises(DataError, match="no CIFAR-10 batches there; expected cifar-10-batches-py"):
        load_data(_cfg("cifar10", path=str(folder)))


# ---------------------------------------------------------------- all three


WRITERS = {
    "mnist": lambda folder, n: write_idx(folder, n_train=n),
    "svhn": lambda folder, n: write_svhn(folder, n=n),
    "cifar10": lambda folder, n: write_cifar(folder, per_batch=n // 5),
}


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_location_order(tmp_path, monkeypatch, name):
    """--data beats $GANFORGE_DATA (<name>/ under it first), which beats the system folder."""
    write = WRITERS[name]
    monkeypatch.setattr(data, "SYSTEM_DIRS", {name: [write(tmp_path / "system", 10)]})
    assert len(load_data(_cfg(name))) == 10
    monkeypatch.setenv("GANFORGE_DATA", str(tmp_path / "env"))
    write(tmp_path / "env", 15)
    assert len(load_data(_cfg(name))) == 15
    write(tmp_path / "env" / name, 20)
    assert len(load_data(_cfg(name))) == 20
    assert len(load_data(_cfg(name, path=str(write(tmp_path / "arg", 25))))) == 25


@pytest.mark.parametrize(("name", "where"), [("mnist", "MNIST/raw"), ("svhn", ""), ("cifar10", "")])
def test_earlier_download_loads_offline(tmp_path, monkeypatch, name, where):
    """A copy in the download cache (torchvision's layout there) is a local copy."""
    monkeypatch.setenv("GANFORGE_CACHE", str(tmp_path / "cache"))
    WRITERS[name](tmp_path / "cache" / "download" / where, 10)
    d = load_data(DataConfig(name=name, download=True))  # no_network: no download tried
    assert len(d) == 10 and d.source.startswith(str(tmp_path / "cache" / "download"))


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_not_found_is_one_line_naming_every_way(name):
    with pytest.raises(DataError) as e:
        load_data(_cfg(name))  # no_network fails the test on any connection attempt
    msg = str(e.value)
    assert "\n" not in msg and "was not found" in msg
    for way in ("--data DIR", "$GANFORGE_DATA", "data.download=true", "downloads are off"):
        assert way in msg


def test_offline_download_fails_at_once_without_fetching(monkeypatch):
    calls = []

    def unreachable(address, timeout=None):
        calls.append((address, timeout))
        raise OSError("Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    start = time.monotonic()
    with pytest.raises(DataError, match=r"the download failed \(OSError: Network is unreachable"):
        load_data(DataConfig(name="cifar10", download=True))
    assert time.monotonic() - start < 5
    assert calls == [(("www.cs.toronto.edu", 443), images.DOWNLOAD_TIMEOUT)]


def test_download_runs_under_a_socket_timeout(monkeypatch):
    """torchvision's urllib calls have no timeout of their own; ours bounds every stall."""
    from torchvision.datasets import utils

    seen = []

    def stalled(*args, **kwargs):
        seen.append(socket.getdefaulttimeout())
        raise urllib.error.URLError("timed out")

    monkeypatch.setattr(images, "_check_reachable", lambda urls: None)
    monkeypatch.setattr(utils, "download_url", stalled)
    with pytest.raises(DataError, match=r"download failed \(URLError"):
        load_data(DataConfig(name="svhn", download=True))
    assert seen == [images.DOWNLOAD_TIMEOUT] and socket.getdefaulttimeout() is None


@pytest.mark.parametrize(
    ("name", "overrides", "shape"),
    [
        ("mnist", {}, (1, 28, 28)),
        ("svhn", {}, (3, 32, 32)),
        ("cifar10", {}, (3, 32, 32)),
        ("cifar10", {"channels": 1, "size": 16}, (1, 16, 16)),
        ("svhn", {"pad": 4}, (3, 40, 40)),
    ],
)
def test_data_shape_matches_loaded_shape(tmp_path, name, overrides, shape):
    folder = WRITERS[name](tmp_path / "d", 10)
    cfg = _cfg(name, path=str(folder), **overrides)
    assert data_shape(cfg) == shape
    assert load_data(cfg).shape == shape
