"""Where outputs go: never onto a run's own files, through a closed pipe, onto a full disk.

Every ``-o`` (and every other output path) goes through ``runfiles.check_output``: a path
that is, or lies in, a file or folder a run keeps (config.yaml, log.jsonl, status.json,
checkpoints/, samples/, ...) is refused in one line, exit 2, before any work, with every run
byte-identical; a symlink leading into a run counts too. A reader of stdout that goes away
(``| head``) ends nothing: training finishes and says so once on stderr, printing commands
exit 0 quietly. On a full disk export and compare fail in one line, keeping the earlier file.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_hostile_run import run_cli, small_disk, snapshot  # noqa: F401 (a fixture)

from ganforge import runfiles
from ganforge.cli import main
from ganforge.engine import loop

from runhelpers import gaussian_config

FAST = ["train.report=false", "train.threads=1"]
SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A finished gaussian-2d run: 24 steps, checkpoints last and previous."""
    run = tmp_path_factory.mktemp("base") / "run"
    loop.train(gaussian_config(*FAST), run, verbose=False)
    return run


@pytest.fixture
def runs(base, tmp_path) -> Path:
    """Three copies of the run under ``tmp_path/runs``: a, b (the ones read) and c."""
    for name in "abc":
        shutil.copytree(base, tmp_path / "runs" / name, symlinks=True)
    return tmp_path / "runs"


def _cli(argv: list[str], capsys) -> tuple[int, str]:
    code, out, err = run_cli(argv, capsys)
    assert "Traceback" not in out + err
    return code, err


# ---------------------------------------------------------------- the run's own files


def _sample(r: Path, out: str, *more: str) -> list[str]:
    return ["sample", str(r / "a"), "-n", "8", "-o", out, *more]


def _export(r: Path, out: str) -> list[str]:
    return ["export", str(r / "a"), "--format", "torchscript", "-o", out]


def _compare(r: Path, out: str) -> list[str]:
    return ["compare", str(r / "a"), str(r / "b"), "-o", out]


def _link(r: Path, name: str, to: Path) -> str:
    (r / name).symlink_to(to)
    return str(r / name)


OWN = {
    "sample_over_config": lambda r: _sample(r, str(r / "a" / "config.yaml")),
    "sample_over_weights": lambda r: _sample(r, str(r / "a/checkpoints/last/g.safetensors")),
    "sample_over_final_png": lambda r: _sample(r, str(r / "a" / "final.png")),
    "sample_new_file_in_samples": lambda r: _sample(r, str(r / "a" / "samples" / "x.png")),
    "sample_into_another_run": lambda r: _sample(r, str(r / "c" / "log.jsonl")),
    "sample_dir_is_the_run": lambda r: _sample(r, str(r / "a"), "--format", "dir"),
    "sample_dir_in_checkpoints": lambda r: _sample(
        r, str(r / "a/checkpoints/new"), "--format", "dir"
    ),
    "export_over_status": lambda r: _export(r, str(r / "a" / "status.json")),
    "export_over_weights": lambda r: _export(r, str(r / "a/checkpoints/last/g.safetensors")),
    "export_default_name_in_samples": lambda r: _export(r, str(r / "a/samples/generator.pt")),
    "compare_over_first_config": lambda r: _compare(r, str(r / "a" / "config.yaml")),
    "compare_over_second_log": lambda r: _compare(r, str(r / "b" / "log.jsonl")),
    "compare_over_a_report": lambda r: _compare(r, str(r / "a" / "report.html")),
    "compare_into_another_run": lambda r: _compare(r, str(r / "c/checkpoints/last/x.html")),
    "compare_through_a_file_link": lambda r: _compare(r, _link(r, "l.html", r / "a/status.json")),
    "export_through_a_folder_link": lambda r: _export(r, _link(r, "la", r / "a") + "/config.yaml"),
    "train_into_a_runs_checkpoints": lambda r: [
        "train",
        "-r",
        "gaussian-2d",
        "-q",
        "--out",
        str(r / "a" / "checkpoints" / "new"),
    ],  # fmt: skip
    "evaluator_into_a_runs_samples": lambda r: [
        "evaluator",
        "train",
        "--dataset",
        "fashion-mnist",
        "--out",
        str(r / "b" / "samples"),
    ],  # fmt: skip
}


@pytest.mark.parametrize("argv", OWN.values(), ids=OWN.keys())
def test_no_output_lands_on_a_runs_own_files(runs, capsys, argv):
    argv = argv(runs)
    before = snapshot(runs)
    code, err = _cli(argv, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("ganforge: error: ") and "never writes over a run's own" in lines[0]
    assert snapshot(runs) == before, f"{argv} changed a run"


def test_a_link_into_a_run_is_named_in_the_refusal(runs, capsys):
    link = _link(runs, "l.html", runs / "a" / "status.json")
    code, err = _cli(_compare(runs, link), capsys)
    assert code == 2 and f"is a link to {(runs / 'a' / 'status.json').resolve()})" in err


def test_names_of_ones_own_in_a_run_and_new_folders_are_written(runs, capsys):
    """Outside the names a run keeps, a run directory takes outputs like any folder; an
    output's missing folder is made (as for every command)."""
    before = snapshot(runs / "a")
    assert _cli(_compare(runs, str(runs / "a" / "cmp.html")), capsys)[0] == 0
    assert _cli(_export(runs, str(runs / "new" / "g.pt")), capsys)[0] == 0
    after = snapshot(runs / "a")
    assert set(after) - set(before) == {"cmp.html"}
    assert {k: v for k, v in after.items() if k in before} == before
    assert (runs / "new" / "g.pt").stat().st_size > 0


def test_a_project_folder_with_a_config_is_not_a_run(tmp_path):
    (tmp_path / "config.yaml").write_text("mine: 1\n")  # one mark: not a run
    runfiles.check_output(tmp_path / "config.yaml", "-o x")
    (tmp_path / "log.jsonl").write_text("")  # two: a run (its checkpoints may be gone)
    with pytest.raises(runfiles.GanforgeError, match="is the config.yaml of the run"):
        runfiles.check_output(tmp_path / "config.yaml", "-o x")


# ---------------------------------------------------------------- a reader that goes away


class ClosedPipe:
    """A stdout whose reader has gone: every write and flush raises EPIPE."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    def flush(self) -> None:
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    def isatty(self) -> bool:
        return False


def _train_argv(out: Path) -> list[str]:
    sets = ["data.points=64", "train.iterations=16", "train.log_every=1", "train.threads=1"]
    argv = [sys.executable, "-m", "ganforge", "train", "-r", "gaussian-2d", "--out", str(out)]
    argv += ["--device", "cpu", "--set", "train.report=false"]
    return argv + [a for s in sets for a in ("--set", s)]


ENV = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}


def test_training_survives_its_reader_going_away(tmp_path):
    """``ganforge train | head -1``: the pipe is closed after the first line; the run
    finishes with its checkpoints, exit 0, no traceback, and says so once on stderr."""
    run = tmp_path / "run"
    p = subprocess.Popen(_train_argv(run), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    assert p.stdout is not None and p.stderr is not None
    first = p.stdout.readline()
    p.stdout.close()  # the reader goes away
    rest = p.stderr.read().decode()
    code = p.wait(timeout=300)
    assert first.startswith(b"ganforge: recipe gaussian-2d")
    assert code == 0 and "Traceback" not in rest, rest
    assert rest.strip().splitlines() == [TRAIN_NOTE + f"; follow it with 'ganforge runs {run}'"]
    _assert_finished(run, 16)


TRAIN_NOTE = "ganforge: stdout was closed by its reader; training goes on without printing"


def _assert_finished(run: Path, steps: int) -> None:
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "finished" and "error" not in status
    assert (run / "checkpoints" / "last" / "g.safetensors").is_file()
    assert json.loads((run / "log.jsonl").read_text().splitlines()[-1])["step"] == steps


@pytest.mark.parametrize("stderr_too", [False, True], ids=["stdout", "stdout_and_stderr"])
def test_training_in_process_survives_closed_streams(tmp_path, capsys, monkeypatch, stderr_too):
    """The same in this process, also with stderr gone (``2>&1 | head``): nothing said."""
    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    if stderr_too:
        monkeypatch.setattr(sys, "stderr", ClosedPipe())
    argv = _train_argv(tmp_path / "run")[3:]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 0
    assert err.strip().splitlines() == ([] if stderr_too else [err.strip()])
    assert stderr_too or err.count(TRAIN_NOTE) == 1
    _assert_finished(tmp_path / "run", 16)


def test_a_printing_command_exits_quietly_into_a_closed_pipe(runs):
    """``ganforge runs | head -1`` with the reader gone before the first line: exit 0, nothing
    on stderr (before, the buffered table met the closed pipe at exit: exit 1)."""
    r, w = os.pipe()
    os.close(r)
    try:
        argv = [sys.executable, "-m", "ganforge", "runs", str(runs)]
        p = subprocess.run(argv, stdout=w, stderr=subprocess.PIPE, env=ENV, timeout=60)
    finally:
        os.close(w)
    assert p.returncode == 0 and p.stderr == b"", p.stderr


PRINTING = {
    "runs": lambda r: ["runs", str(r)],
    "recipes_show": lambda r: ["recipes", "--show", "gaussian-2d"],
    "sample": lambda r: _sample(r, str(r / "s.csv")),
    "export": lambda r: _export(r, str(r / "g.pt")),
    "compare": lambda r: _compare(r, str(r / "c.html")),
    "evaluate": lambda r: ["evaluate", str(r / "a"), "--n", "100"],
    "report": lambda r: ["report", str(r / "b")],
}


@pytest.mark.parametrize("argv", PRINTING.values(), ids=PRINTING.keys())
def test_every_printing_command_ends_quietly_when_stdout_is_gone(runs, capsys, monkeypatch, argv):
    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    code = main(argv(runs))
    err = capsys.readouterr().err
    assert code == 0 and err == "", err
    assert sys.stdout.__class__ is ClosedPipe  # given back as it was


# ---------------------------------------------------------------- a full disk


FULL = {
    "export_torchscript": lambda r, d: _export(r, str(d / "g.pt")),
    "export_onnx": lambda r, d: [
        "export",
        str(r / "a"),
        "--format",
        "onnx",
        "-o",
        str(d / "g.onnx"),
    ],
    "compare": lambda r, d: _compare(r, str(d / "c.html")),
}


def _fill(disk: Path) -> None:
    """Fill the disk to the last byte (unbuffered: nothing is left to flush at close)."""
    with open(disk / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * (1 << 16))
        except OSError as e:
            assert e.errno == errno.ENOSPC


@pytest.mark.parametrize("argv", FULL.values(), ids=FULL.keys())
def test_full_disk_export_and_compare_keep_the_earlier_file(runs, small_disk, capsys, argv):  # noqa: F811
    argv = argv(runs, small_disk)
    assert _cli(argv, capsys)[0] == 0  # with room: the earlier file
    before = snapshot(small_disk)
    _fill(small_disk)
    code, err = _cli(argv, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    out = argv[-1]
    assert f"could not write {out} (No space left on device)" in lines[0] and "kept" in lines[0]
    after = snapshot(small_disk)
    assert {k: v for k, v in after.items() if k != "filler"} == {
        k: v for k, v in before.items() if k != "filler"
    }
    assert not [k for k in after if k.endswith(".tmp")]


def test_a_failed_write_leaves_no_temporary_file(runs, tmp_path, capsys, monkeypatch):
    """Where no tmpfs can be mounted: the sync of the export fails with ENOSPC."""
    out = tmp_path / "g.pt"
    out.write_bytes(b"earlier")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(runfiles.os, "fsync", full)
    code, err = _cli(_export(runs, str(out)), capsys)
    assert code == 2 and err.count("\n") == 1 and "No space left on device" in err
    assert out.read_bytes() == b"earlier" and not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("earlier", [True, False])
def test_a_failed_write_says_whether_an_earlier_file_was_kept(tmp_path, monkeypatch, earlier):
    """The one line of a full disk says "its previous version is kept" only when there was
    one; a new file says nothing was written."""
    out = tmp_path / "x.txt"
    if earlier:
        out.write_text("earlier")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(runfiles.os, "fsync", full)
    with pytest.raises(runfiles.WriteError) as e:
        runfiles.atomic_write_text(out, "new")
    said = "its previous version is kept" if earlier else "nothing was written"
    assert said in str(e.value) and "No space left on device" in str(e.value)
    assert out.exists() == earlier and not list(tmp_path.glob(".*.tmp"))
