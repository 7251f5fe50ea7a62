"""Images/s of one recipe on 1, 2, ... CPU processes (torchrun + gloo): prints a table.

Each world size trains the same recipe for the same number of steps with the same global
batch (so every row does the same work) and reports the img/s of the log records after the
first (start-up and the first steps excluded). Not a test. The machine's load average is
printed, since a shared machine skews these numbers.

Usage: .venv/bin/python benchmarks/distributed.py [--recipe vanilla-fmnist]
           [--data /usr/share/datasets/fashion-mnist] [--iterations 300] [--nproc 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")


def run(nproc: int, args: argparse.Namespace, out: Path) -> float:
    """Train on ``nproc`` processes into ``out``; the mean img/s after the first record."""
    train = ["-m", "ganforge", "train", "-r", args.recipe, "--out", str(out), "-q"]
    train += ["--device", "cpu", "--set", f"train.iterations={args.iterations}"]
    train += ["--set", "train.report=false", "--set", "train.log_every=50"]
    train += ["--set", f"train.checkpoint_every={args.iterations}"]
    if args.data:
        train += ["--data", args.data]
    cmd = [sys.executable]
    if nproc > 1:
        cmd += ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc)]
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": str(args.threads)}
    subprocess.run(cmd + train, check=True, env=env, stdout=subprocess.DEVNULL)
    recs = [json.loads(ln) for ln in (out / "log.jsonl").read_text().splitlines()]
    recs = [r for r in recs if "img_s" in r][1:]
    return sum(r["img_s"] for r in recs) / len(recs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default="vanilla-fmnist")
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    p.add_argument("--threads", type=int, default=1, help="OMP threads per process")
    args = p.parse_args()
    print(f"load average before: {os.getloadavg()}")
    print(f"{'processes':>9}  {'img/s':>8}  {'speed-up':>8}")
    base = None
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.nproc:
            img_s = run(n, args, Path(tmp) / f"n{n}")
            base = base or img_s
            print(f"{n:>9}  {img_s:>8.0f}  {img_s / base:>7.2f}x")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
