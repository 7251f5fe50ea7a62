"""CPU time and minor page faults per training step, by recipe (not a test).

    PYTHONPATH=src .venv/bin/python benchmarks/faults.py --data DIR
    PYTHONPATH=src .venv/bin/python benchmarks/faults.py --data DIR --recipes folder-plus \\
        --repeat 3 --set train.malloc_tune=false --set train.malloc_tune=true

Runs ``ganforge train -r RECIPE --set train.threads=1 --set train.report=false`` as a child
process twice, for ``--short`` and ``--long`` steps, and reads ``resource.getrusage
(RUSAGE_CHILDREN)`` around each: the difference between the two runs is the cost of the extra
steps alone (start-up, data loading, k-means and the last checkpoint cancel out). Prints user
and system CPU seconds and minor page faults per step. With several ``--set`` variants (the
same key with different values) the variants run interleaved, A B A B, ``--repeat`` times, so
that a shared, loaded machine slows each alike; report CPU times, not wall times. ``--data``
is the folder of images for the image-folder recipes (``benchmarks/icons.py`` builds one from
/usr/share/icons); vanilla-fmnist finds Fashion-MNIST where the library looks for it.
"""

from __future__ import annotations

import argparse
import platform
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

IMAGE_RECIPES = {"folder-plus", "folder-plus-large", "dcgan-64"}


def cpu_line() -> str:
    """The CPU model and the ISA flags that matter to torch's CPU kernels."""
    model, flags = platform.processor() or "?", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    keep = ["avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile"]
    return f"{model}; flags: {' '.join(f for f in keep if f in flags) or 'none of avx2+'}"


def run_once(recipe: str, steps: int, data: str | None, sets: list[str], out: Path) -> tuple:
    """(user s, system s, minor faults) of one ``ganforge train`` child of ``steps`` steps."""
    cmd = [sys.executable, "-m", "ganforge", "train", "-r", recipe, "-q", "--overwrite"]
    cmd += ["--out", str(out / recipe)]
    if data is not None and recipe in IMAGE_RECIPES:
        cmd += ["--data", data]
    for s in [
        f"train.iterations={steps}",
        "train.threads=1",
        "train.report=false",
        "train.device=cpu",
        *sets,
    ]:
        cmd += ["--set", s]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (
        after.ru_utime - before.ru_utime,
        after.ru_stime - before.ru_stime,
        after.ru_minflt - before.ru_minflt,
    )


def main() -> None:
    p = argparse.ArgumentParser(description="CPU time and minor page faults per step")
    p.add_argument("--recipes", nargs="+", default=[*sorted(IMAGE_RECIPES), "vanilla-fmnist"])
    p.add_argument("--data", help="folder of images for the image-folder recipes")
    p.add_argument("--short", type=int, default=5, help="steps of the baseline run")
    p.add_argument("--long", type=int, default=45, help="steps of the measured run")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        help="a variant: KEY=VALUE (repeat for A/B; several settings of one variant: "
        "separate them with ',')",
    )
    args = p.parse_args()
    variants = [v.split(",") for v in args.set] or [[]]
    n = args.long - args.short
    print(cpu_line())
    print(f"per step, over steps {args.short}..{args.long}, one thread, repeats interleaved")
    print(f"{'recipe':<18} {'variant':<28} {'user ms':>8} {'sys ms':>7} {'minflt':>8}")
    with tempfile.TemporaryDirectory(prefix="ganforge-faults-") as tmp:
        for recipe in args.recipes:
            rows: dict[int, list[tuple]] = {i: [] for i in range(len(variants))}
            for _ in range(args.repeat):
                for i, sets in enumerate(variants):
                    a = run_once(recipe, args.short, args.data, sets, Path(tmp))
                    b = run_once(recipe, args.long, args.data, sets, Path(tmp))
                    rows[i].append(tuple((y - x) / n for x, y in zip(a, b, strict=True)))
            for i, sets in enumerate(variants):
                for u, s, f in rows[i]:
                    name = ",".join(sets) or "(recipe)"
                    print(f"{recipe:<18} {name:<28} {u * 1e3:>8.1f} {s * 1e3:>7.1f} {f:>8.0f}")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
