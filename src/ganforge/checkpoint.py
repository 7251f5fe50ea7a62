"""Checkpoints: safetensors for tensors, JSON for the rest, a SHA-256 manifest, atomic swap.

Layout of ``RUN_DIR/checkpoints/<tag>/``: ``g.safetensors``, ``d.safetensors``,
``state.safetensors`` (optimizer tensors, RNG states), ``state.json`` (counters, optimizer
hyperparameters) and ``manifest.json`` (hash of each file, written last). A new checkpoint is
written into a temporary folder, synced, and renamed over the old one; nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from torch.optim.swa_utils import AveragedModel

from . import runfiles
from .errors import CheckpointError
from .files import finite_number, load_json

FORMAT = 1
FILES = ("g.safetensors", "d.safetensors", "state.safetensors", "state.json")
MAX_COUNT = 2**53  # steps, images: beyond any run, and exact as a JSON number everywhere
COUNTERS = ("step", "epoch", "images", "rollbacks", "ema_updates")  # ints >= 0 in state.json
# per-parameter state every optimizer step needs, by optimizer class (a missing one is damage)
# the optimizers' own ranges (torch checks them when an optimizer is made, not when loaded)
GROUP_RANGES = {
    "lr": (0, math.inf),
    "eps": (0, math.inf),
    "weight_decay": (0, math.inf),
    "alpha": (0, math.inf),
    "momentum": (0, math.inf),
    "betas": (0, 1),
}
TRI_STATE = ("foreach", "fused", "capturable", "differentiable")  # None or a flag, by device
REQUIRED_GROUP_KEYS = ("lr", "betas", "alpha", "eps", "weight_decay")  # where the optimizer has it
OPTIMIZER_STATE = {"Adam": ("step", "exp_avg", "exp_avg_sq"), "RMSprop": ("step", "square_avg")}
OPTIONAL = ("g_ema.safetensors",)  # present when the run keeps an EMA of G (model.ema)


@dataclass
class Models:
    """The two networks and their optimizers: what a checkpoint holds besides counters."""

    g: nn.Module
    d: nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    g_ema: AveragedModel | None = None  # model.ema: the averaged G, used for sampling
    # train.augment_p=auto: the share of images augmented now, a 0-d float32 on the device
    augment_p: torch.Tensor | None = None
    scaler: torch.amp.GradScaler | None = None  # train.precision=fp16: the loss scaler

    def sampler(self) -> nn.Module:
        """The G to sample and evaluate with: the EMA once it has begun averaging, else G."""
        if self.g_ema is not None and int(self.g_ema.n_averaged) > 0:
            return self.g_ema.module
        return self.g


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
    state: Any = np.random.get_state()  # the legacy tuple (kind, keys, pos, gauss, cached)
    kind, keys, pos, has_gauss, cached = state
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
        if models.augment_p is not None:  # exact in JSON: a float32 is a double
            counters = {**counters, "augment_p": float(models.augment_p)}
        if models.scaler is not None:  # fp16: its scale and growth counter (numbers)
            counters = {**counters, "grad_scaler": models.scaler.state_dict()}
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


def _json_object(path: Path, what: str) -> dict[str, Any]:
    """A JSON file of the checkpoint that must hold an object; any other content is damage."""
    try:
        data = load_json(path.read_bytes())
    except FileNotFoundError:
        raise CheckpointError(f"{path.parent}: incomplete checkpoint (no {path.name})") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read it ({e.strerror})") from None
    except ValueError:  # not JSON, not UTF-8, nested too deep
        raise CheckpointError(f"{path}: {what} is damaged (not JSON)") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: {what} is damaged (not a JSON object)")
    return data


def _is_count(value: Any) -> bool:
    return type(value) is int and 0 <= value <= MAX_COUNT


def _is_number(value: Any) -> bool:
    return finite_number(value)


def check_state(path: Path, state: dict[str, Any]) -> dict[str, Any]:
    """Raise CheckpointError unless ``state.json``'s fields have the types ganforge writes."""

    def bad(field: str, why: str) -> CheckpointError:
        return CheckpointError(f"{path / 'state.json'}: {field} {why}; the checkpoint is damaged")

    if state.get("format") != FORMAT:
        raise bad("format", f"is {str(state.get('format'))[:20]!r}, expected {FORMAT}")
    if "step" not in state:
        raise bad("step", "is missing")
    for key in COUNTERS:
        if key in state and not _is_count(state[key]):
            raise bad(key, "is not a count (an integer >= 0)")
    p = state.get("augment_p", 0.0)
    if not (_is_number(p) and 0 <= p <= 1):
        raise bad("augment_p", "is not a share from 0 to 1")
    optim = state.get("optim")
    if not isinstance(optim, dict) or set(optim) != {"g", "d"}:
        raise bad("optim", "is not an object with the optimizers g and d")
    for net, entry in optim.items():
        groups = entry.get("param_groups") if isinstance(entry, dict) else None
        scalars = entry.get("scalars") if isinstance(entry, dict) else None
        if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
            raise bad(f"optim.{net}.param_groups", "is not a list of objects")
        if not isinstance(scalars, dict) or not all(_is_number(v) for v in scalars.values()):
            raise bad(f"optim.{net}.scalars", "is not an object of numbers")
        for key in scalars:
            idx, _, name = key.partition(".")
            if not (idx.isdigit() and name):
                raise bad(f"optim.{net}.scalars", f"has a key {key[:30]!r} that is not INDEX.NAME")
        for group in groups:
            params = group.get("params")
            if not isinstance(params, list) or not all(_is_count(i) for i in params):
                raise bad(f"optim.{net}.param_groups.params", "is not a list of indices")
    rng = state.get("rng")
    if rng is not None and not isinstance(rng, dict):
        raise bad("rng", "is not an object")
    return state


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


def manifest_files(path: Path, manifest: dict[str, Any]) -> dict[str, str]:
    """The file -> SHA-256 map of checkpoint ``path``'s manifest, checked (its format, the map,
    the file names); one ``CheckpointError`` naming the damage. Shared by every reader."""
    if manifest.get("format") != FORMAT:  # ganforge writes it first; any other is damage
        raise CheckpointError(f"{path}: manifest.json is corrupted (no format {FORMAT})")
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in files.items()
    ):
        raise CheckpointError(f"{path}: manifest.json is corrupted (no map of file hashes)")
    if not set(FILES) <= set(files) <= set(FILES + OPTIONAL):
        raise CheckpointError(f"{path}: manifest.json lists unexpected files")
    return files


def verify(path: Path) -> dict[str, Any]:
    """Check a checkpoint folder against its manifest; return its (type-checked) state.json."""
    manifest = _json_object(path / "manifest.json", "manifest.json")
    files = manifest_files(path, manifest)
    for name, digest in files.items():
        if not (path / name).is_file():
            raise CheckpointError(f"{path}: incomplete checkpoint ({name} is missing)")
        try:
            actual = sha256_file(path / name)
        except OSError as e:
            raise CheckpointError(f"{path / name}: cannot read it ({e.strerror})") from None
        if actual != digest:
            raise CheckpointError(f"{path}: {name} fails its SHA-256 check (corrupted)")
    return check_state(path, _json_object(path / "state.json", "state.json"))


def _read_tensors(path: Path, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """A safetensors file of the checkpoint; unreadable means damaged."""
    try:
        return load_file(path, device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(
            f"{path}: cannot read it ({why}); the checkpoint is damaged"
        ) from None


def check_tensors(path: Path, tensors: dict[str, torch.Tensor], net: torch.nn.Module) -> None:
    """Raise CheckpointError unless ``tensors`` has exactly ``net``'s names, shapes and dtypes.

    ``load_state_dict`` would convert a wrong dtype silently and names only the first of
    several problems in a long message; this names the file and the first tensor that differs.
    """
    expected = net.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    why = None
    if missing:
        why = f"tensor {missing[0]} is missing" + (
            f" (and {len(missing) - 1} more)" * (len(missing) > 1)
        )
    elif extra:
        why = f"it holds an unexpected tensor {extra[0][:60]}"
    else:
        for key, want in expected.items():
            got = tensors[key]
            if got.shape != want.shape or got.dtype != want.dtype:
                why = (
                    f"tensor {key} is {tuple(got.shape)} {str(got.dtype)[6:]}, "
                    f"expected {tuple(want.shape)} {str(want.dtype)[6:]}"
                )
                break
    if why:
        raise CheckpointError(
            f"{path}: {why}; the file is damaged or the run's config.yaml no longer matches it"
        )


def load_network(path: Path, name: str, net: torch.nn.Module, device: torch.device | str) -> None:
    """Load network ``name`` ("g", "d", "g_ema", or "sampler": the EMA of G when kept, else G)
    of checkpoint ``path`` into ``net``, after checking the file against ``net``."""
    tensors = load_weights(path, name, device)
    if name == "sampler":
        name = "g_ema" if (path / "g_ema.safetensors").is_file() else "g"
    check_tensors(path / f"{name}.safetensors", tensors, net)
    net.load_state_dict(tensors)


def load_weights(path: Path, name: str, device: torch.device | str = "cpu") -> dict:
    """The verified state dict of network ``name`` ("g", "d" or "g_ema") in checkpoint
    ``path``; "sampler" means the G to sample with: the EMA of G when kept, else G."""
    verify(path)
    if name == "sampler":
        name = "g_ema" if (path / "g_ema.safetensors").is_file() else "g"
    return _read_tensors(path / f"{name}.safetensors", device)


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


def _check_optimizer(path: Path, net: str, opt: torch.optim.Optimizer) -> None:
    """Each loaded per-parameter state has the tensors a step needs, shaped like its parameter,
    and each hyperparameter has the kind (number, flag, pair) the optimizer's own has."""
    where = f"{path / 'state.safetensors'}: optimizer of {net}"
    needed = OPTIMIZER_STATE.get(type(opt).__name__, ())
    for group in opt.param_groups:
        for p in group["params"]:
            st = opt.state.get(p)
            if not st:
                continue
            absent = [k for k in needed if k not in st]
            if absent:
                raise CheckpointError(f"{where}: state {absent[0]} is missing; damaged")
            for k, v in st.items():
                if torch.is_tensor(v) and v.dim() > 0 and v.shape != p.shape:
                    raise CheckpointError(
                        f"{where}: state {k} is {tuple(v.shape)}, its parameter "
                        f"{tuple(p.shape)}; damaged or from other networks"
                    )


def _kind(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return type(value).__name__
    if isinstance(value, (int, float)):
        return "number" if finite_number(value) else "non-finite"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_kind(v) for v in value) + "]"
    return type(value).__name__


def _check_groups(path: Path, net: str, opt: torch.optim.Optimizer, groups: list) -> None:
    """The saved param_groups must match the live optimizer's, key by key, in kind."""
    live = opt.state_dict()["param_groups"]
    where = f"{path / 'state.json'}: optim.{net}.param_groups"
    if len(groups) != len(live):
        raise CheckpointError(f"{where} has {len(groups)} groups, the optimizer {len(live)}")
    for saved, own in zip(groups, live, strict=True):
        for key, value in own.items():
            if key == "params":
                continue
            if key not in saved:  # torch fills options added in later versions itself
                if key in REQUIRED_GROUP_KEYS:
                    raise CheckpointError(
                        f"{where}: {key} is missing; damaged, or the optimizer was changed"
                    )
                continue
            kinds = {_kind(saved[key]), _kind(value)}
            if len(kinds) > 1 and not (key in TRI_STATE and kinds <= {"bool", "NoneType"}):
                raise CheckpointError(
                    f"{where}: {key} is {str(saved[key])[:30]!r}, expected a value like "
                    f"{value!r}; the checkpoint is damaged"
                )
            numbers = saved[key] if isinstance(saved[key], list) else [saved[key]]
            low, high = GROUP_RANGES.get(key, (-math.inf, math.inf))
            if not all(isinstance(v, bool) or low <= v < high for v in numbers if _is_number(v)):
                raise CheckpointError(
                    f"{where}: {key} is {str(saved[key])[:30]}, outside [{low}, {high}); "
                    "the checkpoint is damaged"
                )


def _restore_rng(path: Path, state: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Set torch's, Python's and numpy's generators; a malformed state is damage."""
    own = torch.get_rng_state()
    saved = state.get("rng.torch")
    if saved is None or saved.dtype != own.dtype or saved.shape != own.shape:
        raise CheckpointError(f"{path / 'state.safetensors'}: rng.torch is missing or malformed")
    try:
        if "rng" in meta:
            _set_rng_state(meta["rng"])
    except (TypeError, ValueError, KeyError, IndexError, OverflowError):
        raise CheckpointError(f"{path / 'state.json'}: rng is malformed; damaged") from None
    torch.set_rng_state(saved)
    if "rng.cuda" in state and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state(state["rng.cuda"])
        except (RuntimeError, TypeError):
            raise CheckpointError(f"{path / 'state.safetensors'}: rng.cuda is malformed") from None


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
    optim: dict[str, Any] = meta["optim"] if isinstance(meta.get("optim"), dict) else {}
    for net, opt in (("g", models.opt_g), ("d", models.opt_d)):
        if problem is None and isinstance(optim.get(net), dict):
            key = f"optim.{net}.name"
            problem = _compare_optimizer(net.upper(), key, optim[net], state, opt)
    if problem is not None:
        raise CheckpointMismatch(f"{path}: does not match this config: {problem}")


def _scaler_state(path: Path, state: Any) -> dict[str, float | int]:
    """state.json's loss-scaler state, checked: a dict of finite positive numbers."""
    keys = ("scale", "growth_factor", "backoff_factor", "growth_interval", "_growth_tracker")
    ok = isinstance(state, dict) and set(state) == set(keys)
    ok = ok and all(type(state[k]) in (int, float) and math.isfinite(state[k]) for k in keys)
    if not ok or state["scale"] <= 0:
        raise CheckpointError(f"{path}: state.json's grad_scaler is damaged")
    return state


def load_checkpoint(path: Path, models: Models, device: torch.device) -> dict[str, Any]:
    """Restore networks, optimizers and RNG states; return the counters of state.json.

    Every file is checked before it is used (tensor names, shapes and dtypes, the types of
    state.json's fields): a checkpoint that fails is a CheckpointError naming the file, so a
    resume falls back to ``previous`` instead of failing later with a traceback. One that
    reads but does not fit ``models`` (other nets, optimizers or data) raises
    ``CheckpointMismatch`` before anything is loaded: the resume is refused.
    """
    meta = verify(path)
    g = _read_tensors(path / "g.safetensors", device)
    d = _read_tensors(path / "d.safetensors", device)
    state = _read_tensors(path / "state.safetensors", "cpu")
    ema_path = path / "g_ema.safetensors"
    nets = {"g": g, "d": d}
    if ema_path.exists():  # read even when this config keeps no EMA: dropping it is refused
        nets["g_ema"] = _read_tensors(ema_path, device)
    try:  # sound but built for other nets or optimizers: refused, never skipped
        check_compatible(path, models, nets, state, meta)
    except CheckpointMismatch:
        raise
    except (AttributeError, TypeError, KeyError, ValueError, IndexError) as e:
        raise CheckpointError(f"{path}: state.json is damaged ({type(e).__name__})") from None
    check_tensors(path / "g.safetensors", g, models.g)
    check_tensors(path / "d.safetensors", d, models.d)
    ema = None
    if models.g_ema is not None and "g_ema" in nets:
        ema = nets["g_ema"]
        check_tensors(ema_path, ema, models.g_ema.module)
    opt = meta["optim"]
    _check_groups(path, "g", models.opt_g, opt["g"]["param_groups"])
    _check_groups(path, "d", models.opt_d, opt["d"]["param_groups"])
    try:
        models.g.load_state_dict(g)
        models.d.load_state_dict(d)
        models.opt_g.load_state_dict(_join_optimizer("opt_g", state, opt["g"]))
        models.opt_d.load_state_dict(_join_optimizer("opt_d", state, opt["d"]))
        _check_optimizer(path, "G", models.opt_g)
        _check_optimizer(path, "D", models.opt_d)
        _match_layouts(models.opt_g)
        _match_layouts(models.opt_d)
        if models.augment_p is not None:  # a run that had a fixed share starts from 0
            models.augment_p.fill_(meta.get("augment_p", 0.0))
        if models.scaler is not None and "grad_scaler" in meta:  # else a fresh scale
            models.scaler.load_state_dict(_scaler_state(path, meta["grad_scaler"]))
        if models.g_ema is not None:  # a run that had no EMA yet starts one from G
            models.g_ema.n_averaged.fill_(meta.get("ema_updates", 0))
            if ema is not None:
                models.g_ema.module.load_state_dict(ema)
    except (SafetensorError, RuntimeError, KeyError, ValueError) as e:
        raise CheckpointError(
            f"{path}: does not match this recipe's networks ({type(e).__name__}); "
            "resume with the run's own config"
        ) from None
    _restore_rng(path, state, meta)
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


def checkpoint_generator(ckpt: Path) -> str:
    """'the EMA of G (N updates)' or 'G': which network a checkpoint samples with."""
    if not (ckpt / "g_ema.safetensors").is_file():
        return "G"
    try:
        n = load_json((ckpt / "state.json").read_text()).get("ema_updates")
    except (OSError, ValueError):
        n = None
    return f"the EMA of G ({n:,} updates)" if isinstance(n, int) else "the EMA of G"
