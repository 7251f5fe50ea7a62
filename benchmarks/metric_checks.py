"""Does the metric or the generator cause near-zero recall? The metrics on known cases.

    PYTHONPATH=src .venv/bin/python benchmarks/metric_checks.py --n 5000
    PYTHONPATH=src .venv/bin/python benchmarks/metric_checks.py --n 5000 \\
        --runs runs/bench-curves                # add the samples of benchmarks/curves.py's runs

The reference is one half of the Fashion-MNIST test split (``--n`` images, the evaluation's
protocol otherwise: evaluator features, k = 3); each case is ``--n`` images scored as if
generated:
  - the other half of the test split, and n train images (real vs real: the floor);
  - n train images blurred (Gaussian, several sigmas): realistic shapes, lost detail;
  - n train images of 1, 2 or 5 classes only: known mode dropping;
  - with ``--runs``: the last mark's copy of G of each run there (n samples, seeded noise).
Beside FD, precision, recall and class coverage, it prints recall at k = 10 and the median
k-NN radius (k = 3) of each set over the reference's: a set whose points crowd together
(radius ratio << 1) has small balls, so few real points fall inside them and recall is low
even when every sample is realistic. Nothing here is part of the tests.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torchvision.transforms.functional import gaussian_blur

import ganforge
from ganforge.config import DataConfig, load_config
from ganforge.data import TensorData, load_data
from ganforge.metrics.evaluate import Evaluation
from ganforge.metrics.precision_recall import knn_radii, precision_recall

METRICS = ("fd", "pr", "coverage")


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """uint8 images blurred by a Gaussian of ``sigma`` pixels (kernel about 6 sigma wide)."""
    k = 2 * int(3 * sigma) + 1
    return gaussian_blur(x.float(), [k, k], [sigma, sigma]).round().clamp(0, 255).byte()


def cases(n: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """The known cases: uint8 image sets of n images (train split, seeded subsets)."""
    train = load_data(DataConfig(name="fashion-mnist", split="train"))
    x, y = train.x, train.labels
    assert y is not None
    pick = torch.randperm(len(x), generator=gen)[:n]
    out = {"n train images": x[pick]}
    for sigma in (0.5, 1.0, 1.5, 2.0, 3.0):
        out[f"train, blurred (sigma {sigma} px)"] = blur(x[pick], sigma)
    for classes in ((0,), (1,), (0, 1), (0, 1, 2, 3, 4)):
        idx = torch.nonzero(torch.isin(y, torch.tensor(classes))).squeeze(1)
        idx = idx[torch.randperm(len(idx), generator=gen)[:n]]
        out[f"train, classes {','.join(map(str, classes))} only"] = x[idx]
    return out


def run_samples(runs: Path, ev: Evaluation) -> dict[str, torch.Tensor]:
    """n samples of the last mark's G of every run of benchmarks/curves.py under ``runs``."""
    out = {}
    for marks in sorted(runs.glob("*/marks.json")):
        info = json.loads(marks.read_text())
        last = info["marks"][-1]
        run = ganforge.load(marks.parent, "last", device="cpu")
        run.generator.load_state_dict(load_file(str(marks.parent / "marks" / last["file"])))
        this = copy.copy(ev)  # the same reference; the run's noise size and labels
        this.cfg = run.config
        out[f"{info['recipe']} at {last['cpu_s']:.0f} CPU-s"] = this.sample(run.generator)
    return out


def check(ev: Evaluation, x: torch.Tensor, real_r3: torch.Tensor) -> dict[str, Any]:
    """The metrics of ``x``, recall at k = 10 and the median k-NN radius ratio (k = 3)."""
    v = ev.score(x)
    feats, _ = ev.evaluator.features(x)
    feats = feats.float()
    r10 = precision_recall(ev.real_feats, feats, k=10)
    ratio = float(knn_radii(feats).median() / real_r3.median())
    return {
        "FD": v["fd"],
        "precision": v["precision"],
        "recall": v["recall"],
        "recall k=10": r10["recall"],
        "radius ratio": ratio,
        "classes": f"{v['coverage']}/{v['classes_expected']}",
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=5000, help="images per set (at most 5,000: halves)")
    p.add_argument("--runs", type=Path, default=None, help="benchmarks/curves.py's --out")
    p.add_argument("--no-known", action="store_true", help="only the runs' samples (--runs)")
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    a = p.parse_args(argv)
    if not 10 < a.n <= 5000:
        sys.exit("metric_checks.py: error: --n must be in (10, 5000]: each half of the test split")
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    test = load_data(DataConfig(name="fashion-mnist", split="test"))
    order = torch.randperm(len(test.x), generator=gen)
    half_a, half_b = test.x[order[:5000]][: a.n], test.x[order[5000:]][: a.n]
    cfg = load_config("vanilla-fmnist")
    ev = Evaluation(cfg, metrics=METRICS, n=a.n, real=TensorData(half_a, None, ""))
    real_r3 = knn_radii(ev.real_feats.float())
    sets = {} if a.no_known else {"test, other half (real vs real)": half_b, **cases(a.n, gen)}
    if a.runs is not None:
        sets.update(run_samples(a.runs, ev))
    rows = []
    for name, x in sets.items():
        rows.append({"set scored as generated": name, **check(ev, x, real_r3)})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(f"\nReference: {a.n:,} test images (one half of the test split); k = 3 unless said\n")
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("|" + "|".join("---" for _ in cols) + "|")
    for r in rows:
        cells = [f"{v:.3f}" if isinstance(v, float) and k != "FD" else v for k, v in r.items()]
        cells = [f"{c:.1f}" if isinstance(c, float) else str(c) for c in cells]
        print("| " + " | ".join(cells) + " |")
    if a.json is not None:
        a.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
