"""The public Python API: ganforge.train / resume / load, Run, data=, custom nets, callbacks."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import ganforge
from ganforge.errors import ConfigError, DataError, GanforgeError

# 2-D runs of a few steps: gaussian-2d on 64 points, 8 steps an epoch.
POINTS = {"data": {"points": 64}, "train": {"epochs": 2, "log_every": 4, "device": "cpu"}}
# image runs: vanilla-fmnist, batch 16, 4 steps
IMAGES = {"train": {"batch_size": 16, "iterations": 4, "log_every": 2, "device": "cpu"}}


def _images(n: int = 64, dtype=torch.uint8) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=gen).to(dtype)


class TinyG(nn.Module):
    def __init__(self, z_dim: int = 100) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(z_dim, 28 * 28), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, 1, 28, 28)


def test_train_returns_a_run_that_samples_shows_and_logs(tmp_path):
    run = ganforge.train("gaussian-2d", out=tmp_path / "run", verbose=False, **POINTS)
    assert isinstance(run, ganforge.Run) and run.dir == tmp_path / "run"
    assert run.config.recipe == "gaussian-2d" and run.config.train.epochs == 2
    assert run.result["steps"] == 16
    x = run.sample(100, seed=3)
    assert x.shape == (100, 2) and x.dtype == torch.float32
    assert torch.equal(x, run.sample(100, seed=3)) and not torch.equal(x, run.sample(100, seed=4))
    assert isinstance(run.grid(64), Image.Image)
    records = run.log
    records = records.to_dict("records") if hasattr(records, "to_dict") else records
    assert [r["step"] for r in records] == [4, 8, 12, 16]
    assert (run.dir / "report.html").is_file()  # written by the caller after training


def test_load_gives_the_same_samples_as_the_trained_run_and_the_cli(tmp_path, capsys):
    run = ganforge.train("gaussian-2d", out=tmp_path / "run", verbose=False, **POINTS)
    again = ganforge.load(tmp_path / "run")
    assert again.checkpoint.name == "last"  # no best: falls back
    assert torch.equal(run.sample(50, seed=1), again.sample(50, seed=1))
    assert isinstance(again.discriminator, nn.Module)
    with pytest.raises(GanforgeError, match="choose best, last or previous"):
        ganforge.load(tmp_path / "run", checkpoint="newest")


def test_image_run_samples_lie_in_the_data_range(tmp_path):
    run = ganforge.train(
        "vanilla-fmnist", data=_images(), out=tmp_path / "r", verbose=False, **IMAGES
    )
    x = run.sample(8, seed=0)
    assert x.shape == (8, 1, 28, 28) and float(x.min()) >= -1 and float(x.max()) <= 1
    assert run.config.data.name == "python" and run.config.data.shape == (1, 28, 28)
    assert run.images(4).dtype == torch.uint8


class PILSet(Dataset):
    def __len__(self) -> int:
        return 48

    def __getitem__(self, i: int):
        return Image.new("L", (28, 28), color=i * 5), i % 10


@pytest.mark.parametrize(
    "make",
    [
        lambda: _images(),  # uint8 tensor
        lambda: _images(dtype=torch.float32) / 127.5 - 1,  # float in [-1, 1]
        lambda: _images().squeeze(1).numpy(),  # (N, H, W) numpy
        lambda: TensorDataset(_images(), torch.arange(64) % 10),  # (x, y) pairs
        lambda: PILSet(),  # PIL images with labels
        lambda: DataLoader(TensorDataset(_images()), batch_size=10),  # batches of 1-tuples
        lambda: (_images(), torch.arange(64) % 10),  # an (x, y) tuple of tensors
    ],
    ids=["uint8", "float", "numpy", "dataset-pairs", "pil", "dataloader", "tuple"],
)
def test_data_accepts_tensors_datasets_and_loaders(tmp_path, make):
    run = ganforge.train("vanilla-fmnist", data=make(), out=tmp_path / "r", verbose=False, **IMAGES)
    assert run.result["steps"] == 4
    assert run.config.data.shape == (1, 28, 28)


def test_conditional_recipe_reads_labels_from_pairs(tmp_path):
    data = TensorDataset(_images(), torch.arange(64) % 10)
    run = ganforge.train("cgan-fmnist", data=data, out=tmp_path / "r", verbose=False, **IMAGES)
    assert run.sample(10, seed=0, labels=7).shape == (10, 1, 28, 28)
    with pytest.raises(GanforgeError, match="give one class in 0-9"):
        run.sample(4, labels=[1, 2])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (torch.full((64, 1, 28, 28), 200.0), "these look like 0-255 values: pass them as uint8"),
        (torch.full((64, 1, 28, 28), float("nan")), "NaN or infinite"),
        (torch.zeros(64, 3, 2, 28, 28), "expected images"),
        ("not a path that exists/", "no such file or folder"),
        ([1, 2, 3], "expected a tensor"),
        (TensorDataset(_images(), torch.rand(64)), "labels must be integers"),
        ((_images(), torch.arange(10)), "64 examples but 10 labels"),
    ],
    ids=["0-255-floats", "nan", "5-d", "missing-path", "list", "float-labels", "label-count"],
)
def test_bad_data_is_one_line(tmp_path, data, message):
    with pytest.raises((DataError, GanforgeError)) as e:
        ganforge.train("vanilla-fmnist", data=data, out=tmp_path / "r", verbose=False, **IMAGES)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "r").exists()


def test_custom_module_generator_and_reopening_it(tmp_path):
    run = ganforge.train(
        "vanilla-fmnist",
        data=_images(),
        generator=TinyG(),
        out=tmp_path / "r",
        verbose=False,
        **IMAGES,
    )
    assert isinstance(run.generator, TinyG)
    assert run.config.model.g == "python:TinyG"
    with pytest.raises(ConfigError, match="was a Python object given to ganforge.train"):
        ganforge.load(tmp_path / "r")
    again = ganforge.load(tmp_path / "r", generator=TinyG())
    assert torch.equal(again.sample(4, seed=0), run.sample(4, seed=0))


def test_builder_callable_gets_the_arguments_it_takes(tmp_path):
    seen = {}

    def build(shape):
        seen["shape"] = shape
        return TinyG()

    ganforge.train(
        "vanilla-fmnist",
        data=_images(),
        generator=build,
        out=tmp_path / "r",
        verbose=False,
        **IMAGES,
    )
    assert seen == {"shape": (1, 28, 28)}
    with pytest.raises(ConfigError, match="not an nn.Module"):
        ganforge.train(
            "vanilla-fmnist",
            data=_images(),
            generator=lambda: 3,
            out=tmp_path / "s",
            verbose=False,
            **IMAGES,
        )


NETS = '''
from torch import nn


def build_g(z_dim, shape):
    """A linear G for 2-D data."""
    return nn.Sequential(nn.Linear(z_dim, 16), nn.ReLU(), nn.Linear(16, shape[0]))
'''


def test_import_path_generator_reopens_in_a_new_process(tmp_path, monkeypatch):
    pkg = tmp_path / "plugins"
    pkg.mkdir()
    (pkg / "mynets.py").write_text(textwrap.dedent(NETS))
    monkeypatch.syspath_prepend(str(pkg))
    run = ganforge.train(
        "gaussian-2d",
        out=tmp_path / "run",
        overrides=["model.g=mynets:build_g"],
        verbose=False,
        **POINTS,
    )
    assert "g: mynets:build_g" in (run.dir / "config.yaml").read_text()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(pkg), *sys.path])}
    cmd = [sys.executable, "-m", "ganforge", "sample", str(run.dir), "-o", str(tmp_path / "s.png")]
    cmd.append("--trust-code")  # a run that names code by import path is opened on request only
    ok = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "s.png").is_file()
    # without the module on the path: one line naming it
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p and p != str(pkg))
    bad = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "cannot import module 'mynets'" in bad.stderr and len(bad.stderr.splitlines()) == 1


def test_unknown_import_path_and_unknown_section_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match="cannot import module 'no_such_pkg.x'"):
        ganforge.train(
            "gaussian-2d", out=tmp_path / "a", overrides=["model.d=no_such_pkg.x:y"], **POINTS
        )
    with pytest.raises(ConfigError, match="unknown keyword trian="):
        ganforge.train("gaussian-2d", out=tmp_path / "b", trian={"epochs": 1})
    with pytest.raises(ConfigError, match="unknown key train.epoch"):
        ganforge.train("gaussian-2d", out=tmp_path / "c", train={"epoch": 1})


class Spy(ganforge.Callback):
    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []

    def on_train_start(self, state):
        self.events.append(("start", state.step))

    def on_log(self, state, record):
        self.events.append(("log", record["step"]))

    def on_sample(self, state, path):
        assert path.is_file()
        self.events.append(("sample", state.step))

    def on_checkpoint(self, state, path):
        self.events.append(("checkpoint", state.step))

    def on_train_end(self, state):
        assert (state.run_dir / "final.png").is_file()
        self.events.append(("end", state.step))


def test_callbacks_see_every_event_in_order(tmp_path):
    spy = Spy()
    cfg = {"data": {"points": 64}, "train": {"epochs": 2, "log_every": 8, "device": "cpu"}}
    ganforge.train("gaussian-2d", out=tmp_path / "run", callbacks=[spy], verbose=False, **cfg)
    assert spy.events == [
        ("start", 0),
        ("log", 8),
        ("sample", 8),
        ("checkpoint", 8),
        ("log", 16),
        ("sample", 16),
        ("checkpoint", 16),
        ("end", 16),
    ]
    with pytest.raises(ConfigError, match="has none of the hooks"):
        ganforge.train("gaussian-2d", out=tmp_path / "x", callbacks=[object()], **cfg)


def test_resume_continues_a_run_exactly(tmp_path):
    ref = ganforge.train("gaussian-2d", out=tmp_path / "ref", verbose=False, **POINTS)
    short = {**POINTS, "train": {**POINTS["train"], "epochs": 1}}
    part = ganforge.train("gaussian-2d", out=tmp_path / "part", verbose=False, **short)
    done = part.resume(train={"epochs": 2}, verbose=False)
    assert done.result["steps"] == 16
    for k, v in ref.generator.state_dict().items():
        assert torch.equal(v, done.generator.state_dict()[k]), k


def test_recipe_may_be_a_yaml_file_or_a_config(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(
        "data: {name: gaussian-2d, points: 64}\nmodel: {g: linear, d: mlp, z_dim: 2}\n"
        "train: {epochs: 1, batch_size: 8, device: cpu}\n"
    )
    run = ganforge.train(path, out=tmp_path / "a", verbose=False)
    assert run.config.recipe == "mine" and run.result["steps"] == 8
    cfg = ganforge.load_config("gaussian-2d", ["data.points=64", "train.epochs=1"])
    assert ganforge.train(cfg, out=tmp_path / "b", verbose=False).result["steps"] == 8
    with pytest.raises(ConfigError, match="no such file"):
        ganforge.train(tmp_path / "nope.yaml", out=tmp_path / "c")


def test_import_ganforge_is_light():
    code = "import sys, ganforge; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


PLUGINS = '''
import torch.nn.functional as F

from ganforge.losses import Loss

softplus = Loss(d=lambda r, f: F.softplus(-r).mean() + F.softplus(f).mean(),
                g=lambda f, r=None: F.softplus(-f).mean())
not_a_loss = 3


def mirror(x, gen):
    """A DiffAugment policy of one's own: flip every image left-right."""
    return x.flip(-1)
'''


def test_losses_and_augment_policies_by_import_path(tmp_path, monkeypatch):
    (tmp_path / "myplugins.py").write_text(PLUGINS)
    monkeypatch.syspath_prepend(str(tmp_path))
    run = ganforge.train(
        "vanilla-fmnist",
        data=_images(),
        out=tmp_path / "r",
        overrides=["loss.name=myplugins:softplus", "train.augment=[translation,myplugins:mirror]"],
        verbose=False,
        **IMAGES,
    )
    text = (run.dir / "config.yaml").read_text()
    assert "name: myplugins:softplus" in text and "myplugins:mirror" in text
    assert all(math.isfinite(r["loss_d"]) for r in run.log_records())
    with pytest.raises(ConfigError, match="not a ganforge.losses.Loss"):
        ganforge.train(
            "gaussian-2d",
            out=tmp_path / "x",
            overrides=["loss.name=myplugins:not_a_loss"],
            **POINTS,
        )
    with pytest.raises(ConfigError, match="loss.name: 'nope' is not allowed"):
        ganforge.train("gaussian-2d", out=tmp_path / "y", overrides=["loss.name=nope"], **POINTS)


METRIC = """
from ganforge.metrics.metric import Metric

brightness = Metric(
    "images",
    lambda ctx: {
        "brightness": float(ctx.x.float().mean()),
        "real_brightness": float(ctx.real.float().mean()),
    },
    primary="brightness",
    values={"brightness": None},
)
"""


def test_a_metric_of_ones_own_by_import_path(tmp_path, monkeypatch):
    (tmp_path / "mymetrics.py").write_text(METRIC)
    monkeypatch.syspath_prepend(str(tmp_path))
    data = torch.full((64, 1, 28, 28), 51, dtype=torch.uint8)  # brightness 51 everywhere
    run = ganforge.train("vanilla-fmnist", data=data, out=tmp_path / "r", verbose=False, **IMAGES)
    values = run.evaluate(["mymetrics:brightness"], n=32)
    assert values["real_brightness"] == 51.0 and 0 <= values["brightness"] <= 255
    assert run.last_eval["protocol"]["n"] == 32
    with pytest.raises(GanforgeError, match="not for image data"):
        run.evaluate(["points"])
    with pytest.raises(GanforgeError, match="unknown metric 'nope'"):
        run.evaluate(["nope"])


def test_plugins_register_through_an_entry_point(tmp_path, monkeypatch):
    """An installed package's ``ganforge.plugins`` entry point is imported when a name is not
    known yet, and what it registers is then found by name."""
    from ganforge import nets, registry

    (tmp_path / "gfplug.py").write_text(
        "from torch import nn\nfrom ganforge.nets import GENERATORS\n\n"
        "@GENERATORS.register('plug-g')\ndef build(z_dim, shape):\n"
        "    return nn.Sequential(nn.Linear(z_dim, shape[0]))\n"
    )
    dist = tmp_path / "gfplug-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: gfplug\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[ganforge.plugins]\nplug = gfplug\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    monkeypatch.setattr(nets.GENERATORS, "_items", dict(nets.GENERATORS._items))
    run = ganforge.train(
        "gaussian-2d", out=tmp_path / "r", overrides=["model.g=plug-g"], verbose=False, **POINTS
    )
    assert "plug-g" in nets.GENERATORS and run.config.model.g == "plug-g"
