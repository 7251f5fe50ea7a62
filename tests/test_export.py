"""``ganforge export`` (ONNX, TorchScript) and ``ganforge sample --format dir``."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from ganforge import nets
from ganforge.cli import main
from ganforge.config import load_config, read_config
from ganforge.engine.loop import train
from ganforge.export import MARKER, load_sampler

from runhelpers import tiny_images

TINY = [
    "train.batch_size=16",
    "train.iterations=4",
    "train.log_every=2",
    "train.grid=[2,2]",
    "train.device=cpu",
    "train.report=false",
]


def _run(root, recipe: str, *extra: str):
    run = root / recipe
    train(load_config(recipe, [*TINY, *extra]), run, verbose=False, data=tiny_images())
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny trained runs: an MLP with an EMA of G, a DCGAN, a conditional MLP, and a
    self-conditioned MLP (G(z) draws its clusters from a hash of z: integer ops exported)."""
    root = tmp_path_factory.mktemp("export")
    return {
        "mlp": _run(root, "vanilla-fmnist", "model.ema=0.5"),
        "dcgan": _run(root, "dcgan-mnist"),
        "cond": _run(root, "cgan-fmnist"),
        "clusters": _run(root / "self-conditioned", "vanilla-fmnist", "model.clusters=4"),
    }


def _inputs(run, n: int = 5):
    """Fresh noise (and labels) of a batch size other than the one traced."""
    cfg = read_config(run / "config.yaml")
    z = torch.randn(n, cfg.model.z_dim, generator=torch.Generator().manual_seed(7))
    y = torch.tensor([9, 0, 3, 3, 7][:n]) if cfg.model.num_classes else None
    return z, y


def _reference(run, z, y) -> np.ndarray:
    s = load_sampler(run)
    with torch.no_grad():
        return nets.generate(s.g, z, y).numpy()


@pytest.mark.parametrize("kind", ["mlp", "dcgan", "cond", "clusters"])
def test_onnx_matches_pytorch(runs, kind, tmp_path, capsys):
    import onnxruntime as ort

    run, out = runs[kind], tmp_path / "g.onnx"
    assert main(["export", str(run), "--format", "onnx", "-o", str(out)]) == 0
    assert "any batch size" in capsys.readouterr().out
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    z, y = _inputs(run)
    feed = {"z": z.numpy()} | ({"y": y.numpy()} if y is not None else {})
    got = sess.run(None, feed)[0]
    want = _reference(run, z, y)
    assert got.shape == want.shape == (5, 1, 28, 28)
    assert np.abs(got - want).max() < 1e-4


@pytest.mark.parametrize("kind", ["mlp", "dcgan", "cond", "clusters"])
def test_torchscript_matches_pytorch(runs, kind, tmp_path):
    run, out = runs[kind], tmp_path / "g.pt"
    assert main(["export", str(run), "--format", "torchscript", "-o", str(out)]) == 0
    with warnings.catch_warnings():  # torch.jit.load is deprecated in recent torch
        warnings.simplefilter("ignore")
        ts = torch.jit.load(str(out))  # ganforge's own export, written by this test
    z, y = _inputs(run, 3)
    with torch.no_grad():
        got = (ts(z) if y is None else ts(z, y)).numpy()
    want = _reference(run, z, y)
    assert got.shape == want.shape
    assert np.abs(got - want).max() < 1e-4


def test_export_uses_the_ema_and_differs_from_g(runs, tmp_path):
    """The exported net is the EMA of G when the run keeps one (it differs from G)."""
    import onnxruntime as ort

    from ganforge.checkpoint import load_weights

    run = runs["mlp"]
    s = load_sampler(run)
    assert s.ema and s.which == "the EMA of G"
    out = tmp_path / "g.onnx"
    assert main(["export", str(run), "-o", str(out)]) == 0
    z, _ = _inputs(run)
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(
        None, {"z": z.numpy()}
    )[0]
    g = nets.build_generator(s.cfg.model, (1, 28, 28)).eval()
    g.load_state_dict(load_weights(s.checkpoint, "g"))
    with torch.no_grad():
        plain = g(z).numpy()
    assert np.abs(got - plain).max() > 1e-3  # not G itself
    assert np.abs(got - _reference(run, z, None)).max() < 1e-4


def test_export_default_path_and_errors(runs, tmp_path, capsys):
    run = runs["dcgan"]
    assert main(["export", str(run), "--format", "torchscript"]) == 0
    assert (run / "generator.pt").stat().st_size > 0
    assert main(["export", str(tmp_path / "nope")]) == 2
    (tmp_path / "f").write_text("a file")
    assert main(["export", str(run), "-o", str(tmp_path / "f" / "g.onnx")]) == 2
    err = capsys.readouterr().err
    assert "no such run directory" in err and "f is a file, not a folder" in err
    assert "Traceback" not in err
    assert not list(tmp_path.glob("**/.*.tmp"))


def test_sample_dir_writes_n_pngs_matching_the_grid_noise(runs, tmp_path):
    run, out = runs["cond"], tmp_path / "pngs"
    assert main(["sample", str(run), "--format", "dir", "-n", "12", "-o", str(out)]) == 0
    files = sorted(out.glob("*.png"))
    assert len(files) == 12
    assert files[3].name == "000003_class3.png"  # every class in turn
    a = np.asarray(Image.open(files[0]))
    assert a.shape == (28, 28) and a.dtype == np.uint8 and a.std() > 0
    # the same noise as the grid of `sample` with the same seed: the first tile equals file 0
    grid = tmp_path / "grid.png"
    assert main(["sample", str(run), "-n", "12", "-o", str(grid)]) == 0
    tile = np.asarray(Image.open(grid).convert("L"))[2:30, 2:30]
    assert np.abs(tile.astype(int) - a.astype(int)).max() <= 1
    # ganforge's own folder may be rewritten; fewer files leave no stale ones behind
    assert main(["sample", str(run), "--format", "dir", "-n", "4", "-o", str(out)]) == 0
    assert len(list(out.glob("*.png"))) == 4 and (out / MARKER).is_file()


def test_sample_dir_refuses_a_foreign_folder(runs, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    assert main(["sample", str(runs["mlp"]), "--format", "dir", "-n", "3", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not empty" in err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_sample_dir_refuses_points(tmp_path, capsys):
    from runhelpers import gaussian_run

    run = gaussian_run(tmp_path / "g2d", "train.report=false")
    assert main(["sample", str(run), "--format", "dir", "-o", str(tmp_path / "o")]) == 2
    assert "2-D point data" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_version(capsys):
    from ganforge import __version__

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"ganforge {__version__}"
