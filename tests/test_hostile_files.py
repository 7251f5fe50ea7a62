"""Hostile and damaged files handed to every ganforge entry point that reads a file.

Each class is a set of parametrised cases with the same assertions for every case, through
``ganforge.cli.main`` in-process: the exit code, no traceback anywhere in the output, a refusal
is one ``ganforge: error:`` line, a code-running payload never ran (it would create a marker
file), and files are byte-identical where a refusal must change nothing. The cases are built
to find problems beyond the named ones: every field of a checkpoint's state.json is given
values of every wrong type, every reader of a run directory gets every damaged log line.
"""

from __future__ import annotations

import contextlib
import copy
import gzip
import hashlib
import json
import os
import pickle
import shutil
import signal
import socket
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from safetensors.torch import load_file, save_file
from test_data_sets import write_cifar, write_svhn

from ganforge import checkpoint as ckpt
from ganforge.cli import main

from conftest import write_idx
from runhelpers import gaussian_run, image_run

SRC = Path(__file__).resolve().parents[1] / "src" / "ganforge"


# ---------------------------------------------------------------- shared assertions


class Payload:
    """A pickle that, when unpickled by a plain ``pickle.load``, creates ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def evil(marker: Path) -> bytes:
    return pickle.dumps(Payload(marker), protocol=2)


@contextlib.contextmanager
def deadline(seconds: int, what: str):
    """Fail (TimeoutError) instead of hanging the suite."""

    def hung(*_):
        raise TimeoutError(f"{what} hung for {seconds} s")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def cli(argv: list[str], capsys, timeout: int = 60) -> tuple[int, str]:
    """Run ``ganforge ARGV`` in-process; any escaping exception (a traceback) fails the test."""
    capsys.readouterr()
    try:
        with deadline(timeout, f"ganforge {' '.join(map(str, argv))}"):
            code = main([str(a) for a in argv])
    except BaseException as e:  # noqa: BLE001 - a traceback is what this suite looks for
        pytest.fail(f"ganforge {' '.join(map(str, argv))} raised {type(e).__name__}: {e}")
    out = capsys.readouterr()
    text = out.out + out.err
    assert "Traceback" not in text
    OUTPUT["last"] = text
    return code, out.err


OUTPUT = {"last": ""}  # stdout and stderr of the last ``cli`` call (progress, warnings)


def refused(code: int, err: str, *names: str) -> str:
    """Exit 2 and exactly one error line on stderr, naming each of ``names``."""
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("ganforge: error: "), err
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


def digest(root: Path) -> dict[str, str]:
    """Every file under ``root`` by relative path, with its SHA-256 (for byte-identity)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def reseal(folder: Path) -> None:
    """Rewrite a checkpoint's manifest so it vouches for the (damaged) files: only the
    readers' own checks stand between the damage and the program."""
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"] = {n: ckpt.sha256_file(folder / n) for n in manifest["files"]}
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def points_run(tmp_path_factory) -> Path:
    """A finished gaussian-2d run: 24 steps, checkpoints last (24) and previous (16)."""
    return gaussian_run(tmp_path_factory.mktemp("pts") / "run", "train.report=false")


@pytest.fixture
def run(points_run, tmp_path) -> Path:
    """A fresh copy of the gaussian-2d run for one case to damage."""
    return Path(shutil.copytree(points_run, tmp_path / "run"))


@pytest.fixture(scope="module")
def images_run(tmp_path_factory) -> Path:
    return image_run(tmp_path_factory.mktemp("img") / "run", "train.report=false")


@pytest.fixture
def marker(tmp_path) -> Path:
    m = tmp_path / "payload-ran"
    yield m
    assert not m.exists(), "a pickle's code ran"


RESUME = ["train", "--resume", "{run}", "--set", "train.iterations=25"]  # not -q: warnings


def argv_for(template: list[str], run: Path, tmp: Path) -> list[str]:
    return [a.format(run=run, tmp=tmp) for a in template]


# ---------------------------------------------------------------- 1. pickles, everywhere

READERS = {  # every command that reads a run directory
    "sample": ["sample", "{run}", "-o", "{tmp}/s.png", "--checkpoint", "last"],
    "evaluate": ["evaluate", "{run}", "--checkpoint", "last"],
    "resume": RESUME,
    "report": ["report", "{run}"],
}
PICKLED_RUN_FILES = [  # (file of the run, replaced by a pickle) - each read by every reader
    "checkpoints/last/g.safetensors",
    "checkpoints/last/d.safetensors",
    "checkpoints/last/state.safetensors",
    "checkpoints/last/state.json",
    "checkpoints/last/manifest.json",
    "config.yaml",
    "log.jsonl",
    "status.json",
    "env.json",
    "metrics.json",
    "samples/epoch_0003.png",
]


@pytest.mark.parametrize("target", PICKLED_RUN_FILES)
@pytest.mark.parametrize("reader", sorted(READERS))
def test_pickle_in_a_run_directory_never_runs(run, tmp_path, capsys, marker, target, reader):
    path = run / target
    path.write_bytes(evil(marker))
    if target.startswith("checkpoints/last/") and target != "checkpoints/last/manifest.json":
        reseal(run / "checkpoints" / "last")
    code, err = cli(argv_for(READERS[reader], run, tmp_path), capsys)
    if code != 0:
        refused(code, err)


@pytest.mark.parametrize(
    "how",
    ["raw pickle", "torch.save of code", "torch.save of non-tensors", "text", "empty"],
)
def test_inception_weights_are_never_unpickled(images_run, tmp_path, capsys, marker, how):
    weights = tmp_path / "weights.pth"
    if how == "raw pickle":
        weights.write_bytes(evil(marker))
    elif how == "torch.save of code":
        torch.save({"fc.weight": Payload(marker)}, weights)
    elif how == "torch.save of non-tensors":
        torch.save({"fc.weight": [1, 2, 3]}, weights)
    elif how == "text":
        weights.write_text("not weights\n")
    else:
        weights.write_bytes(b"")
    before = digest(images_run)
    argv = ["evaluate", images_run, "--metrics", "fid", "--inception-weights", weights]
    line = refused(*cli(argv, capsys), str(weights))
    assert "--inception-weights" in line
    assert digest(images_run) == before


def test_torch_load_anywhere_in_the_process_is_weights_only(tmp_path, marker):
    """torch-fidelity and torch's hub call torch.load(weights_only=False); importing
    ganforge makes every such call weights-only."""
    import ganforge  # noqa: F401

    path = tmp_path / "x.pth"
    torch.save({"x": Payload(marker)}, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=False)


def test_inception_weights_of_plain_tensors_pass_the_check(tmp_path):
    from ganforge.metrics.inception import check_weights

    path, legacy = tmp_path / "w.pth", tmp_path / "legacy.pth"
    state = {"fc.weight": torch.zeros(2, 2)}
    torch.save(state, path)
    torch.save(state, legacy, _use_new_zipfile_serialization=False)  # torch < 1.6 files
    for p in (path, legacy):
        assert check_weights(p) == p
        loaded = torch.load(p, weights_only=False)  # as torch-fidelity loads it, forced safe
        assert torch.equal(loaded["fc.weight"], state["fc.weight"])


def test_folder_inputs_never_reach_torch_fidelity_registered_names(tmp_path, monkeypatch):
    """A folder named like a torch-fidelity data set ("cifar10-train", which it would fetch
    and unpickle) is handed over by absolute path."""
    import torch_fidelity

    from ganforge.metrics import inception

    seen = {}

    def fake(**kwargs):
        seen.update(kwargs)
        return {}

    monkeypatch.setattr(torch_fidelity, "calculate_metrics", fake)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cifar10-train").mkdir()
    inception.inception_metrics("cifar10-train", "cifar10-train", ("fid",), None)
    assert seen["input1"] == str(tmp_path / "cifar10-train")


DATA_PICKLES = {  # recipe, how to build a data folder whose file is a pickle
    "cifar10 batch": ("cifar-ships", lambda d, m: _replace(write_cifar(d), "data_batch_2", m)),
    "cifar10 test batch": ("cifar-ships", lambda d, m: _replace(write_cifar(d), "test_batch", m)),
    "idx images": (
        "vanilla-fmnist",
        lambda d, m: _replace(write_idx(d), "train-images-idx3-ubyte", m),
    ),
    "idx labels .gz": (
        "vanilla-fmnist",
        lambda d, m: _replace(write_idx(d, gz=True), "train-labels-idx1-ubyte.gz", m),
    ),
    "svhn .mat": ("dcgan-svhn", lambda d, m: _replace(write_svhn(d), "train_32x32.mat", m)),
    "image named x.png": ("dcgan-64", lambda d, m: _images(d, {"x.png": evil(m)})),
}


def _replace(folder: Path, name: str, marker: Path) -> Path:
    (folder / name).write_bytes(evil(marker))
    return folder


def _images(folder: Path, extra: dict[str, bytes], n: int = 3) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(folder / f"ok{i}.png")
    for name, data in extra.items():
        (folder / name).write_bytes(data)
    return folder


@pytest.mark.parametrize("case", sorted(DATA_PICKLES))
def test_pickle_in_a_data_set_never_runs(tmp_path, capsys, marker, case):
    recipe, build = DATA_PICKLES[case]
    data = build(tmp_path / "data", marker)
    argv = ["train", "-r", recipe, "--data", data, "--out", tmp_path / "out", "-q"]
    refused(*cli(argv, capsys))


def test_restricted_unpickler_reads_the_real_format_and_refuses_code(tmp_path, marker):
    from ganforge.files import restricted_loads

    folder = write_cifar(tmp_path / "c", per_batch=4)
    raw = (folder / "data_batch_1").read_bytes()
    batch = restricted_loads(raw, encoding="latin1")
    assert batch["data"].shape == (4, 3072) and batch["data"].dtype == np.uint8
    assert (batch["data"] == pickle.loads(raw, encoding="latin1")["data"]).all()
    for payload in (evil(marker), pickle.dumps(copy.copy), pickle.dumps(eval)):
        with pytest.raises(pickle.UnpicklingError, match="refused global"):
            restricted_loads(payload)


def test_evaluator_files_are_never_unpickled(tmp_path, monkeypatch, marker):
    from ganforge.errors import GanforgeError
    from ganforge.metrics import features

    folder = tmp_path / "evaluators"
    folder.mkdir()
    monkeypatch.setattr(features, "evaluator_dirs", lambda: [folder])
    weights = folder / "mnist.safetensors"
    weights.write_bytes(evil(marker))
    meta = {"input_shape": [1, 28, 28], "classes": 10, "feature_dim": 128}
    (folder / "mnist.json").write_text(json.dumps({**meta, "sha256": ckpt.sha256_file(weights)}))
    with pytest.raises(GanforgeError, match="mnist.safetensors: cannot read the evaluator") as e:
        features.load_evaluator("mnist")
    assert "\n" not in str(e.value)
    (folder / "mnist.json").write_bytes(evil(marker))
    with pytest.raises(GanforgeError, match=r"mnist.json is damaged") as e:
        features.load_evaluator("mnist")


def test_no_unrestricted_loader_in_the_source():
    """Outside ganforge.files, nothing calls a pickle or YAML loader directly, and np.load
    (were it used) refuses pickles."""
    offenders = []
    for path in SRC.rglob("*.py"):
        if path.name == "files.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            bad = ("pickle.load", "Unpickler(", "yaml.load(", "yaml.safe_load(", "yaml.unsafe")
            if any(b in code for b in bad):
                offenders.append(f"{path.name}:{n}: {line.strip()}")
            if "np.load(" in code and "allow_pickle=False" not in code:
                offenders.append(f"{path.name}:{n}: {line.strip()}")
            if "torch.load(" in code and "weights_only=True" not in code:
                offenders.append(f"{path.name}:{n}: {line.strip()}")
    assert offenders == []


# ---------------------------------------------------------------- 2. damaged checkpoints


def _tensor_edit(name: str, edit):
    def apply(folder: Path) -> None:
        path = folder / name
        tensors = load_file(path)
        edit(tensors)
        save_file(tensors, path)

    return apply


def _json_edit(name: str, edit):
    def apply(folder: Path) -> None:
        path = folder / name
        data = json.loads(path.read_text())
        data = edit(data)
        path.write_text(json.dumps(data))

    return apply


def _first(tensors: dict) -> str:
    return sorted(tensors)[0]


def _setpath(data, path, value):
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return data


CHECKPOINT_DAMAGE = {
    "g: tensor missing": _tensor_edit("g.safetensors", lambda t: t.pop(_first(t))),
    "g: extra tensor": _tensor_edit("g.safetensors", lambda t: t.update(x=torch.zeros(1))),
    "g: wrong shape": _tensor_edit(
        "g.safetensors", lambda t: t.update({_first(t): torch.zeros(3, 3, 3)})
    ),
    "g: wrong dtype": _tensor_edit(
        "g.safetensors", lambda t: t.update({k: v.double() for k, v in t.items()})
    ),
    "d: int tensors": _tensor_edit(
        "d.safetensors", lambda t: t.update({k: v.long() for k, v in t.items()})
    ),
    "state: rng missing": _tensor_edit("state.safetensors", lambda t: t.pop("rng.torch")),
    "state: rng wrong dtype": _tensor_edit(
        "state.safetensors", lambda t: t.update({"rng.torch": t["rng.torch"].float()})
    ),
    "state: moment missing": _tensor_edit(
        "state.safetensors",
        lambda t: [t.pop(k) for k in list(t) if k.endswith("exp_avg_sq")],
    ),
    "state: moment wrong shape": _tensor_edit(
        "state.safetensors",
        lambda t: t.update({k: torch.zeros(7) for k in list(t) if k.endswith(".exp_avg")}),
    ),
    "state: odd key": _tensor_edit(
        "state.safetensors", lambda t: t.update({"opt_g.x": t["rng.torch"].clone()})
    ),
    "state.json: a list": _json_edit("state.json", lambda d: [d]),
    "state.json: a string": _json_edit("state.json", lambda d: "state"),
    "state.json: null": _json_edit("state.json", lambda d: None),
    "manifest: files a list": _json_edit("manifest.json", lambda d: {**d, "files": list(d)}),
    "manifest: hash a number": _json_edit(
        "manifest.json", lambda d: {**d, "files": {k: 5 for k in d["files"]}}
    ),
    "manifest: a list": _json_edit("manifest.json", lambda d: [d]),
    "manifest: deep nesting": lambda f: (f / "manifest.json").write_text("[" * 100_000),
    "manifest: binary": lambda f: (f / "manifest.json").write_bytes(bytes(range(256))),
    "state.json: binary": lambda f: (f / "state.json").write_bytes(b"\xff\xfe\x00{"),
    "safetensors header huge": lambda f: (f / "g.safetensors").write_bytes(
        struct.pack("<Q", 2**40) + b"{}"
    ),
    "safetensors truncated": lambda f: (f / "d.safetensors").write_bytes(
        (f / "d.safetensors").read_bytes()[:40]
    ),
}

# state.json: every field, every wrong kind of value (built to find, not from a list of bugs)
STATE_FIELDS = [
    ("format",),
    ("step",),
    ("images",),
    ("epoch",),
    ("rollbacks",),
    ("optim",),
    ("optim", "g"),
    ("optim", "g", "param_groups"),
    ("optim", "g", "scalars"),
    ("optim", "d", "param_groups", 0),
    ("optim", "d", "param_groups", 0, "lr"),
    ("optim", "d", "param_groups", 0, "betas"),
    ("optim", "d", "param_groups", 0, "eps"),
    ("optim", "d", "param_groups", 0, "weight_decay"),
    ("optim", "d", "param_groups", 0, "amsgrad"),
    ("optim", "d", "param_groups", 0, "params"),
    ("rng",),
    ("rng", "python"),
    ("rng", "numpy"),
]
WRONG_VALUES = {"null": None, "text": "abc", "list": [1], "negative": -1, "huge": 10**30}


def _state_case(path: tuple, value):
    return _json_edit("state.json", lambda d: _setpath(d, path, copy.deepcopy(value)))


STATE_FUZZ = {
    f"{'.'.join(map(str, path))}={name}": _state_case(path, value)
    for path in STATE_FIELDS
    for name, value in WRONG_VALUES.items()
}


@pytest.mark.parametrize("case", sorted(CHECKPOINT_DAMAGE))
def test_damaged_last_checkpoint(run, tmp_path, capsys, case):
    """Resume falls back to ``previous`` (or, where the damage is harmless, uses ``last``);
    sample and evaluate of ``last`` either work or refuse in one line naming the checkpoint."""
    last = run / "checkpoints" / "last"
    CHECKPOINT_DAMAGE[case](last)
    reseal(last) if "manifest" not in case else None
    for reader in ("sample",):  # evaluate loads the same way (tested with pickles above)
        before = digest(run)
        code, err = cli(argv_for(READERS[reader], run, tmp_path), capsys)
        if code != 0:
            refused(code, err, str(last))
            assert digest(run) == before  # a refusal changes nothing
    code, err = cli(argv_for(RESUME, run, tmp_path), capsys)
    assert code == 0, err
    if "skipping checkpoint" in OUTPUT["last"]:  # fell back: the warning names the checkpoint
        assert f"warning: skipping checkpoint {last}" in OUTPUT["last"]
    assert json.loads((last / "state.json").read_text())["step"] == 25


@pytest.fixture(scope="module")
def fresh_models(points_run):
    from ganforge.config import read_config
    from ganforge.engine.loop import build_models

    cfg = read_config(points_run / "config.yaml")
    return lambda: build_models(cfg, (2,), torch.device("cpu"))


@pytest.mark.parametrize("case", sorted(STATE_FUZZ))
def test_state_json_fields_of_every_wrong_type(points_run, tmp_path, fresh_models, case):
    """Each field of state.json given each wrong kind of value: the checkpoint is refused
    with a CheckpointError naming it, or it loads and the optimizers can step."""
    from ganforge.errors import CheckpointError

    last = Path(shutil.copytree(points_run / "checkpoints" / "last", tmp_path / "last"))
    STATE_FUZZ[case](last)
    reseal(last)
    models = fresh_models()
    try:
        meta = ckpt.load_checkpoint(last, models, torch.device("cpu"))
    except CheckpointError as e:
        assert str(last) in str(e) and "\n" not in str(e)
        return
    assert not case.endswith(("=negative", "=null", "=text", "=list")), "accepted as usable"
    assert ckpt._is_count(meta["step"])
    for opt in (models.opt_g, models.opt_d):
        for group in opt.param_groups:
            for p in group["params"]:
                p.grad = torch.zeros_like(p)
        opt.step()


@pytest.mark.parametrize("case", ["g: wrong shape", "state.json: a list", "manifest: a list"])
def test_damaged_last_is_skipped_with_a_warning_and_previous_used(run, tmp_path, capsys, case):
    last = run / "checkpoints" / "last"
    CHECKPOINT_DAMAGE[case](last)
    reseal(last) if "manifest" not in case else None
    code, err = cli(argv_for(RESUME, run, tmp_path), capsys)
    assert code == 0
    warning = OUTPUT["last"].split("warning: skipping checkpoint ")[1].splitlines()[0]
    assert warning.startswith(str(last))
    state = json.loads((run / "checkpoints" / "last" / "state.json").read_text())
    assert state["step"] == 25  # went on from previous (16) to the end


# ---------------------------------------------------------------- 3. damaged logs and run files

LOG_DAMAGE = {
    "binary line": b"\x00\xff\xfe\x80 garbage\n",
    "time text": b'{"step": 10, "time": "abc", "img_s": "x", "loss_d": null}\n',
    "step text": b'{"step": "abc"}\n',
    "step negative": b'{"step": -5, "time": 1}\n',
    "step huge": b'{"step": ' + b"9" * 5000 + b"}\n",
    "step fraction": b'{"step": 2.5}\n',
    "null": b"null\n",
    "list": b"[1, 2, 3]\n",
    "string": b'"step"\n',
    "eval not object": b'{"step": 8, "eval": [1, 2], "best": "yes"}\n',
    "eval wrong values": b'{"step": 8, "eval": {"fd": "x", "precision": null}, "best": true}\n',
    "d_real without d_fake": b'{"step": 30, "d_real": 0.5, "loss_d": 1e999}\n',
    "nan and inf": b'{"step": 12, "loss_g": NaN, "time": Infinity, "images": -Infinity}\n',
    "deep nesting": b"[" * 100_000 + b"\n",
    "deep eval": b'{"step": 3, "eval": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5001 + b"\n",
    "half line": b'{"step": 9, "loss',
}
STATUS_DAMAGE = {
    "status total text": b'{"status": "finished", "total_steps": "abc"}',
    "status pid text": b'{"status": "running", "pid": "x", "host": 5}',
    "status a list": b"[1, 2]",
    "status binary": b"\xff\xfe\x00",
    "status error object": b'{"status": "failed", "error": {"a": [1]}}',
    "env a list": b"[]",
    "env wrong types": b'{"gpu": [1], "device": {"a": 1}}',
    "metrics a list": b"[1, 2]",
    "metrics deep": b"[" * 100_000,
    "config non-mapping": b"- 1\n- 2\n",
    "config binary": b"\xff\xfe\x00\x01",
    "config train a list": b"recipe: [1]\ntrain: [1, 2]\n",
}
RUN_FILE = {"status": "status.json", "env": "env.json", "metrics": "metrics.json"}


@pytest.mark.parametrize("case", sorted(LOG_DAMAGE))
@pytest.mark.parametrize("reader", ["report", "resume", "runs"])
def test_damaged_log_lines_stop_no_reader(run, tmp_path, capsys, case, reader):
    lines = (run / "log.jsonl").read_bytes().splitlines(keepends=True)
    lines.insert(2, LOG_DAMAGE[case])
    (run / "log.jsonl").write_bytes(b"".join(lines))
    argv = ["runs", run.parent] if reader == "runs" else argv_for(READERS[reader], run, tmp_path)
    code, err = cli(argv, capsys)
    assert code == 0, err
    if reader == "report":
        assert (run / "report.html").stat().st_size > 10_000
    if reader == "resume":  # the good records stay, the damaged line holds no record
        from ganforge.report.runlog import read_log

        steps = [r["step"] for r in read_log(run).train]
        assert steps == sorted(steps) and steps[-1] == 25


@pytest.mark.parametrize("case", sorted(STATUS_DAMAGE))
@pytest.mark.parametrize("reader", ["report", "sample", "resume"])
def test_damaged_run_files_stop_no_reader(run, tmp_path, capsys, case, reader):
    name = RUN_FILE.get(case.split()[0], "config.yaml")
    (run / name).write_bytes(STATUS_DAMAGE[case])
    before = digest(run)
    code, err = cli(argv_for(READERS[reader], run, tmp_path), capsys)
    if name == "config.yaml" and reader != "report":
        refused(code, err, "config.yaml")
        assert digest(run) == before
    else:
        assert code == 0, err


def test_report_of_a_foreign_sample_png(run, tmp_path, capsys):
    """A truncated PNG, a FIFO and a PNG declaring 40,000 x 40,000 pixels in samples/."""
    samples = run / "samples"
    png = (samples / "epoch_0001.png").read_bytes()
    (samples / "epoch_0001.png").write_bytes(png[: len(png) // 2])
    (samples / "epoch_0002.png").unlink()
    os.mkfifo(samples / "epoch_0002.png")
    (samples / "step_000099.png").write_bytes(png_claiming(40_000, 40_000))
    code, _ = cli(["report", run], capsys)
    assert code == 0


# ---------------------------------------------------------------- 4. damaged data sets


def _idx_bytes(magic: int, dims: tuple[int, ...], body: bytes) -> bytes:
    return struct.pack(f">I{len(dims)}I", magic, *dims) + body


def _write(folder: Path, name: str, data: bytes) -> Path:
    (folder / name).write_bytes(data)
    return folder


def _gz(folder: Path, name: str, data: bytes) -> Path:
    with gzip.open(folder / f"{name}.gz", "wb") as f:
        f.write(data)
    return folder


def _gz_bomb(folder: Path) -> Path:
    """A .gz of 64 KB whose header declares 64 images (50 KB) and inflates to 64 MB."""
    header = struct.pack(">IIII", 0x803, 64, 28, 28)
    with gzip.open(folder / "train-images-idx3-ubyte.gz", "wb", compresslevel=9) as f:
        f.write(header)
        block = bytes(1 << 20)
        for _ in range(64):
            f.write(block)
    return folder


def _fresh_idx(d: Path, gz: bool = False) -> Path:
    return write_idx(d, n_train=64, n_test=16, gz=gz)


def _cifar_batch(d: Path, batch) -> Path:
    folder = write_cifar(d)
    with open(folder / "data_batch_1", "wb") as f:
        pickle.dump(batch, f, protocol=2)
    return folder


def _mat(d: Path, variables: dict) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(d / "train_32x32.mat", variables)
    return d


U8 = np.uint8
DATA_DAMAGE = {  # name: (recipe, build(folder) -> data path, words the message must hold)
    "idx images magic": (
        "vanilla-fmnist",
        lambda d: _write(
            _fresh_idx(d), "train-images-idx3-ubyte", _idx_bytes(0x801, (64,), bytes(64))
        ),
        ["train-images-idx3-ubyte", "0x00000803"],
    ),
    "idx labels magic": (
        "vanilla-fmnist",
        lambda d: _write(
            _fresh_idx(d),
            "train-labels-idx1-ubyte",
            _idx_bytes(0x803, (64, 28, 28), bytes(64 * 784)),
        ),
        ["train-labels-idx1-ubyte", "0x00000801"],
    ),
    "idx empty file": (
        "vanilla-fmnist",
        lambda d: _write(_fresh_idx(d), "train-images-idx3-ubyte", b""),
        ["train-images-idx3-ubyte", "magic"],
    ),
    "idx truncated": (
        "vanilla-fmnist",
        lambda d: _write(
            _fresh_idx(d), "train-images-idx3-ubyte", _idx_bytes(0x803, (64, 28, 28), bytes(100))
        ),
        ["truncated"],
    ),
    "idx wrong dims": (
        "vanilla-fmnist",
        lambda d: _write(
            _fresh_idx(d),
            "train-images-idx3-ubyte",
            _idx_bytes(0x803, (64, 32, 32), bytes(64 * 1024)),
        ),
        ["64x32x32"],
    ),
    "idx huge count": (
        "vanilla-fmnist",
        lambda d: _write(
            _fresh_idx(d), "train-images-idx3-ubyte", _idx_bytes(0x803, (2**31, 28, 28), bytes(10))
        ),
        ["N <="],
    ),
    "idx extra bytes": (
        "vanilla-fmnist",
        lambda d: _write(
            _fresh_idx(d), "train-labels-idx1-ubyte", _idx_bytes(0x801, (64,), bytes(65))
        ),
        ["holds more"],
    ),
    "idx label count": (
        "vanilla-fmnist",
        lambda d: _write(
            _fresh_idx(d), "train-labels-idx1-ubyte", _idx_bytes(0x801, (60,), bytes(60))
        ),
        ["labels"],
    ),
    "gz bomb": ("vanilla-fmnist", lambda d: _gz_bomb(_fresh_idx(d, gz=True)), ["holds more"]),
    "gz not gzip": (
        "vanilla-fmnist",
        lambda d: _write(_fresh_idx(d, gz=True), "train-images-idx3-ubyte.gz", b"plain bytes"),
        ["train-images-idx3-ubyte.gz"],
    ),
    "gz wrong magic": (
        "vanilla-fmnist",
        lambda d: _gz(_fresh_idx(d, gz=True), "train-images-idx3-ubyte", b"\x00" * 64),
        ["0x00000803"],
    ),
    "mnist idx magic": (
        "dcgan-mnist",
        lambda d: _write(_fresh_idx(d), "train-images-idx3-ubyte", b"GIF89a" + bytes(100)),
        ["magic"],
    ),
    "svhn wrong keys": (
        "dcgan-svhn",
        lambda d: _mat(d, {"images": np.zeros((32, 32, 3, 4), U8)}),
        ["no variables X and y"],
    ),
    "svhn wrong shape": (
        "dcgan-svhn",
        lambda d: _mat(d, {"X": np.zeros((3, 32, 32, 4), U8), "y": np.ones((4, 1), U8)}),
        ["X is (3, 32, 32, 4)"],
    ),
    "svhn y shape": (
        "dcgan-svhn",
        lambda d: _mat(d, {"X": np.zeros((32, 32, 3, 4), U8), "y": np.ones((5, 2), U8)}),
        ["y is"],
    ),
    "svhn float images": (
        "dcgan-svhn",
        lambda d: _mat(d, {"X": np.zeros((32, 32, 3, 4)), "y": np.ones((4, 1), U8)}),
        ["uint8"],
    ),
    "svhn labels text": (
        "dcgan-svhn",
        lambda d: _mat(d, {"X": np.zeros((32, 32, 3, 4), U8), "y": np.array(["abcd"])}),
        ["y is"],
    ),
    "svhn not a mat": (
        "dcgan-svhn",
        lambda d: _write(write_svhn(d), "train_32x32.mat", b"MATLAB 7.3 MAT-file" + bytes(200)),
        ["train_32x32.mat"],
    ),
    "svhn empty": (
        "dcgan-svhn",
        lambda d: _write(write_svhn(d), "train_32x32.mat", b""),
        ["train_32x32.mat"],
    ),
    "cifar not a dict": ("cifar-ships", lambda d: _cifar_batch(d, [1, 2, 3]), ["data_batch_1"]),
    "cifar data shape": (
        "cifar-ships",
        lambda d: _cifar_batch(d, {"data": np.zeros((4, 100), U8), "labels": [0] * 4}),
        ["(N, 3072)"],
    ),
    "cifar data dtype": (
        "cifar-ships",
        lambda d: _cifar_batch(d, {"data": np.zeros((4, 3072)), "labels": [0] * 4}),
        ["float64"],
    ),
    "cifar object array": (
        "cifar-ships",
        lambda d: _cifar_batch(d, {"data": np.array([[1]], dtype=object), "labels": [0]}),
        ["data_batch_1"],
    ),
    "cifar labels count": (
        "cifar-ships",
        lambda d: _cifar_batch(d, {"data": np.zeros((4, 3072), U8), "labels": [0] * 3}),
        ["4 integers 0-9"],
    ),
    "cifar labels range": (
        "cifar-ships",
        lambda d: _cifar_batch(d, {"data": np.zeros((4, 3072), U8), "labels": [0, 1, 2, 99]}),
        ["0-9"],
    ),
    "cifar labels text": (
        "cifar-ships",
        lambda d: _cifar_batch(d, {"data": np.zeros((4, 3072), U8), "labels": "abcd"}),
        ["labels"],
    ),
    "cifar truncated": (
        "cifar-ships",
        lambda d: _write(
            write_cifar(d), "data_batch_1", (write_cifar(d) / "data_batch_2").read_bytes()[:500]
        ),
        ["data_batch_1"],
    ),
    "cifar too large": (
        "cifar-ships",
        lambda d: _sparse(write_cifar(d), "data_batch_4", 65 << 20),
        ["larger than any"],
    ),
}


def _sparse(folder: Path, name: str, size: int) -> Path:
    with open(folder / name, "r+b") as f:
        f.truncate(size)
    return folder


@pytest.mark.parametrize("case", sorted(DATA_DAMAGE))
def test_damaged_data_files(tmp_path, capsys, case):
    from ganforge.data import cache_dir

    recipe, build, words = DATA_DAMAGE[case]
    data = build(tmp_path / "data")
    before = digest(data)
    argv = ["train", "-r", recipe, "--data", data, "--out", tmp_path / "out", "-q"]
    refused(*cli(argv, capsys), *words)
    assert digest(data) == before
    left = [p for p in cache_dir().rglob("*") if p.is_file()] if cache_dir().exists() else []
    assert left == []  # nothing in the cache after a failure


# ---------------------------------------------------------------- 5. bad values and YAML

ALIAS_BOMB = (
    "{a: &a [x,x,x,x,x,x,x,x,x], b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a], "
    "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b], d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c], "
    "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d], f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e], "
    "g: [*f,*f,*f,*f,*f,*f,*f,*f,*f]}"
)
BAD_VALUES = {  # --set item: words of the message
    "optim.d.betas=[1.0, 0.999]": ["optim.d.betas", "[0, 1)"],
    "optim.g.betas=[0.5, -0.1]": ["optim.g.betas", "[0, 1)"],
    "optim.g.betas=[.nan, 0.9]": ["optim.g.betas", "finite"],
    "train.grid=[0, 4]": ["train.grid", "(0, 100]"],
    "train.grid=[-2, 4]": ["train.grid"],
    "train.grid=[1000, 1000]": ["train.grid", "100"],
    "optim.d.lr=.inf": ["optim.d.lr", "finite"],
    "optim.d.lr=.nan": ["optim.d.lr", "finite"],
    "optim.g.eps=-.inf": ["optim.g.eps", "finite"],
    "loss.gp_weight=.inf": ["loss.gp_weight", "finite"],
    "loss.r1=.nan": ["loss.r1"],
    "model.init_std=.inf": ["model.init_std"],
    "train.max_seconds=.nan": ["train.max_seconds"],
    "train.dist_timeout=1.0e30": ["train.dist_timeout", "604800"],
    "model.ema=.nan": ["model.ema"],
    "data.points=99999999999": ["data.points", "10000000"],
    "model.z_dim=99999999999": ["model.z_dim"],
    "train.threads=99999999999": ["train.threads"],
    "train.batch_size=10000000000": ["train.batch_size"],
    "train.seed=" + "9" * 30: ["train.seed", "too large"],
    "train.seed=" + "9" * 5000: ["train.seed"],
    "eval.n=99999999999": ["eval.n"],
    "data.size=100000": ["data.size"],
    "data.pad=100000": ["data.pad"],
    "model.d_args={widths: [-1]}": ["model.d_args.widths", "[1, 4096]"],
    "model.d_args={widths: [0, 3]}": ["model.d_args.widths"],
    "model.d_args={widths: 1.0e9}": ["model.d_args.widths"],
    "model.d_args={widths: abc}": ["model.d_args.widths"],
    "model.d_args={slope: .nan}": ["model.d_args.slope"],
    "model.d_args={activation: [1]}": ["model.d_args.activation"],
    "model.d_args={1: 2}": ["model.d_args"],
    "model.d_args=[1, 2]": ["model.d_args"],
    "model.g_args={zz: 1}": ["model.g_args.zz"],
    "train.epochs=" + "[" * 3000: ["train.epochs", "nested deeper"],
    "model.g_args=" + ALIAS_BOMB: ["model.g_args", "aliases"],
    "model.g_args=&a [*a]": ["model.g_args"],
    "train.seed=!!python/object/apply:os.system [touch /nonexistent/x]": ["train.seed"],
}


@pytest.mark.parametrize("item", sorted(BAD_VALUES), ids=lambda s: s[:60])
def test_bad_values_are_one_line_before_any_work(tmp_path, capsys, item):
    out = tmp_path / "out"
    argv = ["train", "-r", "gaussian-2d", "--out", out, "-q", f"--set={item}"]
    line = refused(*cli(argv, capsys), *BAD_VALUES[item])
    assert len(line) < 400
    assert not out.exists()  # refused before anything was written


RUN_CONFIGS = {  # a run's config.yaml replaced by: (text, words)
    "deep nesting": ("train: " + "[" * 3000, ["nested deeper"]),
    "alias bomb": ("model:\n  g_args: " + ALIAS_BOMB + "\n", ["aliases"]),
    "recursive alias": ("model: &m {g_args: *m}\n", ["config.yaml"]),
    "python tag": ("train: !!python/object/apply:os.system [touch /nonexistent/x]\n", ["YAML"]),
    "int keys": ("1: 2\nzzz: 3\n", ["unknown key"]),
    "betas out of range": (None, ["optim.d.betas"]),
    "grid zero": (None, ["train.grid"]),
}


@pytest.mark.parametrize("case", sorted(RUN_CONFIGS))
@pytest.mark.parametrize("reader", ["sample", "evaluate", "resume", "report"])
def test_hostile_config_yaml(run, tmp_path, capsys, case, reader):
    text, words = RUN_CONFIGS[case]
    path = run / "config.yaml"
    if text is None:
        cfg = path.read_text()
        edit = {
            "betas out of range": ("betas:\n    - 0.9", "betas:\n    - 1.5"),
            "grid zero": ("grid:\n  - 10", "grid:\n  - 0"),
        }[case]
        assert edit[0] in cfg
        text = cfg.replace(*edit, 1)
    path.write_text(text)
    before = digest(run)
    code, err = cli(argv_for(READERS[reader], run, tmp_path), capsys)
    if reader == "report":
        assert code == 0, err
    else:
        refused(code, err, "config.yaml", *words)
        assert digest(run) == before


# ---------------------------------------------------------------- 6. special files in image folders


def png_claiming(width: int, height: int) -> bytes:
    """A PNG header declaring ``width`` x ``height`` pixels, with no pixel data: a
    decompression bomb as far as any reader of headers can tell (a few bytes on disk)."""
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _special(kind: str, folder: Path, tmp: Path) -> None:
    target = folder / "x.png"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "socket":
        cwd = os.getcwd()
        os.chdir(folder)  # a short relative name: socket paths are limited to 108 bytes
        try:
            sock = socket.socket(socket.AF_UNIX)
            sock.bind("x.png")
            sock.close()
        finally:
            os.chdir(cwd)
    elif kind == "device":
        target.symlink_to("/dev/zero")
    elif kind == "symlink loop":
        target.symlink_to(folder / "y.link")
        (folder / "y.link").symlink_to(target)
    elif kind == "dangling link":
        target.symlink_to(tmp / "nowhere.png")
    elif kind == "folder named x.png":
        target.mkdir()
        (target / "inner.txt").write_text("x")
    elif kind == "unreadable":
        target.write_bytes((folder / "ok0.png").read_bytes())
        target.chmod(0)
    elif kind == "bomb":
        target.write_bytes(png_claiming(20_000, 20_000))  # 400 Mpx
    elif kind == "eps content":
        target.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n")
    elif kind == "truncated":
        target.write_bytes((folder / "ok0.png").read_bytes()[:30])


SPECIAL = [
    "fifo",
    "socket",
    "device",
    "symlink loop",
    "dangling link",
    "folder named x.png",
    "unreadable",
    "bomb",
    "eps content",
    "truncated",
]


@pytest.mark.parametrize("kind", SPECIAL)
def test_special_files_in_an_image_folder_are_skipped(tmp_path, capsys, kind):
    from ganforge.config import DataConfig
    from ganforge.data import load_data

    if kind == "unreadable" and os.geteuid() == 0:
        pytest.skip("root reads any file")
    folder = _images(tmp_path / "imgs", {})
    _special(kind, folder, tmp_path)
    cfg = DataConfig(name="image-folder", path=str(folder), size=8, skip_bad=True)
    with deadline(20, f"loading a folder with a {kind}"):
        data = load_data(cfg)
    assert len(data) == 3
    if kind == "folder named x.png":  # a folder is walked into, not read as a file
        assert "skipped" not in data.source
        return
    assert "skipped 1 unreadable: x.png" in data.source
    # without skip_bad: one line naming the file, not a hang
    argv = ["train", "-r", "dcgan-64", "--data", folder, "--out", tmp_path / "o", "-q"]
    refused(*cli(argv, capsys, timeout=30), "x.png")


def test_fifo_folder_does_not_hang_a_real_process(tmp_path):
    """The same FIFO case in a subprocess, where a hang would be a hang."""
    folder = _images(tmp_path / "imgs", {})
    os.mkfifo(folder / "x.png")
    env = {**os.environ, "PYTHONPATH": str(SRC.parent)}
    argv = [sys.executable, "-m", "ganforge", "train", "-r", "dcgan-64", "--data", str(folder)]
    argv += ["--out", str(tmp_path / "o"), "-q"]
    with contextlib.suppress(subprocess.TimeoutExpired):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
        assert done.returncode == 2
        assert "Traceback" not in done.stderr and "x.png" in done.stderr
        return
    pytest.fail("ganforge hung on a FIFO named x.png")
