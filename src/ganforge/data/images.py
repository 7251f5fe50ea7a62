"""Image data sets read through torchvision's own classes."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
from pathlib import Path

import torch

from ..config import DataConfig
from ..errors import DataError
from . import TensorData, cache_dir, candidate_dirs, dataset, describe_sources

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _find_idx(folder: Path, class_name: str) -> Path | None:
    """The folder (of ``folder`` and torchvision's layouts under it) holding the 4 IDX files."""
    for d in (folder, folder / class_name / "raw", folder / class_name):
        if all((d / f).is_file() or (d / f"{f}.gz").is_file() for f in IDX_FILES):
            return d
    return None


def _torchvision_root(found: Path, class_name: str) -> Path:
    """A root that torchvision's class reads without downloading.

    torchvision expects ``ROOT/<ClassName>/raw/`` with the uncompressed files. A folder in
    that layout is used in place; any other (the Debian package ships .gz files) gets a cache
    folder of links to plain files and decompressed copies of gzipped ones, made once.
    """
    if found.name == "raw" and found.parent.name == class_name:
        if all((found / f).is_file() for f in IDX_FILES):
            return found.parent.parent
    key = hashlib.sha256(str(found.resolve()).encode()).hexdigest()[:12]
    root = cache_dir() / "idx" / key
    raw = root / class_name / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in IDX_FILES:
        target = raw / name
        if target.exists():
            continue
        plain, packed = found / name, found / f"{name}.gz"
        tmp = raw / f".{name}.{os.getpid()}.tmp"
        if plain.is_file():
            os.symlink(plain.resolve(), tmp)
        else:
            with gzip.open(packed, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
        os.replace(tmp, target)  # atomic: a half-written file is never seen as complete
    return root


def load_idx_dataset(cfg: DataConfig, cls: type, label: str, apt: str | None) -> TensorData:
    """MNIST-format data (MNIST, Fashion-MNIST) through torchvision's class ``cls``."""
    name = cls.__name__
    parts = ["train", "test"] if cfg.split == "train+test" else [cfg.split]

    def read(root: Path, download: bool) -> TensorData:
        sets = [cls(root=str(root), train=(p == "train"), download=download) for p in parts]
        x = torch.cat([s.data for s in sets]).unsqueeze(1)  # (N, 1, 28, 28) uint8
        y = torch.cat([s.targets for s in sets]).long()
        return TensorData(x, y, str(root))

    for how, folder in candidate_dirs(cfg):
        found = _find_idx(folder, name)
        if found is None:
            if how == "--data":
                raise DataError(
                    f"--data {folder}: no {label} IDX files there; expected "
                    f"{', '.join(IDX_FILES)} (optionally .gz)"
                )
            continue
        try:
            data = read(_torchvision_root(found, name), download=False)
        except (RuntimeError, ValueError, OSError, EOFError) as e:
            raise DataError(f"{found}: cannot read the {label} IDX files ({e})") from None
        return TensorData(data.x, data.labels, str(found))
    reason = "downloads are off (data.download=false)"
    if cfg.download:
        try:
            return read(cache_dir() / "download", download=True)
        except Exception as e:  # any network or archive failure means: not available
            reason = f"the download failed ({type(e).__name__})"
    raise DataError(describe_sources(label, IDX_FILES, apt) + f"; {reason}")


@dataset("fashion-mnist", (1, 28, 28))
def fashion_mnist(cfg: DataConfig) -> TensorData:
    """Fashion-MNIST, 28x28 grayscale, 10 classes (60,000 train / 10,000 test)."""
    from torchvision.datasets import FashionMNIST

    return load_idx_dataset(cfg, FashionMNIST, "Fashion-MNIST", apt="dataset-fashion-mnist")
