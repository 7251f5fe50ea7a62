"""Recipes on real colour images that ship with Debian: the icon themes (not a test).

    PYTHONPATH=src .venv/bin/python benchmarks/icons.py --recipes folder-plus   # one process
    PYTHONPATH=src .venv/bin/python benchmarks/icons.py --recipes dcgan-64      # another
    PYTHONPATH=src .venv/bin/python benchmarks/icons.py --figure-only           # the figure

Copies the full-colour PNGs of /usr/share/icons (every theme's non-symbolic icons, 48 px and
larger) into ``OUT/icons``, trains each recipe on that folder through the library for
``--cpu-seconds`` of process CPU time (``train.max_cpu_seconds``, one thread; the recipes
unchanged otherwise) and draws a figure: real icons, then 32 samples of each recipe's
sampling G (the EMA where the recipe keeps one), as a user would see them after that budget,
and prints how near 256 samples of each come to the training icons (copies or not).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch
from PIL import Image

import ganforge
from ganforge.config import DataConfig
from ganforge.data import load_data


def icon_folder(src: Path, out: Path, min_side: int = 48) -> Path:
    """The colour icons under ``src`` (no symbolic glyphs) of at least ``min_side`` pixels,
    copied flat into ``out`` (once); names keep their theme/size/context path."""
    if (out / ".complete").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for p in sorted(src.rglob("*.png")):
        if "symbolic" in p.name or not p.is_file():
            continue
        try:
            with Image.open(p) as im:
                if min(im.size) < min_side:
                    continue
        except OSError:
            continue
        shutil.copyfile(p, out / "_".join(p.relative_to(src).parts))
        n += 1
    (out / ".complete").write_text(f"{n}\n")
    print(f"{n} colour icons of {min_side} px or more from {src} in {out}", flush=True)
    return out


def train(recipe: str, folder: Path, out: Path, cpu_s: float, seed: int) -> None:
    """Train ``recipe`` on the icons for ``cpu_s`` process CPU seconds (one thread)."""
    run_dir = out / recipe
    if (run_dir / "done.json").is_file():
        print(f"{run_dir}: trained before, kept")
        return
    t0, c0 = time.perf_counter(), time.process_time()
    run = ganforge.train(
        recipe,
        data=str(folder),
        out=run_dir,
        # grids and checkpoints every 200 steps for both: dcgan-64's epoch of 432 icons is
        # one step (batch 256), and a grid and checkpoint per step would eat its budget
        train={
            "threads": 1,
            "seed": seed,
            "max_cpu_seconds": cpu_s,
            "device": "cpu",
            "sample_every": 200,
            "iterations": 1_000_000,  # the CPU budget ends the run
        },
        verbose=False,
    )
    done = {
        "recipe": recipe,
        "steps": run.result["steps"],
        "cpu_s": round(time.process_time() - c0, 1),
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    (run_dir / "done.json").write_text(json.dumps(done) + "\n")
    print(json.dumps(done), flush=True)


def nearest(x: torch.Tensor, real: torch.Tensor, itself: bool = False) -> str:
    """How close images come to the training icons: the L2 distance (64x64x3 in [0, 1]) of
    each to its nearest icon (``itself``: to its nearest other icon), median and low end.
    A G that copies icons has a low end near 0."""
    d = torch.cdist(x.float().flatten(1) / 255, real.float().flatten(1) / 255)
    if itself:
        d.fill_diagonal_(float("inf"))
    near = d.min(1).values
    return (
        f"distance to the nearest icon, median {near.median():.1f}, "
        f"10th percentile {near.quantile(0.1):.1f}, least {near.min():.1f}"
    )


def figure(folder: Path, out: Path, recipes: list[str], path: Path) -> None:
    """Real icons, then each trained recipe's samples, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from torchvision.utils import make_grid

    real = load_data(DataConfig(name="image-folder", path=str(folder), size=64, channels=3)).x
    pick = torch.randperm(len(real), generator=torch.Generator().manual_seed(0))[:32]
    panels = [("real icons", real[pick])]
    for recipe in recipes:
        done = json.loads((out / recipe / "done.json").read_text())
        run = ganforge.load(out / recipe, "last", device="cpu")
        title = f"{recipe}: {done['cpu_s'] / 60:.0f} CPU-min, {done['steps']:,} steps"
        panels.append((title, run.images(32, seed=0)))
        print(f"{recipe}: {nearest(run.images(256, seed=0), real)}")
    print(f"real icons: {nearest(real, real, itself=True)}")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 2.6))
    for ax, (title, x) in zip(axes, panels, strict=True):
        ax.imshow(make_grid(x, nrow=8, padding=1).permute(1, 2, 0).numpy())
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"figure: {path}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipes", default="folder-plus,dcgan-64")
    p.add_argument("--cpu-seconds", type=float, default=1800.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--icons", type=Path, default=Path("/usr/share/icons"))
    p.add_argument("--out", type=Path, default=Path("runs/bench-icons"))
    p.add_argument("--figure", type=Path, default=Path("docs/images/icons-30min.png"))
    p.add_argument("--figure-only", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(1)
    folder = icon_folder(a.icons, a.out / "icons")
    recipes = a.recipes.split(",")
    if not a.figure_only:
        for recipe in recipes:
            train(recipe, folder, a.out, a.cpu_seconds, a.seed)
    if all((a.out / r / "done.json").is_file() for r in recipes):
        figure(folder, a.out, recipes, a.figure)


if __name__ == "__main__":
    main()
