"""After the run: runs/latest, `ganforge runs` at 80 columns and with damaged runs, and the
history of `ganforge evaluate`."""

from __future__ import annotations

import json
import os

import pytest

from ganforge.cli import main
from ganforge.metrics import history
from ganforge.report.runs import list_runs

from runhelpers import gaussian_run

TRAIN = ["train", "-r", "gaussian-2d", "-q", "--set", "train.iterations=8"]
TRAIN += ["--set", "train.report=false", "--set", "train.threads=1"]
LONG = "a-long-sweep-name-lr-0.0002-beta1-0.5-beta2-0.999-batch-64-seed-3"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A runs folder: two runs by `ganforge train` (the default folder), one long-named,
    three damaged ones."""
    root = tmp_path_factory.mktemp("cwd")
    old = os.getcwd()
    os.chdir(root)
    try:
        assert main(TRAIN) == 0
        first = os.readlink("runs/latest")
        assert main([*TRAIN, "--out", f"runs/{LONG}"]) == 0
    finally:
        os.chdir(old)
    runs = root / "runs"
    cfg = (runs / LONG / "config.yaml").read_text()
    for name in ("binary-config", "bad-status", "binary-log"):
        (runs / name).mkdir()
        (runs / name / "config.yaml").write_text(cfg)
    (runs / "binary-config" / "config.yaml").write_bytes(bytes(range(256)) * 4)
    (runs / "bad-status" / "status.json").write_text('{"status": "runn')
    (runs / "binary-log" / "log.jsonl").write_bytes(b"\x00\xff\xfe" * 200 + b"\n{}\n")
    return runs, first


def test_latest_points_at_the_newest_run(folder, capsys):
    runs, first = folder
    link = runs / "latest"
    assert link.is_symlink() and first.startswith("gaussian-2d-")
    assert os.readlink(link) == LONG  # relative: the folder can move
    assert main(["sample", str(link), "-o", str(runs.parent / "s.png")]) == 0
    assert "latest" not in [r.name for r in list_runs(runs)]  # listed once, by its name
    [r] = list_runs(link)
    assert r.name == LONG


def test_latest_is_given_back_when_a_run_fails_before_writing(folder, tmp_path, capsys):
    runs, _ = folder
    old = os.getcwd()
    os.chdir(runs.parent)
    try:
        assert main([*TRAIN, "--set", "train.batch_size=100000"]) == 2  # larger than the data
    finally:
        os.chdir(old)
    assert os.readlink(runs / "latest") == LONG
    assert "larger than the data set" in capsys.readouterr().err


def test_runs_at_80_columns_keeps_names_whole_and_lists_damaged(folder, capsys, monkeypatch):
    runs, _ = folder
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["runs", str(runs)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert LONG in lines  # the whole name, alone on its line
    assert all(len(ln) <= 80 for ln in lines)
    for name, why in [
        ("binary-config", "config.yaml is not readable YAML"),
        ("bad-status", "status.json is not a JSON object"),
        ("binary-log", "log.jsonl is not text"),
    ]:
        i = lines.index(name)
        assert lines[i + 1].strip() == f"damaged: {why}"
    i = lines.index(LONG)
    assert "8 / 8" in lines[i + 1] and "finished" in lines[i + 1]


def test_runs_wide_table_shows_eval_fd(tmp_path, capsys, monkeypatch):
    run = gaussian_run(tmp_path / "r", "train.report=false")
    assert main(["evaluate", str(run), "--n", "100"]) == 0
    fd = json.loads((run / "metrics.json").read_text())["metrics"]["fd"]
    monkeypatch.setenv("COLUMNS", "200")
    capsys.readouterr()
    assert main(["runs", str(tmp_path)]) == 0
    row = next(ln for ln in capsys.readouterr().out.splitlines() if " r " in ln)
    assert f"{fd:.3f}" in row


def test_evaluate_keeps_history_with_directions(tmp_path, capsys):
    run = gaussian_run(tmp_path / "r", "train.report=false")
    assert main(["evaluate", str(run), "--n", "100"]) == 0
    out = capsys.readouterr().out
    assert "(lower is better)" in out and "appended to metrics.jsonl" in out
    assert main(["evaluate", str(run), "--n", "200", "--checkpoint", "last"]) == 0
    recs = history.read(run)
    assert [r["n"] for r in recs] == [100, 200]  # the first is kept, not overwritten
    assert recs[1]["checkpoint"]["tag"] == "last" and recs[0]["metrics"]["fd"] > 0
    assert json.loads((run / "metrics.json").read_text())["protocol"]["n"] == 200  # latest
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"cut by a cra')  # a crash mid-write: skipped by readers
    assert len(history.read(run)) == 2
    from ganforge.report.html import write_report

    page = write_report(run).read_text()
    assert "ganforge evaluate history" in page and "fd (lower is better)" in page


def test_floor_and_directions():
    assert history.direction("fd") == "lower" and history.direction("recall") == "higher"
    assert history.direction("class_hist") is None
    res = {
        "data": "fashion-mnist",
        "metrics": {"fd": 31.0, "precision": 0.6, "coverage": 10},
        "protocol": {"n": 10000, "reference": {"split": "test"}, "feature_extractors": {"c": 1}},
    }
    text = "\n".join(history.lines(res))
    assert "real-vs-real 0.555 at n=10,000" in text and "(higher is better)" in text
    res["protocol"]["n"] = 500  # not measured at this n: pointed to the docs
    assert "see docs/metrics.md" in "\n".join(history.lines(res))
