"""Seed recipes against their ``-plus`` versions at equal wall-clock time: prints a table.

Per seed, the seed recipe trains for ``--seconds`` of training time on this machine (its
length is extended to fill the budget: ``train.max_seconds``), and the improved recipe trains
for its own length, cut at the same budget, so it never gets more time than the seed recipe.
No evaluation runs inside the budget. Then each final generator (the EMA of G when the recipe
keeps one) is scored by ``ganforge evaluate``'s code:

    .venv/bin/python benchmarks/plus.py gaussian-2d --seconds 20 --seeds 0 1 2 3 4
    .venv/bin/python benchmarks/plus.py ring-8 grid-25 --seconds 60 --seeds 0 1 2
    .venv/bin/python benchmarks/plus.py vanilla-fmnist --seconds 600 --seeds 0

A name ``X`` compares ``X`` with ``X-plus``; ``X:Y`` compares ``X`` with ``Y``. Runs go to
``--out`` (default runs/bench-plus). Nothing here is part of the tests.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from ganforge.config import load_config
from ganforge.data.generated import MIXTURES
from ganforge.engine.loop import train
from ganforge.metrics.evaluate import evaluate_run

# Columns shown per kind of data: (metric key, header, format)
COLUMNS = {
    "mixture": [
        ("modes", "modes", "{:.0f}"),
        ("hq", "HQ %", "{:.1f}"),
        ("reverse_kl", "rKL", "{:.3f}"),
    ],
    "gaussian": [("max_dmean", "max|dmean|", "{:.3f}"), ("cov_rel_err", "max rel dcov", "{:.1%}")],
    "images": [
        ("fd", "FD", "{:.1f}"),
        ("precision", "P", "{:.3f}"),
        ("recall", "R", "{:.3f}"),
        ("coverage", "classes", "{:.0f}"),
    ],
}


def kind_of(cfg: Any) -> str:
    if cfg.data.name in MIXTURES:
        return "mixture"
    return "gaussian" if cfg.data.name == "gaussian-2d" else "images"


def run_one(
    recipe: str, seed: int, seconds: float, out: Path, extra: list[str], fill: bool
) -> dict:
    """Train ``recipe`` with ``seed`` for at most ``seconds`` (exactly, when ``fill``: its
    length is extended to the budget); return its counters and metrics."""
    overrides = [f"train.seed={seed}", f"train.max_seconds={seconds}"]
    if fill:  # the time budget ends the run
        overrides += ["train.epochs=null", "train.iterations=1000000000"]
    overrides += ["train.report=false", "eval.every=null", *extra]
    cfg = load_config(recipe, overrides)
    run_dir = out / f"{recipe}-s{seed}"
    t0 = time.perf_counter()
    result = train(cfg, run_dir, verbose=False)
    wall = time.perf_counter() - t0
    n = 100_000 if kind_of(cfg) == "gaussian" else None  # many points: sampling noise << 5%
    _, metrics = evaluate_run(run_dir, "last", "cpu", n=n)
    m = metrics["metrics"]
    if "mean" in m:  # gaussian-2d: the largest error of one coordinate of the mean
        target = (1.0, 2.0)
        m["max_dmean"] = max(abs(a - b) for a, b in zip(m["mean"], target, strict=True))
    return {"recipe": recipe, "seed": seed, "steps": result["steps"], "wall_s": wall, **m}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("pairs", nargs="+", help="X (X vs X-plus) or X:Y")
    p.add_argument("--seconds", type=float, default=60.0, help="training time per run")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steadiest)")
    p.add_argument("--set", action="append", default=[], help="override for every run")
    p.add_argument("--out", default="runs/bench-plus")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    rows: list[dict] = []
    for pair in args.pairs:
        base, plus = pair.split(":") if ":" in pair else (pair, f"{pair}-plus")
        kind = kind_of(load_config(base))
        cols = COLUMNS[kind]
        head = f"{'recipe':<22} {'seed':>4} {'steps':>8} {'train s':>7}  "
        print(f"\n{base} ({args.seconds:g} s of training) vs {plus} (its length, at most that)")
        print(head + "  ".join(f"{h:>12}" for _, h, _ in cols), flush=True)
        for recipe in (base, plus):
            got = []
            for seed in args.seeds:
                r = run_one(recipe, seed, args.seconds, out, args.set, recipe == base)
                got.append(r)
                rows.append(r)
                cells = "  ".join(f"{f.format(r[k]):>12}" for k, _, f in cols)
                print(
                    f"{recipe:<22} {seed:>4} {r['steps']:>8} {r['wall_s']:>7.1f}  {cells}",
                    flush=True,
                )
            if len(got) > 1:  # mean and worst over seeds
                means = "  ".join(
                    f"{f.format(statistics.mean(r[k] for r in got)):>12}" for k, _, f in cols
                )
                print(f"{recipe + ' (mean)':<22} {'':>4} {'':>8} {'':>7}  {means}")
    (out / "results.json").write_text(json.dumps(rows, indent=1, default=str) + "\n")
    print(f"\nall runs: {out}/results.json")


if __name__ == "__main__":
    main()
