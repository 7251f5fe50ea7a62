"""Reading a checkpoint that a training may be rotating: one consistent snapshot, or damage.

``checkpoint.save_checkpoint`` renames folders: ``last`` becomes ``.old-last`` then
``previous``, a new folder becomes ``last``, the previous ``previous`` is removed. A reader
that opens ``last/manifest.json`` and then ``last/g.safetensors`` by path may get the files of
two checkpoints, which fail the manifest's hashes although neither is damaged.

``read_checkpoint`` opens the folder once and every file through that folder's descriptor,
reads them into memory, and verifies and loads those bytes only: a checkpoint folder is never
changed once renamed into place, so what was opened is one checkpoint. When the read fails and
the folder changed under the reader (it was renamed away, removed, or its files vanished), it
reads again; a check that fails twice while nothing changed is real damage, reported with the
same message as ``checkpoint.verify``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors

from .checkpoint import check_state, check_tensors, find_checkpoint, manifest_files
from .config import Config, read_config
from .errors import CheckpointError, GanforgeError
from .files import load_json
from .runfiles import RunPin

ATTEMPTS = 8  # reads of one folder before it counts as changing faster than it can be read
PAUSE_S = 0.02  # between reads (grows with each attempt): a save takes milliseconds


@dataclass
class Snapshot:
    """The files of one checkpoint, read whole and verified against its manifest."""

    path: Path  # the checkpoint folder as named (RUN_DIR/checkpoints/last)
    files: dict[str, bytes]
    state: dict[str, Any]  # state.json, type-checked (counters, optimizers, RNG)

    @property
    def has_ema(self) -> bool:
        return "g_ema.safetensors" in self.files

    def tensors(self, name: str, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """The state dict of ``name`` ("g", "d", "g_ema"; "sampler": the EMA of G when kept,
        else G) from the bytes that passed the check."""
        file = f"{self.network(name)}.safetensors"
        try:
            tensors = load_tensors(self.files[file])
        except (SafetensorError, ValueError, RuntimeError, KeyError) as e:
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise CheckpointError(
                f"{self.path / file}: cannot read it ({why}); the checkpoint is damaged"
            ) from None
        return {k: v.to(device) for k, v in tensors.items()}

    def network(self, name: str) -> str:
        """The network a name stands for: "sampler" is "g_ema" when kept, else "g"."""
        if name == "sampler":
            return "g_ema" if self.has_ema else "g"
        return name

    def load_into(self, name: str, net: torch.nn.Module, device: torch.device | str) -> None:
        """Load network ``name`` into ``net`` after checking names, shapes and dtypes."""
        tensors = self.tensors(name, device)
        check_tensors(self.path / f"{self.network(name)}.safetensors", tensors, net)
        net.load_state_dict(tensors)

    def generator(self) -> str:
        """'the EMA of G (N updates)' or 'G': which network this checkpoint samples with."""
        if not self.has_ema:
            return "G"
        n = self.state.get("ema_updates")
        return f"the EMA of G ({n:,} updates)" if isinstance(n, int) else "the EMA of G"


class CheckpointChanging(CheckpointError):
    """A checkpoint folder that changed under every read (a training saving faster than it
    could be read): a race, not damage."""


class _Changed(Exception):
    """The folder or one of its files went away while it was read (a rotation)."""


def _identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _read_file(dir_fd: int, name: str) -> bytes:
    """A regular file of the folder, whole; ``_Changed`` when it is not there (a FIFO or a
    device in its place is not a file either: opened without blocking, never read)."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK, dir_fd=dir_fd)
    except FileNotFoundError:
        raise _Changed(name) from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _Changed(name)
        return f.read()


def _object(path: Path, name: str, data: bytes) -> dict[str, Any]:
    try:
        value = load_json(data)
    except ValueError:  # not JSON, not UTF-8, nested too deep
        raise CheckpointError(f"{path / name}: {name} is damaged (not JSON)") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path / name}: {name} is damaged (not a JSON object)")
    return value


def _read_once(path: Path, dir_fd: int) -> Snapshot:
    """Every file of the checkpoint opened through ``dir_fd``, read, and checked as
    ``checkpoint.verify`` checks files on disk (the same messages)."""
    try:
        manifest = _object(path, "manifest.json", _read_file(dir_fd, "manifest.json"))
    except _Changed:
        raise CheckpointError(f"{path}: incomplete checkpoint (no manifest.json)") from None
    listed = manifest_files(path, manifest)
    files: dict[str, bytes] = {}
    for name in listed:  # names checked above: plain file names of a checkpoint
        try:
            files[name] = _read_file(dir_fd, name)
        except _Changed:
            raise CheckpointError(f"{path}: incomplete checkpoint ({name} is missing)") from None
    for name, digest in listed.items():
        if hashlib.sha256(files[name]).hexdigest() != digest:
            raise CheckpointError(f"{path}: {name} fails its SHA-256 check (corrupted)")
    state = check_state(path, _object(path, "state.json", files["state.json"]))
    return Snapshot(path, files, state)


def _now(path: Path) -> tuple[int, int] | None:
    try:
        return _identity(os.stat(path))
    except OSError:
        return None


def read_checkpoint(path: Path) -> Snapshot:
    """One consistent, verified checkpoint from folder ``path``, even while a training
    rotates it; a ``CheckpointError`` when it is damaged (or missing after the retries)."""
    path = Path(path)
    seen: tuple[str, tuple[int, int] | None] | None = None
    error: CheckpointError | None = None
    for attempt in range(ATTEMPTS):
        if attempt:
            time.sleep(PAUSE_S * attempt)
        try:
            dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:  # renamed away for a moment (between the two renames)?
            error = CheckpointError(f"{path}: no such checkpoint")
            if attempt:  # still not there: the caller looks where it went
                raise error from None
            continue
        except OSError as e:
            raise CheckpointError(f"{path}: cannot read it ({e.strerror})") from None
        try:
            ident = _identity(os.fstat(dir_fd))
            try:
                return _read_once(path, dir_fd)
            except OSError as e:
                error = CheckpointError(f"{path}: cannot read it ({e.strerror})")
            except CheckpointError as e:
                error = e
        finally:
            os.close(dir_fd)
        if _now(path) != ident:  # renamed or removed while it was read: read it again
            seen = None
            continue
        if seen == (str(error), ident):  # the same failure twice, nothing changed: damage
            raise error
        seen = (str(error), ident)
    assert error is not None
    raise CheckpointChanging(
        f"{error}; {path} kept changing while it was read (a training writes it every few "
        "moments?); try again"
    )


def _pick(ckpt_dir: Path, tag: str) -> Path | None:
    """Folder ``tag``; between the two renames of a save (for a moment, or for good after a
    crash there) the checkpoint before it, ``.old-<tag>``; None when neither is there."""
    for _ in range(2):  # a rename may land between the two looks: look once more
        for path in (ckpt_dir / tag, ckpt_dir / f".old-{tag}"):
            if path.exists():
                return path
    return None


def open_checkpoint(run_dir: Path, prefer: tuple[str, ...] = ("best", "last")) -> Snapshot:
    """The first checkpoint of ``prefer`` that reads whole (as ``find_checkpoint``, with the
    same messages when there is none), read consistently while a training may rotate it.
    A ``last`` that is mid-rotation falls back to ``previous`` only when it cannot be read
    whole after the retries (its fate then is a race, not damage)."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    problems: list[str] = []
    for tag in prefer:
        error = None
        for _ in range(3):  # a folder renamed away while it was opened: look where it went
            path = _pick(ckpt_dir, tag)
            if path is None:
                break
            try:
                return read_checkpoint(path)
            except CheckpointError as e:
                error = e
                if path.exists():  # there, and it fails: damage (or it keeps changing)
                    break
        if error is None:
            continue
        problems.append(str(error))
        if tag == "last" and isinstance(error, CheckpointChanging) and "previous" not in prefer:
            with contextlib.suppress(CheckpointError):
                return read_checkpoint(ckpt_dir / "previous")
    if problems:
        raise CheckpointError("; ".join(problems))
    return read_checkpoint(find_checkpoint(run_dir, prefer))  # raises the 'none found' line


def read_run(
    pin: RunPin, prefer: tuple[str, ...] = ("best", "last"), **trust: Any
) -> tuple[Config, Snapshot]:
    """A pinned run's config.yaml and a consistent checkpoint, both of the folder opened:
    read again where the run is now when ``train --overwrite`` moved it meanwhile.
    ``trust``: ``trust_code`` and ``given`` of ``read_config`` (a run directory is data)."""
    root = pin.named
    for _ in range(3):
        try:
            cfg = read_config(root / "config.yaml", **trust)
            snap = open_checkpoint(root, prefer)
        except GanforgeError:
            if pin.where() == root:
                raise
        else:
            if pin.where() == root:
                return cfg, snap
        root = pin.where()
    raise GanforgeError(f"{pin.named} kept being replaced while it was read; run the command again")
