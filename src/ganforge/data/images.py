"""Image data sets in their published formats: MNIST and Fashion-MNIST (IDX files, plain or
gzipped), SVHN (``*_32x32.mat``) and CIFAR-10 (pickled python batches).

Each loader takes the first local copy found by ``candidate_dirs`` and downloads into
``cache_dir()`` only when there is none and ``data.download`` is true (through torchvision,
which checks each archive's MD5). A download that cannot reach its host fails within seconds
(``DOWNLOAD_TIMEOUT``) rather than hanging.

Local files are read here, not by torchvision, because they may be damaged or hostile: every
header (IDX magic number and dimensions, .mat variable shapes, batch contents) is checked
before data is read, a file never expands past the size its header declares (a gzip bomb is
refused after the expected bytes), nothing is written to the cache, and CIFAR-10's pickles
go through a restricted unpickler that builds plain data only (``ganforge.files``).
"""

from __future__ import annotations

import gzip
import pickle
import socket
import struct
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from zlib import error as zlib_error

import numpy as np
import torch

from ..config import DataConfig
from ..errors import DataError, GanforgeError
from ..files import restricted_loads
from . import (
    NATIVE_SHAPES,
    OWN_FILES,
    Origin,
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
MAX_IMAGES = 1_000_000  # per file: larger headers are refused before anything is allocated
IDX_MAGIC = {"images": 0x00000803, "labels": 0x00000801}  # uint8 data, 3 or 1 dimensions
IDX_DIMS = {"images": (28, 28), "labels": ()}  # after the image count
CIFAR_MAX_BYTES = 64 << 20  # a batch of 10,000 images is 30 MB


# ---------------------------------------------------------------- the common search


def _parts(cfg: DataConfig) -> list[str]:
    return ["train", "test"] if cfg.split == "train+test" else [cfg.split]


def _join(pairs: Sequence[Pair], source: str, files: Sequence[Path] = ()) -> TensorData:
    """One TensorData from the (images, labels) of each split, in the order given; ``files``:
    those read (the run records their names and sizes)."""
    x = torch.cat([p[0] for p in pairs]).contiguous()
    y = torch.cat([p[1] for p in pairs]).long()
    origin = Origin(f"the data files in {source}", Path(source), tuple(files)) if files else None
    return TensorData(x, y, source, origin=origin)


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


def read_idx(path: Path, kind: str) -> np.ndarray:
    """An MNIST-format IDX file (plain or .gz) of ``kind`` "images" (n, 28, 28) or "labels" (n,).

    The header is checked first (magic number, dimensions, at most ``MAX_IMAGES`` records), then
    exactly the declared number of bytes is read: a short file is truncated, a longer one (or a
    .gz that inflates further) is refused without reading past one byte more.
    """
    want_magic, want_dims = IDX_MAGIC[kind], IDX_DIMS[kind]
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            head = f.read(4)
            magic = struct.unpack(">I", head)[0] if len(head) == 4 else None
            if magic != want_magic:
                got = "none (file too short)" if magic is None else f"0x{magic:08x}"
                raise DataError(
                    f"{path}: not an IDX {kind} file (magic number {got}, expected "
                    f"0x{want_magic:08x}); replace it with the data set's original file"
                )
            dims_raw = f.read(4 * (1 + len(want_dims)))
            if len(dims_raw) != 4 * (1 + len(want_dims)):
                raise DataError(f"{path}: truncated IDX header; replace the file")
            n, *dims = struct.unpack(f">{1 + len(want_dims)}I", dims_raw)
            if tuple(dims) != want_dims or n > MAX_IMAGES:
                shape = "x".join(str(v) for v in (n, *dims))
                expected = "x".join(["N", *map(str, want_dims)])
                raise DataError(
                    f"{path}: IDX {kind} of shape {shape}, expected {expected} with N <= "
                    f"{MAX_IMAGES:,}; is this the right data set?"
                )
            size = n * int(np.prod(want_dims, dtype=np.int64))
            body = f.read(size + 1)  # one byte more tells an over-long file
    except (OSError, EOFError, gzip.BadGzipFile, zlib_error) as e:
        raise DataError(f"{path}: cannot read it ({type(e).__name__}: {e})") from None
    if len(body) < size:
        raise DataError(f"{path}: truncated ({len(body):,} of {size:,} data bytes); replace it")
    if len(body) > size:
        raise DataError(
            f"{path}: holds more than the {n:,} {kind} its header declares; replace the file"
        )
    return np.frombuffer(body, dtype=np.uint8).reshape(n, *want_dims)


def _idx_file(folder: Path, name: str) -> Path:
    return folder / name if (folder / name).is_file() else folder / f"{name}.gz"


def load_idx_dataset(cfg: DataConfig, cls: type, label: str, apt: str | None) -> TensorData:
    """MNIST-format data (MNIST, Fashion-MNIST): local IDX files read by ``read_idx``,
    downloads through torchvision's class ``cls``."""
    name = cls.__name__
    parts = _parts(cfg)

    def read_local(found: Path) -> TensorData:
        pairs, files = [], []
        for p in parts:
            prefix = "train" if p == "train" else "t10k"
            images = _idx_file(found, f"{prefix}-images-idx3-ubyte")
            labels = _idx_file(found, f"{prefix}-labels-idx1-ubyte")
            x, y = read_idx(images, "images"), read_idx(labels, "labels")
            pairs.append((torch.from_numpy(x.copy()).unsqueeze(1), torch.from_numpy(y.copy())))
            files += [images, labels]
        return _join(pairs, str(found), files)

    def download(root: Path) -> TensorData:
        sets = [cls(root=str(root), train=(p == "train"), download=True) for p in parts]
        # .data is (n, 28, 28) uint8 -> (n, 1, 28, 28)
        return _join([(s.data.unsqueeze(1), s.targets) for s in sets], str(root))

    return _locate(
        cfg,
        label,
        [f"{', '.join(IDX_FILES)} (or .gz)"],
        find=lambda folder: _find_idx(folder, name),
        read=read_local,
        download=download,
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


def read_svhn(path: Path) -> Pair:
    """An SVHN ``*_32x32.mat``: X (32, 32, 3, n) uint8 and y (n, 1) with 10 for the digit 0.

    scipy's loadmat builds arrays only (MATLAB objects stay opaque data; no code runs). The
    variables' shapes are read from the headers first (``whosmat``), so a file declaring more
    images than ``MAX_IMAGES`` is refused before its data is inflated.
    """
    import scipy.io

    try:
        shapes = {name: (shape, cls) for name, shape, cls in scipy.io.whosmat(str(path))}
        want = {"X": ((32, 32, 3), "uint8"), "y": None}
        x_shape = shapes.get("X", ((), ""))[0]
        if "X" not in shapes or "y" not in shapes:
            raise DataError(
                f"{path}: no variables X and y (it holds {', '.join(shapes) or 'none'}); "
                "is this an SVHN *_32x32.mat file?"
            )
        n = x_shape[-1] if len(x_shape) == 4 else -1
        if tuple(x_shape[:3]) != want["X"][0] or not 0 < n <= MAX_IMAGES:
            raise DataError(f"{path}: X is {x_shape}, expected (32, 32, 3, N) with N <= 1,000,000")
        if shapes["y"][0] not in ((n, 1), (1, n), (n,)):
            raise DataError(f"{path}: y is {shapes['y'][0]}, expected ({n}, 1) labels for X")
        mat = scipy.io.loadmat(str(path), variable_names=["X", "y"])
    except DataError:
        raise
    except Exception as e:  # scipy's parsers raise many types on damaged bytes
        why = f"{type(e).__name__}: {e}".replace("\n", " ")[:200]
        raise DataError(f"{path}: cannot read the .mat file ({why})") from None
    x, y = mat["X"], np.asarray(mat["y"]).reshape(-1)
    if len(y) != n:
        raise DataError(f"{path}: labels y hold {len(y)} values for {n} images")
    if x.dtype != np.uint8 or x.shape != (32, 32, 3, n):
        raise DataError(f"{path}: X is {x.shape} {x.dtype}, expected (32, 32, 3, {n}) uint8")
    if not np.issubdtype(y.dtype, np.number) or not np.isin(y, np.arange(11)).all():
        raise DataError(f"{path}: labels y must be integers 1-10 (10 for the digit 0)")
    images = torch.from_numpy(np.ascontiguousarray(x.transpose(3, 2, 0, 1)))
    return images, torch.from_numpy(y.astype(np.int64) % 10)


def read_cifar_batch(path: Path) -> Pair:
    """One CIFAR-10 python batch: a pickled dict of "data" (n, 3072) uint8 and "labels" (n).

    Read with ``restricted_loads``: the pickle may build dicts, lists, str, bytes, numbers
    and numpy arrays, nothing else, so a hostile batch cannot run code.
    """
    size = path.stat().st_size
    if size > CIFAR_MAX_BYTES:
        raise DataError(f"{path}: {size:,} bytes, larger than any CIFAR-10 batch; replace it")
    try:
        batch = restricted_loads(path.read_bytes(), encoding="latin1")
    except pickle.UnpicklingError as e:
        raise DataError(f"{path}: not a CIFAR-10 python batch ({e})") from None
    if not isinstance(batch, dict):
        raise DataError(f"{path}: not a CIFAR-10 python batch (a {type(batch).__name__})")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    x, labels = batch.get("data"), batch.get("labels")
    if not (isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.ndim == 2):
        got = f"{x.shape} {x.dtype}" if isinstance(x, np.ndarray) else type(x).__name__
        raise DataError(f"{path}: batch data is {got}, expected (N, 3072) uint8 rows")
    if x.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: batch data is {x.shape}, expected (N, 3072) uint8 rows")
    try:
        y = np.asarray(labels)
    except (TypeError, ValueError):
        y = np.zeros(0)
    if y.shape != (len(x),) or not np.isin(y, np.arange(10)).all():
        raise DataError(f"{path}: batch labels must be {len(x)} integers 0-9")
    images = torch.from_numpy(np.ascontiguousarray(x.reshape(-1, 3, 32, 32)))
    return images, torch.from_numpy(y.astype(np.int64))


@dataset("svhn", (3, 32, 32))
def svhn(cfg: DataConfig) -> TensorData:
    """SVHN house-number digits, 32x32 RGB, labels 0-9 (73,257 train / 26,032 test)."""
    from torchvision.datasets import SVHN

    files = [SVHN_FILES[p] for p in _parts(cfg)]

    def find(folder: Path) -> Path | None:
        d = folder.parent if folder.is_file() else folder  # --data may name the .mat itself
        return d if all((d / f).is_file() for f in files) else None

    def read(folder: Path) -> TensorData:
        return _join(
            [read_svhn(folder / f) for f in files], str(folder), [folder / f for f in files]
        )

    def download(root: Path) -> TensorData:
        from torchvision.datasets.utils import download_url

        for p in _parts(cfg):  # fetched and MD5-checked by torchvision, read by read_svhn
            url, name, md5 = SVHN.split_list[p]
            download_url(url, str(root), name, md5)
        return read(root)

    urls = [SVHN.split_list[p][0] for p in _parts(cfg)]
    return _locate(cfg, "SVHN", files, find, read, download, urls, kind=".mat files")


OWN_FILES["svhn"] = lambda folder: any((folder / f).is_file() for f in SVHN_FILES.values())
OWN_FILES["cifar10"] = lambda folder: any(
    (d / CIFAR_FILES[0]).is_file() for d in (folder, folder / CIFAR_FOLDER)
)


@dataset("cifar10", (3, 32, 32))
def cifar10(cfg: DataConfig) -> TensorData:
    """CIFAR-10, 32x32 RGB, 10 classes (50,000 train / 10,000 test).

    The python batches are pickles; ``read_cifar_batch`` builds plain data from them only.
    """
    from torchvision.datasets import CIFAR10

    def find(folder: Path) -> Path | None:
        for d in (folder, folder / CIFAR_FOLDER):
            if all((d / f).is_file() for f in CIFAR_FILES):
                return d
        return None

    def read(folder: Path) -> TensorData:
        names = {"train": CIFAR_FILES[:5], "test": ("test_batch",)}
        paths = [folder / n for p in _parts(cfg) for n in names[p]]
        return _join([read_cifar_batch(f) for f in paths], str(folder), paths)

    def download(root: Path) -> TensorData:
        from torchvision.datasets.utils import download_and_extract_archive

        # fetched, MD5-checked and unpacked by torchvision; the batches read by read_cifar_batch
        url, name, md5 = CIFAR10.url, CIFAR10.filename, CIFAR10.tgz_md5
        download_and_extract_archive(url, str(root), filename=name, md5=md5)
        return read(root / CIFAR_FOLDER)

    expected = [f"{CIFAR_FOLDER}/ ({', '.join(CIFAR_FILES)})"]
    return _locate(cfg, "CIFAR-10", expected, find, read, download, [CIFAR10.url], kind="batches")
