"""Image-folder recipes by image side: parameters and CPU seconds of one step (not a test).

One step is the recipe's, through the engine (``build_models``, ``train_step``): a D update
on the recipe's loss (dcgan-64: BCE(real, 1) + BCE(fake, 0) halved; folder-plus: hinge,
spectral norm), then a G update, the recipe's optimizers, NHWC where the recipe sets
channels_last, on random images; DiffAugment is left out (it costs the same at every net).
One thread; CPU time (time.process_time), the median of the timed steps after one
warm-up step.

Usage: .venv/bin/python benchmarks/sizes.py [--recipes dcgan-64 folder-plus] [--batch 16]
       [--steps 3] [--sizes 32 64 128 256]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ganforge import nets
from ganforge.config import load_config
from ganforge.engine.loop import build_models
from ganforge.engine.step import train_step


def step_seconds(recipe: str, size: int, batch: int, steps: int) -> tuple[int, int, float]:
    """(G params, D params, median CPU s of one D + G step) of ``recipe`` at ``size``: the
    engine's own ``build_models`` and ``train_step``, with DiffAugment off."""
    cfg = load_config(recipe, [f"data.size={size}", "train.augment=[]"])
    shape = (3, size, size)
    m = build_models(cfg, shape, torch.device("cpu"))
    real = torch.rand(batch, *shape) * 2 - 1
    k = cfg.model.conditioned  # classes or clusters: G and D take one per image
    y = None if k is None else torch.arange(batch) % k
    times = []
    for i in range(steps + 1):
        t0 = time.process_time()
        z = torch.randn(batch, cfg.model.z_dim)
        train_step(m, cfg, real, z, cfg.train.d_steps - 1, y=y)  # a step that updates both
        if i:  # the first step is a warm-up
            times.append(time.process_time() - t0)
    return nets.count_params(m.g), nets.count_params(m.d), statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--recipes", nargs="+", default=["dcgan-64", "folder-plus"])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128, 256])
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    print(f"batch {args.batch}, 1 thread, CPU s per step (median of {args.steps})")
    print(
        f"{'recipe':>12} {'size':>5} {'G params':>12} {'D params':>12} {'CPU s/step':>11} "
        f"{'ms/image':>9}"
    )
    for recipe in args.recipes:
        for size in args.sizes:
            g, d, s = step_seconds(recipe, size, args.batch, args.steps)
            print(
                f"{recipe:>12} {size:>5} {g:>12,} {d:>12,} {s:>11.2f} {1000 * s / args.batch:>9.1f}"
            )


if __name__ == "__main__":
    main()
