"""Sample quality against CPU time: learning curves of the Fashion-MNIST recipes.

    PYTHONPATH=src .venv/bin/python benchmarks/curves.py                  # every recipe, n=10,000
    PYTHONPATH=src .venv/bin/python benchmarks/curves.py --marks 60,180,360 --n 5000 \\
        --recipes vanilla-fmnist,cgan-fmnist                              # some of them
    PYTHONPATH=src .venv/bin/python benchmarks/curves.py --report-only \
        --plot docs/images/curves-fmnist.png          # table + plot again (default OUT/curves.png)

Each recipe (and seed) is trained through the library (``ganforge.train``, one thread) until
its process has spent the last mark's CPU seconds (``train.max_cpu_seconds``, a little over the
last mark). A callback copies the sampling generator (the EMA of G where the recipe keeps one)
to ``RUN/marks/cpu-XXXXX.safetensors`` at the first step past each mark of *training* CPU time:
process CPU time (``time.process_time``) since the first step, less the time spent writing
these copies, so another job on the machine does not change where the marks fall. The loop's
own sample grids, checkpoints and report count, as for any user of the recipe. After training,
the copies are evaluated (FD, precision/recall, coverage; ``ganforge.metrics.evaluate``) on
``--n`` samples against as many test images, so evaluation never counts toward a mark.

Results: ``OUT/<recipe>-s<seed>/curve.json`` per run; then every curve.json under ``--out`` is
printed as one Markdown table (wall seconds beside the CPU seconds) and drawn as FD against
CPU-minutes (log scale, one line per recipe: the mean over seeds, seeds as dots) with the
real-vs-real floor at the same n. Two of these processes may run at once on different recipes;
``--report-only`` then joins them. Nothing here is part of the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

import ganforge
from ganforge.config import DataConfig, load_config
from ganforge.data import load_data, to_uint8
from ganforge.metrics.evaluate import Evaluation

DATA = "fashion-mnist"
RECIPES = (
    "vanilla-fmnist",
    "vanilla-fmnist-plus",
    "dcgan-mnist",
    "dcgan-fmnist-plus",
    "cgan-fmnist",
)
METRICS = ("fd", "pr", "coverage")


class Marks(ganforge.Callback):
    """Copy the sampling G at the first step past each mark of training CPU seconds."""

    def __init__(self, marks: list[float], folder: Path) -> None:
        self.todo, self.folder, self.done = sorted(marks), folder, []
        self.cpu0 = self.wall0 = self.excluded = 0.0

    def on_train_start(self, state: Any) -> None:
        """Start both clocks at the first step."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.cpu0, self.wall0 = time.process_time(), time.perf_counter()

    def cpu(self) -> float:
        """Training CPU seconds so far: process CPU time less the time of these copies."""
        return time.process_time() - self.cpu0 - self.excluded

    def on_step_end(self, state: Any, out: dict[str, torch.Tensor]) -> None:
        """Copy G when the clock passes the next mark."""
        if self.todo and self.cpu() >= self.todo[0]:
            self.save(state)

    def on_train_end(self, state: Any) -> None:
        """A run that ended (budget or length) before a mark: copy G once more, as it ends."""
        if self.todo:
            self.save(state)

    def save(self, state: Any) -> None:
        """Write G's weights for the next mark (atomically) and note the clocks and step."""
        t0 = time.process_time()
        cpu, wall = self.cpu(), time.perf_counter() - self.wall0
        mark = self.todo.pop(0)
        weights = {
            k: v.detach().cpu().contiguous() for k, v in state.models.sampler().state_dict().items()
        }
        path = self.folder / f"cpu-{mark:05.0f}.safetensors"
        tmp = path.with_suffix(".tmp")
        save_file(weights, str(tmp))
        os.replace(tmp, path)
        self.done.append(
            {
                "mark": mark,
                "cpu_s": round(cpu, 1),
                "wall_s": round(wall, 1),
                "step": state.step,
                "file": path.name,
            }
        )
        self.excluded += time.process_time() - t0


def label(name: str) -> str:
    """A run's name in the table and plot (recipe and tag); a recipe made for other data
    says that it trained on Fashion-MNIST (or on the Fashion-MNIST folder)."""
    if name.endswith(FOLDER_TAG):
        return name
    recipe = name.split("+")[0]
    return name if load_config(recipe).data.name == DATA else f"{name} (on {DATA})"


FOLDER_TAG = " (64x64 RGB folder)"


def write_folder(root: Path, size: int = 64) -> Path:
    """Fashion-MNIST's training split as ``size`` x ``size`` RGB PNGs in ``root`` (once):
    bicubic up-sampling, the gray value in all three channels."""
    from PIL import Image

    done = root / ".complete"
    if done.is_file():
        return root
    root.mkdir(parents=True, exist_ok=True)
    x = load_data(replace(DataConfig(name=DATA), split="train")).x  # uint8 (60000, 1, 28, 28)
    for i, img in enumerate(x[:, 0].numpy()):
        im = Image.fromarray(img, "L").resize((size, size), Image.Resampling.BICUBIC)
        im.convert("RGB").save(root / f"{i:05d}.png")
    done.write_text(f"{len(x)}\n")
    print(f"wrote {len(x):,} {size}x{size} RGB PNGs to {root}", flush=True)
    return root


class ToFashion(torch.nn.Module):
    """A folder G whose samples come out as (N, 1, 28, 28) (``to_fashion``), so that the
    Fashion-MNIST evaluator can score them."""

    def __init__(self, g: torch.nn.Module) -> None:
        super().__init__()
        self.g = g

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return to_fashion(self.g(z))


def to_fashion(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, H) in [-1, 1] -> (N, 1, 28, 28): the channels' mean, then antialiased bicubic
    down-sampling (of the mappings tried, the one that loses least of the real images: the
    folder floor at n=5,000 is FD 4.5 with it, 9.5 bilinear, 10.3 area-averaged)."""
    x = x.mean(1, keepdim=True)
    x = torch.nn.functional.interpolate(x, size=(28, 28), mode="bicubic", antialias=True)
    return x.clamp(-1, 1)


def train_one(
    recipe: str,
    seed: int,
    marks: list[float],
    out: Path,
    sets: tuple[str, ...] = (),
    tag: str = "",
    folder: Path | None = None,
) -> Path:
    """Train ``recipe`` (with ``sets`` overrides, named ``recipe+tag``; on ``folder`` when
    given) for the last mark's CPU seconds; return its run directory."""
    name = recipe + (f"+{tag}" if tag else "") + (FOLDER_TAG if folder else "")
    slug = recipe + (f"+{tag}" if tag else "") + ("-folder" if folder else "")
    run_dir = out / f"{slug}-s{seed}"
    if (run_dir / "marks.json").is_file():
        print(f"{run_dir}: trained before, kept", flush=True)
        return run_dir
    if run_dir.exists():
        sys.exit(
            f"curves.py: error: {run_dir} holds an unfinished run; move it away or choose --out"
        )
    cfg = load_config(recipe)
    data = {} if cfg.data.name == DATA else {"name": DATA}  # dcgan-mnist: on Fashion-MNIST
    if folder is not None:
        data = {"name": "image-folder", "path": str(folder)}
    budget = max(marks) * 1.02 + 3  # the copy at the last mark comes first (see Marks)
    hook = Marks(marks, run_dir / "marks")
    t0 = time.perf_counter()
    run = ganforge.train(
        recipe,
        out=run_dir,
        data=data or None,
        train={"threads": 1, "seed": seed, "max_cpu_seconds": budget, "device": "cpu"},
        callbacks=[hook],
        overrides=list(sets),
        verbose=False,
    )
    summary = {
        "recipe": name,
        "sets": list(sets),
        "folder": str(folder) if folder else None,
        "seed": seed,
        "data": DATA,
        "steps": run.result["steps"],
        "wall_s": round(time.perf_counter() - t0, 1),
        "marks": hook.done,
    }
    (run_dir / "marks.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(
        f"{recipe} seed {seed}: {run.result['steps']} steps, at {[m['cpu_s'] for m in hook.done]}",
        flush=True,
    )
    return run_dir


def evaluate_one(run_dir: Path, n: int) -> dict[str, Any]:
    """Score every mark's copy of G; write and return curve.json."""
    summary = json.loads((run_dir / "marks.json").read_text())
    run = ganforge.load(run_dir, "last", device="cpu")
    g = run.generator
    if summary.get("folder"):  # score as 28x28 grayscale against Fashion-MNIST's test split
        fashion = load_config("vanilla-fmnist")
        ev = Evaluation(replace(fashion, model=run.config.model), metrics=METRICS, n=n)
        g = ToFashion(run.generator)
    else:
        ev = Evaluation(run.config, metrics=METRICS, n=n)
    rows = []
    for m in summary["marks"]:
        run.generator.load_state_dict(load_file(str(run_dir / "marks" / m["file"])))
        v = ev(g)
        rows.append(
            {
                **m,
                "fd": v["fd"],
                "precision": v["precision"],
                "recall": v["recall"],
                "coverage": v["coverage"],
                "classes": v["classes_expected"],
                **({"class_acc": v["class_acc"]} if "class_acc" in v else {}),
            }
        )
        print(f"  {run_dir.name} {m['mark']:.0f} CPU-s: FD {v['fd']:.1f}", flush=True)
    curve = {**summary, "n": n, "rows": rows}
    (run_dir / "curve.json").write_text(json.dumps(curve, indent=1) + "\n")
    return curve


def real_floor(n: int, out: Path) -> dict[str, float]:
    """Real-vs-real at n: n train images scored as samples against n test images (cached)."""
    path = out / f"floor-n{n}.json"
    if path.is_file():
        return json.loads(path.read_text())
    cfg = load_config("vanilla-fmnist")
    ev = Evaluation(cfg, metrics=METRICS, n=n)
    x = load_data(replace(DataConfig(name=DATA), split="train")).x
    x = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(1))[:n]]
    v = ev.score(x)
    floor = {k: v[k] for k in ("fd", "precision", "recall", "coverage")}
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(floor) + "\n")
    return floor


def folder_floor(n: int, out: Path, folder: Path) -> dict[str, float]:
    """The folder protocol's own floor: the same n train images as ``real_floor``, read back
    from their 64x64 RGB PNGs and mapped to 28x28 gray as samples are (``ToFashion``), scored
    against n test images (cached). What the round trip through the folder costs."""
    import numpy as np
    from PIL import Image

    path = out / f"floor-folder-n{n}.json"
    if path.is_file():
        return json.loads(path.read_text())
    ev = Evaluation(load_config("vanilla-fmnist"), metrics=METRICS, n=n)
    pick = torch.randperm(60_000, generator=torch.Generator().manual_seed(1))[:n]
    rgb = np.stack([np.asarray(Image.open(folder / f"{i:05d}.png")) for i in pick.tolist()])
    x = torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 127.5 - 1  # (n, 3, 64, 64)
    v = ev.score(to_uint8(to_fashion(x)))
    floor = {k: v[k] for k in ("fd", "precision", "recall", "coverage")}
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(floor) + "\n")
    return floor


def _spread(values: list[float], digits: int) -> str:
    """The mean, with the range (min-max) over seeds when there are several."""
    mean = statistics.mean(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def report(out: Path, n: int, plot: Path, table_path: Path | None) -> None:
    """Join every curve.json under ``out`` (at this n) into a table and a plot."""
    curves = [json.loads(p.read_text()) for p in sorted(out.glob("*/curve.json"))]
    curves = [c for c in curves if c["n"] == n]
    if not curves:
        sys.exit(f"curves.py: error: no curve.json with n={n} under {out}; train first")
    floor = real_floor(n, out)
    folders = {c["folder"] for c in curves if c.get("folder")}
    by_recipe: dict[str, dict[float, list[dict]]] = {}
    for c in curves:
        for r in c["rows"]:
            by_recipe.setdefault(c["recipe"], {}).setdefault(r["mark"], []).append(r)
    order = [r for r in RECIPES if r in by_recipe] + sorted(set(by_recipe) - set(RECIPES))
    lines = [
        f"FD, precision, recall (k=3) and class coverage on {n:,} samples against {n:,} test "
        f"images; real-vs-real floor at this n: FD {floor['fd']:.3f}, precision "
        f"{floor['precision']:.3f}, recall {floor['recall']:.3f}, {floor['coverage']}/10 classes.",
        *(
            f"Through the folder (real 64x64 RGB PNGs mapped back to 28x28 gray as samples are): "
            f"FD {f['fd']:.3f}, precision {f['precision']:.3f}, recall {f['recall']:.3f}, "
            f"{f['coverage']}/10 classes."
            for f in (folder_floor(n, out, Path(d)) for d in sorted(folders))
        ),
        "",
        "| recipe | seeds | mark (CPU s) | CPU s | wall s | steps | FD | precision | recall "
        "| classes (min-max) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for recipe in order:
        for mark, rows in sorted(by_recipe[recipe].items()):
            name = label(recipe)
            cells = [
                name,
                str(len(rows)),
                f"{mark:.0f}",
                f"{statistics.mean(r['cpu_s'] for r in rows):.0f}",
                _spread([r["wall_s"] for r in rows], 0),
                _spread([r["step"] for r in rows], 0),
                _spread([r["fd"] for r in rows], 1),
                _spread([r["precision"] for r in rows], 3),
                _spread([r["recall"] for r in rows], 3),
                "-".join(sorted({str(r["coverage"]) for r in rows}, key=int))
                + f"/{rows[0]['classes']}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print("\n" + text + "\n", flush=True)
    if table_path is not None:
        table_path.parent.mkdir(parents=True, exist_ok=True)
        table_path.write_text(text + "\n")
    draw(by_recipe, order, floor, n, plot)


def draw(
    by_recipe: dict[str, dict[float, list[dict]]], order: list[str], floor: dict, n: int, plot: Path
) -> None:
    """FD against CPU-minutes, log scale; the mean over seeds as a line, seeds as dots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for recipe in order:
        marks = sorted(by_recipe[recipe])
        x = [statistics.mean(r["cpu_s"] for r in by_recipe[recipe][m]) / 60 for m in marks]
        y = [statistics.mean(r["fd"] for r in by_recipe[recipe][m]) for m in marks]
        (line,) = ax.plot(x, y, marker="o", label=label(recipe))
        for m in marks:
            rows = by_recipe[recipe][m]
            if len(rows) > 1:
                ax.scatter(
                    [r["cpu_s"] / 60 for r in rows],
                    [r["fd"] for r in rows],
                    s=8,
                    color=line.get_color(),
                    alpha=0.5,
                )
    ax.axhline(floor["fd"], color="k", linestyle="--", linewidth=1, label=f"real vs real (n={n:,})")
    ax.set_yscale("log")
    ax.set_xlabel("CPU-minutes of the training process (1 thread)")
    ax.set_ylabel(f"FD (evaluator features, n={n:,})")
    ax.set_title("Fashion-MNIST recipes: FD against CPU time")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    plot.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(plot, dpi=110)
    print(f"plot: {plot}", flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated recipe names")
    p.add_argument("--marks", default="60,180,360,900,1800", help="CPU seconds, comma-separated")
    p.add_argument("--seeds", default="0", help="train.seed values, comma-separated")
    p.add_argument("--n", type=int, default=10_000, help="samples (and test images) per evaluation")
    p.add_argument("--out", type=Path, default=Path("runs/bench-curves"))
    p.add_argument("--plot", type=Path, default=None, help="the figure (default OUT/curves.png)")
    p.add_argument("--table", type=Path, default=None, help="also write the table to this file")
    p.add_argument("--report-only", action="store_true", help="no training: table and plot")
    p.add_argument("--set", action="append", default=[], help="a config override (repeatable)")
    p.add_argument("--tag", default="", help="names runs made with --set: RECIPE+TAG")
    p.add_argument(
        "--folder",
        type=Path,
        default=None,
        help="train on Fashion-MNIST written here as 64x64 RGB PNGs (made once); samples are "
        "scored as 28x28 grayscale",
    )
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    if not a.report_only:
        marks = [float(m) for m in a.marks.split(",")]
        for recipe in a.recipes.split(","):
            for seed in (int(s) for s in a.seeds.split(",")):
                folder = write_folder(a.folder) if a.folder else None
                run_dir = train_one(recipe, seed, marks, a.out, tuple(a.set), a.tag, folder)
                curve = run_dir / "curve.json"
                if not curve.is_file() or json.loads(curve.read_text())["n"] != a.n:
                    evaluate_one(run_dir, a.n)
    report(a.out, a.n, a.plot or a.out / "curves.png", a.table)


if __name__ == "__main__":
    main()
