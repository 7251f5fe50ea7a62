"""Progress display: a rich progress bar on a terminal, plain log lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import Any


def _fmt(rec: dict[str, Any]) -> str:
    return (
        f"loss_d {rec['loss_d']:.3f}  loss_g {rec['loss_g']:.3f}  "
        f"D(x) {rec['d_real']:.2f}  D(G(z)) {rec['d_fake']:.2f}  {rec['img_s']:,.0f} img/s"
    )


class Progress:
    """Shows step, epoch, images/s, losses and ETA; call ``update`` with each log record."""

    def __init__(self, total: int, start: int, steps_per_epoch: int, enabled: bool = True):
        self.total, self.spe = total, steps_per_epoch
        self.start_step, self.t0 = start, time.perf_counter()
        self.enabled = enabled
        self.bar = None
        if enabled and sys.stdout.isatty():
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self.bar = RichProgress(
                TextColumn("epoch {task.fields[epoch]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
            )
            self.task = self.bar.add_task("train", total=total, completed=start, epoch=1, stats="")
            self.bar.start()

    def update(self, rec: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(self.task, completed=rec["step"], epoch=rec["epoch"], stats=_fmt(rec))
            return
        done = rec["step"] - self.start_step
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / max(done, 1) * (self.total - rec["step"])
        print(
            f"step {rec['step']}/{self.total}  epoch {rec['epoch']}  {_fmt(rec)}  "
            f"eta {time.strftime('%H:%M:%S', time.gmtime(eta))}",
            flush=True,
        )

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.console.print(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
