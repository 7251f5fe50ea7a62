"""Hostile runs: what a careless user, a full disk or a signal does to a run directory.

Every refusal case makes the same three assertions: the exit code, one line on stderr and no
traceback, and the run directory byte-identical before and after (every file hashed, symlinks
by target). The cases are examples of their class; each class is a table to extend.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ganforge import checkpoint as ckpt
from ganforge.cli import main
from ganforge.engine import loop
from ganforge.metrics import evaluate
from ganforge.report import html
from ganforge.runfiles import AppendLog, WriteError, atomic_write, atomic_write_text

from runhelpers import cli_idx_run, gaussian_config, image_run

FAST = ["train.report=false", "train.threads=1"]
TAGS = ("last", "previous")


# ---------------------------------------------------------------- helpers


def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root``: files by SHA-256, symlinks by target, folders by name."""
    out = {}
    if not root.exists():
        return out
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_dir():
            out[rel] = "dir"
        elif not p.is_file():  # a FIFO or device: never opened (reading a FIFO would block)
            out[rel] = f"special:{stat.S_IFMT(p.stat().st_mode)}"
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """``ganforge ARGV`` in this process; an exception escaping ``main`` is a traceback."""
    try:
        code = main(argv)
    except BaseException as e:  # noqa: BLE001 - any escape is what the test is looking for
        out, err = capsys.readouterr()
        pytest.fail(f"{argv}: traceback {type(e).__name__}: {e}\n{err}")
    out, err = capsys.readouterr()
    return code, out, err


def assert_refused(argv: list[str], run: Path, capsys, code: int = 2, match: str = "") -> str:
    """The three assertions: exit code, one error line and no traceback, nothing changed."""
    before = snapshot(run)
    got, out, err = run_cli(argv, capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert got == code, f"{argv}: exit {got}, stderr: {err}"
    assert "Traceback" not in out + err
    assert len(lines) == 1 and lines[0].startswith("ganforge: "), err
    assert match in lines[0], lines[0]
    assert snapshot(run) == before, f"{argv} changed the run directory"
    return lines[0]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A finished gaussian-2d run: 24 steps, checkpoints at 8 (gone), 16 (previous), 24 (last)."""
    run = tmp_path_factory.mktemp("base") / "run"
    loop.train(gaussian_config(*FAST), run, verbose=False)
    return run


@pytest.fixture
def run(base, tmp_path) -> Path:
    """A private copy of the finished run."""
    dst = tmp_path / "run"
    shutil.copytree(base, dst, symlinks=True)
    return dst


@pytest.fixture(scope="module")
def image_base(tmp_path_factory) -> Path:
    return image_run(tmp_path_factory.mktemp("img") / "run", *FAST)


@contextlib.contextmanager
def read_only(path: Path):
    """``path`` read-only even for root: a read-only bind mount (else chattr +i, else skip)."""
    r = subprocess.run(["mount", "--bind", "-o", "ro", str(path), str(path)], capture_output=True)
    if r.returncode == 0:
        try:
            yield
        finally:
            subprocess.run(["umount", str(path)], check=True)
        return
    r = subprocess.run(["chattr", "+i", str(path)], capture_output=True)
    if r.returncode != 0:
        pytest.skip("no way to make a folder read-only for this user here")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


# ---------------------------------------------------------------- class 1: a resume that
# does not fit the checkpoint (networks, optimizers, data shape) is refused, nothing written

MISMATCH = {
    "z_dim": (["model.z_dim=3"], "G tensor"),
    "spectral_norm": (["model.spectral_norm=true"], "spectral_norm"),
    "optimizer_g": (["optim.g.name=rmsprop"], "optimizer is Adam in the checkpoint"),
    "optimizer_d": (["optim.d.name=rmsprop"], "D optimizer"),
    "d_widths": (["model.d_args.widths=[7,3]"], "D tensor"),
    "g_net": (["model.g=mlp"], "G "),
    "pack": (["model.pack=2"], "model.pack 1 -> 2"),
    "no_labels": (["model.num_classes=3"], "has no labels"),
    "mismatch_and_longer": (["model.z_dim=4", "train.iterations=40"], "model.z_dim 2 -> 4"),
}


@pytest.mark.parametrize("sets, match", MISMATCH.values(), ids=MISMATCH.keys())
def test_resume_that_does_not_fit_is_refused(run, capsys, sets, match):
    argv = ["train", "--resume", str(run), "-q"]
    for s in sets:
        argv += ["--set", s]
    line = assert_refused(argv, run, capsys, match=match)
    if "labels" not in match:
        assert "--out NEW" in line and "nothing was changed" in line


def test_dropping_the_ema_on_resume_is_refused(tmp_path, capsys):
    run = tmp_path / "ema"
    loop.train(gaussian_config(*FAST, "model.ema=0.9", "train.epochs=1"), run, verbose=False)
    argv = ["train", "--resume", str(run), "-q", "--set", "model.ema=null"]
    argv += ["--set", "train.iterations=16"]
    assert_refused(argv, run, capsys, match="keeps an EMA of G")


def test_other_data_shape_on_resume_is_refused(tmp_path, capsys):
    """An image run resumed with 32x32 images instead of 28x28: D's first layer differs."""
    run = cli_idx_run(tmp_path)
    argv = ["train", "--resume", str(run), "-q", "--set", "data.size=32"]
    assert_refused(argv, run, capsys, match="changed: data.size None -> 32")


def test_refusal_from_a_separate_process_changes_no_byte(run):
    """The real command line, another process (another pid): still byte-identical."""
    import sys

    src = Path(__file__).resolve().parents[1] / "src"
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    before = snapshot(run)
    argv = ["train", "--resume", str(run), "--set", "model.z_dim=3"]
    r = subprocess.run(
        [sys.executable, "-m", "ganforge", *argv], env=env, capture_output=True, text=True
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "G tensor" in r.stderr
    assert snapshot(run) == before


def test_a_changed_learning_rate_on_resume_is_applied(run, capsys):
    """The checkpoint's optimizer state must not silently win over --set (config.yaml would
    then name a learning rate the run does not use)."""
    argv = ["train", "--resume", str(run), "-q", "--set", "optim.g.lr=0.0123"]
    code, _, err = run_cli([*argv, "--set", "train.iterations=26"], capsys)
    assert code == 0, err
    state = json.loads((run / "checkpoints" / "last" / "state.json").read_text())
    assert state["optim"]["g"]["param_groups"][0]["lr"] == 0.0123
    assert state["optim"]["d"]["param_groups"][0]["lr"] == 0.05  # unchanged: the run's own


def test_mismatch_never_falls_back_to_previous_or_step_0(run, capsys):
    """Both checkpoints differ from the config: refused (not 'previous', not step 0)."""
    assert_refused(
        ["train", "--resume", str(run), "-q", "--set", "model.z_dim=5"], run, capsys, match="z_dim"
    )
    (run / "checkpoints" / "last" / "manifest.json").unlink()  # last damaged, previous sound
    assert_refused(
        ["train", "--resume", str(run), "-q", "--set", "model.z_dim=5"], run, capsys, match="z_dim"
    )


def test_overwrite_moves_the_old_run_aside(run, capsys):
    before = snapshot(run)
    argv = ["train", "-r", "gaussian-2d", "--out", str(run), "-q", "--overwrite"]
    argv += ["--set", "model.z_dim=3", "--set", "train.iterations=2", "--device", "cpu"]
    argv += ["--set", "train.report=false"]
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    moved = [p for p in run.parent.iterdir() if p.name.startswith("run.replaced-")]
    assert len(moved) == 1 and f"to {moved[0]}" in out
    assert snapshot(moved[0]) == before  # the old run, whole and resumable
    assert json.loads((run / "checkpoints" / "last" / "state.json").read_text())["step"] == 2
    code, _, err = run_cli(["train", "--resume", str(run), "--overwrite"], capsys)
    assert code == 2 and "drop --recipe, --out and --overwrite" in err


# ---------------------------------------------------------------- class 2: odd checkpoints


def _odd_last_symlink(run: Path) -> None:
    last = run / "checkpoints" / "last"
    shutil.move(last, run / "elsewhere")
    last.symlink_to(run / "elsewhere")


def _odd_last_to_previous(run: Path) -> None:
    last = run / "checkpoints" / "last"
    shutil.rmtree(last)
    last.symlink_to("previous")


def _odd_last_file(run: Path) -> None:
    last = run / "checkpoints" / "last"
    shutil.rmtree(last)
    last.write_text("not a checkpoint")


def _odd_previous_symlink(run: Path) -> None:
    prev = run / "checkpoints" / "previous"
    shutil.move(prev, run / "elsewhere")
    prev.symlink_to(run / "elsewhere")


def _odd_last_dangling(run: Path) -> None:
    last = run / "checkpoints" / "last"
    shutil.rmtree(last)
    last.symlink_to(run / "gone")


ODD = {
    "last_symlink": _odd_last_symlink,
    "last_symlink_to_previous": _odd_last_to_previous,
    "last_is_a_file": _odd_last_file,
    "previous_symlink": _odd_previous_symlink,
    "last_dangling_symlink": _odd_last_dangling,
}


@pytest.mark.parametrize("make_odd", ODD.values(), ids=ODD.keys())
def test_odd_checkpoint_folders_are_refused_on_resume(run, capsys, make_odd):
    make_odd(run)
    argv = ["train", "--resume", str(run), "-q", "--set", "train.iterations=32"]
    assert_refused(argv, run, capsys, match="cannot resume")


@pytest.mark.parametrize("make_odd", ODD.values(), ids=ODD.keys())
def test_saving_over_an_odd_last_never_deletes_previous(run, make_odd):
    """The rotation itself (as a save would do it): an odd or damaged `last` is dropped, its
    target untouched, and `previous` stays unless `last` was a sound checkpoint folder."""
    make_odd(run)
    cdir = run / "checkpoints"
    prev_before = snapshot(cdir / "previous") if not (cdir / "previous").is_symlink() else None
    elsewhere = snapshot(run / "elsewhere")
    cfg = gaussian_config(*FAST)
    models = loop.build_models(cfg, (2,), torch.device("cpu"))
    ckpt.save_checkpoint(cdir, "last", models, {"step": 99})
    assert json.loads((cdir / "last" / "state.json").read_text())["step"] == 99
    assert snapshot(run / "elsewhere") == elsewhere  # a symlink's target is never touched
    if prev_before is not None:
        assert snapshot(cdir / "previous") == prev_before


def test_a_damaged_last_never_replaces_a_good_previous(run):
    cdir = run / "checkpoints"
    g = cdir / "last" / "g.safetensors"
    g.write_bytes(g.read_bytes()[:-3] + b"xyz")
    before = snapshot(cdir / "previous")
    models = loop.build_models(gaussian_config(*FAST), (2,), torch.device("cpu"))
    ckpt.save_checkpoint(cdir, "last", models, {"step": 99})
    assert snapshot(cdir / "previous") == before


# ---------------------------------------------------------------- class 3: lengths


LENGTHS = {
    "fewer_iterations": (["train.iterations=5"], 2, "it has done 24 steps"),
    "fewer_epochs": (["train.epochs=1"], 2, "it has done 24 steps"),
    "one_step_short": (["train.iterations=23"], 2, "length of 23"),
}


@pytest.mark.parametrize("sets, code, match", LENGTHS.values(), ids=LENGTHS.keys())
def test_resume_shorter_than_done_is_refused(run, capsys, sets, code, match):
    argv = ["train", "--resume", str(run), "-q"]
    for s in sets:
        argv += ["--set", s]
    assert_refused(argv, run, capsys, code, match)


def test_resume_of_a_complete_run_changes_nothing(run, capsys):
    before = snapshot(run)
    code, out, err = run_cli(["train", "--resume", str(run), "-q"], capsys)
    assert code == 0 and "already complete at step 24" in out and "Traceback" not in err
    assert snapshot(run) == before


# ---------------------------------------------------------------- class 4: bad paths


BAD_OUT = {
    "out_is_a_file": (lambda run: str(run / "config.yaml"), "is a file, not a folder"),
    "out_under_a_file": (lambda run: str(run / "config.yaml" / "x"), "is a file, so"),
    "out_under_proc": (lambda run: "/proc/ganforge-run", "cannot write in"),
    "out_under_sys": (lambda run: "/sys/ganforge-run", "cannot write in"),
}


def _partial_run(run: Path) -> str:
    (run / "config.yaml").unlink()  # a run that lost its config still holds its checkpoints
    return str(run)


BAD_OUT["out_holds_a_run_without_config"] = (_partial_run, "already holds a run")


@pytest.mark.parametrize("out, match", BAD_OUT.values(), ids=BAD_OUT.keys())
def test_bad_out_is_refused_before_any_work(run, capsys, out, match):
    argv = ["train", "-r", "gaussian-2d", "--out", out(run), "-q", "--device", "cpu"]
    assert_refused(argv, run, capsys, match=match)


def _sample(run: Path, name: str) -> list[str]:
    return ["sample", str(run), "-n", "8", "-o", name]


BAD_SAMPLE = {
    "points_as_txt": (lambda run: _sample(run, str(run.parent / "p.txt")), "not a format"),
    "points_no_suffix": (lambda run: _sample(run, str(run.parent / "p")), "not a format"),
    "output_is_a_folder": (lambda run: _sample(run, str(run / "samples")), "is a folder"),
    "output_under_proc": (lambda run: _sample(run, "/proc/ganforge.png"), "cannot write in"),
    "output_under_a_file": (
        lambda run: _sample(run, str(run / "config.yaml" / "s.png")),
        "is a file",
    ),
}


BAD_SAMPLE["too_many_points"] = (
    lambda run: ["sample", str(run), "-n", "2000000", "-o", str(run.parent / "p.csv")],
    "at most 1,000,000",
)
BAD_SAMPLE["newline_in_path"] = (
    lambda run: _sample(run, str(run.parent / "a\nb" / "x.txt")),
    "a\\nb",
)


@pytest.mark.parametrize("argv, match", BAD_SAMPLE.values(), ids=BAD_SAMPLE.keys())
def test_bad_sample_output_is_refused(run, capsys, argv, match):
    assert_refused(argv(run), run, capsys, match=match)


def test_too_many_images_for_one_grid_are_refused(image_base, tmp_path, capsys):
    argv = ["sample", str(image_base), "-n", "10001", "-o", str(tmp_path / "s.png")]
    assert_refused(argv, image_base, capsys, match="at most 10,000")


@pytest.mark.parametrize("suffix", [".csv", ".npy", ".txt"])
def test_image_samples_as_numbers_are_refused(image_base, tmp_path, capsys, suffix):
    out = tmp_path / f"s{suffix}"
    line = assert_refused(_sample(image_base, str(out)), image_base, capsys, match=".png")
    assert not out.exists()
    if suffix != ".txt":
        assert "2-D runs" in line


def test_points_are_written_as_csv_and_npy(run, tmp_path, capsys):
    import numpy as np

    code, _, err = run_cli(_sample(run, str(tmp_path / "p.csv")), capsys)
    assert code == 0, err
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert lines[0] == "x,y" and len(lines) == 9
    code, _, err = run_cli(_sample(run, str(tmp_path / "p.npy")), capsys)
    assert code == 0, err
    pts = np.load(tmp_path / "p.npy", allow_pickle=False)
    assert pts.shape == (8, 2)
    assert np.allclose(pts, np.loadtxt(tmp_path / "p.csv", delimiter=",", skiprows=1), atol=1e-6)


def _ro_commands(run: Path) -> dict[str, list[str]]:
    return {
        "train_resume": ["train", "--resume", str(run), "-q", "--set", "train.iterations=32"],
        "sample_into_run": _sample(run, str(run / "s.png")),
        "report": ["report", str(run)],
        "evaluate": ["evaluate", str(run), "--n", "100"],
    }


@pytest.mark.parametrize("cmd", ["train_resume", "sample_into_run", "report", "evaluate"])
def test_read_only_run_directory_is_refused(run, capsys, cmd):
    with read_only(run):
        assert_refused(_ro_commands(run)[cmd], run, capsys, match="cannot write in")


def _taken(name: str, kind: str):
    def make(run: Path) -> None:
        p = run / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
        if kind == "file":
            p.write_text("in the way")
        else:
            p.mkdir()
            (p / "x").write_text("in the way")

    return make


TAKEN = {
    "samples_is_a_file": (_taken("samples", "file"), "is not a folder"),
    "checkpoints_is_a_file": (_taken("checkpoints", "file"), "is not a folder"),
    "log_is_a_folder": (_taken("log.jsonl", "dir"), "is not a regular file"),
    "status_is_a_folder": (_taken("status.json", "dir"), "is not a regular file"),
    "lock_is_a_folder": (_taken(".lock", "dir"), "is not a regular file"),
    "config_is_a_folder": (_taken("config.yaml", "dir"), ""),
}


@pytest.mark.parametrize("make, match", TAKEN.values(), ids=TAKEN.keys())
def test_names_taken_in_the_run_directory_are_refused(run, capsys, make, match):
    make(run)
    argv = ["train", "--resume", str(run), "-q", "--set", "train.iterations=32"]
    assert_refused(argv, run, capsys, match=match)


OWN_FILES = {
    "sample_over_config": (lambda run: _sample(run, str(run / "config.yaml")), "own files"),
    "sample_over_log": (lambda run: _sample(run, str(run / "log.jsonl")), "own files"),
    "sample_over_weights": (
        lambda run: _sample(run, str(run / "checkpoints" / "last" / "g.safetensors")),
        "own files",
    ),
    "report_is_a_folder": (lambda run: ["report", str(run)], "is a folder"),
    "metrics_is_a_folder": (lambda run: ["evaluate", str(run), "--n", "100"], "is a folder"),
}


OWN_FILES["sample_to_dev_null"] = (lambda run: _sample(run, "/dev/null"), "not a regular file")


def _fifo_report(run: Path) -> list[str]:
    shutil.rmtree(run / "report.html")
    os.mkfifo(run / "report.html")
    return ["report", str(run)]


OWN_FILES["report_is_a_fifo"] = (_fifo_report, "not a regular file")


@pytest.mark.parametrize("argv, match", OWN_FILES.values(), ids=OWN_FILES.keys())
def test_outputs_never_land_on_the_runs_own_files(run, capsys, argv, match):
    (run / "report.html").mkdir()
    (run / "metrics.json").mkdir()
    null = os.stat("/dev/null")
    assert_refused(argv(run), run, capsys, match=match)
    assert os.stat("/dev/null").st_rdev == null.st_rdev  # a device is never replaced


def test_a_symlinked_report_is_replaced_not_written_through(run, tmp_path, capsys):
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    (run / "report.html").symlink_to(outside)
    code, _, err = run_cli(["report", str(run)], capsys)
    assert code == 0, err
    assert outside.read_text() == "keep me" and not (run / "report.html").is_symlink()


def test_sample_before_the_first_checkpoint_suggests_resume(run, capsys):
    shutil.rmtree(run / "checkpoints")
    line = assert_refused(_sample(run, str(run.parent / "s.png")), run, capsys)
    assert f"train --resume {run}" in line and "--out" not in line


@pytest.mark.parametrize("cmd", ["sample", "evaluate"])
def test_asking_for_best_without_one_names_last(run, capsys, cmd):
    argv = [cmd, str(run), "--checkpoint", "best"]
    argv += ["-o", str(run.parent / "s.png")] if cmd == "sample" else ["--n", "100"]
    line = assert_refused(argv, run, capsys, match="use --checkpoint last")
    assert "--resume" not in line


def test_recipe_set_to_a_path_stays_in_the_runs_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    outside = tmp_path / "elsewhere" / "abs"
    argv = ["train", "-r", "gaussian-2d", "--set", f"recipe={outside}", "-q", "--device", "cpu"]
    argv += ["--set", "train.iterations=2", "--set", "train.report=false"]
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    assert not (tmp_path / "elsewhere").exists()
    runs = [p for p in (tmp_path / "runs").iterdir() if p.name != "latest"]  # runs/latest
    assert len(runs) == 1 and re.fullmatch(r"[\w.+-]*elsewhere-abs-\d{8}-\d{6}", runs[0].name)


# ---------------------------------------------------------------- class 5: signals in long
# phases (in this process: the phase sends the signal to itself, then would take 30 s)


def _signal_then_hang(sig: int):
    def hang(*a, **k):
        os.kill(os.getpid(), sig)
        time.sleep(30)  # a stop that is not honoured at once makes the test fail on time
        raise AssertionError("the signal did not stop this phase")

    return hang


SIGNAL_PHASES = {
    "sigterm_loading_resume": ("load_data", signal.SIGTERM, 143, "while loading the data"),
    "sighup_loading_resume": ("load_data", signal.SIGHUP, 129, "while loading the data"),
    "sigint_loading_resume": ("load_data", signal.SIGINT, 130, "while loading the data"),
}


@pytest.mark.parametrize("target, sig, code, match", SIGNAL_PHASES.values(), ids=SIGNAL_PHASES)
def test_signal_while_loading_a_resumed_run_changes_nothing(
    run, capsys, monkeypatch, target, sig, code, match
):
    monkeypatch.setattr(loop, target, _signal_then_hang(sig))
    t0 = time.perf_counter()
    argv = ["train", "--resume", str(run), "-q", "--set", "train.iterations=32"]
    line = assert_refused(argv, run, capsys, code, match)
    assert time.perf_counter() - t0 < 10 and f"--resume {run}" in line


def test_signal_while_loading_a_new_run_leaves_no_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(loop, "load_data", _signal_then_hang(signal.SIGTERM))
    out = tmp_path / "new"
    argv = ["train", "-r", "gaussian-2d", "--out", str(out), "-q", "--device", "cpu"]
    assert_refused(argv, out, capsys, 143, "start the same command again")
    assert not out.exists()


def _eval_argv(run: Path) -> list[str]:
    return ["train", "--resume", str(run), "-q", "--set", "train.iterations=32"] + [
        "--set",
        "eval.every=4",
        "--set",
        "eval.n=100",
    ]


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_signal_during_an_evaluation_saves_and_stops(run, capsys, monkeypatch, sig, code):
    calls = {"n": 0}
    real = evaluate.Evaluation.__call__

    def evaluation(self, g):
        calls["n"] += 1
        if calls["n"] == 1:  # the first evaluation (step 28) hangs after a signal
            _signal_then_hang(sig)()
        return real(self, g)

    monkeypatch.setattr(evaluate.Evaluation, "__call__", evaluation)
    t0 = time.perf_counter()
    code_, out, err = run_cli(_eval_argv(run), capsys)
    assert time.perf_counter() - t0 < 20
    assert code_ == code and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "during the evaluation after step 28; checkpoint saved" in err
    assert json.loads((run / "checkpoints" / "last" / "state.json").read_text())["step"] == 28
    assert json.loads((run / "status.json").read_text())["status"] == "interrupted"


def test_signal_in_the_step_before_an_evaluation_skips_it(run, capsys, monkeypatch):
    """Stopping at an evaluation step: the checkpoint is saved once, no evaluation runs."""
    real = loop.train_step
    calls = {"n": 0}

    def step(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 4:  # step 28, an evaluation step
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*a, **kw)

    monkeypatch.setattr(loop, "train_step", step)
    monkeypatch.setattr(evaluate.Evaluation, "__call__", _signal_then_hang(signal.SIGTERM))
    code, _, err = run_cli(_eval_argv(run), capsys)
    assert code == 143 and "after step 28; checkpoint saved" in err and "evaluation" not in err
    cdir = run / "checkpoints"
    steps = [json.loads((cdir / t / "state.json").read_text())["step"] for t in TAGS]
    assert steps == [28, 24]  # saved once: `previous` is still the one before


def test_signal_while_preparing_the_evaluation(run, capsys, monkeypatch):
    monkeypatch.setattr(evaluate.Evaluation, "__init__", _signal_then_hang(signal.SIGTERM))
    t0 = time.perf_counter()
    code, _, err = run_cli(_eval_argv(run), capsys)
    assert time.perf_counter() - t0 < 10 and code == 143 and "Traceback" not in err
    assert "while preparing the evaluation after step 24" in err


def test_signal_during_the_report_is_not_swallowed(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(html, "build_page", _signal_then_hang(signal.SIGTERM))
    out = tmp_path / "r"
    argv = ["train", "-r", "gaussian-2d", "--out", str(out), "-q", "--device", "cpu"]
    argv += ["--set", "train.iterations=4", "--set", "train.report=true"]
    t0 = time.perf_counter()
    code, _, err = run_cli(argv, capsys)
    assert time.perf_counter() - t0 < 15
    assert code == 143 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "while writing the report; the run is complete (step 4" in err
    assert f"ganforge report {out}" in err and not (out / "report.html").exists()
    assert json.loads((out / "status.json").read_text())["status"] == "finished"


# ---------------------------------------------------------------- class 6: rollback before
# the first checkpoint


def test_rollback_before_the_first_checkpoint_restores_finite_weights(tmp_path, monkeypatch):
    real = loop.train_step
    calls = {"n": 0}

    def poisoned(models, *a, **kw):
        calls["n"] += 1
        out = real(models, *a, **kw)
        if calls["n"] == 3:  # step 3: long before the first checkpoint (step 8)
            with torch.no_grad():
                next(models.g.parameters()).fill_(float("inf"))
        return out

    monkeypatch.setattr(loop, "train_step", poisoned)
    cfg = gaussian_config(*FAST, "train.rollback=1")
    result = loop.train(cfg, tmp_path / "run", verbose=False)
    assert result["rollbacks"] == 1 and result["steps"] == 24
    for name in ("g", "d"):
        tensors = load_file(tmp_path / "run" / "checkpoints" / "last" / f"{name}.safetensors")
        assert all(bool(torch.isfinite(t).all()) for t in tensors.values())


# ---------------------------------------------------------------- class 7: a full disk


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs (skipped where mounting is not allowed)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)])
    if r.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def _fill(disk: Path) -> None:
    with open(disk / "filler", "wb") as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * (1 << 16))
            f.flush()


def _full_disk_commands(run: Path) -> dict[str, list[str]]:
    return {
        "sample_over_a_png": _sample(run, str(run / "s.png")),
        "sample_over_a_csv": _sample(run, str(run / "p.csv")),
        "report_over_a_report": ["report", str(run)],
        "evaluate_over_metrics": ["evaluate", str(run), "--n", "100"],
        "resume_longer": ["train", "--resume", str(run), "-q", "--set", "train.iterations=32"],
    }


@pytest.mark.parametrize(
    "cmd",
    [
        "sample_over_a_png",
        "sample_over_a_csv",
        "report_over_a_report",
        "evaluate_over_metrics",
        "resume_longer",
    ],
)
def test_full_disk_keeps_every_previous_file(base, small_disk, capsys, cmd):
    run = small_disk / "run"
    shutil.copytree(base, run, symlinks=True)
    argv = _full_disk_commands(run)[cmd]
    assert run_cli(argv, capsys)[0] == 0  # once with room: the file to keep exists
    if cmd == "resume_longer":
        argv = [*argv[:-1], "train.iterations=48"]
    before = snapshot(run)
    _fill(small_disk)
    code, out, err = run_cli(argv, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and "Traceback" not in err and len(lines) == 1, err
    assert "No space left on device" in lines[0] and "kept" in lines[0]
    after = snapshot(run)
    changed = {k for k in before.keys() & after.keys() if before[k] != after[k]}
    if cmd == "resume_longer":  # it trained a little: the log grew by whole lines only
        changed -= {"log.jsonl", "status.json", "summary.txt", "env.json", ".lock"}
        lines = (run / "log.jsonl").read_text().splitlines()
        assert all(json.loads(ln)["step"] for ln in lines)
    assert not changed, f"{cmd} changed {changed} on a full disk"
    assert not [k for k in after if k.endswith(".tmp") or ".tmp-" in k]


def test_disk_filling_up_during_training_keeps_the_run(small_disk, capsys, monkeypatch):
    """The disk fills at step 10 of 24: one line naming the file that could not be written;
    every log line whole, the last checkpoint sound, no temporary files left."""
    real = loop.train_step
    calls = {"n": 0}

    def step_then_fill(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 10:
            _fill(small_disk)
        return real(*a, **kw)

    monkeypatch.setattr(loop, "train_step", step_then_fill)
    run = small_disk / "run"
    argv = ["train", "-r", "gaussian-2d", "--out", str(run), "-q", "--device", "cpu"]
    argv += ["--set", "data.points=64", "--set", "train.epochs=3", "--set", "train.log_every=1"]
    argv += ["--set", "train.report=false"]
    code, _, err = run_cli(argv, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "No space left on device" in lines[0], err
    for ln in (run / "log.jsonl").read_text().splitlines():
        json.loads(ln)
    assert ckpt.sound(run / "checkpoints" / "last")
    (small_disk / "filler").unlink()
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp") or ".tmp-" in p.name]
    code, _, err = run_cli(["train", "--resume", str(run), "-q"], capsys)  # room again
    assert code == 0, err


def test_atomic_write_keeps_the_old_file_on_any_failure(tmp_path):
    path = tmp_path / "f.txt"
    atomic_write_text(path, "old")
    with pytest.raises(RuntimeError), atomic_write(path, "w") as f:
        f.write("half")
        raise RuntimeError("killed mid-write")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_a_failed_append_never_cuts_an_earlier_line(tmp_path, monkeypatch):
    path = tmp_path / "log.jsonl"
    log = AppendLog(path)
    log.write('{"step": 1}\n')
    real = os.write

    def half_then_full(fd, data):
        real(fd, data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(WriteError, match=r"No space left on device\); the lines before are kept"):
        log.write('{"step": 2, "loss": 0.5}\n')
    monkeypatch.setattr(os, "write", real)
    log.write('{"step": 3}\n')
    log.close()
    assert path.read_text() == '{"step": 1}\n{"step": 3}\n'


def test_hangup_with_a_dead_terminal_still_saves(tmp_path):
    """A closed SSH session: the terminal is gone (writes to it fail) and SIGHUP arrives;
    training still stops at the end of its step with a checkpoint and status.json says why."""
    import pty
    import sys

    src = Path(__file__).resolve().parents[1] / "src"
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    run = tmp_path / "run"
    master, slave = pty.openpty()
    argv = ["train", "-r", "gaussian-2d", "--out", str(run), "--device", "cpu"]
    argv += ["--set", "train.iterations=1000000", "--set", "train.log_every=1"]
    argv += ["--set", "train.checkpoint_every=1000000", "--set", "train.sample_every=1000000"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "ganforge", *argv],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    try:
        seen = b""
        deadline = time.monotonic() + 120
        while b"loss_d" not in seen:  # training is under way
            assert time.monotonic() < deadline and proc.poll() is None, seen[-500:]
            with contextlib.suppress(OSError):
                seen += os.read(master, 4096)
        os.close(master)  # the terminal goes away ...
        proc.send_signal(signal.SIGHUP)  # ... and the hang-up arrives
        assert proc.wait(timeout=60) == 129
    finally:
        if proc.poll() is None:  # never leave a training process behind
            proc.kill()
            proc.wait()
    state = json.loads((run / "checkpoints" / "last" / "state.json").read_text())
    status = json.loads((run / "status.json").read_text())
    assert state["step"] > 0 and status["status"] == "interrupted"
    assert "stopped by SIGHUP" in status["error"]
