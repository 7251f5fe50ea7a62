"""Shared fixtures: tiny data sets written in the real file formats, isolated caches."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from ganforge.data import TensorData


def write_idx(
    folder: Path, n_train: int = 64, n_test: int = 16, gz: bool = False, seed: int = 0
) -> Path:
    """Write the four MNIST-format IDX files (random images, labels 0-9) into ``folder``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        files = {
            f"{prefix}-images-idx3-ubyte": struct.pack(">IIII", 0x803, n, 28, 28)
            + images.tobytes(),
            f"{prefix}-labels-idx1-ubyte": struct.pack(">II", 0x801, n) + labels.tobytes(),
        }
        for name, payload in files.items():
            if gz:
                with gzip.open(folder / f"{name}.gz", "wb") as f:
                    f.write(payload)
            else:
                (folder / name).write_bytes(payload)
    return folder


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory, monkeypatch):
    """Every test gets its own cache and no $GANFORGE_DATA; the system folders stay out."""
    from ganforge import data

    monkeypatch.setenv("GANFORGE_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("GANFORGE_DATA", raising=False)
    monkeypatch.setattr(data, "SYSTEM_DIRS", {})


@pytest.fixture
def tiny_images() -> TensorData:
    """256 random 1x28x28 uint8 images with labels: enough for a few vanilla steps."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (256, 1, 28, 28), dtype=torch.uint8, generator=gen)
    return TensorData(x, torch.arange(256) % 10, "test")
