"""The EMA of G (``model.ema``): ``model.ema_start=auto``, and what the console says of it.

An EMA with decay d forgets its starting point with weight d^n after n updates: it needs
about 3 / (1 - d) updates (3,000 at d = 0.999) before the weights it started from weigh less
than 5%. A shorter run samples mostly the starting G (for ema_start=0, the initial weights:
grey noise). ``ema_start=auto`` starts at once with a warm-up of the decay,
``min(d, (1 + n) / (10 + n))`` after n updates (TensorFlow's ``num_updates`` rule), so the
average follows G closely early on and reaches decay d after about 10 / (1 - d) updates; a
fixed ``ema_start`` with fewer updates than that in the run gets a warning before training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..checkpoint import checkpoint_generator
from ..files import load_json


def start_step(cfg: Any) -> int:
    """The first step whose G update the EMA averages (``auto``: step 0)."""
    s = cfg.model.ema_start
    return 0 if s == "auto" else int(s)


def warmup_decay(decay: float, n: int) -> float:
    """The decay of update ``n`` (after the first copy) under ``ema_start=auto``."""
    return min(decay, (1.0 + n) / (10.0 + n))


def warmup_multi_avg_fn(decay: float) -> Any:
    """An ``AveragedModel`` multi_avg_fn: EMA with the decay warm-up of ``warmup_decay``."""
    import torch  # here: the rest of this module serves the report and the CLI cheaply

    @torch.no_grad()
    def update(ema: list[Any], cur: list[Any], n: Any) -> None:
        d = warmup_decay(decay, int(n))  # n: an int from step.EMA (no read of the device)
        if torch.is_floating_point(ema[0]) or torch.is_complex(ema[0]):
            torch._foreach_lerp_(ema, cur, 1 - d)  # pyright: ignore[reportPrivateImportUsage]
        else:  # integer buffers (BatchNorm's num_batches_tracked)
            for p_ema, p_cur in zip(ema, cur, strict=True):
                p_ema.copy_(p_ema * d + p_cur * (1 - d))

    return update


def needed(decay: float) -> int:
    """Updates an EMA needs before its starting weights weigh < 5%: 3 / (1 - decay)."""
    return round(3 / (1 - decay))


def updates_in_run(cfg: Any, total: int) -> int:
    """G updates the EMA averages in a run of ``total`` steps."""
    return max(0, (total - start_step(cfg)) // cfg.train.d_steps)


def start_note(cfg: Any, total: int) -> list[str]:
    """The lines said before training: which G samples, and a warning when the EMA will
    average too few steps to forget its start."""
    d = cfg.model.ema
    if d is None:
        return []
    s = cfg.model.ema_start
    lines = [
        f"sample grids, final.png, evaluation and 'ganforge sample' use the EMA of G "
        f"(model.ema={d}, model.ema_start={s})"
    ]
    n, want = updates_in_run(cfg, total), needed(d)
    if s != "auto" and n < want:
        lines.append(
            f"warning: the EMA will average only {n:,} G steps; model.ema={d} needs about "
            f"{want:,} (3 / (1 - decay)) to forget the G it starts from, so samples may look "
            f"like that G (grey noise for ema_start=0): set model.ema_start=auto, lower "
            "model.ema, or train longer"
        )
    return lines


def final_note(run_dir: Path, step: int) -> str:
    """Where final.png comes from, and what ``sample`` / ``evaluate`` use by default."""
    ckpt = Path(run_dir) / "checkpoints"
    which = checkpoint_generator(ckpt / "last")
    text = f"final.png: {which} at step {step:,} (the last checkpoint)"
    best = ckpt / "best"
    if best.is_dir():
        try:
            best_step = load_json((best / "state.json").read_text()).get("step")
        except (OSError, ValueError):
            best_step = None
        if best_step != step:
            text += (
                f"; 'ganforge sample' and 'evaluate' use checkpoint best (step {best_step}) "
                "unless given --checkpoint last"
            )
    return text
