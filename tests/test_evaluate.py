"""Evaluation end to end: the evaluate CLI, metrics.json, evaluation during training, best."""

from __future__ import annotations

import json
import time

import pytest

from ganforge.checkpoint import verify
from ganforge.cli import main
from ganforge.config import load_config
from ganforge.engine import evaluation
from ganforge.engine.loop import train
from ganforge.errors import GanforgeError
from ganforge.metrics import evaluate, features, inception

from conftest import write_idx
from runhelpers import cli_idx_run

RING = [
    "data.points=2000",
    "train.batch_size=100",
    "train.iterations=40",
    "train.log_every=10",
    "train.sample_every=20",
    "train.grid=[5,5]",
    "train.device=cpu",
    "eval.every=10",
    "eval.n=500",
    "model.g_args={width: 32}",  # small nets: the test is about the bookkeeping
    "model.d_args={units: 16}",
]


def _records(run_dir):
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def ring_run(tmp_path_factory):
    """A 40-step ring-8 run evaluated every 10 steps (small nets, 500 points)."""
    run = tmp_path_factory.mktemp("ring") / "run"
    train(load_config("ring-8", RING), run, verbose=False)
    return run


def test_training_with_eval_every_writes_eval_records_and_best(ring_run):
    evals = [r for r in _records(ring_run) if "eval" in r]
    assert [r["step"] for r in evals] == [10, 20, 30, 40]
    for r in evals:
        assert set(r) == {"step", "epoch", "images", "eval", "best"}
        assert r["images"] == r["step"] * 100
        assert {"modes", "hq", "reverse_kl", "score", "eval_s"} <= set(r["eval"])
    assert evals[0]["best"]  # the first evaluation is the best so far
    scores = [r["eval"]["score"] for r in evals]
    best = [r for r in evals if r["best"]][-1]
    assert best["eval"]["score"] == max(scores)
    assert [r["best"] for r in evals] == [s > max(scores[:i], default=-1) for i, s in
                                          enumerate(scores)]  # fmt: skip
    assert verify(ring_run / "checkpoints" / "best")["step"] == best["step"]
    assert verify(ring_run / "checkpoints" / "last")["step"] == 40
    # the training records are all there besides the eval ones
    assert sum("loss_d" in r for r in _records(ring_run)) == 4


def test_eval_is_off_unless_eval_every_is_set(tmp_path):
    assert load_config("vanilla-fmnist").eval.every is None
    assert evaluation.TrainingEval.of(load_config("vanilla-fmnist"), tmp_path, "cpu") is None
    hook = evaluation.TrainingEval.of(load_config("ring-8", RING), tmp_path, "cpu")
    assert hook is not None and hook.due(20, 40) and hook.due(40, 40) and not hook.due(25, 40)


def test_a_resumed_run_remembers_its_best(ring_run):
    hook = evaluation.TrainingEval(load_config("ring-8", RING), ring_run, "cpu")
    evals = [r for r in _records(ring_run) if "eval" in r]
    assert hook.best == max(r["eval"]["score"] for r in evals)


def test_evaluate_cli_on_a_2d_run_writes_metrics_json(ring_run, capsys):
    assert main(["evaluate", str(ring_run), "--n", "300", "--seed", "3"]) == 0
    out = json.loads((ring_run / "metrics.json").read_text())
    assert out["metrics"]["modes_of"] == 8 and sum(out["metrics"]["mode_hist"]) == 300
    p = out["protocol"]
    assert (p["n"], p["seed"], p["metrics"]) == (300, 3, ["points"])
    best = verify(ring_run / "checkpoints" / "best")
    assert p["checkpoint"]["tag"] == "best" and p["checkpoint"]["step"] == best["step"]
    assert p["reference"] == {"target": "ring-8"}
    assert "modes" in capsys.readouterr().out
    # the same seed gives the same numbers
    assert main(["evaluate", str(ring_run), "--n", "300", "--seed", "3"]) == 0
    again = json.loads((ring_run / "metrics.json").read_text())["metrics"]
    assert {**again, "eval_s": 0} == {**out["metrics"], "eval_s": 0}
    assert main(["evaluate", str(ring_run), "--checkpoint", "last"]) == 0
    out = json.loads((ring_run / "metrics.json").read_text())
    assert out["protocol"]["checkpoint"] == {"tag": "last", "step": 40, "epoch": 2, "images": 4000}
    assert out["protocol"]["n"] == 2500  # the PacGAN protocol's default


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    """A vanilla run of 4 steps on tiny Fashion-MNIST-format files (64 train, 64 test)."""
    return cli_idx_run(tmp_path_factory.mktemp("fm"))


def test_evaluate_cli_writes_the_protocol_of_every_number(image_run):
    assert main(["evaluate", str(image_run), "--n", "40", "--seed", "1"]) == 0
    out = json.loads((image_run / "metrics.json").read_text())
    m = out["metrics"]
    assert {"fd", "precision", "recall", "is", "is_real", "coverage", "class_kl"} <= set(m)
    assert m["fd"] > 0 and 0 <= m["precision"] <= 1 and 1 <= m["is"] <= 10
    assert len(m["class_hist"]) == 10 and abs(sum(m["class_hist"]) - 1) < 1e-3
    p = out["protocol"]
    assert p["n"] == 40 and p["seed"] == 1 and p["k"] == 3
    assert p["reference"] == {"split": "test", "n": 40}  # a seeded subset of the 64
    shipped = json.loads((features.shipped_dir() / "fashion-mnist.json").read_text())
    clf = p["feature_extractors"]["classifier"]
    assert clf["sha256"] == shipped["sha256"] and clf["name"].endswith("/fashion-mnist")
    assert p["checkpoint"]["tag"] == "last" and p["checkpoint"]["step"] == 4
    assert p["primary"] == {"name": "fd", "lower_is_better": True}


def test_evaluate_cli_options_change_the_protocol(image_run):
    args = ["evaluate", str(image_run), "--n", "30", "--reference", "train"]
    assert main([*args, "--metrics", "fd,coverage", "--checkpoint", "last"]) == 0
    out = json.loads((image_run / "metrics.json").read_text())
    assert set(out["metrics"]) == {
        "fd", "coverage", "classes_expected", "class_kl", "class_hist", "class_hist_real",
        "eval_s",
    }  # fmt: skip
    assert out["protocol"]["reference"] == {"split": "train", "n": 30}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--metrics", "fd,bogus"], "unknown metric 'bogus'"),
        (["--metrics", "points"], "not for image data"),
        (["--checkpoint", "best"], "no checkpoint found"),
        (["--n", "3"], "at least 10"),
    ],
)
def test_evaluate_cli_mistakes_are_one_line_errors(image_run, capsys, args, message):
    assert main(["evaluate", str(image_run), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_inception_metrics_offline_without_weights_fail_at_once(
    image_run, capsys, monkeypatch, tmp_path
):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no cached weights
    monkeypatch.setattr(inception, "online", lambda *a, **k: False)
    t0 = time.perf_counter()
    assert main(["evaluate", str(image_run), "--metrics", "fid,kid"]) == 2
    assert time.perf_counter() - t0 < 5
    err = capsys.readouterr().err
    assert err.startswith("ganforge: error: ") and err.count("\n") == 1
    assert "--inception-weights PATH" in err and "offline" in err
    assert main(["evaluate", str(image_run), "--metrics", "fid", "--inception-weights",
                 str(tmp_path / "none.pth")]) == 2  # fmt: skip
    assert "no such file" in capsys.readouterr().err


def test_the_offline_probe_answers_quickly():
    t0 = time.perf_counter()
    answer = inception.online("https://nonexistent.invalid/x", timeout=1.0)
    assert answer is False and time.perf_counter() - t0 < 3


def test_default_metrics_follow_the_data():
    assert evaluate.default_metrics(load_config("ring-8")) == ("points",)
    assert evaluate.default_metrics(load_config("vanilla-fmnist")) == evaluate.CLASSIFIER_METRICS
    cfg = load_config("vanilla-fmnist", ["data.name=cifar10", "data.channels=3"])
    assert evaluate.default_metrics(cfg) == inception.INCEPTION_METRICS  # no evaluator
    with pytest.raises(GanforgeError, match="not for 2-D data"):
        evaluate.parse_metrics("fd", load_config("ring-8"))


def test_evaluator_train_cli_writes_weights_and_protocol(tmp_path, capsys):
    data = write_idx(tmp_path / "idx", n_train=160, n_test=32)
    out = tmp_path / "ev"
    assert main(["evaluator", "train", "--dataset", "fashion-mnist", "--data", str(data),
                 "--out", str(out)]) == 0  # fmt: skip
    meta = json.loads((out / "fashion-mnist.json").read_text())
    assert meta["protocol"] == features.PROTOCOL and meta["input_shape"] == [1, 28, 28]
    assert meta["train_examples"] == 160 and 0 <= meta["test_accuracy"] <= 1
    assert "test accuracy" in capsys.readouterr().out
