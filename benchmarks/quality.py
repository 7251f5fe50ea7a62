"""Sample-quality benchmark: what the metrics say about real data, vanilla-fmnist and 2-D GANs.

    .venv/bin/python benchmarks/quality.py                       # everything (long on 2 cores)
    .venv/bin/python benchmarks/quality.py --epochs 1,5 --seeds 0  # shorter

Prints, as tables:
  0. (scale) how FD, precision and recall react to noise added to real images;
  1. the real-vs-real floor: Fashion-MNIST train images scored as if generated, against the
     test split (FD, precision, recall, classifier IS, coverage), and evaluation wall times
     (features of n images, FD alone, precision/recall alone, a whole evaluation);
  2. vanilla-fmnist after each of ``--epochs`` (one run, evaluated by the training loop's
     eval hook at each epoch: the same code as ``eval.every``);
  3. ring-8 and grid-25 (PacGAN's baseline GAN) over ``--seeds``: the final and best evaluation.
Runs go to ``--out`` (default runs/bench-quality); nothing here is part of the tests.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from ganforge.config import DataConfig, load_config
from ganforge.data import load_data
from ganforge.data.generated import MIXTURES
from ganforge.engine.loop import train
from ganforge.metrics import frechet, precision_recall
from ganforge.metrics.evaluate import Evaluation


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def table(title: str, rows: list[dict]) -> None:
    """Print rows (dicts with the same keys) as a Markdown table."""
    print(f"\n### {title}\n")
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("|" + "|".join("---" for _ in cols) + "|")
    for r in rows:
        print("| " + " | ".join(_fmt(r[c]) for c in cols) + " |")
    sys.stdout.flush()


def floor(n: int) -> None:
    """Real train images against the real test split, and how long each part takes."""
    cfg = load_config("vanilla-fmnist")
    t0 = time.perf_counter()
    ev = Evaluation(cfg, n=n, reference="test")  # loads the test split and its features
    t_setup = time.perf_counter() - t0
    train_x = load_data(DataConfig(name="fashion-mnist", split="train")).x
    gen = torch.Generator().manual_seed(1)
    fake = train_x[torch.randperm(len(train_x), generator=gen)[:n]]
    t0 = time.perf_counter()
    feats, _ = ev.evaluator.features(fake)
    t_feat = time.perf_counter() - t0
    t0 = time.perf_counter()
    frechet.fd(ev.real_feats, feats)
    t_fd = time.perf_counter() - t0
    t0 = time.perf_counter()
    precision_recall.precision_recall(ev.real_feats, feats)
    t_pr = time.perf_counter() - t0
    t0 = time.perf_counter()
    m = ev.score_images(fake)
    t_all = time.perf_counter() - t0
    table(
        f"Real-vs-real floor: {n:,} Fashion-MNIST train images vs {n:,} test images",
        [
            {
                "FD": m["fd"],
                "precision": m["precision"],
                "recall": m["recall"],
                "IS": m["is"],
                "IS (test)": m["is_real"],
                "coverage": f"{m['coverage']}/{m['classes_expected']}",
                "class KL": m["class_kl"],
            }
        ],
    )
    table(
        f"Evaluation wall time, n = {n:,}, {torch.get_num_threads()} thread(s)",
        [
            {
                "set-up (load test split + its features)": f"{t_setup:.2f} s",
                "features of n images": f"{t_feat:.2f} s",
                "FD from features": f"{t_fd:.3f} s",
                "precision/recall from features (both radii)": f"{t_pr:.2f} s",
                "whole evaluation (fd,pr,is,coverage; reference radii cached)": f"{t_all:.2f} s",
            }
        ],
    )


def scale(n: int = 3000) -> None:
    """How FD / precision / recall react to noise added to real train images (vs test)."""
    from ganforge.metrics.features import load_evaluator

    ev = load_evaluator("fashion-mnist")
    test = load_data(DataConfig(name="fashion-mnist", split="test")).x[:n]
    train_x = load_data(DataConfig(name="fashion-mnist")).x[:n]
    ft, _ = ev.features(test)
    gen = torch.Generator().manual_seed(0)
    variants = {}
    for std in (0, 10, 30, 60):
        x = train_x.float() + std * torch.randn(train_x.shape, generator=gen)
        variants[f"Gaussian noise std {std}"] = x.clamp(0, 255).byte()
    salt = train_x.clone()
    salt[torch.rand(salt.shape, generator=gen) < 0.05] = 255
    variants["5% white pixels"] = salt
    rows = []
    for name, x in variants.items():
        f, _ = ev.features(x)
        pr = precision_recall.precision_recall(ft, f)
        rows.append({"train images": name, "FD": frechet.fd(ft, f), **pr})
    table(f"FD scale: {n:,} train images, changed, vs {n:,} test images", rows)


def vanilla(epochs: list[int], out: Path, n: int) -> None:
    """One vanilla-fmnist run to max(epochs), evaluated at the end of every epoch."""
    spe = 60_000 // 128
    last = max(epochs)
    cfg = load_config(
        "vanilla-fmnist",
        [f"train.epochs={last}", f"eval.every={spe}", f"eval.n={n}", "train.log_every=200"],
    )
    run = out / "vanilla-fmnist"
    t0 = time.perf_counter()
    train(cfg, run, verbose=False)
    wall = time.perf_counter() - t0
    recs = [json.loads(ln) for ln in (run / "log.jsonl").read_text().splitlines()]
    rows = []
    for r in recs:
        if "eval" in r and r["step"] // spe in epochs and r["step"] % spe == 0:
            e = r["eval"]
            rows.append(
                {
                    "epoch": r["step"] // spe,
                    "FD": e["fd"],
                    "precision": e["precision"],
                    "recall": e["recall"],
                    "IS": e["is"],
                    "coverage": f"{e['coverage']}/{e['classes_expected']}",
                    "class KL": e["class_kl"],
                    "eval time": f"{e['eval_s']:.1f} s",
                }
            )
    table(f"vanilla-fmnist, n = {n:,} vs test (run: {wall / 60:.1f} min for {last} epochs)", rows)


def toy(names: list[str], seeds: list[int], out: Path, overrides: list[str]) -> None:
    """ring-8 / grid-25 over seeds (seed by seed, so partial results come early): the last
    evaluation and the best one."""
    rows: dict[str, list[dict]] = {name: [] for name in names}
    for seed in seeds:
        for name in names:
            cfg = load_config(name, [f"train.seed={seed}", *overrides])
            run = out / f"{name}-seed{seed}"
            t0 = time.perf_counter()
            train(cfg, run, verbose=False)
            wall = time.perf_counter() - t0
            evals = [json.loads(ln) for ln in (run / "log.jsonl").read_text().splitlines()]
            evals = [r for r in evals if "eval" in r]
            final, best = evals[-1]["eval"], [r for r in evals if r["best"]][-1]
            row = {
                "seed": seed,
                "steps": evals[-1]["step"],
                "modes (final)": final["modes"],
                "HQ % (final)": final["hq"],
                "reverse KL (final)": final["reverse_kl"],
                "modes (best)": best["eval"]["modes"],
                "HQ % (best)": best["eval"]["hq"],
                "best at step": best["step"],
                "wall": f"{wall:.0f} s",
            }
            rows[name].append(row)
            print(f"{name} {row}", flush=True)
    for name in names:
        done = rows[name]
        mean = {k: "" for k in done[0]}
        mean["seed"] = "mean"
        for k in ("modes (final)", "HQ % (final)", "reverse KL (final)", "modes (best)"):
            mean[k] = statistics.mean(r[k] for r in done)
        mean["HQ % (best)"] = statistics.mean(r["HQ % (best)"] for r in done)
        k = len(MIXTURES[name][0])
        table(
            f"{name} ({k} modes): PacGAN's baseline GAN, 2,500 points per evaluation", [*done, mean]
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=10_000, help="images per evaluation")
    p.add_argument("--epochs", default="1,5,20", help="vanilla-fmnist epochs to report")
    p.add_argument("--seeds", default="0,1,2", help="seeds of the 2-D runs")
    p.add_argument("--parts", default="floor,scale,vanilla,toy", help="which tables")
    p.add_argument("--toy", default="ring-8,grid-25", help="2-D recipes")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="2-D overrides")
    p.add_argument("--out", default="runs/bench-quality", type=Path)
    args = p.parse_args()
    parts = args.parts.split(",")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    if "floor" in parts:
        floor(args.n)
    if "scale" in parts:
        scale()
    if "vanilla" in parts:
        vanilla([int(e) for e in args.epochs.split(",")], args.out, args.n)
    if "toy" in parts:
        seeds = [int(s) for s in args.seeds.split(",")]
        toy(args.toy.split(","), seeds, args.out, args.overrides)


if __name__ == "__main__":
    main()
