"""Image data sets in their published formats, read through torchvision's own classes.

MNIST and Fashion-MNIST (IDX files), SVHN (``*_32x32.mat``) and CIFAR-10 (pickled python
batches). Each loader takes the first local copy found by ``candidate_dirs`` and downloads into
``cache_dir()`` only when there is none and ``data.download`` is true. A download that cannot
reach its host fails within seconds (``DOWNLOAD_TIMEOUT``) rather than hanging.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import shutil
import socket
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import DataConfig
from ..errors import DataError, GanforgeError
from . import (
    NATIVE_SHAPES,
    OWN_FILES,
    TensorData,
    cache_dir,
    candidate_dirs,
    dataset,
    describe_sources,
)

DOWNLOAD_TIMEOUT = 20.0  # seconds a connect or a read may stall before a download gives up

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
SVHN_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta")

Pair = tuple[torch.Tensor, torch.Tensor]  # images (n, C, H, W) uint8, labels (n,) int64


# ---------------------------------------------------------------- the common search


def _parts(cfg: DataConfig) -> list[str]:
    return ["train", "test"] if cfg.split == "train+test" else [cfg.split]


def _join(pairs: Sequence[Pair], source: str) -> TensorData:
    """One TensorData from the (images, labels) of each split, in the order given."""
    x = torch.cat([p[0] for p in pairs]).contiguous()
    y = torch.cat([p[1] for p in pairs]).long()
    return TensorData(x, y, source)


@contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """Bound every connect and read of torchvision's downloads (urllib has no timeout)."""
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def _check_reachable(urls: Sequence[str]) -> None:
    """Raise OSError unless one of the download hosts accepts a connection (fast offline fail)."""
    error: OSError = OSError("no download address")
    for url in urls:
        parts = urllib.parse.urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            socket.create_connection((parts.hostname, port), timeout=DOWNLOAD_TIMEOUT).close()
            return
        except OSError as e:
            error = e
    raise error


def _locate(
    cfg: DataConfig,
    label: str,
    expected: Sequence[str],
    find: Callable[[Path], Path | None],
    read: Callable[[Path], TensorData],
    download: Callable[[Path], TensorData],
    urls: Sequence[str],
    apt: str | None = None,
    kind: str = "files",
) -> TensorData:
    """The first local copy (``find`` a folder, ``read`` it), else a download, else a DataError.

    Local copies: ``candidate_dirs``, then earlier downloads in ``cache_dir()/download`` (so a
    data set fetched once loads offline). ``expected`` names the files a folder must hold and
    ``kind`` their format, for messages.
    """
    downloads = cache_dir() / "download"
    for how, folder in [*candidate_dirs(cfg), ("download cache", downloads)]:
        found = find(folder)
        if found is None:
            if how == "--data":
                wanted = ", ".join(expected)
                raise DataError(f"--data {folder}: no {label} {kind} there; expected {wanted}")
            continue
        try:
            data = read(found)
        except GanforgeError:
            raise
        except Exception as e:  # a damaged or foreign file: any parse failure means unreadable
            why = f"{type(e).__name__}: {e}".replace("\n", " ")
            raise DataError(f"{found}: cannot read the {label} {kind} ({why})") from None
        return _checked(data, cfg.name, found)
    reason = "downloads are off (data.download=false)"
    if cfg.download:
        try:
            with _socket_timeout(DOWNLOAD_TIMEOUT):
                _check_reachable(urls)
                return _checked(download(downloads), cfg.name, "the download")
        except GanforgeError:
            raise
        except Exception as e:  # any network or archive failure means: not available
            reason = f"the download failed ({type(e).__name__}: {e})".replace("\n", " ")
    raise DataError(describe_sources(label, expected, apt) + f"; {reason}")


def _checked(data: TensorData, name: str, where: object) -> TensorData:
    """Refuse files in the right format but with the wrong image size or label count."""
    shape = NATIVE_SHAPES[name]
    labels = data.labels
    if data.shape != shape or data.x.dtype != torch.uint8:
        raise DataError(f"{where}: images are {data.shape} {data.x.dtype}, expected {shape} uint8")
    if labels is None or labels.shape != (len(data),):
        got = None if labels is None else tuple(labels.shape)
        raise DataError(f"{where}: {len(data)} images but labels of shape {got}")
    return data


# ---------------------------------------------------------------- MNIST and Fashion-MNIST


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
    folder of links to plain files and decompressed copies of gzipped ones, made once per
    version of the files (the key covers their sizes and times, so a replaced copy is re-read).
    """
    if found.name == "raw" and found.parent.name == class_name:
        if all((found / f).is_file() for f in IDX_FILES):
            return found.parent.parent
    stamp = [str(found.resolve())]
    for name in IDX_FILES:
        src = found / name if (found / name).is_file() else found / f"{name}.gz"
        st = src.stat()
        stamp.append(f"{src.name}:{st.st_size}:{st.st_mtime_ns}")
    key = hashlib.sha256("\n".join(stamp).encode()).hexdigest()[:12]
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
    parts = _parts(cfg)

    def read(root: Path, download: bool) -> TensorData:
        sets = [cls(root=str(root), train=(p == "train"), download=download) for p in parts]
        # .data is (n, 28, 28) uint8 -> (n, 1, 28, 28)
        return _join([(s.data.unsqueeze(1), s.targets) for s in sets], str(root))

    def read_local(found: Path) -> TensorData:
        data = read(_torchvision_root(found, name), download=False)
        return TensorData(data.x, data.labels, str(found))

    return _locate(
        cfg,
        label,
        [f"{', '.join(IDX_FILES)} (or .gz)"],
        find=lambda folder: _find_idx(folder, name),
        read=read_local,
        download=lambda root: read(root, download=True),
        urls=cls.mirrors,
        apt=apt,
        kind="IDX files",
    )


@dataset("fashion-mnist", (1, 28, 28))
def fashion_mnist(cfg: DataConfig) -> TensorData:
    """Fashion-MNIST, 28x28 grayscale, 10 classes (60,000 train / 10,000 test)."""
    from torchvision.datasets import FashionMNIST

    return load_idx_dataset(cfg, FashionMNIST, "Fashion-MNIST", apt="dataset-fashion-mnist")


@dataset("mnist", (1, 28, 28))
def mnist(cfg: DataConfig) -> TensorData:
    """MNIST handwritten digits, 28x28 grayscale, 10 classes (60,000 train / 10,000 test)."""
    from torchvision.datasets import MNIST

    return load_idx_dataset(cfg, MNIST, "MNIST", apt=None)


OWN_FILES["mnist"] = lambda folder: _find_idx(folder, "MNIST") is not None
OWN_FILES["fashion-mnist"] = lambda folder: _find_idx(folder, "FashionMNIST") is not None


# ---------------------------------------------------------------- SVHN and CIFAR-10


@functools.cache
def _local_classes() -> tuple[type, type]:
    """torchvision's SVHN and CIFAR10 with the MD5 check of local copies reduced to presence.

    torchvision compares each file's MD5 with the official one before parsing, so any other
    copy in the real format (the tests' tiny files; a re-saved .mat) is refused as "corrupted".
    With the sums set to None, torchvision's own ``check_integrity`` tests that the file
    exists and its parsing is unchanged; a damaged file still fails there, and is reported.
    Downloads keep the original classes, whose sums verify what arrives.
    """
    from torchvision.datasets import CIFAR10, SVHN

    class LocalSVHN(SVHN):
        split_list = {k: [url, file, None] for k, (url, file, _) in SVHN.split_list.items()}

    class LocalCIFAR10(CIFAR10):
        train_list = [[file, None] for file, _ in CIFAR10.train_list]
        test_list = [[file, None] for file, _ in CIFAR10.test_list]
        meta = {**CIFAR10.meta, "md5": None}

        def __init__(self, folder: Path, train: bool) -> None:
            self.base_folder = folder.name  # the batches' folder may have any name
            super().__init__(root=str(folder.parent), train=train)

    return LocalSVHN, LocalCIFAR10


def _svhn_pair(ds: Any) -> Pair:
    # torchvision has already moved the .mat's (32, 32, 3, n) to (n, 3, 32, 32) and label 10 to 0
    x = torch.from_numpy(np.ascontiguousarray(ds.data))
    return x, torch.from_numpy(np.asarray(ds.labels, dtype=np.int64))


def _cifar_pair(ds: Any) -> Pair:
    x = torch.from_numpy(ds.data).permute(0, 3, 1, 2)  # torchvision's (n, 32, 32, 3) -> NCHW
    return x, torch.tensor(ds.targets, dtype=torch.int64)


@dataset("svhn", (3, 32, 32))
def svhn(cfg: DataConfig) -> TensorData:
    """SVHN house-number digits, 32x32 RGB, labels 0-9 (73,257 train / 26,032 test)."""
    from torchvision.datasets import SVHN

    files = [SVHN_FILES[p] for p in _parts(cfg)]

    def find(folder: Path) -> Path | None:
        d = folder.parent if folder.is_file() else folder  # --data may name the .mat itself
        return d if all((d / f).is_file() for f in files) else None

    def read(folder: Path) -> TensorData:
        local = _local_classes()[0]
        return _join([_svhn_pair(local(str(folder), split=p)) for p in _parts(cfg)], str(folder))

    def download(root: Path) -> TensorData:
        sets = [SVHN(str(root), split=p, download=True) for p in _parts(cfg)]
        return _join([_svhn_pair(s) for s in sets], str(root))

    urls = [SVHN.split_list[p][0] for p in _parts(cfg)]
    return _locate(cfg, "SVHN", files, find, read, download, urls, kind=".mat files")


OWN_FILES["svhn"] = lambda folder: any((folder / f).is_file() for f in SVHN_FILES.values())
OWN_FILES["cifar10"] = lambda folder: any(
    (d / CIFAR_FILES[0]).is_file() for d in (folder, folder / CIFAR_FOLDER)
)


@dataset("cifar10", (3, 32, 32))
def cifar10(cfg: DataConfig) -> TensorData:
    """CIFAR-10, 32x32 RGB, 10 classes (50,000 train / 10,000 test).

    The python batches are pickles, as torchvision reads them: load only copies you trust.
    """
    from torchvision.datasets import CIFAR10

    def find(folder: Path) -> Path | None:
        for d in (folder, folder / CIFAR_FOLDER):
            if all((d / f).is_file() for f in CIFAR_FILES):
                return d
        return None

    def read(folder: Path) -> TensorData:
        local = _local_classes()[1]
        pairs = [_cifar_pair(local(folder, train=(p == "train"))) for p in _parts(cfg)]
        return _join(pairs, str(folder))

    def download(root: Path) -> TensorData:
        sets = [CIFAR10(str(root), train=(p == "train"), download=True) for p in _parts(cfg)]
        return _join([_cifar_pair(s) for s in sets], str(root / CIFAR_FOLDER))

    expected = [f"{CIFAR_FOLDER}/ ({', '.join(CIFAR_FILES)})"]
    return _locate(cfg, "CIFAR-10", expected, find, read, download, [CIFAR10.url], kind="batches")
