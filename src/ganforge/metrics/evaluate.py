"""Evaluate a generator: one entry point for ``ganforge evaluate`` and for training.

``Evaluation`` is prepared once per run (reference data and its features, the evaluator, the
Inception weights check) and then called with a generator as often as needed; every call
draws the same ``n`` latent vectors (seeded), so numbers of successive checkpoints compare.
``evaluate_generator`` is the one-shot form, ``evaluate_run`` writes ``RUN_DIR/metrics.json``
and ``TrainingEval`` is the training loop's hook (eval records, the ``best`` checkpoint).

Metric names (``--metrics`` / ``eval.metrics``):
  fd, pr, is, coverage   domain classifier (labelled image data sets with an evaluator)
  fid, kid, inception-is Inception-v3 through torch-fidelity (any image data)
  points                 2-D data: modes of ring-8 / grid-25, moments of gaussian-2d

A class-conditional G (``model.num_classes``) is sampled with balanced labels, i % num_classes,
so the class histogram compares with the real one; ``coverage`` then adds ``class_acc``, the
share of samples the evaluator assigns to the class G was asked for.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from .. import nets
from ..config import Config
from ..data import TensorData, data_shape, load_data, to_uint8
from ..errors import GanforgeError
from ..runfiles import atomic_write_text, check_output_file
from . import classify, features, frechet, inception, points, precision_recall

CLASSIFIER_METRICS = ("fd", "pr", "is", "coverage")
METRICS = (*CLASSIFIER_METRICS, *inception.INCEPTION_METRICS, "points")
N_IMAGES = 10_000  # default samples per evaluation of image data
# The metric that picks the best checkpoint: the first of these asked for (value, lower better).
PRIMARY = {
    "fd": ("fd", True),
    "fid": ("fid", True),
    "kid": ("kid", True),
    "is": ("is", False),
    "inception-is": ("inception_is", False),
    "coverage": ("class_kl", True),
    "pr": ("recall", False),
}
STREAM_EVAL = 4  # random stream of the evaluation noise (train/loop.py uses 0-3)


def default_metrics(cfg: Config) -> tuple[str, ...]:
    """2-D data: points; a data set with an evaluator: the classifier metrics; else Inception."""
    if len(data_shape(cfg.data)) == 1:
        return ("points",)
    if features.has_evaluator(cfg.data.name):
        return CLASSIFIER_METRICS
    return inception.INCEPTION_METRICS


def parse_metrics(names: str | tuple[str, ...] | None, cfg: Config) -> tuple[str, ...]:
    """Check metric names against the data (2-D or images); None means the default set."""
    if names is None:
        return default_metrics(cfg)
    if isinstance(names, str):
        names = tuple(n.strip() for n in names.split(",") if n.strip())
    unknown = [n for n in names if n not in METRICS]
    if unknown or not names:
        raise GanforgeError(
            f"metrics: unknown metric {unknown[0] if unknown else '(none)'!r}; "
            f"choose from: {', '.join(METRICS)}"
        )
    is_points = len(data_shape(cfg.data)) == 1
    if is_points != (names == ("points",)):
        kind = "2-D data" if is_points else "image data"
        raise GanforgeError(
            f"metrics {','.join(names)}: not for {kind} ({cfg.data.name}); use "
            + ("points" if is_points else "fd,pr,is,coverage or fid,kid,inception-is")
        )
    return names


class Evaluation:
    """Reference data and feature extractors of one run, ready to score generators."""

    def __init__(
        self,
        cfg: Config,
        metrics: str | tuple[str, ...] | None = None,
        n: int | None = None,
        reference: str = "test",
        seed: int = 0,
        device: torch.device | str = "cpu",
        inception_weights: str | Path | None = None,
        real: TensorData | None = None,
    ) -> None:
        """``real``: the reference data (default: ``reference`` split of the run's data)."""
        self.cfg, self.seed, self.device = cfg, seed, torch.device(device)
        self.metrics = parse_metrics(metrics, cfg)
        self.shape = data_shape(cfg.data)
        self.is_points = self.metrics == ("points",)
        self.n = n or (points.N_POINTS if self.is_points else N_IMAGES)
        self.extractors: dict[str, Any] = {}
        if self.is_points:
            self.primary, self.lower_is_better = points.primary(cfg.data.name)
            self.reference = {"target": cfg.data.name}
            self.pool = real.x if real is not None else load_data(cfg.data).x
            return
        use_inception = any(m in inception.INCEPTION_METRICS for m in self.metrics)
        # Fail at once (before loading data or sampling) when Inception weights cannot be had.
        self.weights = inception.resolve_weights(inception_weights) if use_inception else None
        if real is None:
            real = load_data(replace(cfg.data, split=reference, limit=None))
        if len(real) > self.n:  # a seeded subset of n reference images
            gen = torch.Generator().manual_seed(seed)
            real = TensorData(real.x[torch.randperm(len(real), generator=gen)[: self.n]], None, "")
        self.real = real.x
        self.reference = {"split": reference, "n": len(real)}
        if any(m in CLASSIFIER_METRICS for m in self.metrics):
            self.evaluator = features.load_evaluator(cfg.data.name, self.device)
            self.real_feats, self.real_probs = self.evaluator.features(self.real)
            if "pr" in self.metrics:  # the reference's k-NN radii, once per run
                self.real_radii = precision_recall.knn_radii(self.real_feats.float())
            self.extractors["classifier"] = self.evaluator.describe()
        if use_inception:
            self.extractors["inception"] = inception.describe(self.weights)
        first = next(m for m in PRIMARY if m in self.metrics)
        self.primary, self.lower_is_better = PRIMARY[first]

    def labels(self) -> torch.Tensor | None:
        """A class-conditional G's labels: i % num_classes, every class equally often (up to
        one), as the real data sets are about balanced; None for an unconditional G."""
        k = self.cfg.model.num_classes
        return None if k is None else torch.arange(self.n) % k

    @torch.no_grad()
    def sample(self, g: torch.nn.Module, batch: int = 500) -> torch.Tensor:
        """``n`` samples of G in eval mode from the seeded evaluation noise (and balanced
        labels for a conditional G), on the CPU: uint8 images (n, C, H, W) or points (n, D)."""
        from ..train.loop import mix_seed

        gen = torch.Generator().manual_seed(mix_seed(self.seed, STREAM_EVAL))
        mc = self.cfg.model
        z = nets.sample_noise(self.n, mc.z_dim, mc.z_dist, gen, "cpu")
        device = next(g.parameters()).device
        y = self.labels()
        ys = [None] * len(z.split(batch)) if y is None else [c.to(device) for c in y.split(batch)]
        was_training = g.training
        g.eval()  # BatchNorm on running statistics, as for the sample grids
        try:
            out = [
                nets.generate(g, zc.to(device), yc).float().cpu()
                for zc, yc in zip(z.split(batch), ys, strict=True)
            ]
        finally:
            g.train(was_training)
        x = torch.cat(out)
        return x if self.is_points else to_uint8(x, self.cfg.data.range)

    def __call__(self, g: torch.nn.Module) -> dict[str, Any]:
        """The metrics of generator ``g`` (a flat mapping name -> value), with ``eval_s``."""
        t0 = time.perf_counter()
        x = self.sample(g)
        if self.is_points:
            values = points.point_metrics(self.cfg.data.name, x, self.pool)
        else:
            values = self.score_images(x)
        values["eval_s"] = round(time.perf_counter() - t0, 3)
        return values

    def score_images(self, x: torch.Tensor) -> dict[str, Any]:
        """Metrics of uint8 images ``x`` against the reference images."""
        values: dict[str, Any] = {}
        if any(m in CLASSIFIER_METRICS for m in self.metrics):
            feats, probs = self.evaluator.features(x)
            if "fd" in self.metrics:
                values["fd"] = frechet.fd(self.real_feats, feats)
            if "pr" in self.metrics:
                pr = precision_recall.precision_recall(
                    self.real_feats, feats, real_radii=self.real_radii
                )
                values.update(pr)
            if "is" in self.metrics:
                values["is"] = classify.inception_score(probs)
                values["is_real"] = classify.inception_score(self.real_probs)
            if "coverage" in self.metrics:
                values.update(classify.class_coverage(probs, self.real_probs))
                y = self.labels()
                if y is not None and len(y) == len(x) and probs.shape[1] >= int(y.max()) + 1:
                    # conditional G: how often the evaluator sees the class that was asked for
                    values["class_acc"] = float((probs.argmax(1) == y).double().mean())
        wanted = tuple(m for m in self.metrics if m in inception.INCEPTION_METRICS)
        if wanted:
            values.update(
                inception.inception_metrics(x, self.real, wanted, self.weights, self.device)
            )
        return values

    def protocol(self) -> dict[str, Any]:
        """How the numbers were made: samples, reference, extractors, seed, primary metric."""
        return {
            "n": self.n,
            "seed": self.seed,
            "metrics": list(self.metrics),
            "reference": self.reference,
            "feature_extractors": self.extractors,
            "k": precision_recall.K if "pr" in self.metrics else None,
            "primary": {"name": self.primary, "lower_is_better": self.lower_is_better},
        }

    def better(self, value: float, best: float | None) -> bool:
        """Whether ``value`` of the primary metric improves on ``best``."""
        if best is None:
            return True
        return value < best if self.lower_is_better else value > best


def evaluate_generator(
    g: torch.nn.Module, cfg: Config, evaluation: Evaluation | None = None, **kwargs: Any
) -> dict[str, Any]:
    """{"metrics": ..., "protocol": ...} of ``g``; ``kwargs`` build an Evaluation if none."""
    evaluation = evaluation or Evaluation(cfg, **kwargs)
    return {"metrics": evaluation(g), "protocol": evaluation.protocol()}


def evaluate_run(
    run_dir: Path,
    checkpoint: str | None = None,
    device: str = "auto",
    **kwargs: Any,
) -> tuple[Path, dict[str, Any]]:
    """Evaluate a run's ``best`` (else ``last``) generator; write and return metrics.json."""
    from ..config import read_config
    from ..train.checkpoint import find_checkpoint, load_weights, verify
    from ..train.loop import resolve_device

    if not run_dir.is_dir():
        raise GanforgeError(f"{run_dir}: no such run directory")
    cfg = read_config(run_dir / "config.yaml")
    check_output_file(run_dir / "metrics.json", f"evaluate {run_dir}")  # before any work
    dev = resolve_device(device)
    ckpt = find_checkpoint(run_dir, (checkpoint,) if checkpoint else ("best", "last"))
    evaluation = Evaluation(cfg, device=dev, **kwargs)  # fails early on a bad metric set
    g = nets.build_generator(cfg.model, data_shape(cfg.data)).to(dev)
    g.load_state_dict(load_weights(ckpt, "sampler", dev))
    counters = verify(ckpt)
    result = evaluate_generator(g, cfg, evaluation)
    result["protocol"]["checkpoint"] = {
        "tag": ckpt.name,
        "step": counters.get("step"),
        "epoch": counters.get("epoch"),
        "images": counters.get("images"),
    }
    result = {"run_dir": str(run_dir), "recipe": cfg.recipe, "data": cfg.data.name, **result}
    out = run_dir / "metrics.json"
    atomic_write_text(out, json.dumps(result, indent=1) + "\n")
    return out, result


class TrainingEval:
    """The training loop's hook: evaluate every ``eval.every`` steps, keep the best G."""

    def __init__(self, cfg: Config, run_dir: Path, device: torch.device) -> None:
        e = cfg.eval
        self.every = e.every
        self.evaluation = Evaluation(cfg, e.metrics, e.n, e.reference, e.seed, device)
        self.best: float | None = None
        log = run_dir / "log.jsonl"  # a resumed run continues from the best logged so far
        if log.exists():
            for line in log.read_text().splitlines():
                rec = json.loads(line) if line else {}
                value = rec.get("eval", {}).get(self.evaluation.primary)
                if value is not None and self.evaluation.better(value, self.best):
                    self.best = value

    @classmethod
    def of(cls, cfg: Config, run_dir: Path, device: torch.device) -> TrainingEval | None:
        """The hook, or None when ``eval.every`` is off."""
        return cls(cfg, run_dir, device) if cfg.eval.every else None

    def due(self, done: int, total: int) -> bool:
        return done % self.every == 0 or done == total

    def run(self, models: Any, ckpt_dir: Path, counters: dict[str, Any]) -> dict[str, Any]:
        """Evaluate G; save checkpoint ``best`` when the primary metric improves.

        ``counters``: {"step", "epoch", "images"}; returns the log.jsonl eval record.
        """
        from ..train.checkpoint import save_checkpoint

        values = self.evaluation(models.sampler())  # the EMA of G when kept
        value = values[self.evaluation.primary]
        best = self.evaluation.better(value, self.best)
        if best:
            self.best = value
            save_checkpoint(ckpt_dir, "best", models, counters)
        return {**counters, "eval": values, "best": best}

    def describe(self, rec: dict[str, Any]) -> str:
        """One progress line of an eval record."""
        ev = rec["eval"]
        shown = ("fd", "precision", "recall", "is", "coverage", "class_acc")
        shown += ("fid", "kid", "inception_is", "modes", "hq", "reverse_kl", "mean_err", "cov_err")
        parts = [f"{k} {ev[k]:.4g}" for k in shown if isinstance(ev.get(k), (int, float))]
        mark = "  (best)" if rec["best"] else ""
        return (
            f"eval at step {rec['step']}: " + "  ".join(parts) + f"  [{ev['eval_s']:.1f} s]{mark}"
        )
