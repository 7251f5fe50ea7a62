"""The data a run trains on: recorded when it starts, compared at every resume (a changed
folder, IDX or .npy file is refused in one line saying what changed, unless
data.allow_changed=true); a streamed file lost mid-run saves the last completed step; values
float32 cannot hold are refused when the data is read."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ganforge
from ganforge import checkpoint as ckpt
from ganforge.cli import main
from ganforge.config import load_config
from ganforge.data import load_data
from ganforge.engine import loop
from ganforge.errors import ConfigError, DataError

from conftest import write_idx
from runhelpers import assert_same_checkpoints, cli_idx_run

STREAM = ["-r", "dcgan-64", "-q", "--device", "cpu", "--set", "data.size=8"]
STREAM += ["--set", "train.batch_size=8", "--set", "train.threads=1", "--set", "train.report=false"]
STREAM += ["--set", "data.stream=always"]
POINTS = ["-r", "gaussian-2d", "-q", "--device", "cpu", "--set", "train.report=false"]
POINTS += ["--set", "train.log_every=4", "--set", "train.batch_size=16"]
ALLOW = ["--set", "data.allow_changed=true"]


def folder(root: Path, n: int = 16) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(
            root / f"{i:03d}.png"
        )
    return root


def points(path: Path, n: int = 64, seed: int = 0) -> Path:
    np.save(path, np.random.default_rng(seed).normal(size=(n, 2)))
    return path


def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root``: files by SHA-256, folders by name."""
    return {
        str(p.relative_to(root)): "dir"
        if p.is_dir()
        else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
    }


def cli(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err
    return code, err


def one_line(err: str) -> str:
    assert "Traceback" not in err and err.strip().count("\n") == 0, err
    return err.strip()


def state(run: Path) -> dict:
    return json.loads((run / "checkpoints" / "last" / "state.json").read_text())


def refused_unchanged(argv: list[str], run: Path, capsys) -> str:
    """Run ``argv`` (a resume): refused in one line, exit 2, the run byte-identical."""
    before = snapshot(run)
    code, err = cli(argv, capsys)
    assert code == 2
    line = one_line(err)
    assert snapshot(run) == before
    return line


# ---------------------------------------------------------------- a streamed folder


def test_a_file_lost_mid_run_saves_the_last_step_and_its_resume_is_refused(
    tmp_path, capsys, monkeypatch
):
    root, run = folder(tmp_path / "f"), tmp_path / "run"
    real_step = loop.train_step

    def step_then_delete(*args, **kwargs):  # the file goes while step 3 trains
        if args[4] == 3:
            (root / "005.png").unlink()
        return real_step(*args, **kwargs)

    monkeypatch.setattr(loop, "train_step", step_then_delete)
    argv = ["train", *STREAM, "--data", str(root), "--out", str(run)]
    code, err = cli(
        [*argv, "--set", "train.iterations=20", "--set", "train.checkpoint_every=100"], capsys
    )
    monkeypatch.setattr(loop, "train_step", real_step)
    line = one_line(err)
    assert code == 2 and "005.png cannot be used as an image" in line, line
    done = int(re.search(r"stopped after step (\d+), checkpoint saved", line).group(1))
    assert 4 <= done < 20  # steps 4, 5 may have been decoded before the file went
    assert "data.allow_changed=true" in line and f"--resume {run}" in line
    assert state(run)["step"] == done  # the only checkpoint: the last completed step
    assert state(run)["data"]["count"] == 16

    resume = ["train", "--resume", str(run), "-q"]
    line = refused_unchanged(resume, run, capsys)
    assert f"the image folder {root} changed since step {done}: 1 file removed (005.png)" in line
    assert "16 examples then, 15 now" in line and "--set data.allow_changed=true" in line

    code, err = cli([*resume, *ALLOW], capsys)
    assert code == 0, err
    assert state(run)["step"] == 20 and state(run)["data"]["count"] == 15
    assert "allow_changed: false" in (run / "config.yaml").read_text()  # that resume only
    assert json.loads((run / "data.json").read_text())["count"] == 15


def test_an_unchanged_folder_resumes_bitwise_as_before(tmp_path, capsys):
    root = folder(tmp_path / "f")
    runs = {}
    for name, steps in (("whole", 6), ("part", 3)):
        runs[name] = tmp_path / name
        argv = ["train", *STREAM, "--data", str(root), "--out", str(runs[name])]
        length = ["--set", f"train.iterations={steps}", "--set", "train.checkpoint_every=3"]
        assert main([*argv, *length]) == 0
    code, err = cli(
        ["train", "--resume", str(runs["part"]), "-q", "--set", "train.iterations=6"], capsys
    )
    assert code == 0 and err == ""
    assert_same_checkpoints(runs["whole"], runs["part"])
    assert state(runs["whole"])["data"] == state(runs["part"])["data"]
    assert (runs["whole"] / "data.json").read_bytes() == (runs["part"] / "data.json").read_bytes()
    record = json.loads((runs["part"] / "data.json").read_text())
    assert sorted(record["files"]) == [f"{i:03d}.png" for i in range(16)]


def test_a_folder_edited_in_place_is_refused(tmp_path, capsys):
    root, run = folder(tmp_path / "f"), tmp_path / "run"
    argv = ["train", *STREAM, "--data", str(root), "--out", str(run)]
    assert main([*argv, "--set", "train.iterations=2", "--set", "data.stream=never"]) == 0
    folder(tmp_path / "g", n=2)  # two other images: one replaces 001.png, one is new
    os.replace(tmp_path / "g" / "000.png", root / "zz.png")
    Image.new("RGB", (20, 20)).save(root / "001.png")
    resume = ["train", "--resume", str(run), "-q", "--set", "train.iterations=4"]
    line = refused_unchanged(resume, run, capsys)
    assert "changed since step 2: 1 file added (zz.png), 1 modified (001.png)" in line


# ---------------------------------------------------------------- files read whole


def test_a_changed_idx_file_is_refused_and_allowed_on_purpose(tmp_path, capsys):
    run = cli_idx_run(tmp_path)
    write_idx(tmp_path / "idx", n_train=64, n_test=64)  # rewritten: new mtimes, same bytes
    resume = ["train", "--resume", str(run), "-q", "--set", "train.iterations=6"]
    code, err = cli(resume, capsys)
    assert code == 0 and err == ""
    images = tmp_path / "idx" / "train-images-idx3-ubyte"
    body = bytearray(images.read_bytes())
    body[-100:] = bytes(100)  # the same size, other pixels
    images.write_bytes(bytes(body))
    resume[-1] = "train.iterations=8"
    line = refused_unchanged(resume, run, capsys)
    assert f"the data files in {tmp_path / 'idx'} changed since step 6" in line
    assert "1 file modified (train-images-idx3-ubyte)" in line and "nothing was changed" in line
    code, err = cli([*resume, *ALLOW], capsys)
    assert code == 0 and state(run)["step"] == 8


def test_a_changed_npy_file_is_refused(tmp_path, capsys):
    data, run = points(tmp_path / "p.npy"), tmp_path / "run"
    argv = ["train", *POINTS, "--data", str(data), "--out", str(run)]
    assert main([*argv, "--set", "train.iterations=4"]) == 0
    points(data, n=80, seed=1)
    resume = ["train", "--resume", str(run), "-q", "--set", "train.iterations=8"]
    line = refused_unchanged(resume, run, capsys)
    assert f"the points file {data} changed since step 4: 1 file modified (p.npy)" in line
    assert "64 examples then, 80 now" in line
    (run / "data.json").write_bytes(b"\x80\x04garbage")  # a damaged record: no file names
    line = refused_unchanged(resume, run, capsys)
    assert "changed since step 4: 64 examples then, 80 now; nothing was changed" in line


def test_changed_data_settings_are_named(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *POINTS, "--out", str(run), "--set", "train.iterations=4"]) == 0
    resume = ["train", "--resume", str(run), "-q", "--set", "train.iterations=8"]
    line = refused_unchanged([*resume, "--set", "data.points=500"], run, capsys)
    assert "the generated data set gaussian-2d changed since step 4" in line
    assert "settings data.points 1000 -> 500" in line


def test_python_data_is_compared_by_its_tensor(tmp_path):
    x = torch.randn(64, 2)
    run = ganforge.train(
        "gaussian-2d",
        data=x,
        out=tmp_path / "run",
        verbose=False,
        train={"iterations": 4, "device": "cpu", "report": False},
    )
    with pytest.raises(DataError, match="the data given from Python changed since step 4"):
        ganforge.resume(run.dir, data=x + 1, train={"iterations": 8}, verbose=False)
    again = ganforge.resume(run.dir, data=x, train={"iterations": 8}, verbose=False)
    assert again.result["steps"] == 8


def test_a_checkpoint_without_a_data_record_resumes_as_before(tmp_path, capsys):
    data, run = points(tmp_path / "p.npy"), tmp_path / "run"
    argv = ["train", *POINTS, "--data", str(data), "--out", str(run)]
    assert main([*argv, "--set", "train.iterations=4"]) == 0
    last = run / "checkpoints" / "last"
    meta = state(run)
    del meta["data"]  # as ganforge wrote it before it recorded the data
    (last / "state.json").write_text(json.dumps(meta, indent=1))
    manifest = json.loads((last / "manifest.json").read_text())
    manifest["files"] = {n: ckpt.sha256_file(last / n) for n in manifest["files"]}
    (last / "manifest.json").write_text(json.dumps(manifest))
    (run / "data.json").unlink()
    points(data, n=64, seed=1)  # other points: nothing recorded to compare them with
    code, err = cli(["train", "--resume", str(run), "-q", "--set", "train.iterations=8"], capsys)
    assert code == 0 and err == ""
    assert state(run)["step"] == 8 and state(run)["data"]["count"] == 64  # recorded from now on


# ---------------------------------------------------------------- values float32 cannot hold


@pytest.mark.parametrize("suffix", [".npy", ".csv"])
def test_points_beyond_float32_are_refused_before_training(tmp_path, capsys, suffix):
    x = np.random.default_rng(0).normal(size=(64, 2))
    x[5, 1] = 1e300
    path = tmp_path / f"p{suffix}"
    if suffix == ".npy":
        np.save(path, x)
    else:
        path.write_text("x,y\n" + "".join(f"{float(a)!r},{float(b)!r}\n" for a, b in x))
    run = tmp_path / "run"
    code, err = cli(["train", *POINTS, "--data", str(path), "--out", str(run)], capsys)
    line = one_line(err)
    assert code == 2 and str(path) in line and "the first row 6" in line, line
    assert "beyond float32's limit of 3.403e+38" in line and "1e+300" in line
    assert not run.exists()  # before training: nothing written


def test_python_data_beyond_float32_is_refused(tmp_path):
    x = torch.randn(64, 2, dtype=torch.float64)
    x[7, 0] = -1e300
    with pytest.raises(DataError, match=r"example 7 holds -1e\+300, beyond float32's limit"):
        ganforge.train("gaussian-2d", data=x, out=tmp_path / "run", verbose=False)
    assert not (tmp_path / "run").exists()


def test_generated_data_beyond_float32_is_refused():
    with pytest.raises(ConfigError, match="1e\\+300 is beyond float32's limit"):
        load_config("gaussian-2d", ["data.gaussian_b=[1e300, 0]"])
    cfg = load_config("gaussian-2d", ["data.gaussian_a=[[3e38, 0], [0, 1]]"])  # X A overflows
    with pytest.raises(DataError, match=r"gaussian-2d \(generated\): example \d+ is not finite"):
        load_data(cfg.data)
