"""The training loop: data on the device, seeded order and noise, logs, samples, checkpoints.

Randomness is a pure function of the seed: the shuffle order of epoch ``e`` depends on
(seed, e) only, and the noise of step ``s`` on (seed, s) only, so a run resumed from any
checkpoint sees the same batches and noise as one that never stopped.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import distributed, nets
from ..config import Config, save_config
from ..data import TensorData, load_data
from ..distributed import Dist
from ..errors import ConfigError, DataError
from ..metrics.evaluate import TrainingEval
from ..report.html import report_after_training
from ..report.runlog import status_of_exception, write_status
from ..runfiles import AppendLog, check_run_dir
from ..summary import summarize
from ..tb import TensorBoard
from ..visual import render
from .checkpoint import atomic_write_text, clean_leftovers, save_checkpoint
from .guard import Diverged, Preempted, RunLock, StopSignals, check_losses, check_parameters
from .optim import make_optimizer
from .progress import Progress
from .resume import check_length, complete_summary, reinitialise, resume_point
from .step import Models, check_techniques, make_ema, set_threads, train_step

# Independent random streams derived from the one seed.
STREAM_INIT, STREAM_ORDER, STREAM_NOISE, STREAM_SAMPLE, STREAM_AUG = 0, 1, 2, 3, 5


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


def grid_labels(cfg: Config, device: torch.device | str) -> torch.Tensor | None:
    """Labels of the sample grid of a conditional recipe: row r shows class r mod classes."""
    if cfg.model.num_classes is None:
        return None
    rows, cols = cfg.train.grid
    return (torch.arange(rows * cols, device=device) // cols) % cfg.model.num_classes


@dataclass
class Length:
    """How a run's steps map to epochs."""

    steps_per_epoch: int
    total: int
    sample_every: int

    @classmethod
    def of(cls, cfg: Config, n: int, batch: int | None = None) -> Length:
        # batch: the global batch over all processes (default train.batch_size)
        spe = n // (batch or cfg.train.batch_size)  # the last partial batch is dropped (BatchNorm)
        if spe == 0:
            raise DataError(
                f"train.batch_size={cfg.train.batch_size} is larger than the data set "
                f"({n} examples); lower train.batch_size or add data"
            )
        total = cfg.train.iterations or cfg.train.epochs * spe
        return cls(spe, total, cfg.train.sample_every or spe)


def build_models(cfg: Config, shape: tuple[int, ...], device: torch.device) -> Models:
    """G, D (seeded init) and their optimizers, on ``device``."""
    init_seed = mix_seed(cfg.train.seed, STREAM_INIT)
    torch.manual_seed(init_seed)
    random.seed(init_seed)  # the global generators too, so that all state is the seed's
    np.random.seed(init_seed % 2**32)
    g = nets.build_generator(cfg.model, shape).to(device)
    d = nets.build_discriminator(cfg.model, shape).to(device)
    if cfg.train.channels_last and len(shape) == 3:  # conv weights NHWC; others unchanged
        g, d = g.to(memory_format=torch.channels_last), d.to(memory_format=torch.channels_last)
    return Models(
        g,
        d,
        make_optimizer(g.parameters(), cfg.optim.g),
        make_optimizer(d.parameters(), cfg.optim.d),
        make_ema(g, cfg),
    )


def write_summary(cfg: Config, models: Models, shape: tuple[int, ...], path: Path) -> str:
    """Model summaries of G and D (Keras-style), written to ``path`` and returned."""
    device = next(models.g.parameters()).device
    n = 2 * cfg.model.pack  # one pack of examples per pass, two for BatchNorm
    z, x = torch.zeros(n, cfg.model.z_dim, device=device), torch.zeros(n, *shape, device=device)
    if cfg.model.num_classes is not None:  # conditional nets take (input, labels)
        y = torch.zeros(n, dtype=torch.long, device=device)
        z, x = (z, y), (x, y)
    text = (
        summarize(models.g, z, f"Generator '{cfg.model.g}'")
        + "\n"
        + summarize(models.d, x, f"Discriminator '{cfg.model.d}'")
    )
    atomic_write_text(path, text)
    return text


def _truncate_log(path: Path, step: int) -> None:
    """Drop log records written after the checkpoint a run resumes from."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line)
        except (ValueError, KeyError, TypeError):
            continue  # a line cut by a crash mid-write
    atomic_write_text(path, "".join(ln + "\n" for ln in keep))


def _resume_point(
    run_dir: Path, models: Models, device: torch.device, say, clean: bool = True, cfg=None
) -> dict[str, Any]:
    """Load the newest good checkpoint (last, else previous); counters of step 0 if none;
    a checkpoint that does not fit the config is refused (train/resume.py)."""
    return resume_point(run_dir, models, device, say, clean, cfg)


def _scale_lr(models: Models, factor: float) -> None:
    """Multiply both optimizers' learning rates (kept in their state, so it survives resume)."""
    for opt in (models.opt_g, models.opt_d):
        for group in opt.param_groups:
            group["lr"] *= factor
            group["base_lr"] = group.get("base_lr", group["lr"] / factor) * factor


def train(
    cfg: Config,
    run_dir: Path,
    resume: bool = False,
    verbose: bool = True,
    data: TensorData | None = None,
) -> dict[str, Any]:
    """Train ``cfg`` into ``run_dir``; resume from its last good checkpoint when ``resume``.

    Holds the run directory's lock throughout; SIGTERM/SIGINT end the current step, save a
    checkpoint and raise ``Preempted``; a non-finite loss or parameter raises ``Diverged``
    (after up to ``train.rollback`` automatic retries from the last checkpoint at half the
    learning rate). Under torchrun, a collective that fails because another process died or
    stopped answering raises ``PeerLost`` (one line, exit code 4) instead of the backend's
    traceback. Returns a summary: steps, images, wall time, images/s, final losses.
    """
    check_run_dir(run_dir, resume)  # one line before any work: a file, /proc, read-only
    # Under torchrun: join the process group; rank 0 alone locks and writes the run directory.
    dist, dist_device = distributed.setup(cfg.train.device, cfg.train.dist_timeout)
    try:
        with RunLock(run_dir) if dist.main else contextlib.nullcontext(), StopSignals() as stop:
            device = dist_device or resolve_device(cfg.train.device)
            set_threads(cfg, device)  # train.threads (CPU)
            with stop.phase("while loading the data", None, run_dir, saved=False):
                data = (data or load_data(cfg.data)).to(device)
            batch, _ = distributed.local_batch(cfg.train.batch_size, cfg.train.batch_per_rank, dist)
            check_techniques(cfg, data.shape, batch)
            check_labels(cfg, data)
            if cfg.train.max_seconds is not None and dist.active:  # ranks could disagree
                raise ConfigError(
                    "train.max_seconds is for single-process runs; set train.iterations instead"
                )
            length = Length.of(cfg, len(data), batch)
            return _train(
                cfg, run_dir, resume, verbose and dist.main, data, length, device, stop, dist
            )
    except RuntimeError as exc:  # a collective failed: another process died or hung?
        lost = distributed.peer_lost(exc, dist, run_dir, cfg.train.dist_timeout)
        if lost is None:
            raise  # any other RuntimeError is a bug: keep its traceback
        if dist.main:  # status.json: the one-line reason rather than the backend's message
            with contextlib.suppress(OSError):
                write_status(run_dir, "failed", error=str(lost))
        raise lost from None
    finally:
        if dist.active:
            distributed.shutdown()


def check_labels(cfg: Config, data: TensorData) -> None:
    """A conditional recipe needs labels in [0, model.num_classes)."""
    k = cfg.model.num_classes
    if k is None:
        return
    if data.labels is None:
        raise DataError(
            f"model.num_classes={k}: {cfg.data.name} has no labels; use a labelled data set "
            "or remove model.num_classes"
        )
    top = int(data.labels.max())
    if top >= k or int(data.labels.min()) < 0:
        raise ConfigError(
            f"model.num_classes={k}: the data has label {top}; set model.num_classes={top + 1}"
        )


def _train(
    cfg: Config,
    run_dir: Path,
    resume: bool,
    verbose: bool,
    data: TensorData,
    length: Length,
    device: torch.device,
    stop: StopSignals,
    dist: Dist | None = None,
) -> dict[str, Any]:
    dist = dist or Dist()
    models = build_models(cfg, data.shape, device)
    main = dist.main  # the one process that writes the run directory
    if dist.active and cfg.train.sync_bn:
        models.g = distributed.sync_batchnorm(models.g, device)
        models.d = distributed.sync_batchnorm(models.d, device)
    ckpt_dir = run_dir / "checkpoints"
    progress = Progress(length.total, 0, length.steps_per_epoch, enabled=verbose)
    counters: dict[str, Any] = {"step": 0}
    if resume:
        if dist.active:  # rank 0 tidies interrupted saves before anyone reads
            if main:
                clean_leftovers(ckpt_dir)
            dist.barrier()
        counters = _resume_point(run_dir, models, device, progress.message, not dist.active, cfg)
        if check_length(run_dir, counters["step"], length.total):  # raises past the end
            progress.message(f"{run_dir} is already complete at step {counters['step']}")
            return complete_summary(run_dir, counters)
        if main:
            _truncate_log(run_dir / "log.jsonl", counters["step"])
    # `models` keeps the plain modules (checkpoints, samples); the step sees DDP wrappers.
    step_models = models
    if dist.active:
        step_models = Models(
            distributed.wrap(models.g, dist, device),
            distributed.wrap(models.d, dist, device),
            models.opt_g,
            models.opt_d,
        )
    start = counters["step"]
    progress.start_step = start
    rollbacks = counters.get("rollbacks", 0)
    summary_text = ""
    if main:
        (run_dir / "samples").mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        summary_text = write_summary(cfg, models, data.shape, run_dir / "summary.txt")
    if verbose:
        ng, nd = nets.count_params(models.g), nets.count_params(models.d)
        progress.message(
            f"ganforge: recipe {cfg.recipe}, {len(data):,} examples from {data.source}, "
            f"G {ng:,} / D {nd:,} parameters, {device.type}, {cfg.train.precision}"
        )
        if start:
            progress.message(f"resuming at step {start} of {length.total}")
    if main:
        env = _environment(device)
        env["world_size"] = dist.world
        atomic_write_text(run_dir / "env.json", json.dumps(env, indent=1))

    # b: the global batch (all ranks); each rank trains on its slice of it
    b = distributed.local_batch(cfg.train.batch_size, cfg.train.batch_per_rank, dist)[0]
    seed = cfg.train.seed
    grid_n = cfg.train.grid[0] * cfg.train.grid[1]
    z_fixed, y_fixed = fixed_noise(cfg, grid_n, device), grid_labels(cfg, device)
    real_ref = data.x[: grid_n * 10].float() if not data.is_image else None  # scatter backdrop
    every_step_check = device.type == "cpu"  # on a GPU, check at log steps: no sync per step
    ckpt_every = cfg.train.checkpoint_every or length.sample_every
    order_epoch, order = -1, None
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}  # steps each logged value was seen (loss_g: G steps only)
    window_steps, t_window = 0, time.perf_counter()
    t_start, last_rec = time.perf_counter(), None
    tb = TensorBoard(run_dir, cfg.train.tensorboard and main, start)  # no-op unless asked
    if main:
        write_status(
            run_dir, "running", total_steps=length.total, steps_per_epoch=length.steps_per_epoch
        )
    preparing = "while preparing the evaluation"
    with stop.phase(preparing, start, run_dir, enabled=not dist.active, saved=start > 0):
        evaluator = TrainingEval.of(cfg, run_dir, device) if main else None  # eval.every
    log_path = run_dir / "log.jsonl" if main else Path(os.devnull)
    log = AppendLog(log_path)  # whole lines only: a full disk never cuts an earlier one
    agreed_stop = False  # under torchrun: a stop request agreed by all ranks
    budget = cfg.train.max_seconds  # seconds of training in this session (single process)

    def checkpoint(done: int, epoch: int) -> None:
        check_parameters({"generator": models.g, "discriminator": models.d}, done)
        if not main:
            return
        save_checkpoint(
            ckpt_dir,
            "last",
            models,
            {
                "step": done,
                "images": done * b,
                "epoch": epoch,
                "rollbacks": rollbacks,
            },
        )

    try:
        step = start
        while step < length.total:
            epoch, pos = divmod(step, length.steps_per_epoch)
            if epoch != order_epoch:
                order = epoch_order(seed, epoch, len(data), cfg.data.shuffle).to(device)
                order_epoch = epoch
            # the global batch's indices and noise; dist.shard keeps this rank's slice
            index = dist.shard(order[pos * b : (pos + 1) * b])
            real = data.batch(index)
            y = data.labels[index] if cfg.model.num_classes is not None else None
            gen = torch.Generator(device).manual_seed(mix_seed(seed, STREAM_NOISE, step))
            z = nets.sample_noise(b, cfg.model.z_dim, cfg.model.z_dist, gen, device)
            z = dist.shard(z)
            label_noise = None
            if cfg.loss.label_noise:
                noise = torch.rand(2, b, 1, generator=gen, device=device) * cfg.loss.label_noise
                noise = dist.shard(noise, dim=1)
                label_noise = (noise[0], noise[1])
            aug_gen = None  # DiffAugment's and WGAN-GP's draws: per step and per process
            if cfg.train.augment or cfg.loss.name == "wgan-gp":
                aug_gen = torch.Generator(device)
                aug_gen.manual_seed(mix_seed(seed, STREAM_AUG, step, dist.rank))
            out = train_step(step_models, cfg, real, z, step, label_noise, y, aug_gen)
            done = step + 1
            if budget is not None and time.perf_counter() - t_start >= budget:
                length.total = done  # train.max_seconds: the run ends normally at this step
            if models.g_ema is not None and "loss_g" in out and step >= cfg.model.ema_start:
                models.g_ema.update_parameters(models.g)
            log_now = done % cfg.train.log_every == 0 or done == length.total
            try:
                if every_step_check or log_now:
                    if dist.active:
                        agreed_stop = distributed.check_step(dist, out, done, stop.requested)
                    else:
                        check_losses(out, done)
            except Diverged as e:
                if rollbacks >= cfg.train.rollback:
                    raise
                rollbacks += 1
                counters = _resume_point(run_dir, models, device, progress.message, main)
                if "format" not in counters:  # no checkpoint yet: the seed's initial weights
                    reinitialise(models, build_models(cfg, data.shape, device))
                _scale_lr(models, 0.5)
                progress.message(
                    f"{e}; rollback {rollbacks}/{cfg.train.rollback} to step "
                    f"{counters['step']} at half the learning rate"
                )
                log.close()
                if main:
                    _truncate_log(run_dir / "log.jsonl", counters["step"])
                log = AppendLog(log_path)
                step, order_epoch, sums, counts, window_steps = counters["step"], -1, {}, {}, 0
                continue
            for k, v in out.items():
                sums[k] = sums[k] + v if k in sums else v.clone()
                counts[k] = counts.get(k, 0) + 1
            window_steps += 1

            if log_now:
                if dist.active:  # losses and D outputs averaged over ranks, at log steps only
                    sums = dict(zip(sums, dist.mean(torch.stack(list(sums.values()))), strict=True))
                now = time.perf_counter()
                rec = {"step": done, "epoch": epoch + 1, "images": done * b}
                rec.update({k: float(v) / counts[k] for k, v in sums.items()})
                rec["img_s"] = window_steps * b / max(now - t_window, 1e-9)
                rec["time"] = round(now - t_start, 3)
                log.write(json.dumps(rec) + "\n")
                log.flush()
                tb.sync()
                progress.update(rec)
                sums, counts, window_steps, t_window, last_rec = {}, {}, 0, now, rec

            if main and (done % length.sample_every == 0 or done == length.total):
                if cfg.train.sample_every is None and done % length.steps_per_epoch == 0:
                    name = f"epoch_{done // length.steps_per_epoch:04d}.png"
                else:
                    name = f"step_{done:06d}.png"
                path = run_dir / "samples" / name
                save_samples(
                    models.sampler(), z_fixed, path, cfg, real_ref, f"step {done}", y_fixed
                )
                tb.image(path, done)
            stopping = agreed_stop if dist.active else stop.requested
            if done % ckpt_every == 0 or done == length.total or stopping:
                checkpoint(done, epoch + 1)

            # eval.every; not when stopping: the checkpoint is saved, the signal waits for none
            if evaluator is not None and evaluator.due(done, length.total) and not stopping:
                ev_counters = {"step": done, "epoch": epoch + 1, "images": done * b}
                save_now = functools.partial(checkpoint, done, epoch + 1)  # a signal: stop now
                with stop.phase("during the evaluation", done, run_dir, save_now, not dist.active):
                    rec = evaluator.run(models, ckpt_dir, ev_counters)  # also saves "best"
                log.write(json.dumps(rec) + "\n")
                log.flush()
                progress.message(evaluator.describe(rec))
            if stopping:
                raise Preempted(distributed.stop_signal(stop.signum), done, run_dir)
            step = done
    except BaseException as exc:
        if main:  # on a full disk this may fail too: the original error is the one to report
            with contextlib.suppress(OSError):
                reason = str(exc) or type(exc).__name__
                write_status(run_dir, status_of_exception(exc), error=reason)
        raise
    finally:
        log.close()
        tb.close()
        progress.close()

    wall = time.perf_counter() - t_start
    if main:
        final = run_dir / "final.png"
        save_samples(models.sampler(), z_fixed, final, cfg, real_ref, "final", y_fixed)
        write_status(run_dir, "finished")
        if cfg.train.report:
            with stop.phase("while writing the report", length.total, run_dir, complete=True):
                report_after_training(run_dir, progress.message)
    steps = length.total - start
    return {
        "run_dir": str(run_dir),
        "steps": length.total,
        "images": length.total * b,
        "wall_s": round(wall, 2),
        "img_s": round(steps * b / wall, 1) if wall > 0 else None,
        "loss_d": last_rec.get("loss_d") if last_rec else None,
        "loss_g": last_rec.get("loss_g") if last_rec else None,
        "rollbacks": rollbacks,
        "summary": summary_text,
    }


def save_samples(
    g: torch.nn.Module,
    z: torch.Tensor,
    path: Path,
    cfg: Config,
    real: torch.Tensor | None = None,
    title: str = "",
    y: torch.Tensor | None = None,
) -> None:
    """Render G(z) (G(z, y) when conditional) in eval mode (BatchNorm uses running
    statistics), then restore the mode."""
    was_training = g.training
    g.eval()
    try:
        with torch.no_grad():
            fake = nets.generate(g, z, y)
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
