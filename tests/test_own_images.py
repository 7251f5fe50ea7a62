"""Your own data: --data DIR of images on any image recipe, points files on 2-D recipes,
data.background and the notes said when a folder loads, gaussian-2d's target as config."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from ganforge.cli import main
from ganforge.config import DataConfig, load_config
from ganforge.data import data_shape, load_data, resolve_path
from ganforge.errors import ConfigError, DataError, GanforgeError
from ganforge.metrics import inception, points
from ganforge.metrics.evaluate import Evaluation

from conftest import write_idx
from runhelpers import cli_idx_run

TINY = ["--set", "train.iterations=2", "--set", "train.batch_size=4", "--set", "train.threads=1"]
TINY += ["--set", "train.report=false", "--set", "data.download=false", "--device", "cpu"]


def pngs(folder: Path, n: int = 6, size: int = 12, mode: str = "RGB", seed: int = 0) -> Path:
    """``n`` random PNGs of ``size`` px in ``mode`` written into ``folder``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    bands = len(Image.new(mode, (1, 1)).getbands())
    for i in range(n):
        px = rng.integers(0, 256, (size, size, bands), dtype=np.uint8)
        Image.fromarray(px.squeeze(-1) if bands == 1 else px, mode).save(folder / f"{i}.png")
    return folder


# ---------------------------------------------------------------- any recipe, any folder


@pytest.mark.parametrize(
    "recipe, size, channels",
    [
        ("dcgan-mnist", 28, 1),
        ("vanilla-fmnist", 28, 1),
        ("dcgan-svhn", 32, 3),
        ("dcgan-svhn-gray", 28, 1),  # MNIST padded by 2 to 32x32: the pad stays
        ("cifar-ships", 32, 3),
    ],
)
def test_a_folder_of_images_is_used_at_the_recipes_size(tmp_path, recipe, size, channels):
    folder = pngs(tmp_path / "imgs")
    cfg = load_config(recipe, [f"data.path={folder}"])
    before = data_shape(cfg.data)
    data, note = resolve_path(cfg.data, cfg.model.num_classes)
    assert data.name == "image-folder" and (data.size, data.channels) == (size, channels)
    assert data_shape(data) == before  # the nets see what the recipe was made for
    assert note is not None and f"at {size}x{size} with {channels} channel" in note
    assert "\n" not in note
    assert load_data(data).x.shape == (6, *before)


def test_train_on_a_folder_says_so_once_and_records_image_folder(tmp_path, capsys):
    folder = pngs(tmp_path / "imgs", mode="RGBA")
    run = tmp_path / "run"
    assert (
        main(["train", "-r", "dcgan-mnist", "--data", str(folder), "--out", str(run), *TINY]) == 0
    )
    out = capsys.readouterr().out
    assert out.count("used as image-folder data at 28x28 with 1 channel") == 1
    assert "6 with transparency laid on white (data.background)" in out
    saved = yaml.safe_load((run / "config.yaml").read_text())["data"]
    assert (saved["name"], saved["size"], saved["channels"]) == ("image-folder", 28, 1)
    assert main(["train", "--resume", str(run), "-q", "--set", "train.iterations=3"]) == 0


def test_a_folder_with_the_data_sets_own_files_stays_that_data_set(tmp_path):
    folder = write_idx(tmp_path / "mnist")
    pngs(folder, n=2)  # a stray picture beside the IDX files
    cfg = load_config("dcgan-mnist", [f"data.path={folder}"])
    assert resolve_path(cfg.data) == (cfg.data, None)


def test_a_folder_without_images_keeps_the_loaders_message(tmp_path):
    (tmp_path / "empty").mkdir()
    cfg = load_config("dcgan-mnist", [f"data.path={tmp_path / 'empty'}", "data.download=false"])
    assert resolve_path(cfg.data) == (cfg.data, None)
    with pytest.raises(DataError, match="no MNIST IDX files there"):
        load_data(cfg.data)


def test_a_conditional_recipe_refuses_a_folder_in_one_line(tmp_path, capsys):
    folder = pngs(tmp_path / "imgs")
    argv = ["train", "-r", "cgan-fmnist", "--data", str(folder), "--out", str(tmp_path / "r")]
    assert main([*argv, *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--set data.name=image-folder" in err
    assert "has no labels" in err and not (tmp_path / "r" / "config.yaml").exists()


# ---------------------------------------------------------------- 2-D data from a file


def test_a_2d_recipe_refuses_a_folder_of_images(tmp_path):
    cfg = load_config("gaussian-2d", [f"data.path={pngs(tmp_path / 'imgs')}"])
    with pytest.raises(DataError, match="gaussian-2d is a 2-D data set; give a .npy or .csv"):
        resolve_path(cfg.data)


def test_points_files_train_npy_and_csv(tmp_path, capsys):
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(40, 2)) * [1.0, 3.0] + [5.0, -2.0]
    np.save(tmp_path / "p.npy", pts)
    (tmp_path / "p.csv").write_text("x,y\n" + "\n".join(f"{a},{b}" for a, b in pts))
    for name in ("p.npy", "p.csv"):
        cfg = load_config("gaussian-2d", [f"data.path={tmp_path / name}"])
        data, note = resolve_path(cfg.data)
        assert data.name == "points" and note is not None and "2-D points" in note
        x = load_data(data).x
        assert x.dtype == torch.float32 and torch.allclose(x.double(), torch.from_numpy(pts))
    run = tmp_path / "run"
    argv = ["train", "-r", "ring-8", "--data", str(tmp_path / "p.npy"), "--out", str(run)]
    assert main([*argv, *TINY, "--set", "eval.every=2", "--set", "eval.n=50"]) == 0
    out = capsys.readouterr().out
    assert "used as the points data set in place of ring-8" in out
    assert "eval at step 2: fd" in out  # scored against the pool's moments, not ring-8's modes


def test_bad_points_files_are_one_line(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    np.save(tmp_path / "3d.npy", np.zeros((5, 3)))
    np.save(tmp_path / "nan.npy", np.array([[0.0, 1.0], [np.nan, 2.0]]))
    (tmp_path / "words.csv").write_text("a,b\nx,y\n")
    cases = {
        "obj.npy": "allow_pickle",
        "3d.npy": r"expected an \(N, 2\) array",
        "nan.npy": "NaN or infinite",
        "words.csv": "cannot read points",
    }
    for name, match in cases.items():
        data = DataConfig(name="points", path=str(tmp_path / name))
        with pytest.raises(DataError, match=match):
            load_data(data)


# ---------------------------------------------------------------- background and notes


@pytest.mark.parametrize(
    "background, value",
    [("white", 255), ("black", 0), ("'#808080'", 128), ("[10, 20, 30]", (10, 20, 30))],
)
def test_transparent_pixels_take_data_background(tmp_path, background, value):
    folder = tmp_path / "clear"
    folder.mkdir()
    for i in range(2):
        Image.new("RGBA", (8, 8), (255, 0, 0, 0)).save(folder / f"{i}.png")
    sets = [f"data.path={folder}", "data.size=8", f"data.background={background}"]
    cfg = load_config("dcgan-64", sets)
    px = load_data(cfg.data).x[0, :, 0, 0].tolist()
    assert px == (list(value) if isinstance(value, tuple) else [value] * 3)


def test_bad_background_is_a_config_error():
    with pytest.raises(ConfigError, match="data.background: 'blu' is not a colour"):
        load_config("dcgan-64", ["data.background=blu"])
    with pytest.raises(ConfigError, match="data.background"):
        load_config("dcgan-64", ["data.background=[0, 0, 256]"])


def test_gray_into_rgb_and_upscaling_are_said_once(tmp_path):
    folder = pngs(tmp_path / "g", n=3, size=6, mode="L")
    pngs(folder / "big", n=2, size=40, mode="RGB")
    source = load_data(DataConfig(name="image-folder", path=str(folder), size=16)).source
    assert "3 grayscale made RGB" in source
    assert "3 up-scaled more than 2x to 16x16 (up to 2.7x" in source
    assert source.count("grayscale") == 1 and "transparency" not in source
    quiet = load_data(DataConfig(name="image-folder", path=str(folder / "big"), size=16)).source
    assert "grayscale" not in quiet and "up-scaled" not in quiet


# ---------------------------------------------------------------- gaussian-2d's target


def test_gaussian_2d_target_is_config_and_the_evaluator_uses_it():
    cfg = load_config(
        "gaussian-2d", ["data.gaussian_b=[5, -3]", "data.gaussian_a=[[2, 0], [0, 1]]"]
    )
    data = load_data(dataclasses.replace(cfg.data, points=20_000)).x
    assert data.mean(0).tolist() == pytest.approx([5, -3], abs=0.05)
    assert data.std(0).tolist() == pytest.approx([2, 1], abs=0.05)
    own = Evaluation(cfg, n=2000).score(data[:2000])
    seed = Evaluation(load_config("gaussian-2d"), n=2000).score(data[:2000])
    assert own["fd"] < 0.05 < 10 < seed["fd"]
    assert own["mean_err"] < 0.1 and own["cov_rel_err"] < 0.2  # zero off-diagonals skipped
    assert points.point_metrics("gaussian-2d", data[:2000], None, cfg.data)["fd"] == own["fd"]


def test_a_singular_gaussian_a_is_refused():
    with pytest.raises(ConfigError, match="data.gaussian_a: .* is singular"):
        load_config("gaussian-2d", ["data.gaussian_a=[[1, 2], [2, 4]]"])


# ---------------------------------------------------------------- evaluating a folder run


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No cached Inception weights and no network."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(inception, "online", lambda *a, **k: False)


@pytest.fixture
def folder_run(tmp_path):
    run = tmp_path / "frun"
    folder = pngs(tmp_path / "imgs", n=8, size=16)
    argv = ["train", "-r", "dcgan-64", "--data", str(folder), "--out", str(run), "-q", *TINY]
    assert main([*argv, "--set", "data.size=8"]) == 0
    return run


def test_a_folder_run_offline_gets_one_honest_line(folder_run, offline, capsys):
    messages = []
    for metrics in ([], ["--metrics", "fid"], ["--metrics", "fd"]):
        assert main(["evaluate", str(folder_run), "--n", "10", *metrics]) == 2
        err = capsys.readouterr().err
        assert err.startswith("ganforge: error: ") and err.count("\n") == 1
        messages.append(err)
    weights, _, classifier = messages
    assert "Inception weights" in weights and "--inception-weights PATH" in weights
    assert inception.WEIGHTS_URL in weights and "offline" in weights
    assert "image-folder has no labels, so no classifier metrics" in weights
    assert "fd,pr" not in weights  # no hint back to metrics that cannot work here
    assert "has no labels; use --metrics fid,kid,inception-is" in classifier
    assert "evaluator train" not in classifier  # nor to a classifier it cannot train
    assert not (folder_run / "metrics.json").exists()


def test_the_offline_line_of_a_labelled_run_names_its_classifier(offline):
    cfg = load_config("vanilla-fmnist")
    with pytest.raises(GanforgeError, match="or use the classifier metrics: --metrics fd"):
        Evaluation(cfg, "fid")
    cfg = load_config("dcgan-svhn")  # labelled, no evaluator shipped
    with pytest.raises(GanforgeError, match="evaluator train --dataset svhn"):
        Evaluation(cfg, "fid")


def test_evaluate_real_dir_compares_with_any_folder(tmp_path, offline, capsys):
    run = cli_idx_run(tmp_path / "fm")  # Fashion-MNIST: its classifier works offline
    same = tmp_path / "same"
    same.mkdir()
    test = load_data(DataConfig(name="fashion-mnist", path=str(tmp_path / "fm" / "idx"))).x
    for i, img in enumerate(test[:40]):
        Image.fromarray(img[0].numpy()).save(same / f"{i}.png")
    bright = pngs(tmp_path / "bright", n=40, size=28, mode="L", seed=7)
    args = ["evaluate", str(run), "--n", "40", "--metrics", "fd"]
    assert main([*args, "--real", str(same)]) == 0
    out = json.loads((run / "metrics.json").read_text())
    assert out["protocol"]["reference"] == {"real": f"{same} (40 images)", "n": 40}
    assert main([*args, "--real", str(bright)]) == 0
    other = json.loads((run / "metrics.json").read_text())
    assert other["metrics"]["fd"] != out["metrics"]["fd"]
    assert main([*args, "--real", str(tmp_path / "nowhere")]) == 2
    assert "--real" in capsys.readouterr().err


def test_real_is_for_image_runs(tmp_path):
    cfg = load_config("gaussian-2d")
    with pytest.raises(GanforgeError, match="--real is for image runs"):
        Evaluation(cfg, real_dir=tmp_path)
