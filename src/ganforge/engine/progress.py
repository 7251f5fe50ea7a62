"""Progress display, with tqdm everywhere: a bar on a terminal, a widget in Jupyter/Colab
(``tqdm.auto``), and timed plain lines when output is piped to a file.

- The bar line always holds the bar, step/total, elapsed time and the ETA; the statistics
  (losses, D outputs, images/s) go on a second line cut to the terminal's width.
- Piped: a line within ~10 s of the first step, then every ``train.progress_every_s``
  seconds (30 by default), and at every log step when those come more often.
- The ETA shows days past 24 h (``1d 03:45:00``) and honours ``train.max_seconds``.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import textwrap
import time
import warnings
from typing import Any, TextIO

FIRST_LINE_S = 10.0  # piped: the first line comes this soon after the first step


def duration(seconds: float | None) -> str:
    """h:mm:ss, with days in front past 24 hours: ``1d 03:45:00``; '?' when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    d, s = divmod(s, 86400)
    text = f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"
    return f"{d}d {text}" if d else text


def stats(rec: dict[str, Any], short: bool = False) -> str:
    """The statistics of a log record; ``short`` for narrow terminals."""
    parts = []
    if "loss_d" in rec:
        parts.append(f"{'D' if short else 'loss_d'} {rec['loss_d']:.3f}")
    if "loss_g" in rec:
        parts.append(f"{'G' if short else 'loss_g'} {rec['loss_g']:.3f}")
    if "d_real" in rec and not short:
        parts.append(f"D(x) {rec['d_real']:.2f}  D(G(z)) {rec['d_fake']:.2f}")
    if "img_s" in rec:
        parts.append(f"{rec['img_s']:,.0f} img/s")
    return "  ".join(parts)


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython  # type: ignore[import-not-found]
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


class Progress:
    """Shows step, epoch, statistics, elapsed time and ETA.

    The loop calls ``tick(step, epoch)`` after every step (cheap: no host sync, no output
    unless due) and ``update(rec)`` with each log record; ``message`` prints a line above.
    """

    def __init__(
        self,
        total: int,
        start: int,
        steps_per_epoch: int,
        enabled: bool = True,
        max_seconds: float | None = None,
        every_s: float = 30.0,
        stream: TextIO | None = None,
    ) -> None:
        self.total, self.spe = total, steps_per_epoch
        self.start_step, self.t0 = start, time.perf_counter()
        self.enabled, self.max_seconds, self.every_s = enabled, max_seconds, every_s
        self.stream = stream or sys.stdout
        self.step, self.epoch = start, 1
        self.rec: dict[str, Any] = {}
        self.t_first: float | None = None  # when the first step of this session ended
        self.step_first = start
        self.next_line = math.inf  # piped: when the next timed line is due
        self.bar: Any = None
        self.status: Any = None  # the terminal's second line: statistics
        self.plan: str | None = None  # said once after the first step (see ``say_plan``)
        self.estimated = False
        self.length: Any = None  # the loop's Length, when given (for_run)
        if not enabled:
            return
        notebook = _in_notebook()
        if notebook or self.stream.isatty():
            self._open_bar(notebook)

    @classmethod
    def for_run(cls, cfg: Any, length: Any, enabled: bool) -> Progress:
        """The loop's display of a run: ``cfg`` the Config, ``length`` the loop's Length
        (read live: train.max_seconds may end the run early)."""
        p = cls(
            length.total,
            0,
            length.steps_per_epoch,
            enabled,
            max_seconds=cfg.train.max_seconds,
            every_s=cfg.train.progress_every_s,
        )
        p.length = length
        plan = plan_text(length, cfg.train.epochs, cfg.train.iterations, cfg.train.max_seconds)
        from .ema import start_note

        p.say_plan("\n".join([plan, *start_note(cfg, length.total)]))
        return p

    # ------------------------------------------------------------ display kinds

    def _open_bar(self, notebook: bool) -> None:
        fmt = "{desc} {bar} {n_fmt}/{total_fmt} {elapsed_text} eta {eta_text}"
        kw: dict[str, Any] = {
            "total": self.total,
            "initial": self.start_step,
            "bar_format": fmt,
            "dynamic_ncols": True,
            "mininterval": 0.5,
            "unit": "step",
            "leave": True,
        }
        if notebook:
            import importlib.util

            try:
                if importlib.util.find_spec("ipywidgets") is None:  # the widget needs it; a
                    raise ImportError("ipywidgets")  # half-built bar would fail in __del__
                from tqdm.notebook import tqdm as nb_tqdm

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    self.bar = _with_eta(nb_tqdm)(**kw)
                self.bar.progress = self
                self.status = None
                return
            except ImportError:  # no ipywidgets: the notebook gets plain timed lines
                self.bar = None
                return
        from tqdm import tqdm

        try:  # a terminal that reports no size (a bare pty) gets 80 columns, not an empty bar
            sized = os.get_terminal_size(self.stream.fileno()).columns > 0
        except (OSError, ValueError, AttributeError):
            sized = False
        if not sized:  # tqdm would hide every bar below row 0 of a 0-row screen
            cols, rows = shutil.get_terminal_size((80, 24))
            kw.update(dynamic_ncols=False, ncols=cols, nrows=rows)
        self.bar = _with_eta(tqdm)(file=self.stream, position=0, **kw)
        self.bar.progress = self
        self.status = tqdm(
            file=self.stream,
            position=1,
            bar_format="{desc}",
            dynamic_ncols=sized,
            ncols=None if sized else kw["ncols"],
            nrows=None if sized else kw["nrows"],
            leave=False,
        )

    def eta_s(self) -> float | None:
        """Seconds left: by the speed of this session's steps; within train.max_seconds."""
        now = time.perf_counter()
        done = self.step - self.step_first
        if self.t_first is None or done <= 0:
            return None
        # steps since the first one, over the time since it ended: set-up and the first
        # step (warm-up, compilation) are not the training speed
        rate = done / max(now - self.t_first, 1e-9)
        left = (self.total - self.step) / rate if rate > 0 else None
        if self.max_seconds is not None:
            budget_left = max(self.max_seconds - (now - self.t0), 0.0)
            left = budget_left if left is None else min(left, budget_left)
        return left

    def _desc(self) -> str:
        return f"epoch {self.epoch}"

    def line(self) -> str:
        """The plain line of the piped display."""
        elapsed = time.perf_counter() - self.t0
        head = (
            f"step {self.step:,}/{self.total:,}  epoch {self.epoch}  "
            f"{duration(elapsed)} eta {duration(self.eta_s())}"
        )
        s = stats(self.rec)
        return f"{head}  {s}" if s else head

    # ------------------------------------------------------------ the loop's calls

    def tick(self, step: int, epoch: int) -> None:
        """After each step: move the bar; piped, print a line when one is due by time."""
        if not self.enabled:
            return
        now = time.perf_counter()
        self.step, self.epoch = step, epoch
        if self.length is not None:
            self.total = self.length.total
        if self.t_first is None:
            self.t_first, self.step_first = now, step
            self.next_line = now + FIRST_LINE_S
            if self.plan:
                self.message(self.plan)
        if self.plan and not self.estimated and now - self.t_first >= min(5.0, FIRST_LINE_S):
            self.estimated = True
            self.message(
                f"at the speed measured so far the run needs about {duration(self.eta_s())} more"
            )
        if self.bar is not None:
            self.bar.total = self.total  # train.max_seconds may end the run early
            self.bar.set_description_str(self._desc(), refresh=False)
            self.bar.update(step - self.bar.n)
            return
        if now >= self.next_line:
            self._print(self.line())
            self.next_line = now + self.every_s

    def update(self, rec: dict[str, Any]) -> None:
        """A log record: new statistics; piped, a line (the step cadence)."""
        if not self.enabled:
            return
        self.rec = rec
        self.step, self.epoch = rec["step"], rec["epoch"]
        if self.bar is not None:
            if self.status is not None:
                width = shutil.get_terminal_size((80, 24)).columns - 1
                text = "  " + stats(rec)
                if len(text) > width:
                    text = "  " + stats(rec, short=True)
                self.status.set_description_str(text[:width])
            else:  # notebook: the statistics beside the bar
                self.bar.set_postfix_str(stats(rec), refresh=False)
            self.bar.set_description_str(self._desc(), refresh=False)
            self.bar.update(rec["step"] - self.bar.n)
            return
        self._print(self.line())
        self.next_line = time.perf_counter() + self.every_s

    def say_plan(self, text: str) -> None:
        """A note said with the first step, followed ~5 s later by the time estimate."""
        self.plan = text

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None and self.status is not None:
            width = shutil.get_terminal_size((80, 24)).columns
            lines = [textwrap.fill(ln, width, subsequent_indent="  ") for ln in text.split("\n")]
            self.bar.write("\n".join(lines), file=self.stream)
        elif self.bar is not None:
            print(text, flush=True)
        else:
            self._print(text)

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.refresh()
            if self.status is not None:
                self.status.close()
            self.bar.close()
            self.bar = None


def _with_eta(base: type) -> type:
    """A tqdm class whose bar_format knows ``{eta_text}``: our ETA (days, time budget)."""

    class Bar(base):  # type: ignore[misc, valid-type]
        progress: Progress | None = None

        @property
        def format_dict(self) -> dict[str, Any]:
            d = super().format_dict
            p = self.progress
            d["eta_text"] = duration(p.eta_s()) if p is not None else "?"
            d["elapsed_text"] = duration(d.get("elapsed"))
            return d

    return Bar


def plan_text(length: Any, epochs: int | None, iterations: int | None, budget: float | None) -> str:
    """The first lines' note on the run's length and how to shorten it."""
    steps, spe = length.total, length.steps_per_epoch
    if iterations:
        text = f"{steps:,} steps (train.iterations)"
    else:
        text = f"{steps:,} steps ({epochs} epochs of {spe:,} steps)"
    if budget is not None:
        text += f", at most {duration(budget)} (train.max_seconds)"
    return (
        f"training {text}\n"
        "shorten: --set train.iterations=N, train.epochs=N or train.max_seconds=SECONDS"
    )
