"""Hypothesis fuzzing of config overrides and the command line: zero tracebacks."""

from __future__ import annotations

import dataclasses

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ganforge.cli import main
from ganforge.config import Config, load_config
from ganforge.errors import ConfigError


def _keys(cls: type, prefix: str = "") -> list[str]:
    out = []
    for f in dataclasses.fields(cls):
        tp = f.type if isinstance(f.type, type) else None
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(default):
            out += _keys(type(default), f"{prefix}{f.name}.")
        elif tp is None or not dataclasses.is_dataclass(tp):
            out.append(prefix + f.name)
    return out


KEYS = _keys(Config)
VALUES = st.one_of(
    st.text(max_size=12),
    st.integers(-(10**6), 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(["true", "null", "[1,2]", "[]", "{a: 1}", "-0", "1e-3", "[0.5, 0.9]", "8"]),
)
OVERRIDES = st.one_of(
    st.tuples(st.sampled_from(KEYS), VALUES).map(lambda kv: f"{kv[0]}={kv[1]}"),
    st.text(max_size=30),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(OVERRIDES, max_size=3))
def test_overrides_give_a_config_or_one_clear_error(overrides):
    try:
        cfg = load_config("vanilla-fmnist", overrides)
    except ConfigError as e:
        assert str(e) and "\n" not in str(e)
    else:
        assert isinstance(cfg, Config)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(OVERRIDES, min_size=1, max_size=2))
def test_train_command_never_prints_a_traceback(tmp_path, capsys, overrides):
    capsys.readouterr()  # hypothesis reuses the fixture: start each example clean
    argv = ["train", "-q", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r")]
    argv += [f"--set={o}" for o in overrides]  # "=" form: values may start with "-"
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ganforge: error: ") and "\n" not in err and "Traceback" not in err


WORDS = st.one_of(
    st.text(max_size=10),
    st.sampled_from(
        [
            "-n",
            "0",
            "-5",
            "abc",
            "--seed",
            "--checkpoint",
            "best",
            "--device",
            "cuda",
            "-o",
            "/nonexistent/x.png",
            "--n",
            "--metrics",
            "fd,xx",
            "--reference",
            "train",
            ".",
        ]
    ),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.sampled_from(["sample", "evaluate", "report"]), st.lists(WORDS, max_size=4))
def test_run_commands_on_bad_input_fail_cleanly(tmp_path, capsys, command, words):
    capsys.readouterr()  # hypothesis reuses the fixture: start each example clean
    try:
        code = main([command, str(tmp_path / "no-run"), *words])
    except SystemExit as e:  # argparse's usage error: its own two-line message, exit 2
        assert e.code == 2
        return
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ganforge: error: ") and "\n" not in err
