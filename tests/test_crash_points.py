"""A process killed at each write a run directory sees leaves a run every command still works
on, and loses nothing already written.

Each case forks a child process that runs one ganforge command and dies by ``os._exit(137)``
(no clean-up, no ``finally``: what SIGKILL leaves) at one exact point: before or after one
rename (``os.replace`` / ``os.rename``), in the middle of one append (``os.write`` gets half
its bytes to the file), or before a checkpoint's manifest is written. Then ``runs``,
``sample``, ``evaluate``, ``report`` and ``train --resume`` (to the end) run on what is left,
and the log lines, checkpoint and metrics written before the kill are checked to be there.
"""

from __future__ import annotations

import json
import os
import shutil
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ganforge.ckpt_read import open_checkpoint
from ganforge.cli import main
from ganforge.report.runlog import run_state

from conftest import write_idx

KILLED = 137
DEVICE = ["--device", "cpu", "-q", "--set", "train.report=false", "--set", "train.threads=1"]
TINY = ["--set", "train.iterations=12", "--set", "train.batch_size=16", "--set", "train.grid=[2,2]"]
TINY += ["--set", "train.checkpoint_every=4", "--set", "train.log_every=2"]
TINY += ["--set", "train.sample_every=100000"]
TOTAL = 12  # steps of the runs (checkpoints at 4, 8, 12)


@dataclass
class Point:
    """Where the child dies: at the ``nth`` call of ``call`` that ``match``es."""

    call: str  # "replace" (os.replace and os.rename), "append" (os.write) or "manifest"
    match: Callable[[str, str], bool]  # on the file names (source, target) or (file, "")
    nth: int = 1
    after: bool = False  # die once the rename is done (else before it)
    setup: Callable[[], None] | None = None  # in the child, before the command
    hits: list[int] = field(default_factory=list)

    def arm(self) -> None:
        if self.setup:
            self.setup()
        if self.call == "replace":
            for name in ("replace", "rename"):
                self._wrap_rename(name)
        elif self.call == "append":
            real_write = os.write

            def write(fd: int, data: bytes) -> int:
                try:
                    name = os.readlink(f"/proc/self/fd/{fd}")
                except OSError:
                    name = ""
                if self._hit(Path(name).name, ""):
                    real_write(fd, bytes(data)[: len(data) // 2])
                    os._exit(KILLED)
                return real_write(fd, data)

            os.write = write
        else:  # the checkpoint's files written and synced, its manifest not yet
            real_text = Path.write_text

            def write_text(path: Path, *a, **k):
                if self._hit(path.name, ""):
                    os._exit(KILLED)
                return real_text(path, *a, **k)

            Path.write_text = write_text  # type: ignore[method-assign]

    def _hit(self, a: str, b: str) -> bool:
        if not self.match(a, b):
            return False
        self.hits.append(1)
        return len(self.hits) == self.nth

    def _wrap_rename(self, name: str) -> None:
        real = getattr(os, name)

        def rename(src, dst, *a, **k):
            hit = self._hit(Path(src).name, Path(dst).name)
            if hit and not self.after:
                os._exit(KILLED)
            out = real(src, dst, *a, **k)
            if hit:
                os._exit(KILLED)
            return out

        setattr(os, name, rename)


def die_at(point: Point, argv: list[str]) -> int:
    """Run ``ganforge ARGV`` in a forked child armed with ``point``; its exit code."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            torch.set_num_threads(1)
            point.arm()
            code = main(argv)
        except BaseException:
            traceback.print_exc()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def live_report_every_sample() -> None:
    from ganforge.report import html

    html.REFRESH_MIN_S, html.REFRESH_COST = 0.0, 0


def named(name: str) -> Callable[[str, str], bool]:
    return lambda a, b: b == name or (not b and a == name)


def ckpt(src: str, dst: str) -> Callable[[str, str], bool]:
    return lambda a, b: a.startswith(src) and b == dst


# name: (scenario, point). Scenarios: "train" a fresh vanilla-fmnist run on tiny IDX files;
# "finished" a copy of a finished one; "stream" a fresh run streamed from an image folder
POINTS = {
    "checkpoint files written, no manifest": (
        "train",
        Point("manifest", named("manifest.json"), 2),
    ),
    "checkpoint complete, not renamed": ("train", Point("replace", ckpt("last", ".old-last"))),
    "between the checkpoint renames": (
        "train",
        Point("replace", ckpt("last", ".old-last"), after=True),
    ),
    "new checkpoint in place, old not previous": (
        "train",
        Point("replace", ckpt(".tmp-last", "last"), 2, after=True),
    ),
    "old checkpoint made previous": (
        "train",
        Point("replace", ckpt(".old-last", "previous"), after=True),
    ),
    "log line half appended": ("train", Point("append", named("log.jsonl"), 3)),
    "status finished not written": ("train", Point("replace", named("status.json"), 2)),
    "live report": (
        "train",
        Point("replace", named("report.html"), 2, setup=live_report_every_sample),
    ),
    "overwrite moved the old run": (
        "overwrite",
        Point("replace", lambda a, b: ".replaced-" in b, after=True),
    ),
    "metrics line half appended": ("finished", Point("append", named("metrics.jsonl"))),
    "metrics.json": ("finished", Point("replace", named("metrics.json"))),
    "report.html": ("finished", Point("replace", named("report.html"))),
    "export": ("finished", Point("replace", named("generator.pt"))),
    "sample --format dir": ("finished", Point("replace", named("000002.png"))),
    "streamed run between the checkpoint renames": (
        "stream",
        Point("replace", ckpt("last", ".old-last"), after=True),
    ),
}


IDX: list[Path] = []  # the tiny Fashion-MNIST files (made by the fixture)


def _train(out: Path, *more: str) -> list[str]:
    return ["train", "--data", str(IDX[0]), *TINY, "--out", str(out), *DEVICE, *more]


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    """A finished run that was evaluated, reported, exported and sampled with --format dir
    once; an image folder to stream."""
    root = tmp_path_factory.mktemp("sources")
    IDX[:] = [write_idx(root / "idx", n_train=64, n_test=64)]
    fin = root / "finished"
    assert main(_train(fin)) == 0
    assert main(["evaluate", str(fin), "--n", "50"]) == 0
    assert main(["report", str(fin)]) == 0
    assert main(["export", str(fin), "--format", "torchscript"]) == 0
    assert main(["sample", str(fin), "--format", "dir", "-n", "4", "-o", str(fin / "s")]) == 0
    folder = root / "folder"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(24):
        Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return {"finished": fin, "folder": folder}


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True) if path.exists() else []


def _whole_records(path: Path) -> list[dict]:
    out = []
    for ln in _lines(path):
        if ln.endswith(b"\n"):
            out.append(json.loads(ln))
    return out


@pytest.mark.parametrize("name", list(POINTS))
def test_a_kill_at_each_write_point_keeps_the_run(name, sources, tmp_path, capsys):
    scenario, point = POINTS[name]
    run = tmp_path / "run"
    total = TOTAL
    if scenario == "train":
        live = ["--set", "train.sample_every=2", "--set", "train.report=true"]
        argv = _train(run, *(live if name == "live report" else []))
    elif scenario == "stream":
        total = 10
        argv = ["train", "-r", "dcgan-64", "--data", str(sources["folder"]), "--out", str(run)]
        argv += [*DEVICE, "--set", "data.size=8", "--set", "train.batch_size=8"]
        argv += ["--set", "data.stream=always", "--set", f"train.iterations={total}"]
        argv += ["--set", "train.checkpoint_every=4", "--set", "train.log_every=2"]
    else:
        shutil.copytree(sources["finished"], run)
        argv = {
            "overwrite": _train(run, "--overwrite"),
            "metrics line half appended": ["evaluate", str(run), "--n", "50"],
            "metrics.json": ["evaluate", str(run), "--n", "50"],
            "report.html": ["report", str(run)],
            "export": ["export", str(run), "--format", "torchscript"],
            "sample --format dir": ["sample", str(run), "--format", "dir", "-n", "4", "-o"],
        }.get(scenario if scenario == "overwrite" else name, [])
        if name == "sample --format dir":
            argv.append(str(run / "s"))
    files = ("metrics.json", "report.html", "generator.pt")
    killed = "generator.pt" if name == "export" else name  # the file whose write is killed
    before = {f: (run / f).read_bytes() for f in files if f == killed and (run / f).is_file()}
    metrics_before = _whole_records(run / "metrics.jsonl")

    code = die_at(point, argv)
    capsys.readouterr()
    assert code == KILLED, f"the child did not die at the point (exit {code})"

    if scenario == "overwrite":  # the old run is whole where it was moved; the path is free
        [moved] = tmp_path.glob("run.replaced-*")
        assert not run.exists()
        assert main(_train(run)) == 0  # a fresh run can start at the path
        run = moved
    for f, data in before.items():  # the file being replaced when the kill came: the old one
        assert (run / f).read_bytes() == data, f
    log_at_kill = _whole_records(run / "log.jsonl")
    snap = open_checkpoint(run, ("last",))  # a whole checkpoint is there, read as sample reads
    kept_step = snap.state["step"]
    if scenario in ("train", "stream"):
        assert kept_step >= 4  # the checkpoint before the killed save (or a later one)

    # every command works on what the kill left
    assert run_state(run) != "running"
    assert main(["runs", str(run.parent)]) == 0
    assert main(["sample", str(run), "-o", str(tmp_path / "s.png"), "-n", "4"]) == 0
    if scenario != "stream":  # an unlabelled folder is scored with Inception (offline here)
        assert main(["evaluate", str(run), "--n", "50"]) == 0
    assert main(["report", str(run)]) == 0
    if name == "sample --format dir":
        assert main(["sample", str(run), "--format", "dir", "-n", "4", "-o", str(run / "s")]) == 0
        assert sorted(p.name for p in (run / "s").iterdir()) == [
            ".ganforge-samples", "000000.png", "000001.png", "000002.png", "000003.png",
        ]  # fmt: skip
    if name == "export":
        assert main(["export", str(run), "--format", "torchscript"]) == 0
    assert main(["train", "--resume", str(run), "-q"]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err

    # nothing written before the kill is lost
    final = _whole_records(run / "log.jsonl")
    steps = [r["step"] for r in final if "eval" not in r]
    assert steps == sorted(set(steps)) and steps[-1] == total
    kept = [r for r in log_at_kill if r["step"] <= kept_step]
    assert final[: len(kept)] == kept  # the log up to the checkpoint resumed from
    assert open_checkpoint(run, ("last",)).state["step"] == total
    metrics = _whole_records(run / "metrics.jsonl")  # every line whole, the earlier ones first
    assert metrics[: len(metrics_before)] == metrics_before
    assert all(ln.endswith(b"\n") for ln in _lines(run / "metrics.jsonl"))
