"""Where a resumed run starts, decided before anything in its directory is written.

A damaged checkpoint (a failed hash, unreadable tensors) is skipped for ``previous``, then
for step 0, with a warning: the run's own files are still right, only one copy is broken. A
sound checkpoint that does not fit the networks or optimizers of the config (``--set
model.z_dim=3``, another optimizer, other data) is different: training from step 0 would
replace the run with another one, so the resume is refused in one line naming the tensor or
option that differs, with nothing on disk changed. So are a ``checkpoints/last`` that is not
ganforge's own folder (a symlink, a file) and a length shorter than the steps already done.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

from ..checkpoint import CheckpointMismatch, Models, clean_leftovers, load_checkpoint, odd
from ..config import Config, to_dict
from ..errors import CheckpointError, ConfigError, option
from ..files import load_yaml

TAGS = ("last", "previous")


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix.rstrip("."): tree}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(_flat(v, f"{prefix}{k}."))
    return out


def _changed(run_dir: Path, cfg: Config) -> dict[str, tuple[Any, Any]]:
    """Settings of ``cfg`` that differ from the run's config.yaml: key -> (old, new)."""
    try:
        saved = load_yaml((run_dir / "config.yaml").read_bytes())
    except (OSError, ValueError, yaml.YAMLError):
        return {}
    if not isinstance(saved, dict):
        return {}
    old, new = _flat(saved), _flat(to_dict(cfg))

    def plain(v: Any) -> Any:
        return list(v) if isinstance(v, tuple) else v

    return {k: (old.get(k), new[k]) for k in new if plain(old.get(k)) != plain(new[k])}


def config_changes(run_dir: Path, cfg: Config) -> list[str]:
    """The model / optim / data settings of ``cfg`` that differ from the run's config.yaml,
    as "key old -> new" (empty when the saved config cannot be read)."""
    return [
        f"{k} {old} -> {new}"
        for k, (old, new) in _changed(run_dir, cfg).items()
        if k.split(".")[0] in ("model", "optim", "data")
    ]


HYPER = ("lr", "betas", "eps", "alpha")  # optimizer settings a resume may change


def apply_changed_hyperparameters(
    run_dir: Path, cfg: Config, models: Models, say: Callable[[str], None]
) -> None:
    """Give the loaded optimizers the hyperparameters a resume changed (``--set
    optim.g.lr=...``): a checkpoint's optimizer state carries its own, which would otherwise
    win silently while config.yaml says otherwise. Unchanged ones keep the checkpoint's
    (a rollback's halved learning rate among them)."""
    changed = _changed(run_dir, cfg)
    for net, opt in (("g", models.opt_g), ("d", models.opt_d)):
        for name in HYPER:
            key = f"optim.{net}.{name}"
            if key not in changed:
                continue
            value = changed[key][1]
            for group in opt.param_groups:
                if name in group:
                    group[name] = tuple(value) if isinstance(value, list) else value
                    if name == "lr" and "base_lr" in group:
                        group["base_lr"] = value
            say(f"{key}: {changed[key][0]} -> {value} from this resume on")


def resume_point(
    run_dir: Path,
    models: Models,
    device: torch.device,
    say: Callable[[str], None],
    clean: bool = True,
    cfg: Config | None = None,
) -> dict[str, Any]:
    """Load the newest good checkpoint (last, else previous) into ``models``; return its
    counters, or those of step 0 when none is usable.

    Raises ``CheckpointMismatch`` when a checkpoint is sound but does not fit ``models`` and
    none fits (``cfg`` names the changed settings in the message), and ``CheckpointError``
    when ``last`` or ``previous`` is not a plain folder; in both cases before any write.
    """
    ckpt_dir = run_dir / "checkpoints"
    for tag in TAGS:
        reason = odd(ckpt_dir / tag)
        if reason is not None:
            raise CheckpointError(
                f"cannot resume {run_dir}: checkpoints/{tag} {reason}; ganforge only keeps its "
                "own folders there: replace it by a copy of the checkpoint (cp -rL) or move it "
                "away, then resume"
            )
    if clean:  # under torchrun only rank 0 touches the run directory
        clean_leftovers(ckpt_dir)
    mismatch: CheckpointMismatch | None = None
    for tag in TAGS:
        path = ckpt_dir / tag
        if not path.exists():
            continue
        try:
            meta = load_checkpoint(path, models, device)
        except CheckpointMismatch as e:
            mismatch = mismatch or e
            continue
        except CheckpointError as e:
            say(f"warning: skipping checkpoint {path}: {e}")
            continue
        if mismatch is not None:  # `last` alone differs from the run's own networks: damaged
            say(f"warning: skipping checkpoint {ckpt_dir / 'last'}: {mismatch}")
        if cfg is not None:
            apply_changed_hyperparameters(run_dir, cfg, models, say)
        return meta
    if mismatch is not None:
        changes = config_changes(run_dir, cfg) if cfg is not None else []
        changed = f" (changed: {', '.join(changes[:3])})" if changes else ""
        raise CheckpointMismatch(
            f"cannot resume: {mismatch}{changed}; nothing was changed; resume with the run's "
            "own settings, or start a fresh run with "
            + option(
                f"'ganforge train --out NEW' (or --out {run_dir} --overwrite to set this run "
                "aside first)",
                f"ganforge.train(out=NEW) (or out={str(run_dir)!r}, overwrite=True to set this "
                "run aside first)",
            )
        )
    say(f"warning: {run_dir} has no usable checkpoint; starting from step 0")
    return {"step": 0}


def check_length(run_dir: Path, start: int, total: int) -> bool:
    """Whether a resume at step ``start`` of ``total`` has nothing left to do: True for a
    finished run at its end; raises when ``total`` is below the steps already done."""
    from ..report.runlog import run_state

    if start > total:
        raise ConfigError(
            f"cannot resume {run_dir}: it has done {start} steps, more than this config's "
            f"length of {total} (train.iterations / train.epochs); nothing was changed; give a "
            f"longer length, e.g. --set train.iterations={2 * start}, or start a fresh run "
            "with --out NEW"
        )
    return start == total and run_state(run_dir) == "finished"


def complete_summary(run_dir: Path, counters: dict[str, Any]) -> dict[str, Any]:
    """``train``'s result for a run that was already complete: nothing trained or written."""
    return {
        "run_dir": str(run_dir),
        "steps": counters["step"],
        "images": counters.get("images", 0),
        "wall_s": 0.0,
        "img_s": 0.0,
        "loss_d": None,
        "loss_g": None,
        "rollbacks": counters.get("rollbacks", 0),
        "summary": "",
        "complete": True,
    }


def reinitialise(models: Models, fresh: Models) -> None:
    """Give ``models`` the seed's initial weights and optimizer states of ``fresh`` (a
    rollback before the first checkpoint: nothing non-finite is kept)."""
    models.g.load_state_dict(fresh.g.state_dict())
    models.d.load_state_dict(fresh.d.state_dict())
    models.opt_g.load_state_dict(fresh.opt_g.state_dict())
    models.opt_d.load_state_dict(fresh.opt_d.state_dict())
    if models.g_ema is not None and fresh.g_ema is not None:
        models.g_ema.load_state_dict(fresh.g_ema.state_dict())
    if models.augment_p is not None and fresh.augment_p is not None:
        models.augment_p.copy_(fresh.augment_p)
