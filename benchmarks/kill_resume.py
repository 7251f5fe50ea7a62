"""Kill/resume soak: many SIGKILLs (a checkpoint every step, so many land inside a save),
each followed by --resume; prints whether the end state is bitwise equal to an unbroken run.

    .venv/bin/python benchmarks/kill_resume.py [--kills 30] [--steps 1500] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the kill/resume driver the test suite uses

from killer import cli, differences, train_with_kills  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=30)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    common = [
        "-r",
        "gaussian-2d",
        "--set",
        f"train.iterations={args.steps}",
        "--set",
        "train.checkpoint_every=1",
        "--set",
        "train.log_every=1",
        "--set",
        "train.sample_every=500",
        "--set",
        "train.report=false",
        "--device",
        "cpu",
        "-q",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        ref, run = Path(tmp) / "ref", Path(tmp) / "run"
        t0 = time.perf_counter()
        subprocess.run(
            cli("train", "--out", str(ref), *common), check=True, env=env, capture_output=True
        )
        steps = rng.sample(range(10, args.steps - 10), args.kills)
        kills = train_with_kills(run, common, steps, env, rng)
        diff = differences(ref, run)
        print("| kills | steps | checkpoint every | bitwise equal | differing | wall s |")
        print("|---|---|---|---|---|---|")
        print(
            f"| {len(kills)} | {args.steps} | 1 step | {'yes' if not diff else 'NO'} | "
            f"{', '.join(diff) or '-'} | {time.perf_counter() - t0:.0f} |"
        )
        print("killed after logged steps:", kills)


if __name__ == "__main__":
    main()
