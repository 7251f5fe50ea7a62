"""One device check: images/s per precision, the bf16 peak, host syncs, DDP, a folder run.

    PYTHONPATH=src python benchmarks/device.py            # a CUDA GPU: about 5-8 minutes
    PYTHONPATH=src python benchmarks/device.py --quick    # the CPU: tiny sizes, a few steps

It needs only torch, torchvision, numpy, pillow, pyyaml, safetensors, tqdm, rich and scipy
(no internet), and prints one table and a few lines:

- per recipe: images/s of ganforge's train_step at fp32, TF32 (CUDA only) and bf16, over
  device-resident random images of the recipe's shape; the achieved FLOP rate (FLOPs of a
  step from torch.utils.flop_counter) as a share of the device's bf16 dense peak, which a
  probe of large bf16 matmuls measures in the same run; and host syncs per steady-state step
  (``aten._local_scalar_dense`` calls, counted by a TorchDispatchMode over a few steps of
  batch indexing, noise and train_step: what .item(), float() and bool() on a tensor go through);
- a 2-step DDP smoke test in a spawned process: world size 1, NCCL on CUDA, gloo on the CPU;
- a short folder-plus-large run on a folder of 64x64 RGB PNGs written from Fashion-MNIST
  (``--fmnist DIR``, else where ganforge finds it: /usr/share/datasets/fashion-mnist,
  $GANFORGE_DATA, ...; skipped with a note when there is none), and its FD: the Fashion-MNIST
  classifier's features of the EMA generator's samples against the folder's images.

Timing: CUDA is synchronized before each clock read (time.perf_counter after
torch.cuda.synchronize()); the CPU's quick mode uses process CPU time with one thread.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from ganforge import nets
from ganforge.config import Config, load_config
from ganforge.data import TensorData, data_shape
from ganforge.engine import precision
from ganforge.engine.loop import build_models
from ganforge.engine.step import train_step

RECIPES = ("vanilla-fmnist", "dcgan-mnist", "dcgan-64")
PRECISIONS = ("fp32", "tf32", "bf16")  # tf32: fp32 with train.tf32 (CUDA's TF32 matmuls)


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so that a clock read after it is the work's end."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock(device: torch.device) -> float:
    """Seconds: wall time after a synchronize on CUDA; process CPU time on the CPU."""
    sync(device)
    return time.perf_counter() if device.type == "cuda" else time.process_time()


def bf16_peak(device: torch.device, n: int, reps: int) -> float:
    """FLOP/s of (n, n) @ (n, n) bf16 matmuls, the best of ``reps`` timed batches of 4."""
    a = torch.randn(n, n, device=device).to(torch.bfloat16)
    b = torch.randn(n, n, device=device).to(torch.bfloat16)
    torch.mm(a, b)  # warm-up: kernel choice, workspace
    best = float("inf")
    for _ in range(reps):
        t = clock(device)
        for _ in range(4):
            torch.mm(a, b)
        best = min(best, clock(device) - t)
    return 4 * 2 * n**3 / max(best, 1e-12)


class SyncCounter(TorchDispatchMode):
    """Counts ``aten._local_scalar_dense``: the op behind every tensor -> Python number."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.count += 1
        return func(*args, **(kwargs or {}))


def recipe_config(recipe: str, prec: str, device: torch.device, quick: bool) -> Config:
    """The recipe on ``device`` at ``prec`` (tf32: fp32 with train.tf32); quick: batch 8."""
    over = [f"train.device={device.type}", "train.report=false"]
    over += ["train.precision=fp32", "train.tf32=true"] if prec == "tf32" else []
    over += [f"train.precision={prec}"] if prec != "tf32" else []
    over += ["train.batch_size=8", "train.threads=1"] if quick else []
    return load_config(recipe, over)


def speed(recipe: str, prec: str, device: torch.device, quick: bool, peak: float) -> dict:
    """images/s, share of the bf16 peak and host syncs per step of one recipe at ``prec``."""
    cfg = recipe_config(recipe, prec, device, quick)
    cfg, _ = precision.resolve(cfg, device)  # sets (or clears) the TF32 switches
    shape = data_shape(cfg.data)
    b = cfg.train.batch_size
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (max(4 * b, 64), *shape), dtype=torch.uint8, generator=gen)
    data = TensorData(x, None, "random").to(device)
    m = build_models(cfg, shape, device)
    noise = torch.Generator(device=device).manual_seed(0)
    order = torch.Generator(device=device).manual_seed(1)

    def step(i: int) -> None:
        index = torch.randint(0, len(data), (b,), device=device, generator=order)
        z = nets.sample_noise(b, cfg.model.z_dim, cfg.model.z_dist, noise, device)
        train_step(m, cfg, data.batch(index), z, i)

    warm, chunk, budget = (1, 2, 0.0) if quick else (5, 10, 2.0)
    for i in range(warm):
        step(i)
    done, t0 = 0, clock(device)
    while True:  # chunks of steps, the clock read (a synchronize) between chunks only
        for _ in range(chunk):
            step(warm + done)
            done += 1
        seconds = clock(device) - t0
        if seconds >= budget:
            break
    with SyncCounter() as counter:  # steady state: after the warm-up and the timed steps
        for i in range(3):
            step(warm + done + i)
    with FlopCounterMode(display=False) as fc:
        step(0)
    img_s = done * b / seconds
    achieved = fc.get_total_flops() / b * img_s
    return {"img_s": img_s, "share": achieved / peak, "syncs": counter.count / 3, "batch": b}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ddp_child(port: int) -> None:
    """World size 1 on this device: DDP-wrapped nets, 2 train steps, one all_reduce."""
    import torch.distributed as tdist

    from ganforge.engine import distributed

    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    tdist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        cfg = load_config("vanilla-fmnist", [f"train.device={device.type}", "train.batch_size=16"])
        shape = data_shape(cfg.data)
        m = build_models(cfg, shape, device)
        dist = distributed.Dist(0, 1, 0)
        m.g, m.d = distributed.wrap(m.g, dist, device), distributed.wrap(m.d, dist, device)
        gen = torch.Generator(device=device).manual_seed(0)
        x = torch.rand((16, *shape), device=device, generator=gen) * 2 - 1
        out = {}
        for i in range(2):
            z = nets.sample_noise(16, cfg.model.z_dim, cfg.model.z_dist, gen, device)
            out = train_step(m, cfg, x, z, i)
        loss = out["loss_d"].clone()
        tdist.all_reduce(loss)
        sync(device)
        print(json.dumps({"backend": backend, "loss_d": float(loss), "ok": bool(loss.isfinite())}))
    finally:
        tdist.destroy_process_group()


def ddp_smoke(timeout: float) -> str:
    """Run ``ddp_child`` in a fresh process; one line: backend and result, or why it failed."""
    cmd = [sys.executable, os.path.abspath(__file__), "--ddp-child", str(free_port())]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"FAILED: no answer in {timeout:.0f} s"
    if p.returncode:
        return f"FAILED (exit {p.returncode}): {(p.stderr.strip().splitlines() or ['?'])[-1]}"
    r = json.loads(p.stdout.strip().splitlines()[-1])
    return f"{'ok' if r['ok'] else 'FAILED'}: {r['backend']}, 2 steps, loss_d {r['loss_d']:.4f}"


def fashion_folder(folder: Path, n: int, idx_dir: str | None) -> str | None:
    """Write ``n`` Fashion-MNIST training images into ``folder`` as 64x64 RGB PNGs; returns
    the data's source, or None when no Fashion-MNIST is on this machine."""
    from PIL import Image

    from ganforge.data import load_data
    from ganforge.errors import GanforgeError

    over = ["data.download=false", f"data.limit={n}", "data.size=64", "data.channels=3"]
    over += [f"data.path={idx_dir}"] if idx_dir else []
    try:
        data = load_data(load_config("vanilla-fmnist", over).data)  # resized, RGB, uint8
    except GanforgeError:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(data.x):  # (3, 64, 64) uint8
        Image.fromarray(img.permute(1, 2, 0).numpy(), "RGB").save(folder / f"{i:05d}.png")
    return data.source


def folder_run(device: torch.device, quick: bool, idx_dir: str | None, work: Path) -> str:
    """A short folder-plus-large run on the Fashion-MNIST folder and its FD, in one line."""
    import ganforge
    from ganforge.data import to_uint8
    from ganforge.metrics.features import load_evaluator
    from ganforge.metrics.frechet import fd

    n, steps, batch, n_eval = (64, 4, 8, 64) if quick else (10_000, 2_000, 32, 2_000)
    source = fashion_folder(work / "images", n, idx_dir)
    if source is None:
        return "skipped: no Fashion-MNIST on this machine (give --fmnist DIR of its IDX files)"
    over = [
        f"data.path={work / 'images'}",
        f"train.device={device.type}",
        f"train.iterations={steps}",
        f"train.batch_size={batch}",
        f"train.sample_every={steps}",
        "train.report=false",
        "train.max_seconds=150",  # the whole script stays within its 8 minutes
    ]
    over += ["train.threads=1"] if quick else []
    cfg = load_config("folder-plus-large", over)
    t = time.perf_counter()
    seen = StepSyncs()
    with seen.counter:
        run = ganforge.train(cfg, out=work / "run", verbose=False, callbacks=[seen])
    wall = time.perf_counter() - t
    done = run.result.get("steps", steps)
    fake = to_uint8(run.sample(n_eval, seed=0))  # the EMA of G once it averages
    real = torch.stack([_png(p) for p in sorted((work / "images").glob("*.png"))[:n_eval]])
    ev = load_evaluator("fashion-mnist", device)
    score = fd(ev.features(fake)[0], ev.features(real)[0])
    return (
        f"{done} steps of batch {batch} on {n} images in {wall:.0f} s (the loop: "
        f"{seen.per_step():.2f} host syncs per step); FD {score:.1f} on {n_eval} "
        f"samples (Fashion-MNIST classifier features, against the folder's images)"
    )


class StepSyncs:
    """A training callback: host syncs per step of the whole loop (logs, hooks included)
    between the end of its first step and the end of its last-but-one (no set-up, no end)."""

    def __init__(self) -> None:
        self.counter, self.marks = SyncCounter(), {}

    def on_step_end(self, state, out) -> None:
        self.marks[state.step] = self.counter.count
        self.total = state.total

    def per_step(self) -> float:
        first, last = min(self.marks), self.total - 1
        if last <= first or last not in self.marks:
            return float("nan")
        return (self.marks[last] - self.marks[first]) / (last - first)


def _png(path: Path) -> torch.Tensor:
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        return torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes and a few steps (CPU)")
    p.add_argument("--recipes", nargs="+", choices=RECIPES, help="default: all; quick: vanilla")
    p.add_argument("--fmnist", metavar="DIR", help="Fashion-MNIST's IDX files for the folder run")
    p.add_argument("--ddp-child", type=int, metavar="PORT", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.ddp_child:
        ddp_child(a.ddp_child)
        return
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(1)  # process CPU time measures one thread's work
        if not a.quick:
            print("note: no CUDA GPU: the quick mode's sizes (the CPU runs no other)")
            a.quick = True
    recipes = a.recipes or (("vanilla-fmnist",) if a.quick else RECIPES)
    t_all = time.perf_counter()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else precision.cpu_info()[0]
    print(f"device: {name}; torch {torch.__version__}")
    n = 256 if a.quick or device.type == "cpu" else 8192
    peak = bf16_peak(device, n, 2 if a.quick else 10)
    print(f"bf16 dense peak (({n}, {n}) matmuls): {peak / 1e12:.3f} TFLOP/s")
    precs = [pr for pr in PRECISIONS if device.type == "cuda" or pr != "tf32"]
    print(f"{'recipe':15} {'batch':>5} " + " ".join(f"{pr + ' img/s':>11}" for pr in PRECISIONS)
          + f" {'bf16 % of peak':>14} {'host syncs/step':>15}")  # fmt: skip
    for r in recipes:
        rows = {pr: speed(r, pr, device, a.quick, peak) for pr in precs}
        cells = [f"{rows[pr]['img_s']:11.1f}" if pr in rows else f"{'-':>11}" for pr in PRECISIONS]
        syncs = max(row["syncs"] for row in rows.values())
        print(
            f"{r:15} {rows['fp32']['batch']:5d} {' '.join(cells)} "
            f"{rows['bf16']['share']:14.1%} {syncs:15.2f}",
            flush=True,
        )
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    print(f"DDP smoke (world size 1): {ddp_smoke(60 if a.quick else 180)}", flush=True)
    with tempfile.TemporaryDirectory(prefix="ganforge-device-") as tmp:
        print(f"folder-plus-large: {folder_run(device, a.quick, a.fmnist, Path(tmp))}")
    print(f"total {time.perf_counter() - t_all:.0f} s")


if __name__ == "__main__":
    main()
