"""Matplotlib figures of a run, returned as PNG bytes (no pyplot state, no display needed)."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from .runlog import auto_weight, metric_numbers, smooth

DPI = 100
COLORS = {"loss_d": "tab:blue", "loss_g": "tab:orange", "d_real": "tab:green", "d_fake": "tab:red"}


def to_png(fig: Figure) -> bytes:
    """Render a figure to PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def curves(
    train: Sequence[dict[str, Any]],
    keys: Sequence[tuple[str, str]],
    title: str,
    ylabel: str,
    reference: float | None = None,
) -> bytes | None:
    """Lines of ``keys`` = [(log key, label)] over steps: raw (faint) and smoothed (solid).

    Returns None when the log holds none of the keys. ``reference`` draws a dotted
    horizontal line (e.g. 0.5 for D's outputs, where D cannot tell real from fake).
    """
    fig = Figure(figsize=(5.8, 3.4))
    fig.subplots_adjust(left=0.13, right=0.97, bottom=0.15, top=0.9)  # fixed: no layout pass
    ax = fig.add_subplot()
    drawn = False
    for i, (key, label) in enumerate(keys):
        pts = [(r["step"], r[key]) for r in train if isinstance(r.get(key), (int, float))]
        if not pts:
            continue
        steps, vals = zip(*pts, strict=True)
        color = COLORS.get(key, f"C{i}")
        weight = auto_weight(len(vals))
        if weight > 0:
            ax.plot(steps, vals, color=color, alpha=0.25, linewidth=1)
            ax.plot(steps, smooth(vals, weight), color=color, linewidth=2, label=label)
        else:
            ax.plot(steps, vals, color=color, linewidth=2, marker="o", markersize=3, label=label)
        drawn = True
    if not drawn:
        return None
    if reference is not None:
        ax.axhline(reference, color="grey", linestyle=":", linewidth=1)
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    return to_png(fig)


def loss_plot(train: Sequence[dict[str, Any]]) -> bytes | None:
    """D and G losses over training."""
    return curves(train, [("loss_d", "D loss"), ("loss_g", "G loss")], "Losses", "loss")


def d_output_plot(train: Sequence[dict[str, Any]]) -> bytes | None:
    """D's mean probability on real and on generated batches over training."""
    keys = [("d_real", "D(x), real"), ("d_fake", "D(G(z)), generated")]
    return curves(train, keys, "Discriminator outputs", "mean probability", reference=0.5)


def throughput_plot(train: Sequence[dict[str, Any]]) -> bytes | None:
    """Images per second in each logging window."""
    return curves(train, [("img_s", "images/s")], "Throughput", "images / s")


def metrics_plot(evals: Sequence[dict[str, Any]], best_step: int | None) -> bytes | None:
    """One panel per numeric evaluation metric over steps; the best checkpoint is starred."""
    series: dict[str, list[tuple[int, float]]] = {}
    for rec in evals:
        for key, value in metric_numbers(rec["eval"]).items():
            series.setdefault(key, []).append((rec["step"], value))
    if not series:
        return None
    cols = min(3, len(series))
    rows = math.ceil(len(series) / cols)
    fig = Figure(figsize=(4.2 * cols, 3.0 * rows), layout="constrained")
    for i, (key, pts) in enumerate(series.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        steps, vals = zip(*pts, strict=True)
        ax.plot(steps, vals, marker="o", markersize=3, linewidth=1.5, color=f"C{i % 10}")
        if best_step is not None:
            ax.axvline(best_step, color="gold", linestyle="--", linewidth=1.2)
            at = [v for s, v in pts if s == best_step]
            if at:
                ax.plot([best_step], at[-1:], marker="*", markersize=14, color="gold", mec="k")
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    if best_step is not None:
        fig.suptitle(f"evaluation metrics (best checkpoint: step {best_step}, starred)")
    return to_png(fig)


def latent_paths_plot(cloud: np.ndarray, paths: Sequence[np.ndarray]) -> bytes:
    """2-D data: G's output cloud and the curves G draws along spherical latent paths.

    ``cloud``: (N, 2) samples G(z); ``paths``: each (T, 2), G along one interpolation.
    """
    fig = Figure(figsize=(4.8, 4.5), layout="constrained")
    ax = fig.add_subplot()
    ax.scatter(cloud[:, 0], cloud[:, 1], s=4, alpha=0.25, color="grey", label="G(z)")
    for i, path in enumerate(paths):
        ax.plot(path[:, 0], path[:, 1], color=f"C{i % 10}", linewidth=2)
        ax.plot(path[:1, 0], path[:1, 1], marker="o", color=f"C{i % 10}")
        ax.plot(path[-1:, 0], path[-1:, 1], marker="s", color=f"C{i % 10}")
    ax.set_title("G along latent interpolations (o start, s end)")
    ax.set_aspect("equal", adjustable="datalim")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize="small")
    return to_png(fig)
