"""The training loop: data on the device, seeded order and noise, logs, samples, checkpoints.

Randomness is a pure function of the seed: the shuffle order of epoch ``e`` depends on
(seed, e) only, and the noise of step ``s`` on (seed, s, rank) only (``draw``), so a run
resumed from any checkpoint sees the same batches and noise as one that never stopped.

The parts: ``draw`` (a step's noise, label noise and augmentation generator), ``Recorder``
(sums, log.jsonl, TensorBoard, progress), ``_recover`` (divergence rollback) and the hooks of
``callbacks`` (sample grids, checkpoints, evaluation, and the caller's own).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import platform
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import nets
from ..checkpoint import Models, atomic_write_text, clean_leftovers
from ..config import Config, save_config
from ..data import TensorData, load_data
from ..data.clusters import with_clusters
from ..data.identity import identify, write_record
from ..data.stream import Prefetch, StreamData, StreamedFileError
from ..errors import ConfigError, DataError, Diverged, Preempted
from ..losses import get_loss
from ..nets import NetSpec
from ..nets.cond import SelfConditioned
from ..report.runlog import status_of_exception, write_status
from ..runfiles import check_run_dir
from ..seeding import (  # noqa: F401  (the stream numbers are part of this module's surface)
    STREAM_AUG,
    STREAM_INIT,
    STREAM_NOISE,
    STREAM_ORDER,
    STREAM_SAMPLE,
    epoch_order,
    mix_seed,
    resolve_device,
    sync_free,
)
from ..summary import summarize
from . import distributed, precision
from .callbacks import (
    Checkpoints,
    Evaluations,
    LiveReport,
    SampleGrids,
    TrainState,
    check_callbacks,
)
from .datacheck import check_resume_data, lost_file
from .distributed import Dist
from .ema import final_note
from .ema import start_step as ema_start_step
from .evaluation import TrainingEval
from .guard import RunLock, StopSignals, check_losses
from .optim import make_optimizer
from .probe import FreshStart, check_batch, probe
from .progress import Progress
from .record import Recorder, truncate_log
from .resume import check_length, complete_summary, reinitialise, resume_point
from .step import check_techniques, make_ema, set_threads, train_step


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
        total = cfg.train.iterations or (cfg.train.epochs or 0) * spe  # config: one is set
        return cls(spe, total, cfg.train.sample_every or spe)


def build_models(
    cfg: Config,
    shape: tuple[int, ...],
    device: torch.device,
    g: NetSpec = None,
    d: NetSpec = None,
    sizes: torch.Tensor | None = None,
) -> Models:
    """G, D (seeded init) and their optimizers, on ``device``; ``g`` / ``d``: custom nets
    (a module, or a builder called like a registered one) in place of ``model.g`` / ``model.d``;
    ``sizes``: the clusters' sizes of a self-conditioned run (G draws clusters by them)."""
    init_seed = mix_seed(cfg.train.seed, STREAM_INIT)
    torch.manual_seed(init_seed)
    random.seed(init_seed)  # the global generators too, so that all state is the seed's
    np.random.seed(init_seed % 2**32)
    gen = nets.build_generator(cfg.model, shape, g).to(device)
    dis = nets.build_discriminator(cfg.model, shape, d).to(device)
    if sizes is not None and isinstance(gen, SelfConditioned):
        gen.set_prior(sizes)  # before the EMA copies G
    if cfg.train.channels_last and len(shape) == 3:  # conv weights NHWC; others unchanged
        gen = gen.to(memory_format=torch.channels_last)
        dis = dis.to(memory_format=torch.channels_last)
    probe(cfg, gen, dis, shape, device)  # one line for a net that cannot train (engine/probe.py)
    auto = cfg.train.augment and cfg.train.augment_p == "auto"
    return Models(
        gen,
        dis,
        make_optimizer(gen.parameters(), cfg.optim.g),
        make_optimizer(dis.parameters(), cfg.optim.d),
        make_ema(gen, cfg),
        torch.zeros((), device=device) if auto else None,
        precision.make_scaler(cfg.train.precision, device),
    )


def write_summary(cfg: Config, models: Models, shape: tuple[int, ...], path: Path) -> str:
    """Model summaries of G and D (Keras-style), written to ``path`` and returned."""
    device = next(models.g.parameters()).device
    n = 2 * cfg.model.pack  # one pack of examples per pass, two for BatchNorm
    z, x = torch.zeros(n, cfg.model.z_dim, device=device), torch.zeros(n, *shape, device=device)
    if cfg.model.conditioned is not None:  # conditional nets take (input, labels)
        y = torch.zeros(n, dtype=torch.long, device=device)
        z, x = (z, y), (x, y)
    text = (
        summarize(models.g, z, f"Generator '{cfg.model.g}'")
        + "\n"
        + summarize(models.d, x, f"Discriminator '{cfg.model.d}'")
    )
    atomic_write_text(path, text)
    return text


def _scale_lr(models: Models, factor: float) -> None:
    """Multiply both optimizers' learning rates (kept in their state, so it survives resume)."""
    for opt in (models.opt_g, models.opt_d):
        for group in opt.param_groups:
            group["lr"] *= factor
            group["base_lr"] = group.get("base_lr", group["lr"] / factor) * factor


# ---------------------------------------------------------------- one step's random draws


@dataclass
class Draw:
    """A step's randomness: G's noise, D's target noise, the augmentation generator."""

    z: torch.Tensor  # (b, z_dim): this process's slice of the global batch's noise
    label_noise: tuple[torch.Tensor, torch.Tensor] | None  # (b, 1) each: real, fake targets
    aug: torch.Generator | None  # DiffAugment's and WGAN-GP's draws


def draw(cfg: Config, step: int, batch: int, device: torch.device, dist: Dist) -> Draw:
    """The random inputs of step ``step``: a pure function of (seed, step, rank).

    ``batch``: the global batch; the noise of the whole global batch is drawn on every
    process and each keeps its slice, so results do not depend on the number of processes.
    """
    seed = cfg.train.seed
    gen = torch.Generator(device).manual_seed(mix_seed(seed, STREAM_NOISE, step))
    z = dist.shard(nets.sample_noise(batch, cfg.model.z_dim, cfg.model.z_dist, gen, device))
    label_noise = None
    if cfg.loss.label_noise:
        noise = torch.rand(2, batch, 1, generator=gen, device=device) * cfg.loss.label_noise
        noise = dist.shard(noise, dim=1)
        label_noise = (noise[0], noise[1])
    aug = None  # per step and per process
    if cfg.train.augment or get_loss(cfg.loss.name).gradient_penalty:
        aug = torch.Generator(device).manual_seed(mix_seed(seed, STREAM_AUG, step, dist.rank))
    return Draw(z, label_noise, aug)


def to_device(t: torch.Tensor, data: TensorData) -> torch.Tensor:
    """A host tensor onto the data's device without waiting for it: a plain copy to a GPU
    waits for the device (a stream sync); one from pinned memory is queued."""
    device = data.x.device
    if device.type == "cuda":
        t = t.pin_memory()
    return t.to(device, non_blocking=True)


class Batches:
    """The real examples of each step: epoch ``e``'s seeded order, cut into global batches,
    of which this process takes its slice (and the labels of a conditional recipe)."""

    def __init__(self, cfg: Config, data: TensorData, length: Length, batch: int, dist: Dist):
        self.cfg, self.data, self.length, self.batch, self.dist = cfg, data, length, batch, dist
        self.orders: dict[int, torch.Tensor] = {}  # epoch -> its order; the last two epochs
        # data streamed from disk: the same indices, decoded a few steps ahead (data/stream.py)
        self.stream = Prefetch(data, self.indices) if isinstance(data, StreamData) else None

    def indices(self, step: int) -> torch.Tensor:
        """This process's slice of step ``step``'s global batch in epoch ``e``'s order."""
        epoch, pos = divmod(step, self.length.steps_per_epoch)
        if epoch not in self.orders:
            n = len(self.data)
            order = epoch_order(self.cfg.train.seed, epoch, n, self.cfg.data.shuffle)
            # the epoch before stays: at an epoch's end the prefetcher asks for the next one's
            # first steps while the loop still asks for this one's last
            self.orders = {e: o for e, o in self.orders.items() if e == epoch - 1}
            # a streamed folder's file indices stay on the host (the decoders read them)
            self.orders[epoch] = order if self.stream is not None else to_device(order, self.data)
        b = self.batch
        return self.dist.shard(self.orders[epoch][pos * b : (pos + 1) * b])

    def at(self, step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(real (b, *shape) in the model's range, labels (b,) or None) of step ``step``."""
        labels = self.data.labels
        if self.stream is not None:  # image folders; labelled by clusters only
            x = self.stream.at(step, self.length.total)
            if self.cfg.model.conditioned is None or labels is None:
                return x, None
            return x, to_device(labels[self.indices(step)], self.data)
        index = self.indices(step)
        y = labels[index] if self.cfg.model.conditioned is not None and labels is not None else None
        return self.data.batch(index), y


# ---------------------------------------------------------------- training


def train(
    cfg: Config,
    run_dir: Path,
    resume: bool = False,
    verbose: bool = True,
    data: TensorData | None = None,
    callbacks: Sequence[Any] = (),
    g: NetSpec = None,
    d: NetSpec = None,
) -> dict[str, Any]:
    """Train ``cfg`` into ``run_dir``; resume from its last good checkpoint when ``resume``.

    Holds the run directory's lock throughout; SIGTERM/SIGINT end the current step, save a
    checkpoint and raise ``Preempted``; a non-finite loss or parameter raises ``Diverged``
    (after up to ``train.rollback`` automatic retries from the last checkpoint at half the
    learning rate). Under torchrun, a collective that fails because another process died or
    stopped answering raises ``PeerLost`` (one line, exit code 4) instead of the backend's
    traceback. ``callbacks``: hooks (``ganforge.engine.callbacks``); ``g`` / ``d``: custom
    nets. Returns a summary: steps, images, wall time, images/s, final losses, the models.
    """
    check_callbacks(callbacks)
    check_run_dir(run_dir, resume)  # one line before any work: a file, /proc, read-only
    # Under torchrun: join the process group; rank 0 alone locks and writes the run directory.
    dist, dist_device = distributed.setup(cfg.train.device, cfg.train.dist_timeout)
    try:
        with RunLock(run_dir) if dist.main else contextlib.nullcontext(), StopSignals() as stop:
            device = dist_device or resolve_device(cfg.train.device)
            set_threads(cfg, device)  # train.threads (CPU)
            cfg, choice = precision.resolve(cfg, device)  # auto -> fp32 or bf16; tf32
            with stop.phase("while loading the data", None, run_dir, saved=False):
                data = data or load_data(cfg.data)
                record = identify(data, cfg.data)  # what the run trains on (datacheck.py)
                data, sizes = _labelled(cfg, data)
                data = data.to(device)
            batch, _ = distributed.local_batch(cfg.train.batch_size, cfg.train.batch_per_rank, dist)
            check_techniques(cfg, data.shape, batch)
            check_labels(cfg, data)
            for key in ("max_seconds", "max_cpu_seconds"):  # ranks could disagree
                if getattr(cfg.train, key) is not None and dist.active:
                    raise ConfigError(
                        f"train.{key} is for single-process runs; set train.iterations instead"
                    )
            length = Length.of(cfg, len(data), batch)
            models = build_models(cfg, data.shape, device, g, d, sizes)
            check_batch(cfg, models.g, models.d, batch)
            with FreshStart(run_dir, dist.main and not resume) as fresh:
                return _train(
                    cfg, run_dir, resume, verbose and dist.main, data, length, models, device,
                    stop, dist, callbacks, record, fresh, choice,
                )  # fmt: skip
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


def _labelled(cfg: Config, data: TensorData) -> tuple[TensorData, torch.Tensor | None]:
    """The data with its k-means clusters as labels under ``model.clusters``, and their sizes."""
    if cfg.model.clusters is None:
        return data, None
    return with_clusters(data, cfg.model.clusters, cfg.train.seed)


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


def _resume(state: TrainState, dist: Dist) -> dict[str, Any]:
    """The counters of the newest good checkpoint, loaded into the models (step 0 if none);
    a checkpoint that does not fit the config is refused before anything is written."""
    run_dir = state.run_dir
    if dist.active:  # rank 0 tidies interrupted saves before anyone reads
        if dist.main:
            clean_leftovers(run_dir / "checkpoints")
        dist.barrier()
    return resume_point(run_dir, state.models, state.device, state.say, not dist.active, state.cfg)


def _start(
    state: TrainState,
    data: TensorData,
    counters: dict[str, Any],
    dist: Dist,
    verbose: bool,
    choice: precision.Choice | None = None,
) -> None:
    """Write the run's files: the log cut back to a resumed step, config, summary, env."""
    cfg, run_dir, models = state.cfg, state.run_dir, state.models
    start = counters["step"]
    if dist.main:
        if start:
            truncate_log(run_dir / "log.jsonl", start)
        (run_dir / "samples").mkdir(parents=True, exist_ok=True)
        once = replace(cfg, data=replace(cfg.data, allow_changed=False))  # this resume only
        save_config(once, run_dir / "config.yaml")
        if state.data_record is not None:
            write_record(run_dir, state.data_record)
        write_summary(cfg, models, data.shape, run_dir / "summary.txt")
        env = _environment(state.device)
        env["world_size"] = dist.world
        if choice is not None:  # what train.precision asked for, what ran, and why
            env["precision"] = {"asked": choice.asked, "chosen": choice.chosen, "why": choice.why}
        env["tf32"] = cfg.train.tf32 and state.device.type == "cuda"
        atomic_write_text(run_dir / "env.json", json.dumps(env, indent=1))
    if verbose:
        ng, nd = nets.count_params(models.g), nets.count_params(models.d)
        state.say(  # the data's source line last: it says what was done to the data
            f"ganforge: recipe {cfg.recipe}, G {ng:,} / D {nd:,} parameters, "
            f"{state.device.type}, {choice.line() if choice else cfg.train.precision}; "
            f"{len(data):,} examples from {data.source}"
        )
        note = precision.tf32_note(cfg, state.device)
        if note:
            state.say(note)
        if start:
            state.say(f"resuming at step {start} of {state.total}")


def _recover(state: TrainState, err: Diverged, dist: Dist) -> int:
    """``train.rollback``: reload the last good checkpoint at half the learning rate and
    return the step to continue from; re-raise when the retries are used up."""
    cfg = state.cfg
    if state.rollbacks >= cfg.train.rollback:
        raise err
    state.rollbacks += 1
    counters = resume_point(state.run_dir, state.models, state.device, state.say, dist.main)
    if "format" not in counters:  # no checkpoint yet: back to the seed's initial weights
        assert state.initial is not None  # kept at step 0 whenever train.rollback is on
        reinitialise(state.models, state.initial)
    _scale_lr(state.models, 0.5)
    state.say(
        f"{err}; rollback {state.rollbacks}/{cfg.train.rollback} to step "
        f"{counters['step']} at half the learning rate"
    )
    assert state.recorder is not None
    state.recorder.truncate(counters["step"], dist.main)
    return counters["step"]


def _train(
    cfg: Config,
    run_dir: Path,
    resume: bool,
    verbose: bool,
    data: TensorData,
    length: Length,
    models: Models,
    device: torch.device,
    stop: StopSignals,
    dist: Dist,
    callbacks: Sequence[Any],
    record: dict[str, Any],
    fresh: FreshStart | None = None,
    choice: precision.Choice | None = None,
) -> dict[str, Any]:
    main = dist.main  # the one process that writes the run directory
    if dist.active and cfg.train.sync_bn:
        models.g = distributed.sync_batchnorm(models.g, device)
        models.d = distributed.sync_batchnorm(models.d, device)
    b = distributed.local_batch(cfg.train.batch_size, cfg.train.batch_per_rank, dist)[0]
    progress = Progress.for_run(cfg, length, verbose)
    state = TrainState(
        cfg, run_dir, models, device, length.total, length.steps_per_epoch, b, progress.message
    )
    state.main, state.stop, state.distributed = main, stop, dist.active
    state.data_record = record
    if fresh is not None:  # a new run failing before its first step tidies up (probe.py)
        fresh.state = state
    counters = _resume(state, dist) if resume else {"step": 0}
    if resume and check_length(run_dir, counters["step"], length.total):  # raises past the end
        progress.close()
        return complete_summary(run_dir, counters)  # already finished: nothing written
    if resume:  # other data than the checkpoint's: refused before any write
        check_resume_data(run_dir, cfg, counters, record, state.say)
    _start(state, data, counters, dist, verbose, choice)
    start, state.rollbacks = counters["step"], counters.get("rollbacks", 0)
    if cfg.train.rollback and start == 0:  # a rollback before any checkpoint restores these
        state.initial = copy.deepcopy(models)
    state.step = start
    progress.start_step = start
    # `models` keeps the plain modules (checkpoints, samples); the step sees DDP wrappers.
    step_models = models
    if dist.active:
        step_models = Models(
            distributed.wrap(models.g, dist, device),
            distributed.wrap(models.d, dist, device),
            models.opt_g,
            models.opt_d,
            augment_p=models.augment_p,  # the same tensor: the step updates it in place
            scaler=models.scaler,
        )
    preparing = "while preparing the evaluation"
    with stop.phase(preparing, start, run_dir, enabled=not dist.active, saved=start > 0):
        state.callbacks = _hooks(state, data, length, callbacks)
    if main:
        write_status(
            run_dir, "running", total_steps=length.total, steps_per_epoch=length.steps_per_epoch
        )
    recorder = Recorder(run_dir, main, progress, cfg.train.tensorboard, start, dist)
    state.recorder = recorder
    batches = Batches(cfg, data, length, b, dist)
    t_start = time.perf_counter()
    try:
        state.fire("on_train_start")
        _steps(state, step_models, batches, length, stop, dist, progress)
    except BaseException as exc:
        if main:  # on a full disk this may fail too: the original error is the one to report
            with contextlib.suppress(OSError):
                reason = str(exc) or type(exc).__name__
                write_status(run_dir, status_of_exception(exc), error=reason)
        raise
    finally:
        recorder.close()

    wall = time.perf_counter() - t_start
    if main:
        state.fire("on_train_end")
        state.say(final_note(run_dir, length.total))  # which G drew final.png (ema.py)
        write_status(run_dir, "finished")
    return _summary(state, start, wall, recorder.last)


def _steps(
    state: TrainState,
    step_models: Models,
    batches: Batches,
    length: Length,
    stop: StopSignals,
    dist: Dist,
    progress: Progress,
) -> None:
    """The training steps from ``state.step`` to the end of the run, or to a stop (raises
    ``Preempted``) or a divergence past ``train.rollback`` (raises ``Diverged``)."""
    cfg, models, b, device = state.cfg, state.models, state.batch, state.device
    recorder = state.recorder
    assert recorder is not None
    every_step_check = not sync_free(device)  # on a GPU, check at log steps: no sync per step
    budget = cfg.train.max_seconds  # seconds of training in this session (single process)
    cpu_budget = cfg.train.max_cpu_seconds  # process CPU seconds (time.process_time) likewise
    t_start, cpu_start = time.perf_counter(), time.process_time()
    step = first = state.step
    while step < length.total:
        try:
            real, y = batches.at(step)
        except StreamedFileError as e:  # a streamed file gone: save the last step, then stop
            raise lost_file(state, e, step, first) from None
        rnd = draw(cfg, step, b, device, dist)
        out = train_step(step_models, cfg, real, rnd.z, step, rnd.label_noise, y, rnd.aug)
        done = step + 1
        if (budget is not None and time.perf_counter() - t_start >= budget) or (
            cpu_budget is not None and time.process_time() - cpu_start >= cpu_budget
        ):
            length.total = state.total = done  # train.max_(cpu_)seconds: the run ends here
        if models.g_ema is not None and "loss_g" in out and step >= ema_start_step(cfg):
            models.g_ema.update_parameters(models.g)
        log_now = done % cfg.train.log_every == 0 or done == length.total
        try:
            if every_step_check or log_now:
                if dist.active:
                    state.stopping = distributed.check_step(dist, out, done, stop.requested)
                else:  # between log steps (accelerator): their sums, read now
                    check_losses(out, done, None if every_step_check else recorder.sums)
        except Diverged as e:
            step = _recover(state, e, dist)
            batches.orders.clear()
            continue
        recorder.add(out)
        state.step, state.epoch = done, step // length.steps_per_epoch + 1
        progress.tick(done, state.epoch)  # the bar; piped output: a line when one is due
        if log_now:
            state.fire("on_log", recorder.record(state.counters, b))
        if not dist.active:
            state.stopping = stop.requested
        state.fire("on_step_end", out)  # samples, checkpoint, evaluation, the caller's
        if state.stopping:
            raise Preempted(distributed.stop_signal(stop.signum), done, state.run_dir)
        step = done


def _hooks(
    state: TrainState, data: TensorData, length: Length, callbacks: Sequence[Any]
) -> list[Any]:
    """The built-in hooks, in this order: samples, live report, checkpoint, evaluation; then
    the caller's. Processes other than rank 0 only check and skip the checkpoint."""
    cfg = state.cfg
    hooks: list[Any] = [Checkpoints(cfg.train.checkpoint_every or length.sample_every)]
    if not state.main:
        return hooks
    real_points = None if data.is_image else data.x[: _grid_n(cfg) * 10].float()
    hooks.insert(0, SampleGrids(cfg, state.device, real_points))
    if cfg.train.report:  # report.html during training, rate-limited (report/html.py)
        hooks.insert(1, LiveReport())
    evaluator = TrainingEval.of(cfg, state.run_dir, state.device)  # eval.every
    if evaluator is not None:
        hooks.append(Evaluations(evaluator))
    return hooks + list(callbacks)


def _summary(
    state: TrainState, start: int, wall: float, last: dict[str, Any] | None
) -> dict[str, Any]:
    """What ``train`` returns: steps, images, wall time, images/s, final losses, the models."""
    total, b = state.total, state.batch
    return {
        "run_dir": str(state.run_dir),
        "steps": total,
        "images": total * b,
        "wall_s": round(wall, 2),
        "img_s": round((total - start) * b / wall, 1) if wall > 0 else None,
        "loss_d": last.get("loss_d") if last else None,
        "loss_g": last.get("loss_g") if last else None,
        "rollbacks": state.rollbacks,
        "models": state.models,
    }


def _grid_n(cfg: Config) -> int:
    return cfg.train.grid[0] * cfg.train.grid[1]


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
