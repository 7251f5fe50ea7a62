"""DiffAugment (Zhao et al. 2020): differentiable augmentations applied to everything D sees.

Real and generated images go through the same kind of random transform before D, both in
D's step and in G's, so D cannot tell them apart by the augmentation and G's gradient flows
back through it. Images are (N, C, H, W) in the model's range; each policy draws its own
random parameters per sample from the generator it is given, so a run stays reproducible.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from .registry import Registry

Policy = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
# Policies by name; ``module:attr`` names a policy of your own: f(x, gen) -> x, same shape.
POLICIES: Registry[Policy] = Registry("augment policy")


def _uniform(x: torch.Tensor, gen: torch.Generator, lo: float, hi: float) -> torch.Tensor:
    """(N, 1, 1, 1) per-sample factors in [lo, hi)."""
    u = torch.rand(x.shape[0], 1, 1, 1, generator=gen, device=x.device, dtype=x.dtype)
    return lo + (hi - lo) * u


@POLICIES.register("color")
def color(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random brightness (+[-0.5, 0.5)), saturation (x[0, 2)) and contrast (x[0.5, 1.5))."""
    x = x + _uniform(x, gen, -0.5, 0.5)
    gray = x.mean(dim=1, keepdim=True)  # saturation: away from / toward the per-pixel mean
    x = (x - gray) * _uniform(x, gen, 0.0, 2.0) + gray
    mean = x.mean(dim=(1, 2, 3), keepdim=True)  # contrast: around the image's mean
    return (x - mean) * _uniform(x, gen, 0.5, 1.5) + mean


@POLICIES.register("translation")
def translation(x: torch.Tensor, gen: torch.Generator, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to ``ratio`` of its size in each direction; zeros fill in."""
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sh, sh + 1, (n, 1, 1), generator=gen, device=x.device)
    dx = torch.randint(-sw, sw + 1, (n, 1, 1), generator=gen, device=x.device)
    # output pixel (i, j) reads input (i + dy, j + dx); indices off the image read the zero
    # border of the padded copy (index 0 or size + 1 after the shift by one)
    rows = (torch.arange(h, device=x.device).view(1, h, 1) + dy).clamp(-1, h) + 1  # (N, H, 1)
    cols = (torch.arange(w, device=x.device).view(1, 1, w) + dx).clamp(-1, w) + 1  # (N, 1, W)
    padded = F.pad(x, (1, 1, 1, 1))
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    return padded[batch, :, rows, cols].permute(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)


@POLICIES.register("cutout")
def cutout(x: torch.Tensor, gen: torch.Generator, ratio: float = 0.5) -> torch.Tensor:
    """Zero one square of ``ratio`` times the image size at a random place in each image."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), generator=gen, device=x.device)
    cx = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), generator=gen, device=x.device)
    ys = torch.arange(h, device=x.device).view(1, h, 1) - (cy - ch // 2)  # (N, H, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w) - (cx - cw // 2)  # (N, 1, W)
    inside = (ys >= 0) & (ys < ch) & (xs >= 0) & (xs < cw)  # (N, H, W)
    return x * (~inside).unsqueeze(1).to(x.dtype)


def diff_augment(x: torch.Tensor, policies: Sequence[str], gen: torch.Generator) -> torch.Tensor:
    """Apply ``policies`` in order (names from ``POLICIES``) to images ``x``."""
    for name in policies:
        x = POLICIES.get(name, "train.augment")(x, gen)
    return x
