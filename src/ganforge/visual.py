"""Pictures of samples: image grids, and real-vs-generated scatter plots for 2-D data.

Every file is written atomically (``runfiles.atomic_write``): a full disk or a kill while a
sample grid is written leaves the previous file as it was. 2-D samples can also be written
as numbers: ``.csv`` (a header, one point a line) or ``.npy``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torchvision.utils import save_image

from .errors import GanforgeError
from .runfiles import atomic_write

# file suffix -> format name, for grids of images (PIL) and scatter plots (matplotlib)
IMAGE_FORMATS = {
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".webp": "webp",
    ".bmp": "bmp",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".gif": "gif",
}
PLOT_FORMATS = {s: s[1:] for s in (".png", ".pdf", ".svg", ".jpg", ".jpeg", ".webp", ".tif")}
POINT_DATA = (".csv", ".npy")  # 2-D samples as numbers


MAX_IMAGES = 10_000  # one grid of 100 x 100: more would not fit in memory nor on a screen
MAX_POINTS = 1_000_000


def check_format(path: Path, points: bool, n: int | None = None) -> None:
    """Raise one line unless ``path``'s suffix is a format for these samples (before any work)
    and ``n`` samples fit in one file (a grid of at most 10,000 images, a million points).

    Image samples: a picture format; 2-D points: a plot format, ``.csv`` or ``.npy``.
    """
    suffix = Path(path).suffix.lower()
    limit = MAX_POINTS if points else MAX_IMAGES
    if n is not None and n > limit:
        raise GanforgeError(
            f"-n {n}: at most {limit:,} samples in one file; write several files with "
            "different --seed values"
        )
    if points:
        if suffix in PLOT_FORMATS or suffix in POINT_DATA:
            return
        valid = ", ".join([*POINT_DATA, *PLOT_FORMATS])
        raise GanforgeError(
            f"-o {path}: not a format for 2-D samples; use .csv or .npy for the points, or a "
            f"plot ({valid})"
        )
    if suffix in IMAGE_FORMATS:
        return
    extra = "; .csv and .npy are for 2-D runs" if suffix in POINT_DATA else ""
    raise GanforgeError(
        f"-o {path}: not an image format for image samples; use one of "
        f"{', '.join(IMAGE_FORMATS)}{extra}"
    )


def save_grid(images: torch.Tensor, path: Path, nrow: int, range_: str = "tanh") -> None:
    """Save (N, C, H, W) images in the model's range as one PNG grid, ``nrow`` per row."""
    lo, hi = (0.0, 1.0) if range_ == "unit" else (-1.0, 1.0)
    x = ((images.detach().float().cpu() - lo) / (hi - lo)).clamp_(0, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = IMAGE_FORMATS.get(path.suffix.lower(), "png")
    with atomic_write(path) as f:
        save_image(x, f, nrow=nrow, padding=2, pad_value=1.0, format=fmt)  # pyright: ignore[reportArgumentType]


def save_scatter(real: torch.Tensor, fake: torch.Tensor, path: Path, title: str = "") -> None:
    """Scatter of real (blue) and generated (orange) 2-D points, as the seed plots them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r, f = real.detach().float().cpu().numpy(), fake.detach().float().cpu().numpy()
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    try:
        ax.scatter(r[:, 0], r[:, 1], s=6, alpha=0.5, label="real")
        ax.scatter(f[:, 0], f[:, 1], s=6, alpha=0.5, label="generated")
        ax.legend(loc="upper left")
        ax.set_title(title)
        ax.set_aspect("equal", adjustable="datalim")
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as out:
            fig.savefig(out, format=PLOT_FORMATS.get(path.suffix.lower(), "png"))
    finally:
        plt.close(fig)


def save_points(fake: torch.Tensor, path: Path) -> None:
    """2-D (or D-dimensional) samples as numbers: ``.csv`` with a header, or ``.npy``."""
    x = fake.detach().float().cpu().numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".npy":
        with atomic_write(path) as f:
            np.save(f, x)
        return
    header = "x,y" if x.shape[1] == 2 else ",".join(f"x{i}" for i in range(x.shape[1]))
    with atomic_write(path, "w") as f:
        np.savetxt(f, x, delimiter=",", header=header, comments="", fmt="%.8g")


def render(
    fake: torch.Tensor,
    path: Path,
    grid: tuple[int, int],
    range_: str,
    real: torch.Tensor | None = None,
    title: str = "",
) -> None:
    """Images as a grid of ``grid`` = (rows, cols); 2-D points as a scatter against ``real``
    (or as numbers, for a ``.csv`` / ``.npy`` path)."""
    path = Path(path)
    check_format(path, fake.dim() == 2)
    if fake.dim() == 2 and path.suffix.lower() in POINT_DATA:
        save_points(fake, path)
    elif fake.dim() == 2:
        save_scatter(real if real is not None else fake[:0], fake, path, title)
    else:
        save_grid(fake, path, nrow=grid[1], range_=range_)
