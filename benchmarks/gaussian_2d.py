"""How well the gaussian-2d recipe recovers its target: prints a table (not a test).

Trains the recipe for its full length (20 epochs) once per seed, draws many points from
each trained generator and compares their mean and covariance with the target's
(mean b = [1, 2], covariance A^T A = [[1.01, 1.95], [1.95, 4.25]]).

Usage: .venv/bin/python benchmarks/gaussian_2d.py [--seeds 0 1 2 3 4] [--samples 100000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from ganforge import nets
from ganforge.checkpoint import find_checkpoint, load_weights
from ganforge.config import load_config
from ganforge.engine.loop import train

TARGET_MEAN = torch.tensor([1.0, 2.0], dtype=torch.float64)
TARGET_COV = torch.tensor([[1.01, 1.95], [1.95, 4.25]], dtype=torch.float64)


def trained_generator(seed: int, run_dir: Path) -> torch.nn.Module:
    """Train gaussian-2d with ``seed`` on the CPU into ``run_dir``; return the trained G."""
    cfg = load_config("gaussian-2d", [f"train.seed={seed}", "train.device=cpu"])
    train(cfg, run_dir, verbose=False)
    g = nets.build_generator(cfg.model, (2,))
    g.load_state_dict(load_weights(find_checkpoint(run_dir, ("last",)), "g"))
    return g.eval()


def moments(g: torch.nn.Module, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (2,) and covariance (2, 2) of ``n`` generated points, in float64."""
    gen = torch.Generator().manual_seed(10_000 + seed)
    with torch.no_grad():
        x = g(torch.randn(n, 2, generator=gen)).double()
    return x.mean(0), torch.cov(x.T)


def fmt(t: torch.Tensor) -> str:
    return "[" + ", ".join(f"{v:.2f}" for v in t.flatten().tolist()) + "]"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--samples", type=int, default=100_000)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: nets this small "
        "only lose to thread synchronisation, badly so on a busy machine)",
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    print(f"target: mean {fmt(TARGET_MEAN)}, covariance {fmt(TARGET_COV)} (row-major)")
    header = f"{'seed':>4}  {'mean':<14}  {'covariance':<30}  {'max|dmean|':>10}  "
    print(header + f"{'max rel dcov':>12}  {'train s':>7}")
    worst_mean = worst_cov = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            start = time.perf_counter()
            g = trained_generator(seed, Path(tmp) / f"seed{seed}")
            seconds = time.perf_counter() - start
            mean, cov = moments(g, args.samples, seed)
            d_mean = (mean - TARGET_MEAN).abs().max().item()
            d_cov = ((cov - TARGET_COV).abs() / TARGET_COV.abs()).max().item()
            worst_mean, worst_cov = max(worst_mean, d_mean), max(worst_cov, d_cov)
            print(
                f"{seed:>4}  {fmt(mean):<14}  {fmt(cov):<30}  {d_mean:>10.3f}  "
                f"{d_cov:>11.1%}  {seconds:>7.1f}"
            )
    print(f"worst: mean off by {worst_mean:.3f}, a covariance entry off by {worst_cov:.1%}")


if __name__ == "__main__":
    main()
