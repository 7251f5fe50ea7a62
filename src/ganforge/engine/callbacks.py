"""Training hooks: the small protocol the loop calls, and the built-in hooks it runs.

A callback is any object with some of these methods; the loop calls those it finds, in order,
on the process that writes the run directory (rank 0 under torchrun):

    on_train_start(state)            before the first step (after a resume: at its step)
    on_step_end(state, out)          after every step; ``out`` holds the step's losses as tensors
    on_log(state, record)            each log.jsonl record (losses as floats)
    on_sample(state, path)           a sample grid was written to ``path``
    on_checkpoint(state, path)       checkpoint ``path`` was written
    on_eval(state, record)           an evaluation record (``eval.every``)
    on_train_end(state)              the run finished normally; final.png is written

``state`` is the loop's ``TrainState``: the config, run directory, models (``state.models.g``,
``.d``, ``.sampler()``), the number of steps done, the epoch, the length and ``say`` (print a
line above the progress bar). Subclass ``Callback`` to get empty defaults. The built-in hooks
below (sample grids, checkpoints, evaluation) are callbacks too and run first.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .. import nets
from ..checkpoint import Models, save_checkpoint
from ..config import Config
from ..data.identity import stamp
from ..seeding import STREAM_SAMPLE, mix_seed
from ..visual import render
from .guard import check_parameters

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from .evaluation import TrainingEval
    from .guard import StopSignals
    from .record import Recorder

EVENTS = (
    "on_train_start",
    "on_step_end",
    "on_log",
    "on_sample",
    "on_checkpoint",
    "on_eval",
    "on_train_end",
)


class Callback:
    """Base class with empty hooks; override the ones you need (see the module's docstring)."""

    def on_train_start(self, state: TrainState) -> None:
        """Before the first step of this session."""

    def on_step_end(self, state: TrainState, out: dict[str, torch.Tensor]) -> None:
        """After every step; ``out``: the step's detached losses (no host sync done)."""

    def on_log(self, state: TrainState, record: dict[str, Any]) -> None:
        """A log.jsonl record was written."""

    def on_sample(self, state: TrainState, path: Path) -> None:
        """A fixed-noise sample grid was written to ``path``."""

    def on_checkpoint(self, state: TrainState, path: Path) -> None:
        """Checkpoint ``path`` (``checkpoints/last``) was written."""

    def on_eval(self, state: TrainState, record: dict[str, Any]) -> None:
        """An evaluation record was written (``eval.every``)."""

    def on_train_end(self, state: TrainState) -> None:
        """Training finished normally."""


@dataclass
class TrainState:
    """What the loop shares with its hooks. ``step`` counts the steps done so far."""

    cfg: Config
    run_dir: Path
    models: Models
    device: torch.device
    total: int  # the run's length in steps
    steps_per_epoch: int
    batch: int  # the global batch (all processes)
    say: Callable[[str], None]
    main: bool = True  # this process writes the run directory
    step: int = 0
    epoch: int = 0  # 1-based epoch of the last step done
    stopping: bool = False  # a stop signal was agreed: checkpoint now, then stop
    rollbacks: int = 0  # divergence rollbacks so far (train.rollback)
    recorder: Recorder | None = None
    callbacks: Sequence[Any] = field(default_factory=tuple)
    stop: StopSignals | None = None  # the run's signal handler (long phases stop at once)
    distributed: bool = False  # under torchrun: ranks agree on stops at their next step
    initial: Models | None = None  # the seed's initial state (train.rollback before a checkpoint)
    data_record: dict[str, Any] | None = None  # the data's identity (data/identity.py)

    def save_now(self) -> None:
        """Write ``checkpoints/last`` at the current step (a stop in a long phase)."""
        for cb in self.callbacks:
            if isinstance(cb, Checkpoints):
                cb.save(self)

    @property
    def counters(self) -> dict[str, int]:
        return {"step": self.step, "epoch": self.epoch, "images": self.step * self.batch}

    @property
    def final(self) -> bool:
        return self.step == self.total

    def fire(self, event: str, *args: Any) -> None:
        """Call ``event`` on every callback that has it."""
        for cb in self.callbacks:
            hook = getattr(cb, event, None)
            if hook is not None:
                hook(self, *args)


# ---------------------------------------------------------------- the built-in hooks


def fixed_noise(cfg: Config, n: int, device: torch.device) -> torch.Tensor:
    """The run's fixed latent batch for sample grids (the same on every device)."""
    gen = torch.Generator().manual_seed(mix_seed(cfg.train.seed, STREAM_SAMPLE))
    return nets.sample_noise(n, cfg.model.z_dim, cfg.model.z_dist, gen, "cpu").to(device)


def grid_labels(cfg: Config, device: torch.device | str) -> torch.Tensor | None:
    """Labels of the sample grid of a conditional recipe, every class shown: row r shows
    class r mod classes (at least as many rows as classes), else column c class c mod classes
    (enough columns), else cell i class i mod classes."""
    if cfg.model.num_classes is None:
        return None
    rows, cols, k = *cfg.train.grid, cfg.model.num_classes
    i = torch.arange(rows * cols, device=device)
    if rows >= k or cols < k:  # row r: class r mod k (every cell in turn if both are short)
        return (i // cols) % k if rows >= k else i % k
    return (i % cols) % k  # more columns than classes: column c shows class c mod k


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


class SampleGrids(Callback):
    """The fixed-noise grid every ``train.sample_every`` steps (default: each epoch) and
    ``final.png`` at the end; 2-D data is drawn as a scatter over real points."""

    def __init__(self, cfg: Config, device: torch.device, real_points: torch.Tensor | None):
        n = cfg.train.grid[0] * cfg.train.grid[1]
        self.z, self.y = fixed_noise(cfg, n, device), grid_labels(cfg, device)
        self.real = real_points  # scatter backdrop of 2-D data, else None
        self.every = cfg.train.sample_every

    def _write(self, state: TrainState, path: Path, title: str) -> None:
        save_samples(state.models.sampler(), self.z, path, state.cfg, self.real, title, self.y)

    def on_step_end(self, state: TrainState, out: dict[str, torch.Tensor]) -> None:
        done, spe = state.step, state.steps_per_epoch
        if done % (self.every or spe) and not state.final:
            return
        if self.every is None and done % spe == 0:
            name = f"epoch_{done // spe:04d}.png"
        else:
            name = f"step_{done:06d}.png"
        path = state.run_dir / "samples" / name
        self._write(state, path, f"step {done}")
        if state.recorder is not None:
            state.recorder.image(path, done)  # TensorBoard, when on
        state.fire("on_sample", path)

    def on_train_end(self, state: TrainState) -> None:
        self._write(state, state.run_dir / "final.png", "final")


class Checkpoints(Callback):
    """``checkpoints/last`` every ``train.checkpoint_every`` steps (default: with the samples),
    at the end and when a stop was asked for; never of non-finite weights."""

    def __init__(self, every: int) -> None:
        self.every = every

    def on_step_end(self, state: TrainState, out: dict[str, torch.Tensor]) -> None:
        if state.step % self.every and not state.final and not state.stopping:
            return
        self.save(state)

    def save(self, state: TrainState) -> None:
        models = state.models
        check_parameters({"generator": models.g, "discriminator": models.d}, state.step)
        if not state.main:
            return
        counters: dict[str, Any] = {**state.counters, "rollbacks": state.rollbacks}
        if state.data_record is not None:  # a resume compares it with its data
            counters["data"] = stamp(state.data_record)
        path = save_checkpoint(state.run_dir / "checkpoints", "last", models, counters)
        state.fire("on_checkpoint", path)


class LiveReport(Callback):
    """``train.report``: report.html refreshed at sample steps while the run trains (cheaply,
    atomically and rate-limited by ``refresh_report``); the full page is the caller's."""

    def on_sample(self, state: TrainState, path: Path) -> None:
        from ..report.html import refresh_report

        refresh_report(state.run_dir)


class Evaluations(Callback):
    """``eval.every``: evaluate the sampling G, log the record, keep the ``best`` checkpoint."""

    def __init__(self, evaluator: TrainingEval) -> None:
        self.evaluator = evaluator

    def on_step_end(self, state: TrainState, out: dict[str, torch.Tensor]) -> None:
        # not when stopping: the checkpoint is saved and the signal waits for nothing
        if not self.evaluator.due(state.step, state.total) or state.stopping:
            return
        phase = contextlib.nullcontext()
        if state.stop is not None:  # a signal ends the evaluation at once, with a checkpoint
            phase = state.stop.phase(
                "during the evaluation", state.step, state.run_dir, state.save_now,
                not state.distributed,
            )  # fmt: skip
        with phase:
            rec = self.evaluator.run(state.models, state.run_dir / "checkpoints", state.counters)
        if state.recorder is not None:
            state.recorder.write(rec)
        state.say(self.evaluator.describe(rec))
        state.fire("on_eval", rec)


def check_callbacks(callbacks: Sequence[Any]) -> None:
    """Each callback must have at least one hook, callable; a one-line error otherwise."""
    from ..errors import ConfigError

    for cb in callbacks:
        hooks = [e for e in EVENTS if callable(getattr(cb, e, None))]
        if not hooks:
            raise ConfigError(
                f"callbacks: {cb!r} has none of the hooks {', '.join(EVENTS)}; "
                "subclass ganforge.Callback and override one"
            )


class ShowSamples(Callback):
    """In Jupyter or Colab: the newest sample grid shown in the cell's output, replaced in
    place at every sample step (``train.sample_every``), and the final grid at the end."""

    def __init__(self) -> None:
        self.handle: Any = None

    def _show(self, path: Path) -> None:
        try:
            from IPython.display import Image, display
        except ImportError:  # not in a notebook: nothing to show
            return
        image = Image(filename=str(path))
        if self.handle is None:
            self.handle = display(image, display_id=True)
        else:
            self.handle.update(image)

    def on_sample(self, state: TrainState, path: Path) -> None:
        self._show(path)

    def on_train_end(self, state: TrainState) -> None:
        self._show(state.run_dir / "final.png")
