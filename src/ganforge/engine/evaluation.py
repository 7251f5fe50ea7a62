"""Evaluation during training (``eval.every``): log records and the ``best`` checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..checkpoint import save_checkpoint
from ..config import Config
from ..files import finite_number
from ..metrics.evaluate import Evaluation
from ..report.runlog import read_log


class TrainingEval:
    """The training loop's hook: evaluate every ``eval.every`` steps, keep the best G."""

    def __init__(self, cfg: Config, run_dir: Path, device: torch.device) -> None:
        e = cfg.eval
        self.every = e.every
        self.evaluation = Evaluation(cfg, e.metrics, e.n, e.reference, e.seed, device)
        self.best: float | None = None
        for rec in read_log(run_dir).evals:  # a resumed run continues from the best so far
            value = rec["eval"].get(self.evaluation.primary)
            if finite_number(value):
                if self.evaluation.better(value, self.best):
                    self.best = value

    @classmethod
    def of(cls, cfg: Config, run_dir: Path, device: torch.device) -> TrainingEval | None:
        """The hook, or None when ``eval.every`` is off."""
        return cls(cfg, run_dir, device) if cfg.eval.every else None

    def due(self, done: int, total: int) -> bool:
        return done == total or (self.every is not None and done % self.every == 0)

    def run(self, models: Any, ckpt_dir: Path, counters: dict[str, Any]) -> dict[str, Any]:
        """Evaluate G; save checkpoint ``best`` when the primary metric improves.

        ``counters``: {"step", "epoch", "images"}; returns the log.jsonl eval record.
        """
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
