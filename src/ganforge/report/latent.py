"""Latent interpolation from a run's saved generator: spherical paths between random z."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid

from .. import nets
from ..ckpt_read import open_checkpoint
from ..config import read_config
from ..data import data_shape, to_uint8
from ..seeding import mix_seed

STREAM_INTERP = 7  # a noise stream of its own, apart from the loop's (0-3)


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation from ``a`` to ``b`` (each (N, D)) at fractions ``t`` (T,).

    Returns (N, T, D). Along the great circle between the two directions the norm moves
    smoothly from |a| to |b|, so points stay where Gaussian noise lives (a straight line
    passes through the low-norm middle). Nearly parallel vectors fall back to a straight line.
    """
    a, b, t = a.double(), b.double(), t.double().view(1, -1, 1)
    na, nb = a.norm(dim=1, keepdim=True), b.norm(dim=1, keepdim=True)
    cos = ((a / na) * (b / nb)).sum(dim=1, keepdim=True).clamp(-1.0, 1.0)
    omega = torch.acos(cos).unsqueeze(1)  # (N, 1, 1) angle between a and b
    so = torch.sin(omega)
    a3, b3 = a.unsqueeze(1), b.unsqueeze(1)
    lerp = (1 - t) * a3 + t * b3
    safe = torch.where(so.abs() < 1e-6, torch.ones_like(so), so)
    arc = (torch.sin((1 - t) * omega) * a3 + torch.sin(t * omega) * b3) / safe
    return torch.where(so.abs() < 1e-6, lerp, arc).float()


def interpolation(run_dir: Path, rows: int = 6, steps: int = 10, seed: int = 0) -> bytes:
    """PNG of the final generator along ``rows`` spherical paths of ``steps`` points each.

    Images: a grid, one path per row. 2-D data: G's output cloud with the curves it draws.
    A class-conditional G holds the class fixed along each path: row r is class
    r % num_classes (the 2-D cloud: every class in turn), so only the noise moves.
    Raises a GanforgeError (CheckpointError, ConfigError) when the run has no usable G.
    """
    from . import plots
    from .anim import png_bytes

    run_dir = Path(run_dir)
    cfg = read_config(run_dir / "config.yaml")
    shape = data_shape(cfg.data)
    g = nets.build_generator(cfg.model, shape)
    open_checkpoint(run_dir, ("last", "best")).load_into("sampler", g, "cpu")
    g.eval()
    gen = torch.Generator().manual_seed(mix_seed(cfg.train.seed, STREAM_INTERP, seed))
    ends = nets.sample_noise(2 * rows, cfg.model.z_dim, cfg.model.z_dist, gen, "cpu")
    is_points = len(shape) == 1
    n_t = 60 if is_points else steps
    z = slerp(ends[:rows], ends[rows:], torch.linspace(0, 1, n_t))  # (rows, n_t, z_dim)
    k = cfg.model.num_classes
    y = None if k is None else (torch.arange(rows) % k).repeat_interleave(n_t)  # (rows * n_t,)
    with torch.no_grad():
        out = nets.generate(g, z.reshape(rows * n_t, -1), y)
        if is_points:
            cloud = nets.sample_noise(1000, cfg.model.z_dim, cfg.model.z_dist, gen, "cpu")
            pts = nets.generate(g, cloud, None if k is None else torch.arange(1000) % k).numpy()
    if is_points:
        paths = [p.numpy() for p in out.reshape(rows, n_t, -1)]
        return plots.latent_paths_plot(np.asarray(pts), paths)
    grid = make_grid(to_uint8(out, cfg.data.range), nrow=n_t, padding=2, pad_value=255)
    return png_bytes(Image.fromarray(grid.permute(1, 2, 0).numpy()))
