"""Data sets by registered name, held whole as one tensor on the training device.

Images are kept as uint8 (N, C, H, W) and cast and scaled per batch on the device; 2-D data
sets are float32 (N, D). Each loader finds a local copy in this order: ``data.path``
(``--data``), ``$GANFORGE_DATA``, the system's data folders, then a download when allowed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import torch

from ..config import DataConfig
from ..errors import DataError
from ..registry import Registry


@dataclass(frozen=True)
class Origin:
    """The files a data set was read from, for the run's record of its data (``identity``)."""

    what: str  # how messages name it: "the image folder DIR", "the points file F"
    root: Path  # the files are recorded relative to it
    files: tuple[Path, ...]
    listed: bool = False  # True (image folders): the file list is the identity, not the pixels


@dataclass(frozen=True)
class TensorData:
    """A whole data set as tensors: ``x`` uint8 images or float points, optional labels."""

    x: torch.Tensor  # (N, C, H, W) uint8 (or float in the range), or (N, D) float32
    labels: torch.Tensor | None  # (N,) int64
    source: str  # where it was read from, for logs
    range: str = "tanh"  # images: "tanh" -> [-1, 1], "unit" -> [0, 1]
    origin: Origin | None = None  # the files read, when read from files
    streamed: ClassVar[bool] = False  # True: read from disk as training goes (data/stream.py)

    @property
    def is_image(self) -> bool:
        return self.x.dim() == 4

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def __len__(self) -> int:
        return self.x.shape[0]

    def to(self, device: torch.device | str) -> TensorData:
        labels = None if self.labels is None else self.labels.to(device)
        return replace(self, x=self.x.to(device), labels=labels)

    def batch(self, index: torch.Tensor) -> torch.Tensor:
        """Examples at ``index`` as float32 in the model's range, on the data's device."""
        return scale(self.x[index], self.range)


def scale(x: torch.Tensor, range_: str = "tanh") -> torch.Tensor:
    """uint8 images -> float in [-1, 1] (tanh) or [0, 1] (unit); float data passes through."""
    if x.dtype != torch.uint8:
        return x
    if range_ == "unit":
        return x.float().div_(255.0)
    return x.float().mul_(2.0 / 255.0).sub_(1.0)


def to_uint8(x: torch.Tensor, range_: str = "tanh") -> torch.Tensor:
    """The inverse of ``scale`` for generated images, clamped to the valid range."""
    if range_ == "unit":
        y = x * 255.0
    else:
        y = (x + 1.0) * 127.5
    return y.round().clamp_(0, 255).to(torch.uint8)


LoaderFn = Callable[[DataConfig], TensorData]
DATASETS: Registry[LoaderFn] = Registry("data set")
NATIVE_SHAPES: dict[str, tuple[int, ...]] = {}  # per data set, before data.channels / size
# per data set: whether a folder holds that data set's own files (its format, not images)
OWN_FILES: dict[str, Callable[[Path], bool]] = {}
IMAGE_FOLDER = "image-folder"
POINTS_FILE = "points"  # a 2-D data set read from a .npy or .csv file (data/points.py)


def dataset(name: str, shape: tuple[int, ...]) -> Callable[[LoaderFn], LoaderFn]:
    """Register a loader under ``name`` with the shape of one example as stored."""
    NATIVE_SHAPES[name] = shape
    return DATASETS.register(name)


def data_shape(cfg: DataConfig) -> tuple[int, ...]:
    """Shape of one example as the networks see it, without loading the data."""
    if cfg.shape is not None:  # data given from Python records its own shape
        return tuple(cfg.shape)
    _register_all()
    DATASETS.get(cfg.name, "data.name")
    shape = NATIVE_SHAPES[cfg.name]
    if len(shape) == 3:
        c, h, w = shape
        shape = (cfg.channels or c, (cfg.size or h) + 2 * cfg.pad, (cfg.size or w) + 2 * cfg.pad)
    return shape


def labelled(name: str) -> bool:
    """Whether data set ``name`` carries class labels: the published image data sets do
    (MNIST, Fashion-MNIST, SVHN, CIFAR-10: those with a file format of their own)."""
    _register_all()
    return name in OWN_FILES


def _register_all() -> None:
    from . import folder, generated, images, points, python  # noqa: F401  (registers loaders)


def resolve_path(cfg: DataConfig, num_classes: int | None = None) -> tuple[DataConfig, str | None]:
    """What ``--data PATH`` means for a recipe of a named data set, and a line saying so.

    A folder of images given to a recipe of another image data set (MNIST, SVHN, ...) whose
    own files are not there is used as ``image-folder`` data at the recipe's size and
    channels; a .npy / .csv file given to a 2-D recipe is used as the ``points`` data set.
    Anything else is left to the data set's loader (which names the files it wants). A
    folder of images for a class-conditional recipe or a 2-D one is refused in one line.
    """
    if cfg.path is None or cfg.shape is not None or cfg.name in (IMAGE_FOLDER, POINTS_FILE):
        return cfg, None
    _register_all()
    native = NATIVE_SHAPES.get(cfg.name)
    path = Path(cfg.path).expanduser()
    if native is None or not path.exists():
        return cfg, None
    if len(native) == 1:
        from .points import SUFFIXES as POINT_SUFFIXES

        if path.is_file() and path.suffix.lower() in POINT_SUFFIXES:
            new = replace(cfg, name=POINTS_FILE)
            return new, (
                f"--data {cfg.path}: a file of 2-D points, used as the {POINTS_FILE} data set "
                f"in place of {cfg.name} (scored against its own mean and covariance)"
            )
        kinds = "a folder of images" if path.is_dir() else f"a {path.suffix or 'plain'} file"
        raise DataError(
            f"--data {cfg.path}: {kinds}, but {cfg.name} is a 2-D data set; give a .npy or "
            ".csv file of (N, 2) points, or train an image recipe on it (e.g. -r dcgan-64)"
        )
    own = OWN_FILES.get(cfg.name)
    if not path.is_dir() or (own is not None and own(path)):
        return cfg, None
    from .folder import has_images

    if not has_images(path):
        return cfg, None
    if num_classes is not None:
        raise DataError(
            f"--data {cfg.path}: a folder of images has no labels, and this recipe is "
            f"class-conditional (model.num_classes={num_classes}); train an unconditional "
            "recipe on it (e.g. -r dcgan-64), or --set data.name=image-folder "
            "--set model.num_classes=null"
        )
    c, h, _ = native
    size, channels = cfg.size or h, cfg.channels or c
    dropped = f"; data.classes {list(cfg.classes)} dropped" if cfg.classes is not None else ""
    new = replace(cfg, name=IMAGE_FOLDER, size=size, channels=channels, classes=None)
    return new, (
        f"--data {cfg.path}: a folder of images, not {cfg.name}'s files: used as image-folder "
        f"data at {size}x{size} with {channels} channel{'s' if channels > 1 else ''}"
        f"{dropped} (data.name=image-folder)"
    )


# System-wide folders searched per data set after --data and $GANFORGE_DATA (tests patch this).
SYSTEM_DIRS: dict[str, list[Path]] = {
    "fashion-mnist": [Path("/usr/share/datasets/fashion-mnist")],
    "mnist": [Path("/usr/share/datasets/mnist")],
    "svhn": [Path("/usr/share/datasets/svhn")],
    "cifar10": [Path("/usr/share/datasets/cifar10"), Path("/usr/share/datasets/cifar-10")],
}


def cache_dir() -> Path:
    """Where derived copies and downloads go: $GANFORGE_CACHE, else ~/.cache/ganforge."""
    if os.environ.get("GANFORGE_CACHE"):
        return Path(os.environ["GANFORGE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ganforge"


def candidate_dirs(cfg: DataConfig) -> list[tuple[str, Path]]:
    """Places to look, in order, each with how it was named (for messages)."""
    found: list[tuple[str, Path]] = []
    if cfg.path:
        path = Path(cfg.path).expanduser()
        if not path.exists():
            raise DataError(f"--data {cfg.path}: no such file or folder; pass an existing path")
        found.append(("--data", path))
        return found  # an explicit path is the only place looked at
    env = os.environ.get("GANFORGE_DATA")
    if env:
        root = Path(env).expanduser()
        found += [("$GANFORGE_DATA", root / cfg.name), ("$GANFORGE_DATA", root)]
    found += [("system folder", p) for p in SYSTEM_DIRS.get(cfg.name, [])]
    return [(how, p) for how, p in found if p.exists()]


def load_data(cfg: DataConfig) -> TensorData:
    """Load the configured data set on the CPU, then apply the common selections."""
    _register_all()
    data = DATASETS.get(cfg.name, "data.name")(cfg)
    return select(data, cfg)


def select(data: TensorData, cfg: DataConfig) -> TensorData:
    """Class filter, limit, channel conversion, resize and padding: one place for every data set."""
    if data.streamed:  # an image folder read from disk: decoded to measure already
        return data
    x, labels = data.x, data.labels
    if cfg.classes is not None:
        if labels is None:
            raise DataError(f"data.classes: {cfg.name} has no labels; remove data.classes")
        keep = torch.isin(labels, torch.tensor(cfg.classes))
        if not keep.any():
            raise DataError(f"data.classes={list(cfg.classes)}: no example has these labels")
        x, labels = x[keep], labels[keep]
    if cfg.limit is not None:
        x = x[: cfg.limit]
        labels = None if labels is None else labels[: cfg.limit]
    if x.dtype == torch.uint8:
        x = _convert_channels(x, cfg.channels)
        if cfg.size is not None and tuple(x.shape[-2:]) != (cfg.size, cfg.size):
            x = _resize(x, cfg.size)
        if cfg.pad:  # black borders: 0 is black in uint8, before scaling to the model's range
            x = torch.nn.functional.pad(x, (cfg.pad,) * 4)
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):  # generated ones too
        i = int((~torch.isfinite(x)).reshape(len(x), -1).any(1).nonzero()[0, 0])
        raise DataError(
            f"data {cfg.name} ({data.source}): example {i} is not finite in {x.dtype} (NaN, "
            "infinite, or beyond float32's limit of 3.403e+38); fix the data or the settings "
            "that generate it"
        )
    return TensorData(x.contiguous(), labels, data.source, cfg.range, data.origin)


def _convert_channels(x: torch.Tensor, channels: int | None) -> torch.Tensor:
    if channels is None or x.shape[1] == channels:
        return x
    if channels == 3:
        return x.expand(-1, 3, -1, -1)
    from torchvision.transforms.v2 import functional as TF

    return TF.rgb_to_grayscale(x)


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize the short side to ``size`` and center-crop, in chunks to bound memory."""
    from torchvision.transforms.v2 import functional as TF

    out = []
    for chunk in x.split(4096):
        chunk = TF.resize(chunk, [size], antialias=True)
        out.append(TF.center_crop(chunk, [size, size]))
    return torch.cat(out)


def describe_sources(name: str, files: Iterable[str], apt: str | None = None) -> str:
    """The one-line list of ways to provide a data set, for 'not found' messages."""
    ways = [f"--data DIR (a folder holding {', '.join(files)})", "$GANFORGE_DATA=DIR"]
    if apt:
        ways.append(f"'apt-get install {apt}'")
    ways.append("data.download=true while online (torchvision's download)")
    return f"{name} was not found; provide it by " + ", or ".join(ways)
