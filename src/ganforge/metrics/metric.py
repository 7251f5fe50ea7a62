"""Sample-quality metrics as registered ``Metric`` objects that declare what they need.

A metric needs one kind of input, prepared once per evaluation by ``Evaluation``:

- ``classifier``: features and class probabilities of real and generated images from the
  data set's domain classifier (``ctx.real_feats``, ``ctx.feats``, ``ctx.real_probs``,
  ``ctx.probs``, ``ctx.real_radii`` for k-NN manifolds, ``ctx.labels`` of a conditional G);
- ``inception``: Inception-v3 statistics through torch-fidelity (``ctx.inception(name)``);
- ``images``: the generated and reference uint8 images themselves (``ctx.x``, ``ctx.real``);
- ``points``: generated 2-D points and the data set's pool (``ctx.x``, ``ctx.pool``).

Adding a metric is one ``Metric`` here, or one in your own module named by import path:
``--metrics fd,mypkg.metrics:sharpness``. ``values`` maps each value the metric reports to
whether lower is better (None: neither, e.g. a count of samples), for the console, the
report and the choice of the ``best`` checkpoint (``primary``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import GanforgeError
from ..registry import Registry
from . import classify, frechet, points, precision_recall

NEEDS = ("classifier", "inception", "images", "points")


@dataclass(frozen=True)
class Metric:
    """A metric: ``compute(ctx) -> {value name: number}`` and what it needs."""

    needs: str  # one of NEEDS
    compute: Callable[[Any], Mapping[str, Any]]
    primary: str | None = None  # the value that can pick the best checkpoint
    values: Mapping[str, bool | None] = field(default_factory=dict)  # name -> lower is better


METRICS: Registry[Metric] = Registry("metric")


def register(name: str, metric: Metric) -> Metric:
    if metric.needs not in NEEDS:
        raise ValueError(f"metric {name!r}: needs must be one of {NEEDS}")
    METRICS.register(name)(metric)
    return metric


def get_metric(name: str) -> Metric:
    """The registered (or imported, ``module:attr``) metric; one line if it is not a Metric."""
    metric = METRICS.get(name, "metrics")
    if not isinstance(metric, Metric) or metric.needs not in NEEDS:
        raise GanforgeError(
            f"metrics: {name!r} is not a ganforge.metrics.registry.Metric (with needs in "
            f"{', '.join(NEEDS)}); wrap your function as Metric(needs=..., compute=...)"
        )
    return metric


def direction(name: str) -> bool | None:
    """Whether lower is better for a reported value ``name`` (None: unknown or neither)."""
    for metric_name in METRICS.names():
        values = METRICS.get(metric_name).values
        if name in values:
            return values[name]
    return None


def _conditional_accuracy(ctx: Any) -> dict[str, Any]:
    out = dict(classify.class_coverage(ctx.probs, ctx.real_probs))
    y = ctx.labels
    if y is not None and len(y) == len(ctx.probs) and ctx.probs.shape[1] >= int(y.max()) + 1:
        # conditional G: how often the evaluator sees the class that was asked for
        out["class_acc"] = float((ctx.probs.argmax(1) == y).double().mean())
    return out


register(
    "fd",
    Metric(
        "classifier",
        lambda ctx: {"fd": frechet.fd(ctx.real_feats, ctx.feats)},
        primary="fd",
        values={"fd": True},
    ),
)
register(
    "pr",
    Metric(
        "classifier",
        lambda ctx: precision_recall.precision_recall(
            ctx.real_feats, ctx.feats, real_radii=ctx.real_radii
        ),
        primary="recall",
        values={"precision": False, "recall": False},
    ),
)
register(
    "is",
    Metric(
        "classifier",
        lambda ctx: {
            "is": classify.inception_score(ctx.probs),
            "is_real": classify.inception_score(ctx.real_probs),
        },
        primary="is",
        values={"is": False, "is_real": False},
    ),
)
register(
    "coverage",
    Metric(
        "classifier",
        _conditional_accuracy,
        primary="class_kl",
        values={"coverage": False, "classes_expected": None, "class_kl": True, "class_acc": False},
    ),
)
register(
    "fid",
    Metric("inception", lambda ctx: ctx.inception("fid"), primary="fid", values={"fid": True}),
)
register(
    "kid",
    Metric(
        "inception",
        lambda ctx: ctx.inception("kid"),
        primary="kid",
        values={"kid": True, "kid_std": None},
    ),
)
register(
    "inception-is",
    Metric(
        "inception",
        lambda ctx: ctx.inception("inception-is"),
        primary="inception_is",
        values={"inception_is": False, "inception_is_std": None},
    ),
)
register(
    "points",
    Metric(
        "points",
        lambda ctx: points.point_metrics(ctx.data_name, ctx.x, ctx.pool, ctx.ev.cfg.data),
        primary=None,  # per data set: points.primary
        values={
            "modes": False,
            "hq": False,
            "reverse_kl": True,
            "score": False,
            "fd": True,
            "mean_err": True,
            "cov_err": True,
            "cov_rel_err": True,
            "kl": True,
        },
    ),
)
