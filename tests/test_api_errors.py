"""Bad arguments to the public API and the commands: one GanforgeError line naming the argument,
never a raw torch or numpy error; custom nets probed before the first step; a failed start
that leaves nothing in the way of the fixed command."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ganforge
from ganforge import arguments
from ganforge.cli import main
from ganforge.engine import loop

from runhelpers import gaussian_run, tiny_images

TRAIN = {"epochs": 1, "log_every": 4, "device": "cpu", "report": False}
POINTS = {"data": {"points": 64}, "train": TRAIN}
IMAGES = {"train": {"batch_size": 16, "iterations": 2, "log_every": 2, "device": "cpu"}}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """One finished gaussian-2d run for every case of this module."""
    return gaussian_run(tmp_path_factory.mktemp("api-errors") / "run")


@pytest.fixture(scope="module")
def run(run_dir):
    return ganforge.load(run_dir)


def _one_line(e: BaseException, *names: str) -> None:
    text = str(e)
    assert "\n" not in text and "Traceback" not in text
    for name in names:
        assert name in text, text


# (call on the run, words the message must hold)
RUN_CASES = {
    "sample_str": (lambda r: r.sample("5"), "n='5'"),
    "sample_float": (lambda r: r.sample(2.5), "n=2.5"),
    "sample_bool": (lambda r: r.sample(True), "n=True"),
    "sample_zero": (lambda r: r.sample(0), "n=0"),
    "sample_negative_seed": (lambda r: r.sample(4, seed=-1), "seed=-1"),
    "sample_huge_seed": (lambda r: r.sample(4, seed=2**64), "seed="),
    "sample_str_seed": (lambda r: r.sample(4, seed="a"), "seed='a'"),
    "sample_too_many": (lambda r: r.sample(10**12), "n=1,000,000,000,000"),
    "sample_labels_unconditional": (lambda r: r.sample(4, labels=1), "labels="),
    "images_too_many": (lambda r: r.images(10**12), "n=1,000,000,000,000"),
    "grid_too_many": (lambda r: r.grid(10**9), "n=1000000000"),
    "grid_str": (lambda r: r.grid("a"), "n='a'"),
    "evaluate_negative_n": (lambda r: r.evaluate(n=-5), "n=-5"),
    "evaluate_one": (lambda r: r.evaluate(n=1), "n=1"),
    "evaluate_zero": (lambda r: r.evaluate(n=0), "n=0"),
    "evaluate_huge": (lambda r: r.evaluate(n=10**13), "n=10,000,000,000,000"),
    "evaluate_reference": (lambda r: r.evaluate(reference="nope"), "reference='nope'"),
    "evaluate_seed": (lambda r: r.evaluate(seed=-3), "seed=-3"),
    "evaluate_metrics_int": (lambda r: r.evaluate(metrics=5), "metrics=5"),
    "evaluate_metrics_items": (lambda r: r.evaluate(metrics=["fd", 3]), "metrics"),
}


@pytest.mark.parametrize("case", sorted(RUN_CASES))
def test_bad_run_arguments_are_one_line(run, case):
    call, words = RUN_CASES[case]
    with pytest.raises(ganforge.GanforgeError) as e:
        call(run)
    assert isinstance(e.value, ganforge.ArgumentError)
    assert isinstance(e.value, ValueError)  # Python's convention still holds
    _one_line(e.value, words)


def test_a_large_feasible_sample_is_drawn_in_batches(run):
    from ganforge.nets import sample_noise
    from ganforge.seeding import mix_seed

    x = run.sample(5000, seed=1)  # more than one batch of 4096 points through G
    gen = torch.Generator().manual_seed(mix_seed(1))
    z = sample_noise(5000, run.config.model.z_dim, run.config.model.z_dist, gen, "cpu")
    with torch.no_grad():
        whole = run.generator(z)  # the same noise through G at once
    assert x.shape == (5000, 2) and torch.allclose(x, whole, atol=1e-6)


def test_the_sample_cap_follows_the_memory(run, monkeypatch):
    monkeypatch.setattr(arguments, "free_memory", lambda: 8 * 2**20)  # 8 MiB free
    run.sample(1000)  # 1000 x (2 + z_dim) floats: well under 4 MiB
    with pytest.raises(ganforge.ArgumentError, match="at most"):
        run.sample(2**20)


# (call given the run directory, words the message must hold)
LOAD_CASES = {
    "load_device": (lambda d: ganforge.load(d, device="tpu"), "device='tpu'"),
    "load_int": (lambda d: ganforge.load(5), "run=5"),
    "load_none": (lambda d: ganforge.load(None), "run=None"),
    "load_checkpoint": (lambda d: ganforge.load(d, checkpoint=5), "checkpoint=5"),
    "load_fallback": (lambda d: ganforge.load(d, fallback="no"), "fallback='no'"),
    "load_generator": (lambda d: ganforge.load(d, generator=5), "generator=int"),
    "train_int": (lambda d: ganforge.train(123), "recipe=123"),
    "train_callbacks": (lambda d: ganforge.train("gaussian-2d", callbacks=5), "callbacks=5"),
    "train_callback_object": (lambda d: ganforge.train("gaussian-2d", callbacks=[5]), "callbacks"),
    "train_out": (lambda d: ganforge.train("gaussian-2d", out=5), "out=5"),
    "train_overrides_str": (
        lambda d: ganforge.train("gaussian-2d", overrides="train.epochs=1"),
        "overrides='train.epochs=1'",
    ),
    "train_overrides_int": (lambda d: ganforge.train("gaussian-2d", overrides=5), "overrides=5"),
    "train_verbose": (lambda d: ganforge.train("gaussian-2d", verbose="no"), "verbose='no'"),
    "train_overwrite": (lambda d: ganforge.train("gaussian-2d", overwrite=1), "overwrite=1"),
    "train_generator": (lambda d: ganforge.train("gaussian-2d", generator=5), "generator=int"),
    "resume_int": (lambda d: ganforge.resume(5), "run=5"),
    "resume_callbacks": (lambda d: ganforge.resume(d, callbacks=5), "callbacks=5"),
    "load_config_overrides": (lambda d: ganforge.load_config("gaussian-2d", 5), "overrides=5"),
}


@pytest.mark.parametrize("case", sorted(LOAD_CASES))
def test_bad_api_arguments_are_one_line(run_dir, case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a default runs/ folder would land here
    call, words = LOAD_CASES[case]
    with pytest.raises(ganforge.GanforgeError) as e:
        call(run_dir)
    assert isinstance(e.value, ganforge.ConfigError)
    _one_line(e.value, words)
    assert not (tmp_path / "runs").exists()  # refused before anything was written


def test_the_error_classes_are_exported():
    for name in ("GanforgeError", "ConfigError", "ArgumentError", "DataError",
                 "CheckpointError", "Diverged", "Preempted", "PeerLost"):  # fmt: skip
        assert issubclass(getattr(ganforge, name), ganforge.GanforgeError)
        assert name in dir(ganforge)


def test_a_data_path_for_generated_data_is_refused(tmp_path):
    with pytest.raises(ganforge.ConfigError) as e:
        ganforge.train("ring-8", data="/no/such/folder", out=tmp_path / "r", train=TRAIN)
    _one_line(e.value, "data='/no/such/folder'", "generated")
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------- custom nets, probed


class Flat(nn.Module):
    """A 1x28x28 G or D of one linear layer, with a twist in its output."""

    def __init__(self, n_in: int, n_out: int, out=lambda y, x: y) -> None:
        super().__init__()
        self.layer, self.out = nn.Linear(n_in, n_out), out

    def forward(self, x: torch.Tensor):
        return self.out(self.layer(x.flatten(1)), x)


def _g(out_shape=(1, 28, 28), twist=None, z_dim=100):
    n = int(torch.tensor(out_shape).prod())
    return Flat(z_dim, n, twist or (lambda y, x: y.view(-1, *out_shape)))


class NoParameters(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :1]


class DetachesInput(Flat):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x.detach().flatten(1))  # G would get no gradient through D


NETS = {
    "g_shape": ({"generator": _g((1, 32, 32))}, "has shape (2, 1, 32, 32)", "(1, 28, 28)"),
    "g_layers": ({"generator": _g(z_dim=10)}, "the generator failed", "z (2, 100)"),
    "g_tuple": ({"generator": _g(twist=lambda y, x: (y.view(-1, 1, 28, 28),))}, "tuple", ""),
    "g_int": ({"generator": _g(twist=lambda y, x: y.view(-1, 1, 28, 28).long())}, "int64", ""),
    "g_nan": (
        {"generator": _g(twist=lambda y, x: y.view(-1, 1, 28, 28) * torch.nan)},
        "not finite",
        "",
    ),  # fmt: skip
    "g_detached": (
        {"generator": _g(twist=lambda y, x: y.view(-1, 1, 28, 28).detach())},
        "detached",
        "",
    ),  # fmt: skip
    "d_tuple": ({"discriminator": Flat(784, 1, lambda y, x: (y, y))}, "tuple", "(2, 1)"),
    "d_wide": ({"discriminator": Flat(784, 4)}, "has shape (2, 4)", "(2, 1)"),
    "d_no_parameters": ({"discriminator": NoParameters()}, "no trainable parameters", ""),
    "d_detached": ({"discriminator": Flat(784, 1, lambda y, x: y.detach())}, "detached", ""),
    "d_detaches_input": (
        {"discriminator": DetachesInput(784, 1)},
        "does not depend on its input",
        "",
    ),
}


@pytest.mark.parametrize("case", sorted(NETS))
def test_custom_nets_are_probed_before_the_first_step(tmp_path, case):
    nets, *words = NETS[case]
    with pytest.raises(ganforge.ConfigError) as e:
        ganforge.train("vanilla-fmnist", data=tiny_images(), out=tmp_path / "r", verbose=False,
                       **nets, **IMAGES)  # fmt: skip
    _one_line(e.value, *[w for w in words if w])
    assert not (tmp_path / "r").exists()


def test_the_probe_changes_no_random_stream_nor_batchnorm_statistics(monkeypatch):
    """Built-in nets trained as if the probe were not there: the same models, bit for bit."""
    from ganforge.config import load_config
    from ganforge.engine import probe

    over = ["train.device=cpu", "model.pack=2", "model.spectral_norm=true"]
    cfg = load_config("dcgan-mnist", [*over, "model.g_args.widths=[8,8,8]"])
    cpu = torch.device("cpu")
    with_probe = loop.build_models(cfg, (1, 28, 28), cpu)
    after = torch.rand(3)
    monkeypatch.setattr(loop, "probe", lambda *a: None)
    without = loop.build_models(cfg, (1, 28, 28), cpu)
    assert torch.equal(after, torch.rand(3))  # the global stream continues as without it
    for a, b in ((with_probe.g, without.g), (with_probe.d, without.d)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
        assert all(p.grad is None for p in a.parameters())
    assert probe.has_batchnorm(with_probe.g)  # running statistics were there to be kept


# ---------------------------------------------------------------- the command line


def _cli(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


CLI_CASES = {
    "sample_seed": (["sample", "{run}", "--seed", "-1", "-o", "{tmp}/s.png"], "--seed -1"),
    "sample_dir_seed": (
        ["sample", "{run}", "--seed", "-1", "--format", "dir", "-o", "{tmp}/d"],
        "--seed -1",
    ),  # fmt: skip
    "evaluate_seed": (["evaluate", "{run}", "--seed", "-3"], "--seed -3"),
    "train_generated_data": (
        ["train", "-r", "gaussian-2d", "--data", "/no/such/folder", "--out", "{tmp}/r", "-q"],
        "--data /no/such/folder",
    ),
    "train_out_holds_run": (
        ["train", "-r", "gaussian-2d", "--out", "{run}", "-q"],
        "--overwrite",
    ),  # fmt: skip
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_bad_cli_arguments_are_one_line(run_dir, tmp_path, capsys, case):
    argv, words = CLI_CASES[case]
    argv = [a.format(run=run_dir, tmp=tmp_path) for a in argv]
    before = sorted(p.name for p in tmp_path.iterdir())
    code, _, err = _cli(argv, capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert words in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_python_messages_name_python_keywords(run_dir):
    with pytest.raises(ganforge.GanforgeError) as e:
        ganforge.train("gaussian-2d", out=run_dir, **POINTS)
    _one_line(e.value, "out=", "overwrite=True", "ganforge.resume(")
    assert "--" not in str(e.value)


def test_batch_of_one_with_batchnorm_is_refused_and_the_retry_runs(tmp_path, capsys):
    from conftest import write_idx

    data = write_idx(tmp_path / "idx", n_train=32, n_test=16)
    out = tmp_path / "run"
    argv = ["train", "-r", "dcgan-mnist", "--data", str(data), "--out", str(out), "-q",
            "--set", "train.iterations=1", "--set", "train.device=cpu",
            "--set", "train.report=false", "--set", "model.g_args.widths=[8,8,8]",
            "--set", "model.d_args.widths=[8,8]", "--set", "train.grid=[1,2]"]  # fmt: skip
    code, _, err = _cli([*argv, "--set", "train.batch_size=1"], capsys)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "train.batch_size=1" in err and "BatchNorm" in err
    assert not out.exists()
    code, _, err = _cli([*argv, "--set", "train.batch_size=2"], capsys)
    assert code == 0, err
    assert (out / "checkpoints" / "last").is_dir()


class Breaks(ganforge.Callback):
    def on_train_start(self, state):
        raise ganforge.ConfigError("broken on purpose")


def test_a_run_failing_before_its_first_step_leaves_the_folder_as_it_was(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ganforge.ConfigError, match="broken on purpose"):
        ganforge.train("gaussian-2d", out=out, verbose=False, callbacks=[Breaks()], **POINTS)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    ganforge.train("gaussian-2d", out=out, verbose=False, **POINTS)  # the same, fixed
    assert (out / "checkpoints" / "last").is_dir()


def test_nproc_overwrite_moves_the_run_aside_before_the_processes_start(
    run_dir, tmp_path, monkeypatch, capsys
):
    import shutil

    from torch.distributed import run as torchrun

    out = tmp_path / "r"
    shutil.copytree(run_dir, out)
    launched = []
    monkeypatch.setattr(torchrun, "run", launched.append)  # the processes are not started
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    argv = ["train", "-r", "gaussian-2d", "--out", str(out), "--nproc", "2", "--overwrite"]
    code, stdout, _ = _cli([*argv, "-q"], capsys)
    assert code == 0 and not out.exists() and "moved the run" in stdout
    assert len(list(tmp_path.glob("r.replaced-*"))) == 1  # whole, beside it
    assert len(launched) == 1 and "--overwrite" not in str(vars(launched[0]))
