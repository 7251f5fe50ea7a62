"""Evaluate a generator: one entry point for ``ganforge evaluate`` and for training.

``Evaluation`` is prepared once per run (reference data and its features, the evaluator, the
Inception weights check) and then called with a generator as often as needed; every call
draws the same ``n`` latent vectors (seeded), so numbers of successive checkpoints compare.
``evaluate_generator`` is the one-shot form, ``evaluate_run`` writes ``RUN_DIR/metrics.json``;
the training loop's hook is ``ganforge.engine.evaluation``.

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

from .. import arguments, nets
from ..ckpt_read import read_run
from ..config import Config, DataConfig, read_config
from ..data import IMAGE_FOLDER, TensorData, data_shape, labelled, load_data, to_uint8
from ..data.stream import StreamData
from ..errors import GanforgeError, option
from ..runfiles import RunPin, atomic_write_text, check_output
from ..seeding import STREAM_EVAL, mix_seed, resolve_device
from . import features, inception, points, precision_recall
from .metric import METRICS, get_metric

CLASSIFIER_METRICS = ("fd", "pr", "is", "coverage")
N_IMAGES = 10_000  # default samples per evaluation of image data


def default_metrics(cfg: Config) -> tuple[str, ...]:
    """2-D data: points; a data set with an evaluator: the classifier metrics; else Inception."""
    if len(data_shape(cfg.data)) == 1:
        return ("points",)
    if features.has_evaluator(cfg.data.name):
        return CLASSIFIER_METRICS
    return inception.INCEPTION_METRICS


def parse_metrics(names: str | tuple[str, ...] | None, cfg: Config) -> tuple[str, ...]:
    """Check metric names (registered, or ``module:attr``) against the data; None means the
    default set."""
    if names is None:
        return default_metrics(cfg)
    if isinstance(names, str):
        names = tuple(n.strip() for n in names.split(",") if n.strip())
    if not names:
        raise GanforgeError(f"metrics: none given; choose from: {', '.join(METRICS.names())}")
    is_points = len(data_shape(cfg.data)) == 1
    for name in names:
        metric = get_metric(name)  # unknown or not importable: one line listing the choices
        if is_points != (metric.needs == "points"):
            kind = "2-D data" if is_points else "image data"
            raise GanforgeError(
                f"metrics {','.join(names)}: {name} is not for {kind} ({cfg.data.name}); use "
                + ("points" if is_points else "fd,pr,is,coverage or fid,kid,inception-is")
            )
        if metric.needs == "classifier" and not _has_classifier(cfg.data.name):
            raise GanforgeError(
                f"metrics {','.join(names)}: {name} is measured with a domain classifier "
                f"trained on a labelled data set, and {cfg.data.name} has no labels; use "
                "--metrics fid,kid,inception-is (Inception features; offline they need "
                "--inception-weights PATH)"
            )
    return names


def _has_classifier(name: str) -> bool:
    """Whether data set ``name`` has, or can train, a domain classifier (it has labels)."""
    return features.has_evaluator(name) or labelled(name)


def _instead(cfg: Config) -> str:
    """What else than Inception metrics can score the run's data: for the offline message."""
    name = cfg.data.name
    if features.has_evaluator(name):
        return "or use the classifier metrics: --metrics fd,pr,is,coverage"
    if labelled(name):
        return (
            f"or train {name}'s domain classifier ('ganforge evaluator train --dataset "
            f"{name}') and use --metrics fd,pr,is,coverage"
        )
    return f"{name} has no labels, so no classifier metrics can stand in for these"


def real_folder(cfg: Config, folder: str | Path) -> TensorData:
    """A folder of images as the reference of a run's images (``evaluate --real DIR``):
    decoded at the run's image size and channels, as ``image-folder`` data would be."""
    shape = data_shape(cfg.data)
    if len(shape) != 3:
        raise GanforgeError(
            f"--real {folder}: {cfg.data.name} is 2-D data, scored against its own target; "
            "--real is for image runs"
        )
    if not Path(folder).is_dir():
        raise GanforgeError(f"--real {folder}: no such folder; give a folder of images")
    dc = DataConfig(
        name=IMAGE_FOLDER,
        path=str(folder),
        size=shape[-1],
        channels=shape[0],
        background=cfg.data.background,
        range=cfg.data.range,
    )
    return load_data(dc)


SPLITS = ("test", "train")  # the reference splits
MIN_N = 10  # fewer samples say nothing (and some metrics need a covariance)


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
        real_dir: str | Path | None = None,
    ) -> None:
        """``real``: the reference data (default: ``reference`` split of the run's data);
        ``real_dir``: a folder of images as the reference (decoded after the checks)."""
        seed = arguments.seed(seed, option("--seed ", "seed="))
        reference = arguments.choice(reference, option("--reference ", "reference="), SPLITS)
        if n is not None:  # n samples and as many real images are held at once
            floats = cfg.model.z_dim + 2 * arguments.floats_of(data_shape(cfg.data))
            n = arguments.count(n, option("--n ", "n="), floats, low=MIN_N)
        self.cfg, self.seed, self.device = cfg, seed, torch.device(device)
        self.metrics = parse_metrics(metrics, cfg)
        self.kinds = {name: get_metric(name) for name in self.metrics}
        needs = {m.needs for m in self.kinds.values()}
        self.shape = data_shape(cfg.data)
        self.is_points = needs == {"points"}
        self.n = n or (points.N_POINTS if self.is_points else N_IMAGES)
        self.extractors: dict[str, Any] = {}
        if self.is_points:
            if real_dir is not None:
                real_folder(cfg, real_dir)  # one line: --real is for image runs
            self.primary, self.lower_is_better = points.primary(cfg.data.name)
            self.reference = {"target": cfg.data.name}
            self.pool = real.x if real is not None else load_data(cfg.data).x
            self.real = self.pool
            return
        use_inception = "inception" in needs
        # Fail at once (before loading data or sampling) when Inception weights cannot be had.
        self.weights = None
        if use_inception:
            self.weights = inception.resolve_weights(inception_weights, _instead(cfg))
        if real is None and real_dir is not None:
            real = real_folder(cfg, real_dir)
        given = real is not None
        if real is None:
            real = load_data(replace(cfg.data, split=reference, limit=None))
        source = real.source
        if len(real) > self.n or isinstance(real, StreamData):  # a seeded subset of n images
            gen = torch.Generator().manual_seed(seed)
            index = torch.randperm(len(real), generator=gen)[: self.n]
            if isinstance(real, StreamData):  # a folder read from disk: decode the subset
                real = TensorData(real.take(index), None, source)
            else:
                real = TensorData(real.x[index], None, "")
        self.real = real.x
        self.reference = {"split": reference, "n": len(real)}
        if given and source:  # e.g. evaluate --real DIR: say which images
            self.reference = {"real": source, "n": len(real)}
        self.real_radii = None
        if "classifier" in needs:
            self.evaluator = features.load_evaluator(cfg.data.name, self.device)
            self.real_feats, self.real_probs = self.evaluator.features(self.real)
            if "pr" in self.metrics:  # the reference's k-NN radii, once per run
                self.real_radii = precision_recall.knn_radii(self.real_feats.float())
            self.extractors["classifier"] = self.evaluator.describe()
        if use_inception:
            self.extractors["inception"] = inception.describe(self.weights)
        # the best checkpoint: the primary value of the first metric that has one
        primary = next((m.primary for m in self.kinds.values() if m.primary), None)
        if primary is None:
            raise GanforgeError(
                f"metrics {','.join(self.metrics)}: none has a primary value to rank "
                "checkpoints; add one of fd, pr, is, coverage, fid, kid, inception-is"
            )
        self.primary = primary
        self.lower_is_better = bool(
            next(m.values.get(primary, True) for m in self.kinds.values() if m.primary == primary)
        )

    def labels(self) -> torch.Tensor | None:
        """A class-conditional G's labels: i % num_classes, every class equally often (up to
        one), as the real data sets are about balanced; None for an unconditional G."""
        k = self.cfg.model.num_classes
        return None if k is None else torch.arange(self.n) % k

    @torch.no_grad()
    def sample(self, g: torch.nn.Module, batch: int = 500) -> torch.Tensor:
        """``n`` samples of G in eval mode from the seeded evaluation noise (and balanced
        labels for a conditional G), on the CPU: uint8 images (n, C, H, W) or points (n, D)."""
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
        values = self.score(x)
        values["eval_s"] = round(time.perf_counter() - t0, 3)
        return values

    def score(self, x: torch.Tensor) -> dict[str, Any]:
        """Metrics of samples ``x`` (uint8 images or points) against the reference."""
        ctx = _Context(self, x)
        values: dict[str, Any] = {}
        for metric in self.kinds.values():
            values.update(metric.compute(ctx))
        return values

    score_images = score  # the name the tests and older callers use

    def protocol(self) -> dict[str, Any]:
        """How the numbers were made: samples, reference, extractors, seed, primary metric."""
        return {
            "n": self.n,
            "seed": self.seed,
            "metrics": list(self.metrics),
            "reference": self.reference,
            "feature_extractors": self.extractors,
            "k": precision_recall.K if "pr" in self.metrics else None,
            "lower_is_better": {
                k: v for m in self.kinds.values() for k, v in m.values.items() if v is not None
            },
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
    """Evaluate a run's ``best`` (else ``last``) generator; write and return metrics.json.
    ``kwargs``: those of ``Evaluation`` (``real_dir``: a folder of images to compare with)."""
    if not run_dir.is_dir():
        raise GanforgeError(f"{run_dir}: no such run directory")
    with RunPin(run_dir, "it was evaluated") as pin:
        return _evaluate_pinned(pin, checkpoint, device, **kwargs)


def _evaluate_pinned(
    pin: RunPin, checkpoint: str | None, device: str, **kwargs: Any
) -> tuple[Path, dict[str, Any]]:
    """``evaluate_run`` of the folder ``pin`` holds open: the results go into the run they
    were computed from, even when ``train --overwrite`` moved it aside meanwhile."""
    run_dir = pin.named
    cfg = read_config(run_dir / "config.yaml")
    out = run_dir / "metrics.json"  # the latest evaluation; metrics.jsonl keeps them all
    check_output(out, f"evaluate {run_dir}", reads=[run_dir], own=out.name)  # before any work
    dev = resolve_device(device)
    cfg, snap = read_run(pin, (checkpoint,) if checkpoint else ("best", "last"))
    ckpt, counters, ema = snap.path, snap.state, snap.has_ema
    evaluation = Evaluation(cfg, device=dev, **kwargs)  # fails early on a bad metric set
    g = nets.build_generator(cfg.model, data_shape(cfg.data)).to(dev)
    snap.load_into("sampler", g, dev)
    del snap  # the checkpoint's bytes
    result = evaluate_generator(g, cfg, evaluation)
    result["protocol"]["checkpoint"] = {
        "tag": ckpt.name,
        "step": counters.get("step"),
        "epoch": counters.get("epoch"),
        "images": counters.get("images"),
    }
    # which network was scored: the EMA of G when the run keeps one (the "sampler")
    result["protocol"]["generator"] = "the EMA of G" if ema else "G"
    from . import history

    run_dir = pin.where()  # where the run evaluated is now (moved aside: there)
    result = {"run_dir": str(run_dir), "recipe": cfg.recipe, "data": cfg.data.name, **result}
    out = run_dir / "metrics.json"  # the latest evaluation; metrics.jsonl keeps them all
    atomic_write_text(out, json.dumps(result, indent=1) + "\n")
    history.append(run_dir, result)
    return out, result


class _Context:
    """What a metric's ``compute`` reads: the inputs its ``needs`` names, made on first use."""

    def __init__(self, ev: Evaluation, x: torch.Tensor) -> None:
        self.ev, self.x, self.real = ev, x, ev.real
        self.data_name = ev.cfg.data.name
        self.pool = getattr(ev, "pool", None)
        self.labels = ev.labels()
        self.real_radii = ev.real_radii if not ev.is_points else None
        self._inception: dict[str, float] | None = None
        if hasattr(ev, "evaluator") and not ev.is_points:
            self.real_feats, self.real_probs = ev.real_feats, ev.real_probs
            self.feats, self.probs = ev.evaluator.features(x)

    def inception(self, name: str) -> dict[str, float]:
        """The torch-fidelity values of Inception metric ``name`` (all of the evaluation's
        Inception metrics are computed in one pass over the images)."""
        if self._inception is None:
            wanted = tuple(m for m, k in self.ev.kinds.items() if k.needs == "inception")
            self._inception = inception.inception_metrics(
                self.x, self.real, wanted, self.ev.weights, self.ev.device
            )
        keys = {"fid": ("fid",), "kid": ("kid", "kid_std")}
        keys["inception-is"] = ("inception_is", "inception_is_std")
        return {k: v for k, v in self._inception.items() if k in keys.get(name, ())}
