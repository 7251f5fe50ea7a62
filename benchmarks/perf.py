"""Training speed: ganforge's engine against the tutorials' loop, FLOP rate, eval speed.

    .venv/bin/python benchmarks/perf.py                  # all recipes, fp32 and bf16
    .venv/bin/python benchmarks/perf.py --recipes vanilla-fmnist --precisions fp32

The yardstick is the core's arithmetic limit, measured first: benchmarks/peak.c, compiled
here with ``cc -O2 -march=native``, runs a tight loop of independent vector FMAs (AVX-512
or AVX2) on one thread, and AVX512_BF16's vdpbf16ps where the CPU has it; each recipe's
achieved FLOP rate is printed as a share of those peaks (and of a large torch.mm, as before).
Without a C compiler the peaks are not measured and the note says so. The CPU's model and
ISA flags are printed with the table. Times are process CPU time when one thread runs
(``--threads 1``: a loaded machine's other processes do not count), else wall time.

Each (recipe, precision) runs in its own child process, so that the peak RSS printed is that
configuration's alone. In the child, baseline and engine repeats are interleaved (B E B E ...)
to share the machine's noise, and the median images/s of each is printed.

baseline: a torchvision DataLoader over PIL images with ToTensor + Normalize per image,
  shuffle=True, and G run a second time for G's step (the seeds' loop).
  Its nets are NCHW and its optimizers torch's default per-tensor Adam, as in the seeds.
engine:   ganforge.engine.step.train_step over device-resident TensorData, batches indexed
  the way train/loop.py indexes them (a seeded permutation), noise from a per-step generator,
  the recipe's optimizers (fused Adam) and layout (dcgan-64: train.channels_last).
Both use the recipe's nets from ganforge.engine.loop.build_models, batch size and precision.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode
from torchvision import transforms

from ganforge import nets
from ganforge.config import Config, load_config
from ganforge.data import TensorData, load_data
from ganforge.engine.loop import STREAM_NOISE, build_models, epoch_order, mix_seed
from ganforge.engine.precision import ISA_FLAGS, cpu_info
from ganforge.engine.step import Models, autocast, set_threads, train_step

RECIPES = ("vanilla-fmnist", "dcgan-mnist", "dcgan-64")
PEAK_C = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peak.c")


def clock() -> float:
    """Process CPU time with one thread (immune to other processes' load), else wall time."""
    return time.process_time() if torch.get_num_threads() == 1 else time.perf_counter()


def machine_peaks(iters: int = 20_000_000, reps: int = 3) -> dict:
    """The CPU's model, ISA flags and one core's fp32 FMA and bf16 peaks in GFLOP/s (best of
    ``reps`` runs of benchmarks/peak.c); ``note`` says what could not be measured."""
    model, flags = cpu_info()
    out: dict = {"cpu": model, "flags": [f for f in ISA_FLAGS if f in flags]}
    out.update(fp32_peak=None, bf16_peak=None, vector_bits=None, note="")
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        out["note"] = "no C compiler (cc, gcc, clang): the FMA peaks are not measured"
        return out
    with tempfile.TemporaryDirectory() as tmp:
        exe = os.path.join(tmp, "peak")
        built = subprocess.run(
            [cc, "-O2", "-march=native", "-o", exe, PEAK_C], capture_output=True, text=True
        )
        if built.returncode:
            out["note"] = f"{cc} could not build peak.c: {built.stderr.strip()[:200]}"
            return out
        runs = [
            subprocess.run([exe, str(iters)], capture_output=True, text=True, check=True).stdout
            for _ in range(reps)
        ]
    fp32 = [line.split() for r in runs for line in r.splitlines() if line.startswith("fp32")]
    bf16 = [line.split() for r in runs for line in r.splitlines() if line.startswith("bf16")]
    out["vector_bits"] = int(fp32[0][2])
    out["fp32_peak"] = max(float(f[1]) for f in fp32) or None
    if all(b[1] != "none" for b in bf16):
        out["bf16_peak"] = max(float(b[1]) for b in bf16)
    notes = [] if out["bf16_peak"] else ["no avx512_bf16: no bf16 peak"]
    if "amx_bf16" in flags:
        notes.append("AMX present, not measured (peak.c does not configure tiles)")
    out["note"] = "; ".join(notes)
    return out


STEPS = {"vanilla-fmnist": 40, "dcgan-mnist": 4, "dcgan-64": 1}  # timed steps per repeat


class PILImages(Dataset):
    """Images kept as uint8 arrays and turned into PIL images per item, as torchvision's MNIST."""

    def __init__(self, x: torch.Tensor, tf: transforms.Compose) -> None:
        self.x, self.tf = x.numpy(), tf  # (N, C, H, W) uint8

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> torch.Tensor:
        a = self.x[i]
        img = (
            Image.fromarray(a[0], mode="L")
            if a.shape[0] == 1
            else Image.fromarray(a.transpose(1, 2, 0), mode="RGB")
        )
        return self.tf(img)


def recipe_data(recipe: str, n: int) -> tuple[Config, TensorData, str]:
    """The recipe's config (CPU) and ``n`` training images, with a note on their origin."""
    over = ["train.device=cpu"]
    if recipe == "dcgan-64":  # no real 64x64 set on this machine: random uint8 images
        cfg = load_config(recipe, over)
        gen = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (n, 3, 64, 64), dtype=torch.uint8, generator=gen)
        return cfg, TensorData(x, None, "random"), "random uint8 3x64x64"
    over.append("data.name=fashion-mnist")  # dcgan-mnist on Fashion-MNIST: the same shape
    cfg = load_config(recipe, over + ["data.download=false", f"data.limit={n}"])
    return cfg, load_data(cfg.data), "Fashion-MNIST"


def baseline_models(cfg: Config, shape: tuple[int, ...]) -> tuple[Models, Config]:
    """The seeds' set-up: the recipe's nets, NCHW, with torch's default (per-tensor) Adam."""
    cfg = replace(cfg, train=replace(cfg.train, channels_last=False))
    m = build_models(cfg, shape, torch.device("cpu"))
    m.opt_d, m.opt_g = (
        torch.optim.Adam(net.parameters(), lr=o.lr, betas=o.betas, eps=o.eps)
        for net, o in ((m.d, cfg.optim.d), (m.g, cfg.optim.g))
    )
    return m, cfg


def baseline_step(m: Models, cfg: Config, real: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """One iteration of the tutorials' loop: D on real and G(z).detach(), then G run again."""
    z = torch.randn(cfg.train.batch_size, cfg.model.z_dim)
    with autocast(torch.device("cpu"), cfg.train.precision):
        fake = m.g(z)
        rl, fl = m.d(real).float(), m.d(fake.detach()).float()
        loss_d = F.binary_cross_entropy_with_logits(
            rl, torch.ones_like(rl)
        ) + F.binary_cross_entropy_with_logits(fl, torch.zeros_like(fl))
    m.opt_d.zero_grad()
    loss_d.backward()
    m.opt_d.step()
    with autocast(torch.device("cpu"), cfg.train.precision):
        gl = m.d(m.g(z)).float()  # G runs a second time
        loss_g = F.binary_cross_entropy_with_logits(gl, torch.ones_like(gl))
    m.opt_g.zero_grad()
    loss_g.backward()  # D's weight gradients too: they are computed and thrown away
    m.opt_g.step()
    return loss_d, loss_g


def baseline(cfg: Config, data: TensorData, steps: int) -> float:
    """Images/s of the tutorials' loop over ``steps`` batches (after one warm-up batch)."""
    m, cfg = baseline_models(cfg, data.shape)
    c = data.shape[0]
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize([0.5] * c, [0.5] * c)])
    loader = DataLoader(
        PILImages(data.x, tf), batch_size=cfg.train.batch_size, shuffle=True, drop_last=True
    )
    t0, done = 0.0, -1
    while done < steps:
        for real in loader:
            if done == 0:
                t0 = clock()  # the first batch warms up
            loss_d, loss_g = baseline_step(m, cfg, real)
            loss_d.item(), loss_g.item()  # the tutorials print or accumulate these
            done += 1
            if done >= steps:
                break
    return steps * cfg.train.batch_size / (clock() - t0)


def engine_batches(cfg: Config, data: TensorData, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The loop's real batch and noise of ``step`` (as train/loop.py makes them)."""
    b = cfg.train.batch_size
    spe = len(data) // b
    epoch, pos = divmod(step, spe)
    order = epoch_order(cfg.train.seed, epoch, len(data), True)
    real = data.batch(order[pos * b : (pos + 1) * b])
    gen = torch.Generator().manual_seed(mix_seed(cfg.train.seed, STREAM_NOISE, step))
    return real, nets.sample_noise(b, cfg.model.z_dim, cfg.model.z_dist, gen, "cpu")


def engine(cfg: Config, data: TensorData, steps: int) -> float:
    """Images/s of ganforge's train_step with the loop's batching (after one warm-up step)."""
    m = build_models(cfg, data.shape, torch.device("cpu"))
    b = cfg.train.batch_size
    spe = len(data) // b
    order, t0, sums = None, 0.0, None
    for step in range(steps + 1):
        if step == 1:
            t0 = clock()
        epoch, pos = divmod(step, spe)
        if pos == 0 or order is None:
            order = epoch_order(cfg.train.seed, epoch, len(data), True)
        real = data.batch(order[pos * b : (pos + 1) * b])
        gen = torch.Generator().manual_seed(mix_seed(cfg.train.seed, STREAM_NOISE, step))
        z = nets.sample_noise(b, cfg.model.z_dim, cfg.model.z_dist, gen, "cpu")
        out = train_step(m, cfg, real, z, step)
        sums = out if sums is None else {k: sums[k] + v for k, v in out.items()}
    float(sums["loss_d"])  # the loop reads the sums once per log window
    return steps * b / (clock() - t0)


def step_flops(cfg: Config, data: TensorData) -> tuple[int, int]:
    """FLOPs of one engine step and of one baseline iteration (matmuls and convolutions,
    forward and backward): their ratio bounds the speed-up that saved work alone can give."""
    real, z = engine_batches(cfg, data, 0)
    m = build_models(cfg, data.shape, torch.device("cpu"))
    with FlopCounterMode(display=False) as fc:
        train_step(m, cfg, real, z, 0)
    mb, cfg_b = baseline_models(cfg, data.shape)
    with FlopCounterMode(display=False) as fb:
        baseline_step(mb, cfg_b, real)
    return fc.get_total_flops(), fb.get_total_flops()


def mm_peak(dtype: torch.dtype, n: int = 2048, reps: int = 5) -> float:
    """FLOP/s of a large square matrix product in ``dtype``: the best of ``reps``. (bf16 on a
    CPU without bf16 instructions: n = 512, as a 2048 product takes a minute there.)"""
    if dtype == torch.bfloat16 and not {"avx512_bf16", "amx_bf16"} & cpu_info()[1]:
        n = 512
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(reps))
    return 2 * n**3 / best


def _timed(fn) -> float:
    t = clock()
    fn()
    return clock() - t


def eval_speed(cfg: Config) -> dict[str, float]:
    """Seconds to set up FD (reference features) and to score one G on 10,000 samples."""
    from ganforge.metrics.evaluate import Evaluation

    t = clock()
    ev = Evaluation(cfg, metrics=("fd",), n=10_000, device="cpu")
    setup = clock() - t
    g = build_models(cfg, (1, 28, 28), torch.device("cpu")).g
    t = clock()
    fd = ev(g)["fd"]
    return {"eval_setup_s": setup, "eval_s": clock() - t, "fd_untrained": fd}


def child(
    recipe: str,
    precision: str,
    repeats: int,
    do_eval: bool,
    threads: int | None,
    steps: int,
    peaks: dict | None = None,
) -> dict:
    """One configuration, measured in this process; returns a JSON-able row."""
    cfg0, data, source = recipe_data(recipe, 0 if recipe == "dcgan-64" else 60_000)
    if recipe == "dcgan-64":
        cfg0, data, source = recipe_data(recipe, cfg0.train.batch_size * (steps + 2))
    over = [f"train.precision={precision}", "train.device=cpu"]
    over += [f"train.threads={threads}"] if threads else []
    cfg = load_config(recipe, over + (["data.name=fashion-mnist"] if recipe != "dcgan-64" else []))
    set_threads(cfg, torch.device("cpu"))  # the engine's setting, for both loops
    base, eng = [], []
    for _ in range(repeats):  # interleaved
        base.append(baseline(cfg, data, steps))
        eng.append(engine(cfg, data, steps))
    flops, base_flops = step_flops(cfg, data)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    peak = mm_peak(dtype)
    e = statistics.median(eng)
    row = {
        "recipe": recipe,
        "precision": precision,
        "data": source,
        "batch": cfg.train.batch_size,
        "steps": steps,
        "channels_last": cfg.train.channels_last,
        "threads": torch.get_num_threads(),
        "baseline_img_s": statistics.median(base),
        "engine_img_s": e,
        "baseline_all": base,
        "engine_all": eng,
        "gflop_step": flops / 1e9,
        "baseline_gflop_step": base_flops / 1e9,
        "mm_peak_gflops": peak / 1e9,
        "achieved_gflops": flops / cfg.train.batch_size * e / 1e9,
        "load": os.getloadavg()[0],
    }
    row["ratio"] = e / row["baseline_img_s"]
    row["peak_fraction"] = row["achieved_gflops"] / row["mm_peak_gflops"]
    row["clock"] = "process CPU time" if torch.get_num_threads() == 1 else "wall time"
    for key in ("fp32_peak", "bf16_peak"):  # the core's arithmetic limits (peak.c)
        limit = (peaks or {}).get(key)
        row[f"{key}_share"] = row["achieved_gflops"] / limit if limit else None
    # The ratio the engine would reach running its FLOPs at the full matmul peak: the ceiling
    # of any speed-up over this baseline on this machine, dtype and thread count.
    row["ratio_at_peak"] = peak * cfg.train.batch_size / flops / row["baseline_img_s"]
    if do_eval and recipe != "dcgan-64":
        row.update(eval_speed(cfg))
    row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=RECIPES)
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, help="train.threads for both loops (default torch's)")
    p.add_argument(
        "--steps",
        type=int,
        help="timed steps per loop and repeat (default: "
        + ", ".join(f"{r} {n}" for r, n in STEPS.items())
        + ")",
    )
    p.add_argument("--eval", action="store_true", help="also time FD on 10,000 samples")
    p.add_argument("--child", nargs=2, metavar=("RECIPE", "PRECISION"), help=argparse.SUPPRESS)
    p.add_argument("--peaks", help=argparse.SUPPRESS)  # the parent's machine_peaks, as JSON
    a = p.parse_args()
    if a.child:
        steps = a.steps or STEPS[a.child[0]]
        peaks = json.loads(a.peaks) if a.peaks else None
        print(json.dumps(child(*a.child, a.repeats, a.eval, a.threads, steps, peaks)))
        return
    peaks = machine_peaks()
    gf = "{:.1f} GFLOP/s".format
    print(f"CPU: {peaks['cpu']}; flags: {' '.join(peaks['flags']) or 'none of ' + str(ISA_FLAGS)}")
    print(
        f"one core's peak (peak.c, {peaks['vector_bits'] or '?'}-bit FMAs, process CPU time): "
        f"fp32 {gf(peaks['fp32_peak']) if peaks['fp32_peak'] else 'not measured'}, "
        f"bf16 {gf(peaks['bf16_peak']) if peaks['bf16_peak'] else 'not measured'}"
        + (f" ({peaks['note']})" if peaks["note"] else "")
    )
    print(json.dumps({"peaks": peaks}), file=sys.stderr)
    hdr = (
        f"{'recipe':15} {'prec':5} {'base img/s':>10} {'engine img/s':>12} {'ratio':>6} "
        f"{'FLOPs b/e':>9} {'GFLOP/s':>8} {'%fp32pk':>7} {'%bf16pk':>7} {'mm peak':>8} "
        f"{'%mm':>6} {'at peak':>7} {'RSS MB':>7} {'load':>5}"
    )
    print(hdr)
    for r in a.recipes:
        for prec in a.precisions:
            cmd = [sys.executable, __file__, "--child", r, prec, "--repeats", str(a.repeats)]
            cmd += ["--peaks", json.dumps(peaks)]
            if a.threads:
                cmd += ["--threads", str(a.threads)]
            if a.steps:
                cmd += ["--steps", str(a.steps)]
            if a.eval and prec == "fp32":
                cmd.append("--eval")
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            row = json.loads(out.strip().splitlines()[-1])
            print(
                f"{r:15} {prec:5} {row['baseline_img_s']:10.0f} {row['engine_img_s']:12.0f} "
                f"{row['ratio']:6.2f} {row['baseline_gflop_step'] / row['gflop_step']:9.2f} "
                f"{row['achieved_gflops']:8.1f} {_share(row['fp32_peak_share']):>7} "
                f"{_share(row['bf16_peak_share']):>7} "
                f"{row['mm_peak_gflops']:8.1f} {row['peak_fraction']:6.1%} "
                f"{row['ratio_at_peak']:7.2f} {row['peak_rss_mb']:7.0f} {row['load']:5.2f}",
                flush=True,
            )
            if "eval_s" in row:
                print(
                    f"  FD on 10,000 samples: {row['eval_s']:.1f} s per generator "
                    f"(+{row['eval_setup_s']:.1f} s once for the reference features)"
                )
            print(
                "  " + json.dumps({k: row[k] for k in ("baseline_all", "engine_all", "data")}),
                file=sys.stderr,
            )


def _share(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


if __name__ == "__main__":
    main()
