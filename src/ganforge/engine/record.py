"""The loop's recorder: running sums of each step's outputs, log.jsonl records, TensorBoard
and the progress display, in one place."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..errors import GanforgeError
from ..report.runlog import log_lines
from ..report.tb import TensorBoard
from .progress import Progress

if TYPE_CHECKING:
    from .distributed import Dist


def truncate_log(path: Path, step: int) -> None:
    """Drop log records written after the checkpoint a run resumes from."""
    from ..checkpoint import atomic_write_text

    if not path.exists():
        return
    try:  # lines that hold no record (cut by a crash, binary, wrong types) are dropped
        keep = [line for line, rec in log_lines(path) if rec["step"] <= step]
    except OSError as e:
        raise GanforgeError(f"{path}: cannot read the run's log ({e.strerror})") from None
    atomic_write_text(path, "".join(ln.decode() + "\n" for ln in keep))


class Recorder:
    """Sums a step's outputs between log steps; writes each record to log.jsonl (rank 0),
    mirrors it to TensorBoard and shows it in the progress display.

    Sums stay tensors on the device (no host sync per step); under torchrun they are averaged
    over ranks at log steps only.
    """

    def __init__(
        self,
        run_dir: Path,
        main: bool,
        progress: Progress,
        tensorboard: bool,
        start_step: int,
        dist: Dist | None = None,
    ) -> None:
        self.path = run_dir / "log.jsonl" if main else Path(os.devnull)
        self.progress, self.dist = progress, dist
        self.tb = TensorBoard(run_dir, tensorboard and main, start_step)  # no-op unless asked
        self.file = open(self.path, "a")
        self.last: dict[str, Any] | None = None
        self.reset()
        self.t_start = time.perf_counter()

    def reset(self) -> None:
        """Forget the sums since the last record (after a record, or a rollback)."""
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}  # steps each value was seen (loss_g: G steps only)
        self.window_steps, self.t_window = 0, time.perf_counter()

    def add(self, out: dict[str, torch.Tensor]) -> None:
        for k, v in out.items():
            self.sums[k] = self.sums[k] + v if k in self.sums else v.clone()
            self.counts[k] = self.counts.get(k, 0) + 1
        self.window_steps += 1

    def record(self, counters: dict[str, int], batch: int) -> dict[str, Any]:
        """The record of the steps since the last one: mean losses, images/s, time."""
        sums = self.sums
        if self.dist is not None and self.dist.active and sums:  # averaged over ranks
            sums = dict(zip(sums, self.dist.mean(torch.stack(list(sums.values()))), strict=True))
        now = time.perf_counter()
        rec: dict[str, Any] = dict(counters)
        rec.update({k: float(v) / self.counts[k] for k, v in sums.items()})
        rec["img_s"] = self.window_steps * batch / max(now - self.t_window, 1e-9)
        rec["time"] = round(now - self.t_start, 3)
        self.write(rec)
        self.progress.update(rec)
        self.last = rec
        self.reset()
        return rec

    def write(self, rec: dict[str, Any]) -> None:
        """Append one record to log.jsonl (and TensorBoard)."""
        self.file.write(json.dumps(rec) + "\n")
        self.file.flush()
        self.tb.sync()

    def image(self, path: Path, step: int) -> None:
        self.tb.image(path, step)

    def truncate(self, step: int, main: bool) -> None:
        """Cut the log back to ``step`` (a rollback) and continue appending."""
        self.file.close()
        if main:
            truncate_log(self.path, step)
        self.file = open(self.path, "a")
        self.reset()

    def close(self) -> None:
        self.file.close()
        self.tb.close()
        self.progress.close()
