"""The training loop: data on the device, seeded order and noise, logs, samples, checkpoints.

Randomness is a pure function of the seed: the shuffle order of epoch ``e`` depends on
(seed, e) only, and the noise of step ``s`` on (seed, s) only, so a run resumed from any
checkpoint sees the same batches and noise as one that never stopped.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import nets
from ..config import Config, save_config
from ..data import TensorData, load_data
from ..errors import ConfigError, DataError, GanforgeError
from ..summary import summarize
from ..visual import render
from .checkpoint import clean_leftovers, load_checkpoint, save_checkpoint
from .optim import make_optimizer
from .progress import Progress
from .step import Models, train_step

# Independent random streams derived from the one seed.
STREAM_INIT, STREAM_ORDER, STREAM_NOISE, STREAM_SAMPLE = 0, 1, 2, 3


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers, well mixed (numpy's SeedSequence)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, np.uint64)[0] >> 1)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "train.device: cuda was asked for but no CUDA GPU is visible; use --device cpu or auto"
        )
    return torch.device(name)


def epoch_order(seed: int, epoch: int, n: int, shuffle: bool) -> torch.Tensor:
    """Example indices of epoch ``epoch`` (0-based): a permutation seeded by (seed, epoch)."""
    if not shuffle:
        return torch.arange(n)
    gen = torch.Generator().manual_seed(mix_seed(seed, STREAM_ORDER, epoch))
    return torch.randperm(n, generator=gen)


def fixed_noise(cfg: Config, n: int, device: torch.device) -> torch.Tensor:
    """The run's fixed latent batch for sample grids (the same on every device)."""
    gen = torch.Generator().manual_seed(mix_seed(cfg.train.seed, STREAM_SAMPLE))
    return nets.sample_noise(n, cfg.model.z_dim, cfg.model.z_dist, gen, "cpu").to(device)


@dataclass
class Length:
    """How a run's steps map to epochs."""

    steps_per_epoch: int
    total: int
    sample_every: int

    @classmethod
    def of(cls, cfg: Config, n: int) -> Length:
        spe = n // cfg.train.batch_size  # the last partial batch is dropped (BatchNorm)
        if spe == 0:
            raise DataError(
                f"train.batch_size={cfg.train.batch_size} is larger than the data set "
                f"({n} examples); lower train.batch_size or add data"
            )
        total = cfg.train.iterations or cfg.train.epochs * spe
        return cls(spe, total, cfg.train.sample_every or spe)


def build_models(cfg: Config, shape: tuple[int, ...], device: torch.device) -> Models:
    """G, D (seeded init) and their optimizers, on ``device``."""
    torch.manual_seed(mix_seed(cfg.train.seed, STREAM_INIT))
    g = nets.build_generator(cfg.model, shape).to(device)
    d = nets.build_discriminator(cfg.model, shape).to(device)
    return Models(
        g,
        d,
        make_optimizer(g.parameters(), cfg.optim.g),
        make_optimizer(d.parameters(), cfg.optim.d),
    )


def write_summary(cfg: Config, models: Models, shape: tuple[int, ...], path: Path) -> str:
    """Model summaries of G and D (Keras-style), written to ``path`` and returned."""
    device = next(models.g.parameters()).device
    z = torch.zeros(2, cfg.model.z_dim, device=device)
    x = torch.zeros(2, *shape, device=device)
    text = (
        summarize(models.g, z, f"Generator '{cfg.model.g}'")
        + "\n"
        + summarize(models.d, x, f"Discriminator '{cfg.model.d}'")
    )
    path.write_text(text)
    return text


def _truncate_log(path: Path, step: int) -> None:
    """Drop log records written after the checkpoint a run resumes from."""
    if not path.exists():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] <= step]
    path.write_text("".join(ln + "\n" for ln in keep))


def train(
    cfg: Config,
    run_dir: Path,
    resume: bool = False,
    verbose: bool = True,
    data: TensorData | None = None,
) -> dict[str, Any]:
    """Train ``cfg`` into ``run_dir``; resume from its last checkpoint when ``resume``.

    Returns a summary: steps, images, wall time, images/s, final losses, run directory.
    """
    device = resolve_device(cfg.train.device)
    data = (data or load_data(cfg.data)).to(device)
    length = Length.of(cfg, len(data))
    models = build_models(cfg, data.shape, device)
    ckpt_dir = run_dir / "checkpoints"

    start = 0
    if resume:
        clean_leftovers(ckpt_dir)
        last = ckpt_dir / "last"
        if not last.exists():
            raise GanforgeError(f"{run_dir}: nothing to resume (no checkpoints/last)")
        start = load_checkpoint(last, models, device)["step"]
        _truncate_log(run_dir / "log.jsonl", start)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "samples").mkdir(exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    summary_text = write_summary(cfg, models, data.shape, run_dir / "summary.txt")

    progress = Progress(length.total, start, length.steps_per_epoch, enabled=verbose)
    if verbose:
        ng, nd = nets.count_params(models.g), nets.count_params(models.d)
        progress.message(
            f"ganforge: recipe {cfg.recipe}, {len(data):,} examples from {data.source}, "
            f"G {ng:,} / D {nd:,} parameters, {device.type}, {cfg.train.precision}"
        )
        if resume:
            progress.message(f"resuming at step {start} of {length.total}")
    (run_dir / "env.json").write_text(json.dumps(_environment(device), indent=1))

    b, seed = cfg.train.batch_size, cfg.train.seed
    grid_n = cfg.train.grid[0] * cfg.train.grid[1]
    z_fixed = fixed_noise(cfg, grid_n, device)
    real_ref = data.x[: grid_n * 10].float() if not data.is_image else None  # scatter backdrop
    order_epoch, order = -1, None
    sums: dict[str, torch.Tensor] = {}
    window_steps, t_window = 0, time.perf_counter()
    t_start, last_rec = time.perf_counter(), None
    log = open(run_dir / "log.jsonl", "a")
    try:
        for step in range(start, length.total):
            epoch, pos = divmod(step, length.steps_per_epoch)
            if epoch != order_epoch:
                order = epoch_order(seed, epoch, len(data), cfg.data.shuffle).to(device)
                order_epoch = epoch
            real = data.batch(order[pos * b : (pos + 1) * b])
            gen = torch.Generator(device).manual_seed(mix_seed(seed, STREAM_NOISE, step))
            z = nets.sample_noise(b, cfg.model.z_dim, cfg.model.z_dist, gen, device)
            label_noise = None
            if cfg.loss.label_noise:
                noise = torch.rand(2, b, 1, generator=gen, device=device) * cfg.loss.label_noise
                label_noise = (noise[0], noise[1])
            out = train_step(models, cfg, real, z, step, label_noise)
            for k, v in out.items():
                sums[k] = sums[k] + v if k in sums else v.clone()
            window_steps += 1
            done = step + 1

            if done % cfg.train.log_every == 0 or done == length.total:
                now = time.perf_counter()
                rec = {"step": done, "epoch": epoch + 1, "images": done * b}
                rec.update({k: float(v) / window_steps for k, v in sums.items()})
                if not all(math.isfinite(rec[k]) for k in out):
                    raise GanforgeError(
                        f"training diverged at step {done}: a loss is not finite "
                        f"({', '.join(f'{k}={rec[k]}' for k in out)}); try a lower learning rate"
                    )
                rec["img_s"] = window_steps * b / max(now - t_window, 1e-9)
                rec["time"] = round(now - t_start, 3)
                log.write(json.dumps(rec) + "\n")
                log.flush()
                progress.update(rec)
                sums, window_steps, t_window, last_rec = {}, 0, now, rec

            if done % length.sample_every == 0 or done == length.total:
                if cfg.train.sample_every is None and done % length.steps_per_epoch == 0:
                    name = f"epoch_{done // length.steps_per_epoch:04d}.png"
                else:
                    name = f"step_{done:06d}.png"
                save_samples(
                    models.g,
                    z_fixed,
                    run_dir / "samples" / name,
                    cfg,
                    real_ref,
                    title=f"step {done}",
                )
                save_checkpoint(
                    ckpt_dir, "last", models, {"step": done, "images": done * b, "epoch": epoch + 1}
                )
    finally:
        log.close()
        progress.close()

    wall = time.perf_counter() - t_start
    final = run_dir / ("final.png")
    save_samples(models.g, z_fixed, final, cfg, real_ref, title="final")
    steps = length.total - start
    result = {
        "run_dir": str(run_dir),
        "steps": length.total,
        "images": length.total * b,
        "wall_s": round(wall, 2),
        "img_s": round(steps * b / wall, 1) if wall > 0 else None,
        "loss_d": last_rec["loss_d"] if last_rec else None,
        "loss_g": last_rec["loss_g"] if last_rec else None,
        "summary": summary_text,
    }
    return result


def save_samples(
    g: torch.nn.Module,
    z: torch.Tensor,
    path: Path,
    cfg: Config,
    real: torch.Tensor | None = None,
    title: str = "",
) -> None:
    """Render G(z) in eval mode (BatchNorm uses running statistics), then restore the mode."""
    was_training = g.training
    g.eval()
    try:
        with torch.no_grad():
            fake = g(z)
    finally:
        g.train(was_training)
    render(fake, path, cfg.train.grid, cfg.data.range, real, title)


def _environment(device: torch.device) -> dict[str, Any]:
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": device.type,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env
