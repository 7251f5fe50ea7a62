"""Decoding speed of image-folder by number of threads: prints a table (not a test).

Usage: .venv/bin/python benchmarks/image_folder.py [DIR] [--size 64] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from ganforge.data import folder


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("dir", nargs="?", default="/usr/share/icons/Adwaita/96x96")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    root = Path(args.dir)
    n = len(folder.list_images(root))
    folder.load_folder(root, args.size, skip_bad=True)  # warm: imports, file cache
    print(f"{root}: {n} image files, {os.cpu_count()} CPUs, size {args.size}")
    print(f"{'threads':>8} {'best s':>8} {'images/s':>10}")
    for workers in (1, 2, 4):
        folder.WORKERS = workers
        best = float("inf")
        for _ in range(args.repeat):
            start = time.perf_counter()
            folder.load_folder(root, args.size, skip_bad=True)
            best = min(best, time.perf_counter() - start)
        print(f"{workers:>8} {best:>8.3f} {n / best:>10.0f}")


if __name__ == "__main__":
    main()
