"""The progress display: ETA past a day and within train.max_seconds, timed lines when
piped, the bar's line at 80 columns, and Ctrl-C as a stop."""

from __future__ import annotations

import io
import re

import pytest

from ganforge.engine import progress as prog
from ganforge.engine.progress import Progress, duration


class Clock:
    """A fake time.perf_counter the test moves by hand."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(prog.time, "perf_counter", c)
    return c


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_duration_shows_days():
    assert duration(27 * 3600 + 45 * 60) == "1d 03:45:00"
    assert duration(59) == "00:00:59" and duration(None) == "?"
    assert duration(3 * 86400 + 1) == "3d 00:00:01"


REC = {"step": 0, "epoch": 1, "loss_d": 0.5, "loss_g": 1.5, "d_real": 0.6, "d_fake": 0.4}


def test_piped_lines_come_by_time_and_by_log_step(clock):
    out = io.StringIO()
    p = Progress(100_000, 0, 1000, True, every_s=30.0, stream=out)
    clock.t += 5  # set-up before the first step is not training time
    p.tick(1, 1)
    assert out.getvalue() == ""
    step = 1
    for _ in range(90):  # 0.1 s a step: 9 s
        clock.t += 0.1
        step += 1
        p.tick(step, 1)
    assert out.getvalue() == ""  # not yet 10 s
    for _ in range(20):
        clock.t += 0.1
        step += 1
        p.tick(step, 1)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and re.match(r"step 10[12]/100,000", lines[0])  # at ~10 s
    # then every 30 s, whatever the step count
    for _ in range(400):
        clock.t += 0.1
        step += 1
        p.tick(step, 1)
    assert len(out.getvalue().splitlines()) == 2
    p.update({**REC, "step": step, "img_s": 1280.0})  # a log step adds a line at once
    last = out.getvalue().splitlines()[-1]
    assert "loss_d 0.500" in last and "1,280 img/s" in last


def test_eta_past_a_day_and_within_the_budget(clock):
    out = io.StringIO()
    p = Progress(1_000_000, 0, 1000, True, stream=out)
    p.tick(1, 1)
    clock.t += 100.0
    p.tick(1001, 2)  # 10 steps/s: 999,000 steps left = 99,900 s
    assert duration(p.eta_s()) == "1d 03:45:00"
    assert "eta 1d 03:45:00" in p.line()
    budget = Progress(1_000_000, 0, 1000, True, max_seconds=360.0, stream=out)
    budget.tick(1, 1)
    clock.t += 60.0
    budget.tick(601, 1)
    assert 299 <= budget.eta_s() <= 300  # the 6-minute budget, not the steps


@pytest.mark.parametrize("cols", [80, 200])
def test_bar_line_keeps_eta_at_any_width(clock, monkeypatch, cols):
    monkeypatch.setenv("COLUMNS", str(cols))
    out = Tty()
    p = Progress(93_600, 0, 468, True, stream=out)
    assert p.bar is not None
    p.bar.ncols = cols  # what dynamic_ncols reads from a real terminal
    p.tick(1, 1)
    clock.t += 30.0
    p.update({**REC, "step": 528, "epoch": 2, "img_s": 1396.0})
    p.bar.refresh()
    screen = out.getvalue().replace("\r", "\n")
    bars = [ln for ln in screen.splitlines() if "/93600" in ln]
    assert bars, screen
    line = bars[-1].rstrip()
    assert len(line) <= cols
    assert re.search(r"^epoch 2 .*528/93600 \d\d:\d\d:\d\d eta 01:28:1\d", line), line
    stats = [ln for ln in screen.splitlines() if "loss" in ln or " D " in ln]
    assert stats and all(len(s.rstrip()) <= cols for s in stats)
    p.close()


def test_plan_is_said_with_the_first_step(clock):
    out = io.StringIO()

    class Length:
        total, steps_per_epoch = 93_600, 468

    class Cfg:
        class train:  # noqa: N801
            max_seconds, progress_every_s, epochs, iterations = None, 30.0, 200, None

        class model:  # noqa: N801
            ema = None

    p = Progress.for_run(Cfg, Length, True)
    p.stream = out
    p.tick(1, 1)
    clock.t += 6.0
    p.tick(60, 1)
    text = out.getvalue()
    assert "training 93,600 steps (200 epochs of 468 steps)" in text
    assert "train.iterations=N" in text
    assert "the run needs about 02:38:33 more" in text  # 93,540 steps at 59 per 6 s


def test_ctrl_c_is_a_stop_not_an_error(tmp_path, capsys):
    import signal

    from ganforge import cli
    from ganforge.errors import Preempted

    def stopped(args):
        raise Preempted(signal.SIGINT, 528, tmp_path / "run")

    old = cli.cmd_runs
    cli.cmd_runs = stopped  # any command: main's handling is what is tested
    try:
        code = cli.main(["runs", str(tmp_path)])
    finally:
        cli.cmd_runs = old
    err = capsys.readouterr().err
    assert code == 130
    assert err.startswith("ganforge: stopped by SIGINT after step 528; checkpoint saved")
    assert "error" not in err and "--resume" in err


def test_notebook_widget_or_timed_lines_without_ipywidgets(clock, monkeypatch):
    import sys

    monkeypatch.setattr(prog, "_in_notebook", lambda: True)
    out = io.StringIO()
    p = Progress(1000, 0, 100, True, stream=out)
    if p.bar is not None:  # ipywidgets installed: the widget
        assert type(p.bar).__module__ == prog.__name__  # tqdm.notebook's bar, with our ETA
        assert "tqdm.notebook" in [c.__module__ for c in type(p.bar).__mro__]
        p.close()
    monkeypatch.setitem(sys.modules, "tqdm.notebook", None)  # no ipywidgets: import fails
    q = Progress(1000, 0, 100, True, stream=out)
    assert q.bar is None
    q.tick(1, 1)
    clock.t += 11
    q.tick(50, 1)
    assert out.getvalue().startswith("step 50/1,000")
