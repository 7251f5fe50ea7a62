"""A run directory is data: opening one imports no code that its files name.

Hostile run folders (a real tiny run whose config.yaml was edited) go through every command
and API call that opens a run; the payload would create a marker file. Trusting (--trust-code,
trust_code=True, GANFORGE_TRUST_CODE=1) opens a harmless run that names a builder of one's own.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

import ganforge
from ganforge import trust
from ganforge.cli import main
from ganforge.errors import ConfigError, UntrustedCode

from runhelpers import gaussian_run

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    """One finished 8-step gaussian-2d run, copied by each test."""
    return gaussian_run(
        tmp_path_factory.mktemp("base") / "run", "train.epochs=1", "train.report=false"
    )


@pytest.fixture(autouse=True)
def _no_trust(monkeypatch):
    """No trust from the environment, and no memory of configs this process wrote."""
    monkeypatch.delenv(trust.ENV, raising=False)
    monkeypatch.setattr(trust, "_written", {})


def _edit(run: Path, change: Callable[[dict], None]) -> None:
    raw = yaml.safe_load((run / "config.yaml").read_text())
    change(raw)
    (run / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def _hashes(root: Path) -> dict[str, str]:
    """Every file under ``root`` -> sha256 of its bytes."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}


def _module(folder: Path, marker: Path, body: str = "") -> str:
    """A module (a fresh name, never imported before) in ``folder`` that creates ``marker``
    as soon as it is imported."""
    name = f"payload_{uuid.uuid4().hex[:10]}"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.py").write_text(f"open({str(marker)!r}, 'w').close()\n{body}")
    return name


def _gadget(target: str, arg: str) -> Callable[[Path, Path, Path], str]:
    def make(run: Path, marker: Path, mods: Path) -> str:
        code = f"touch {marker}" if arg in ("cmd", "command") else f"open({str(marker)!r}, 'w')"

        def change(raw: dict) -> None:
            raw["model"].update(g=target, g_args={arg: code})

        _edit(run, change)
        return target

    return make


def _by_import_path(key: str) -> Callable[[Path, Path, Path], str]:
    """``key`` (section.field) naming a module on the path that runs on import."""

    def make(run: Path, marker: Path, mods: Path) -> str:
        path = f"{_module(mods, marker)}:thing"
        section, field = key.split(".")

        def change(raw: dict) -> None:
            plural = field in ("augment", "metrics")
            raw[section][field] = [path] if plural else path

        _edit(run, change)
        return path

    return make


def _run_local(run: Path, marker: Path, mods: Path) -> str:
    """A run that ships its own nets.py and names it (model.g: nets:g)."""
    (run / "nets.py").write_text(f"open({str(marker)!r}, 'w').close()\ng = None\n")
    _edit(run, lambda raw: raw["model"].update(g="nets:g"))
    return "nets:g"


def _yaml_tag(run: Path, marker: Path, mods: Path) -> str:
    text = (run / "config.yaml").read_text()
    tag = f"description: !!python/object/apply:os.system [touch {marker}]\n"
    (run / "config.yaml").write_text(text.replace("description: ", "old_description: ", 1) + tag)
    return ""  # refused by the YAML reader: no import path to name, nothing to allow


PAYLOADS = {
    "subprocess:getoutput": _gadget("subprocess:getoutput", "cmd"),
    "os:system": _gadget("os:system", "command"),
    "builtins:exec": _gadget("builtins:exec", "source"),
    "builtins:eval": _gadget("builtins:eval", "source"),
    "run-local nets.py": _run_local,
    "yaml python tag": _yaml_tag,
    "loss": _by_import_path("loss.name"),
    "metric": _by_import_path("eval.metrics"),
    "augment policy": _by_import_path("train.augment"),
    "data set": _by_import_path("data.name"),
}

CLI = {  # command line -> whether it opens the run's code (else it only reads the files)
    "sample": (["sample", "{run}", "-n", "4", "-o", "{out}/s.png"], True),
    "evaluate": (["evaluate", "{run}", "--n", "10"], True),
    "export": (["export", "{run}", "--format", "torchscript"], True),
    "report": (["report", "{run}"], True),
    "train --resume": (["train", "--resume", "{run}", "-q"], True),
    "compare": (["compare", "{run}", "{run}", "-o", "{out}/c.html"], False),
    "runs": (["runs", "{runs}"], False),
}


def _hostile(base_run: Path, tmp_path: Path, payload: str, monkeypatch) -> tuple[Path, Path, str]:
    """A copy of the base run made hostile, run from its own folder as the current folder,
    with the payload modules importable: (run, marker, import path)."""
    run = tmp_path / "runs" / "run"
    shutil.copytree(base_run, run)
    marker, mods = tmp_path / "PAYLOAD-RAN", tmp_path / "mods"
    path = PAYLOADS[payload](run, marker, mods)
    monkeypatch.chdir(run)  # where a run-local module is found ...
    monkeypatch.syspath_prepend(str(run))  # ... as an interactive Python session finds it
    monkeypatch.syspath_prepend(str(mods if mods.is_dir() else tmp_path))
    return run, marker, path


# compare and runs read the files as text only: two payloads are enough (pages are dear)
READ_ONLY = ("subprocess:getoutput", "yaml python tag")
CASES = [(p, c) for c in CLI for p in PAYLOADS if CLI[c][1] or p in READ_ONLY]


@pytest.mark.parametrize("payload, command", CASES)
def test_hostile_run_through_the_cli(base_run, tmp_path, payload, command, monkeypatch, capsys):
    run, marker, path = _hostile(base_run, tmp_path, payload, monkeypatch)
    before = _hashes(run)
    argv, opens = CLI[command]
    out = tmp_path / "out"
    out.mkdir()
    fill = {"run": str(run), "out": str(out), "runs": str(run.parent)}
    code = main([a.format(**fill) for a in argv])
    err = capsys.readouterr().err
    assert not marker.exists(), f"the payload ran ({command})"
    if command == "report" and not path:  # a config that is not YAML: reported as damaged
        assert code == 0 and "config.yaml" not in _changed(before, _hashes(run)), err
        return
    assert _hashes(run) == before
    if not opens:  # compare and runs read the files as text only
        assert code == 0, err
        return
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    if path:
        assert f"names code to import, '{path}'" in err and "--trust-code" in err, err
        assert "PYTHONPATH" not in err
    else:
        assert "not valid YAML (ConstructorError)" in err, err
    if command == "train --resume" and path:
        assert "give it again (--set " in err


API = {
    "load": lambda run: ganforge.load(run),
    "resume": lambda run: ganforge.resume(run, verbose=False),
}


@pytest.mark.parametrize("call", list(API))
@pytest.mark.parametrize("payload", list(PAYLOADS))
def test_hostile_run_through_the_api(base_run, tmp_path, payload, call, monkeypatch):
    run, marker, path = _hostile(base_run, tmp_path, payload, monkeypatch)
    before = _hashes(run)
    with pytest.raises(ConfigError) as e:
        API[call](run)
    assert not marker.exists()
    assert _hashes(run) == before
    text = str(e.value)
    assert "\n" not in text
    if path:
        assert isinstance(e.value, UntrustedCode)
        assert f"'{path}'" in text and "trust_code=True" in text and "GANFORGE_TRUST_CODE=1" in text
    else:
        assert "not valid YAML" in text


def test_python_m_ganforge_never_imports_from_the_current_folder(base_run, tmp_path):
    """Even trusted, a run's own nets.py is not importable: ``-m`` puts the current folder on
    sys.path and ganforge takes it off before importing anything."""
    run = tmp_path / "run"
    shutil.copytree(base_run, run)
    marker = tmp_path / "PAYLOAD-RAN"
    _run_local(run, marker, tmp_path)
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    env.pop(trust.ENV, None)
    cmd = [sys.executable, "-m", "ganforge", "sample", ".", "-o", str(tmp_path / "s.png")]
    out = subprocess.run(
        [*cmd, "--trust-code"], cwd=run, env=env, capture_output=True, text=True, timeout=120
    )
    assert not marker.exists()
    assert out.returncode == 2 and len(out.stderr.splitlines()) == 1, out.stderr
    assert "cannot import module 'nets'" in out.stderr and "PYTHONPATH" not in out.stderr


BUILDER = """
from torch import nn


def build_g(z_dim, shape, hidden: int = 8):
    return nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, shape[0]))


def greedy(z_dim, shape, **kwargs):
    assert not kwargs, kwargs  # never reached with keys from a run file
    return nn.Linear(z_dim, shape[0])
"""


def _own_builder(tmp_path: Path, mp: pytest.MonkeyPatch) -> str:
    """A harmless builder of the user's, importable (its folder on the path): its module."""
    mods = tmp_path / "mods"
    name = _module(mods, tmp_path / "IMPORTED", BUILDER)
    mp.syspath_prepend(str(mods))
    return name


@pytest.fixture(scope="module")
def own_run(tmp_path_factory):
    """A finished run trained with a builder of one's own, named by import path."""
    with pytest.MonkeyPatch.context() as mp:
        tmp = tmp_path_factory.mktemp("own")
        mod = _own_builder(tmp, mp)
        run = gaussian_run(
            tmp / "run", "train.epochs=1", "train.report=false", f"model.g={mod}:build_g"
        )
        yield run, mod


TRUST_WAYS = {
    "--trust-code": lambda run, png, mp: main(["sample", str(run), "-o", str(png), "--trust-code"]),
    "GANFORGE_TRUST_CODE=1": lambda run, png, mp: (
        mp.setenv(trust.ENV, "1"),
        main(["sample", str(run), "-o", str(png)]),
    )[1],
    "trust_code=True": lambda run, png, mp: (
        ganforge.load(run, trust_code=True).grid(4).save(png) or 0
    ),
}


@pytest.mark.parametrize("way", list(TRUST_WAYS))
def test_trusting_opens_a_run_that_names_ones_own_builder(own_run, tmp_path, way, monkeypatch):
    run, mod = own_run
    with pytest.raises(UntrustedCode, match=f"model.g names code to import, '{mod}:build_g'"):
        ganforge.load(run)  # another process than the one that trained it
    png = tmp_path / "s.png"
    assert TRUST_WAYS[way](run, png, monkeypatch) == 0
    assert png.is_file()


def test_what_the_user_types_is_trusted(tmp_path, monkeypatch, capsys):
    """--set model.g=... trains (and writes its report) without --trust-code; a resume of
    that run needs --trust-code, or the same --set again."""
    mod = _own_builder(tmp_path, monkeypatch)
    run = tmp_path / "run"
    base = ["--set", "data.points=64", "--set", "train.epochs=1", "--set", "train.device=cpu"]
    g = ["--set", f"model.g={mod}:build_g", "--set", "model.g_args={hidden: 4}"]
    assert main(["train", "-r", "gaussian-2d", "--out", str(run), "-q", *base, *g]) == 0
    assert (run / "report.html").is_file()
    assert "no interpolation" not in (run / "report.html").read_text()  # G was built for it
    monkeypatch.setattr(trust, "_written", {})  # a later process
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "-q"]) == 2
    err = capsys.readouterr().err
    assert "--trust-code" in err and "give it again (--set model.g=...)" in err
    assert main(["train", "--resume", str(run), "-q", g[0], g[1]]) == 0
    assert main(["train", "--resume", str(run), "-q", "--trust-code"]) == 0
    # the run's name replaced by one's own: nothing of the run's is imported
    monkeypatch.setattr(trust, "_written", {})
    _edit(run, lambda raw: raw["model"].update(g="os:system"))
    resumed = ganforge.resume(run, overrides=[f"model.g={mod}:build_g"], verbose=False)
    assert resumed.config.model.g == f"{mod}:build_g"  # the run's os:system never looked up


def test_registered_objects_by_import_path_need_no_trust(base_run, tmp_path):
    """An import path into ganforge that leads to a registered object is the registered name
    in other words; one that leads elsewhere in ganforge (a gadget) is refused."""
    run = tmp_path / "run"
    shutil.copytree(base_run, run)
    _edit(run, lambda raw: raw["loss"].update(name="ganforge.losses:HINGE"))
    assert ganforge.load(run).config.loss.name == "ganforge.losses:HINGE"
    _edit(run, lambda raw: raw["model"].update(g="ganforge.runfiles:atomic_write_text"))
    with pytest.raises(UntrustedCode, match="ganforge.runfiles:atomic_write_text"):
        ganforge.load(run)


def test_builders_get_only_named_plain_arguments():
    from ganforge import nets
    from ganforge.config import ModelConfig

    ns: dict = {}
    exec(BUILDER, ns)
    cfg = ModelConfig(g="x", g_args={"hidden": 4}, z_dim=2)
    assert nets.build_generator(cfg, (2,), ns["build_g"])[0].out_features == 4
    with pytest.raises(
        ConfigError, match=re.escape("unknown key model.g_args.cmd; valid keys here: (none)")
    ):
        nets.build_generator(ModelConfig(g="x", g_args={"cmd": "id"}), (2,), ns["greedy"])
    assert isinstance(nets.build_generator(ModelConfig(g="x"), (2,), ns["greedy"]), nets.nn.Linear)
    import datetime

    odd = ModelConfig(g="x", g_args={"hidden": datetime.date(2020, 1, 1)})
    with pytest.raises(ConfigError, match="model.g_args.hidden: a date is not a plain value"):
        nets.build_generator(odd, (2,), ns["build_g"])
    with pytest.raises(ConfigError, match="cannot read the parameters of"):
        nets.build_generator(ModelConfig(g="x"), (2,), dict)
