"""Pictures of samples: image grids, and real-vs-generated scatter plots for 2-D data."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.utils import save_image


def save_grid(images: torch.Tensor, path: Path, nrow: int, range_: str = "tanh") -> None:
    """Save (N, C, H, W) images in the model's range as one PNG grid, ``nrow`` per row."""
    lo, hi = (0.0, 1.0) if range_ == "unit" else (-1.0, 1.0)
    x = ((images.detach().float().cpu() - lo) / (hi - lo)).clamp_(0, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(x, path, nrow=nrow, padding=2, pad_value=1.0)


def save_scatter(real: torch.Tensor, fake: torch.Tensor, path: Path, title: str = "") -> None:
    """Scatter of real (blue) and generated (orange) 2-D points, as the seed plots them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r, f = real.detach().float().cpu().numpy(), fake.detach().float().cpu().numpy()
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    ax.scatter(r[:, 0], r[:, 1], s=6, alpha=0.5, label="real")
    ax.scatter(f[:, 0], f[:, 1], s=6, alpha=0.5, label="generated")
    ax.legend(loc="upper left")
    ax.set_title(title)
    ax.set_aspect("equal", adjustable="datalim")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def render(
    fake: torch.Tensor,
    path: Path,
    grid: tuple[int, int],
    range_: str,
    real: torch.Tensor | None = None,
    title: str = "",
) -> None:
    """Images as a grid of ``grid`` = (rows, cols); 2-D points as a scatter against ``real``."""
    if fake.dim() == 2:
        save_scatter(real if real is not None else fake[:0], fake, path, title)
    else:
        save_grid(fake, path, nrow=grid[1], range_=range_)
