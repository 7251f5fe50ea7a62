"""Checkpoints: safetensors for tensors, JSON for the rest, a SHA-256 manifest, atomic swap.

Layout of ``RUN_DIR/checkpoints/<tag>/``: ``g.safetensors``, ``d.safetensors``,
``state.safetensors`` (optimizer tensors, RNG states), ``state.json`` (counters, optimizer
hyperparameters) and ``manifest.json`` (hash of each file, written last). A new checkpoint is
written into a temporary folder, synced, and renamed over the old one; nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .. import runfiles
from ..errors import CheckpointError
from .step import Models

FORMAT = 1
FILES = ("g.safetensors", "d.safetensors", "state.safetensors", "state.json")
OPTIONAL = ("g_ema.safetensors",)  # present when the run keeps an EMA of G (model.ema)


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks (checkpoints, evaluator weights)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Write a small text file via a synced temporary file and a rename (``runfiles``)."""
    runfiles.atomic_write_text(path, text)


def _rng_state() -> dict[str, Any]:
    """Python's and numpy's global generator states, as JSON (torch's go to safetensors)."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(internal), gauss],
        "numpy": [kind, keys.tolist(), pos, has_gauss, cached],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def _tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors wants contiguous CPU tensors that share no memory
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def _split_optimizer(prefix: str, opt: torch.optim.Optimizer) -> tuple[dict, dict]:
    """An optimizer's state as (tensors, JSON-able rest)."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, entry in sd["state"].items():
        for k, v in entry.items():
            if torch.is_tensor(v):
                tensors[f"{prefix}.{idx}.{k}"] = v
            else:
                scalars[f"{idx}.{k}"] = v
    meta = {"kind": type(opt).__name__, "param_groups": sd["param_groups"], "scalars": scalars}
    return tensors, meta


def _join_optimizer(prefix: str, tensors: dict, meta: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if key.startswith(prefix + "."):
            idx, k = key[len(prefix) + 1 :].split(".", 1)
            state.setdefault(int(idx), {})[k] = v
    for key, v in meta["scalars"].items():
        idx, k = key.split(".", 1)
        state.setdefault(int(idx), {})[k] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(ckpt_dir: Path, tag: str, models: Models, counters: dict[str, Any]) -> Path:
    """Write checkpoint ``tag`` atomically; the previous one stays until the new is complete."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    final = ckpt_dir / tag
    tmp = ckpt_dir / f".tmp-{tag}-{os.getpid()}"
    old = ckpt_dir / f".old-{tag}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        opt_g, meta_g = _split_optimizer("opt_g", models.opt_g)
        opt_d, meta_d = _split_optimizer("opt_d", models.opt_d)
        state = {**opt_g, **opt_d, "rng.torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["rng.cuda"] = torch.cuda.get_rng_state()
        save_file(_tensors(models.g.state_dict()), tmp / "g.safetensors")
        save_file(_tensors(models.d.state_dict()), tmp / "d.safetensors")
        save_file(_tensors(state), tmp / "state.safetensors")
        files = list(FILES)
        if models.g_ema is not None:
            updates = int(models.g_ema.n_averaged)
            counters = {**counters, "ema_updates": updates}
            if updates:  # before its first update the EMA holds nothing worth sampling
                save_file(_tensors(models.g_ema.module.state_dict()), tmp / "g_ema.safetensors")
                files += ["g_ema.safetensors"]
        meta = {
            "format": FORMAT,
            **counters,
            "optim": {"g": meta_g, "d": meta_d},
            "rng": _rng_state(),
        }
        (tmp / "state.json").write_text(json.dumps(meta, indent=1))
        for name in files:
            _fsync_file(tmp / name)
        manifest = {"format": FORMAT, "files": {n: sha256_file(tmp / n) for n in files}}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        _fsync_file(tmp / "manifest.json")
        _fsync_dir(tmp)
        runfiles.remove_tree(old)
        if final.exists() or final.is_symlink():
            os.replace(final, old)  # renames a symlink itself, never what it points to
        os.replace(tmp, final)
        _fsync_dir(ckpt_dir)
        if tag == "last" and sound(old):  # the one before stays as a fallback for resume
            runfiles.remove_tree(ckpt_dir / "previous")
            os.replace(old, ckpt_dir / "previous")
        runfiles.remove_tree(old)  # an odd or damaged one never replaces a good `previous`
    except (OSError, SafetensorError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        reason = getattr(e, "strerror", None) or e
        raise CheckpointError(
            f"could not write checkpoint {final} ({reason}); the previous one is kept; "
            "free disk space or choose another --out"
        ) from None
    return final


def clean_leftovers(ckpt_dir: Path) -> None:
    """Remove temporary folders of interrupted saves (an ``.old-*`` is kept if it is all)."""
    if not ckpt_dir.is_dir():
        return
    for p in ckpt_dir.glob(".tmp-*"):
        shutil.rmtree(p, ignore_errors=True)
    for old in ckpt_dir.glob(".old-*"):
        final = ckpt_dir / old.name[len(".old-") :]
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:  # crashed between the two renames: the old one is the good one
            os.replace(old, final)


class CheckpointMismatch(CheckpointError):
    """A sound checkpoint that does not fit the networks or optimizers built from the config
    (a changed z_dim, spectral norm, optimizer or data shape). Unlike a damaged checkpoint it
    is never skipped for an older one or for step 0: the resume is refused."""


def odd(path: Path) -> str | None:
    """Why ``path`` (a checkpoint tag) is not a plain checkpoint folder, or None.

    A symbolic link, a file or anything else in place of a folder is never read, rotated into
    ``previous`` or deleted through: ganforge only moves its own folders.
    """
    if path.is_symlink():
        return f"is a symbolic link (to {os.readlink(path)}), not a checkpoint folder"
    if path.exists() and not path.is_dir():
        return "is not a folder"
    if path.is_dir() and not os.access(path, os.R_OK | os.X_OK):
        return "cannot be read (permissions)"
    return None


def sound(path: Path) -> bool:
    """Whether ``path`` is a real checkpoint folder that passes its manifest check."""
    if odd(path) is not None or not path.is_dir():
        return False
    try:
        verify(path)
    except Exception:  # any failure to read it means it is not a checkpoint to keep
        return False
    return True


def verify(path: Path) -> dict[str, Any]:
    """Check a checkpoint folder against its manifest; return its state.json."""
    manifest_path = path / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except FileNotFoundError:
        raise CheckpointError(f"{path}: incomplete checkpoint (no manifest.json)") from None
    except (ValueError, KeyError, TypeError):
        raise CheckpointError(f"{path}: manifest.json is corrupted") from None
    if not set(FILES) <= set(files) <= set(FILES + OPTIONAL):
        raise CheckpointError(f"{path}: manifest.json lists unexpected files")
    for name, digest in files.items():
        if not (path / name).is_file():
            raise CheckpointError(f"{path}: incomplete checkpoint ({name} is missing)")
        if sha256_file(path / name) != digest:
            raise CheckpointError(f"{path}: {name} fails its SHA-256 check (corrupted)")
    return json.loads((path / "state.json").read_text())


def load_weights(path: Path, name: str, device: torch.device | str = "cpu") -> dict:
    """The verified state dict of network ``name`` ("g", "d" or "g_ema") in checkpoint
    ``path``; "sampler" means the G to sample with: the EMA of G when kept, else G."""
    verify(path)
    if name == "sampler":
        name = "g_ema" if (path / "g_ema.safetensors").is_file() else "g"
    try:
        return load_file(path / f"{name}.safetensors", device=str(device))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: cannot read {name}.safetensors ({e})") from None


def _match_layouts(opt: torch.optim.Optimizer) -> None:
    """Give each loaded per-parameter state tensor its parameter's memory layout.

    Checkpoints store tensors contiguous (NCHW). torch's fused Adam walks parameter, gradient
    and moments as flat buffers, so channels_last weights with NCHW moments would be updated
    with scrambled moments, silently (measured: an error of 0.16 after two steps at lr 0.1).
    """
    for group in opt.param_groups:
        for p in group["params"]:
            st = opt.state.get(p, {})
            for k, v in st.items():
                if torch.is_tensor(v) and v.shape == p.shape and v.stride() != p.stride():
                    st[k] = torch.empty_like(p, dtype=v.dtype).copy_(v)


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape)) or "scalar"


def _compare(label: str, saved: dict[str, torch.Tensor], model: torch.nn.Module) -> str | None:
    """The first difference between a saved state dict and a freshly built ``model``."""
    want = model.state_dict()
    missing = sorted(set(want) - set(saved))
    extra = sorted(set(saved) - set(want))
    if missing:
        return f"{label} has no tensor '{missing[0]}' that this config's {label} needs"
    if extra:
        return f"{label} tensor '{extra[0]}' is not in this config's {label}"
    for k, v in want.items():
        if tuple(saved[k].shape) != tuple(v.shape):
            return (
                f"{label} tensor '{k}' is {_shape(tuple(saved[k].shape))} in the checkpoint, "
                f"{_shape(tuple(v.shape))} with this config"
            )
        if saved[k].dtype != v.dtype:
            return f"{label} tensor '{k}' is {saved[k].dtype} in the checkpoint, {v.dtype} now"
    return None


def _optimizer_kind(meta: dict[str, Any]) -> str:
    """The optimizer class a checkpoint was saved from (older checkpoints: from its
    hyperparameters: RMSprop has ``alpha``, Adam ``betas``)."""
    kind = meta.get("kind")
    if kind is None and isinstance(meta.get("param_groups"), list) and meta["param_groups"]:
        group = meta["param_groups"][0]
        kind = "RMSprop" if "alpha" in group else "Adam" if "betas" in group else None
    if not isinstance(kind, str):  # neither said nor inferable: state.json is damaged
        raise ValueError("optimizer kind")
    return kind


def _compare_optimizer(
    label: str, key: str, meta: dict[str, Any], tensors: dict, opt: torch.optim.Optimizer
) -> str | None:
    kind, now = _optimizer_kind(meta), type(opt).__name__
    if kind != now:
        return f"{label} optimizer is {kind} in the checkpoint, {now} with this config ({key})"
    params = [p for group in opt.param_groups for p in group["params"]]
    groups = meta.get("param_groups") or []
    saved_n = sum(len(g.get("params", [])) for g in groups)
    if len(groups) != len(opt.param_groups) or saved_n != len(params):
        return f"{label} optimizer holds {saved_n} parameters in the checkpoint, {len(params)} now"
    prefix = "opt_g." if label == "G" else "opt_d."
    for name, t in tensors.items():
        if not name.startswith(prefix):
            continue
        idx, k = name[len(prefix) :].split(".", 1)
        p = params[int(idx)] if idx.isdigit() and int(idx) < len(params) else None
        if p is None or (t.dim() > 0 and tuple(t.shape) != tuple(p.shape)):
            return f"{label} optimizer state '{idx}.{k}' does not fit this config's parameters"
    return None


def check_compatible(
    path: Path,
    models: Models,
    nets: dict[str, dict[str, torch.Tensor]],
    state: dict[str, torch.Tensor],
    meta: dict[str, Any],
) -> None:
    """Raise ``CheckpointMismatch`` naming the first tensor (name, shape, dtype) or optimizer
    of checkpoint ``path`` that differs from the freshly built ``models``."""
    problem = _compare("G", nets["g"], models.g) or _compare("D", nets["d"], models.d)
    if problem is None and models.g_ema is not None and "g_ema" in nets:
        problem = _compare("the EMA of G", nets["g_ema"], models.g_ema.module)
    if problem is None and models.g_ema is None and "g_ema" in nets:  # it would be dropped
        problem = "the checkpoint keeps an EMA of G (model.ema) that this config does not"
    optim = meta.get("optim") if isinstance(meta.get("optim"), dict) else {}
    for net, opt in (("g", models.opt_g), ("d", models.opt_d)):
        if problem is None and isinstance(optim.get(net), dict):
            key = f"optim.{net}.name"
            problem = _compare_optimizer(net.upper(), key, optim[net], state, opt)
    if problem is not None:
        raise CheckpointMismatch(f"{path}: does not match this config: {problem}")


def load_checkpoint(path: Path, models: Models, device: torch.device) -> dict[str, Any]:
    """Restore networks, optimizers and RNG states; return the counters of state.json.

    A checkpoint that cannot be read is damaged (``CheckpointError``); one that reads but
    does not fit ``models`` raises ``CheckpointMismatch`` before anything is loaded.
    """
    meta = verify(path)
    names = ["g", "d"] + (["g_ema"] if (path / "g_ema.safetensors").exists() else [])
    try:
        nets = {n: load_file(path / f"{n}.safetensors", device=str(device)) for n in names}
        state = load_file(path / "state.safetensors", device="cpu")
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: cannot read its tensors ({type(e).__name__})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("optim"), dict):
        raise CheckpointError(f"{path}: state.json is damaged (no optimizer state)")
    try:
        check_compatible(path, models, nets, state, meta)
    except CheckpointMismatch:
        raise
    except (AttributeError, TypeError, KeyError, ValueError, IndexError) as e:
        raise CheckpointError(f"{path}: state.json is damaged ({type(e).__name__})") from None
    try:
        models.g.load_state_dict(nets["g"])
        models.d.load_state_dict(nets["d"])
        opt = meta["optim"]
        models.opt_g.load_state_dict(_join_optimizer("opt_g", state, opt["g"]))
        models.opt_d.load_state_dict(_join_optimizer("opt_d", state, opt["d"]))
        _match_layouts(models.opt_g)
        _match_layouts(models.opt_d)
        if models.g_ema is not None:  # a run that had no EMA yet starts one from G
            models.g_ema.n_averaged.fill_(meta.get("ema_updates", 0))
            if "g_ema" in nets:
                models.g_ema.module.load_state_dict(nets["g_ema"])
    except (SafetensorError, RuntimeError, KeyError, ValueError, TypeError, IndexError) as e:
        raise CheckpointError(
            f"{path}: is damaged: its optimizer or network state cannot be loaded "
            f"({type(e).__name__})"
        ) from None
    torch.set_rng_state(state["rng.torch"])
    if "rng" in meta:
        _set_rng_state(meta["rng"])
    if "rng.cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["rng.cuda"])
    return meta


def find_checkpoint(run_dir: Path, prefer: tuple[str, ...] = ("best", "last")) -> Path:
    """The first complete checkpoint of ``prefer`` in a run directory."""
    ckpt_dir = run_dir / "checkpoints"
    problems = []
    for tag in prefer:
        path = ckpt_dir / tag
        if not path.exists():
            continue
        try:
            verify(path)
            return path
        except CheckpointError as e:
            problems.append(str(e))
    if problems:
        raise CheckpointError("; ".join(problems))
    others = [t for t in ("best", "last") if t not in prefer and (ckpt_dir / t).is_dir()]
    if others:  # e.g. --checkpoint best on a run that never evaluated
        raise CheckpointError(
            f"{run_dir}: no checkpoint found under checkpoints/ ({'/'.join(prefer)}; 'best' "
            f"is kept only when eval.every is set); use --checkpoint {others[0]}"
        )
    if (run_dir / "config.yaml").exists():  # a run stopped before its first checkpoint
        raise CheckpointError(
            f"{run_dir}: no checkpoint found under checkpoints/ ({'/'.join(prefer)}): the run "
            f"stopped before its first one; continue it with 'ganforge train --resume {run_dir}'"
        )
    raise CheckpointError(
        f"{run_dir}: no checkpoint found under checkpoints/ ({'/'.join(prefer)}); "
        "train first with 'ganforge train --out DIR'"
    )
