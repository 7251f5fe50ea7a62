"""Streaming an image folder from disk against holding it in memory (not a test).

Writes N generated 64x64 PNGs (smooth random colour fields, seeded) into a folder, then trains
a recipe (folder-plus by default: its fast step is the harder test of whether decoding keeps
up) on it in both modes, each run in its own process, the modes interleaved ``--repeat``
times: in memory (data.stream=never) and streamed with data.memory_limit well below the
decoded size. Prints, per mode: peak RSS of the process, the decoded size against the limit,
images/s of the training steps (the run's own img/s; the first step, and the in-memory
decoding, are outside it) and images per CPU-second of the training steps (process CPU time,
the decoding threads included), the rate another job on a shared machine does not change.

Usage: .venv/bin/python benchmarks/stream.py [--recipe folder-plus] [--n 50000] [--steps 30]
       [--batch 64] [--limit-gib 0.1] [--repeat 2] [--device cpu] [--dir DIR (keep the PNGs)]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

CHILD = """
import json, resource, sys, time
import ganforge
args = json.loads(sys.argv[1])

class Clock(ganforge.Callback):
    # process CPU seconds and images from the end of the first step to the end of the run
    def on_step_end(self, state, out):
        if not hasattr(self, "t0"):
            self.t0, self.step0 = time.process_time(), state.step
        self.t1, self.step1 = time.process_time(), state.step

t0, clock = time.process_time(), Clock()
run = ganforge.train(args["recipe"], data=args["dir"], out=args["out"], verbose=False,
                     overrides=args["overrides"], callbacks=[clock])
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
images = (clock.step1 - clock.step0) * args["batch"]
print(json.dumps({"img_s": run.result["img_s"], "wall_s": run.result["wall_s"],
                  "img_cpu_s": images / (clock.t1 - clock.t0),
                  "rss": rss, "cpu_s": time.process_time() - t0}))
"""


def make_pngs(root: Path, n: int, size: int = 64) -> None:
    """``n`` seeded smooth colour fields (an 8x8 random image up-scaled) as PNGs."""
    root.mkdir(parents=True, exist_ok=True)
    have = len(list(root.glob("*.png")))
    rng = np.random.default_rng(0)
    for i in range(n):
        small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        if i >= have:
            Image.fromarray(small).resize((size, size), Image.BILINEAR).save(root / f"{i:06d}.png")


def run(folder: Path, out: Path, recipe: str, batch: int, overrides: list[str]) -> dict:
    """One training process; its JSON line of results."""
    args = {"dir": str(folder), "out": str(out), "recipe": recipe, "batch": batch}
    args["overrides"] = overrides
    done = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(args)], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(done.stderr.strip().splitlines()[-1])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--recipe", default="folder-plus")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--n", type=int, default=50_000)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--limit-gib", type=float, default=0.1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dir", default=None)
    args = p.parse_args()
    work = Path(args.dir or tempfile.mkdtemp(prefix="ganforge-stream-"))
    folder = work / "pngs"
    t0 = time.perf_counter()
    make_pngs(folder, args.n)
    decoded = args.n * 3 * 64 * 64 / 2**30
    print(f"{args.n:,} PNGs of 64x64 in {folder} ({time.perf_counter() - t0:.0f} s to make); "
          f"decoded {decoded:.2f} GiB; limit {args.limit_gib} GiB")  # fmt: skip
    common = [
        f"train.iterations={args.steps}",
        f"train.batch_size={args.batch}",
        f"train.device={args.device}",
        f"train.threads={args.threads}",
        "train.report=false",
        f"train.checkpoint_every={args.steps}",
        f"train.sample_every={args.steps}",
    ]
    results: dict[str, list[dict]] = {"streamed": [], "in memory": []}
    for _ in range(args.repeat):
        for mode, extra in (
            ("streamed", ["data.stream=auto", f"data.memory_limit={args.limit_gib}"]),
            ("in memory", ["data.stream=never"]),
        ):
            out = work / f"run-{mode.replace(' ', '-')}-{time.time_ns()}"
            results[mode].append(run(folder, out, args.recipe, args.batch, common + extra))
    print(f"{args.recipe}, batch {args.batch}, {args.steps} steps, {args.repeat} runs per mode")
    print(f"{'mode':>10} {'peak RSS MiB':>13} {'images/s':>9} {'images/CPU-s':>13} "
          f"{'train wall s':>13} {'CPU s':>7}")  # fmt: skip
    for mode, rs in results.items():
        for r in rs:
            print(f"{mode:>10} {r['rss'] / 2**20:>13,.0f} {r['img_s']:>9,.1f} "
                  f"{r['img_cpu_s']:>13,.1f} {r['wall_s']:>13.1f} {r['cpu_s']:>7.1f}")  # fmt: skip

    def best(mode: str, key: str) -> float:
        return max(r[key] for r in results[mode])

    ratio = best("streamed", "img_s") / best("in memory", "img_s")
    cpu_ratio = best("streamed", "img_cpu_s") / best("in memory", "img_cpu_s")
    saved = (
        min(r["rss"] for r in results["in memory"]) - max(r["rss"] for r in results["streamed"])
    ) / 2**20
    print(
        f"streamed / in memory, best of each: images/s {ratio:.2f}, images per CPU-second "
        f"{cpu_ratio:.2f}; RSS saved by streaming: {saved:,.0f} MiB"
    )


if __name__ == "__main__":
    main()
