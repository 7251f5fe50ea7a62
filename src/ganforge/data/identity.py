"""What a run trains on, recorded so that a resume over other data is refused.

``identify`` gives the data's identity when a run starts: for an image folder the sorted file
list with sizes and mtimes (a streamed folder reads no pixels ahead), for everything else a
SHA-256 of the examples and labels as loaded (IDX, .mat and CIFAR batches, .npy / .csv
points, generated data sets from their settings, tensors handed in from Python), together
with the data settings that change what is trained on (``SETTINGS``). Files read are listed
by name, size and mtime, to say what changed. Hashing happens once per start (a 47 MB
Fashion-MNIST: about 0.1 s).

The run keeps the whole record in ``RUN/data.json``; each checkpoint keeps its ``stamp``
(what, count, digest) in state.json. ``changed`` compares a checkpoint's stamp with the data
of a resume and says, in one line, what differs.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from ..config import DataConfig
from ..files import load_json
from ..runfiles import atomic_write_text
from . import TensorData

RECORD = "data.json"  # in the run directory: the identity of the data its last start read
MAX_LISTED = 100_000  # files listed by name in data.json; past that, counts only
MAX_RECORD_BYTES = 32 << 20  # a larger data.json is not read (it would not be ganforge's)
# data settings that change the examples or their order (not where they are found)
SETTINGS = (
    "split", "classes", "size", "channels", "pad", "range", "shuffle", "limit", "points",
    "background", "gaussian_a", "gaussian_b", "shape",
)  # fmt: skip
SHOWN = 3  # names shown per kind of change


def _listing(root: Path, files: tuple[Path, ...]) -> dict[str, list[int]]:
    """{name relative to ``root``: [size, mtime_ns]}; a file gone since listing: [-1, -1]."""
    out: dict[str, list[int]] = {}
    for f in files:
        try:
            st = os.stat(f)
            meta = [st.st_size, st.st_mtime_ns]
        except OSError:
            meta = [-1, -1]
        out[f.relative_to(root).as_posix() if f.is_relative_to(root) else str(f)] = meta
    return out


def _tensor_digest(h: Any, t: torch.Tensor | None) -> None:
    if t is None:
        h.update(b"none")
        return
    t = t.detach().cpu().contiguous()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    if t.numel():
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)  # no copy


def identify(data: TensorData, cfg: DataConfig) -> dict[str, Any]:
    """The identity of ``data`` (loaded under ``cfg``): what, count, shape, digest, settings,
    and ``files`` ({name: [size, mtime_ns]}) when it was read from files."""
    origin = data.origin
    if origin is not None:
        what = origin.what
    elif data.source == "generated":
        what = f"the generated data set {cfg.name}"
    elif cfg.name == "python" or cfg.shape is not None:
        what = "the data given from Python"
    else:
        what = f"the {cfg.name} data"
    settings = json.loads(json.dumps({k: getattr(cfg, k) for k in SETTINGS}))
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    files = _listing(origin.root, origin.files) if origin is not None else None
    if origin is not None and origin.listed:  # image folders: the file list is the identity
        assert files is not None
        h.update(json.dumps(files, sort_keys=True).encode())
    else:
        _tensor_digest(h, data.x)
        _tensor_digest(h, data.labels)
    record: dict[str, Any] = {
        "what": what,
        "count": len(data),
        "shape": list(data.shape),
        "digest": h.hexdigest(),
        "settings": settings,
    }
    if files is not None and len(files) <= MAX_LISTED:
        record["files"] = files
    return record


def stamp(record: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint keeps of the record: what, count and digest."""
    return {k: record[k] for k in ("what", "count", "digest")}


def write_record(run_dir: Path, record: dict[str, Any]) -> None:
    """``RUN/data.json``, atomically."""
    atomic_write_text(run_dir / RECORD, json.dumps(record, sort_keys=True, separators=(",", ":")))


def read_record(run_dir: Path) -> dict[str, Any] | None:
    """The run's data.json, or None when absent, too large or not ganforge's."""
    path = run_dir / RECORD
    try:
        if not path.is_file() or path.stat().st_size > MAX_RECORD_BYTES:
            return None
        record = load_json(path.read_bytes())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def valid_stamp(value: Any) -> bool:
    """Whether a checkpoint's ``data`` entry is a stamp ganforge wrote."""
    return (
        isinstance(value, dict)
        and isinstance(value.get("what"), str)
        and type(value.get("count")) is int
        and isinstance(value.get("digest"), str)
    )


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN])
    return shown + (", ..." if len(names) > SHOWN else "")


def _file_changes(old: Any, new: Any) -> str | None:
    """'3 files removed (a.png, ...), 1 added (z.png)' between two listings, or None."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return None
    removed = sorted(set(old) - set(new))
    added = sorted(set(new) - set(old))
    edited = sorted(k for k in set(old) & set(new) if old[k] != new[k])
    kinds = [
        (n, label)
        for n, label in ((removed, "removed"), (added, "added"), (edited, "modified"))
        if n
    ]
    if not kinds:
        return None
    parts = [f"{len(n)} {label} ({_names(n)})" for n, label in kinds]
    noun = "file" if len(kinds[0][0]) == 1 else "files"
    first, rest = parts[0].split(" ", 1)
    return ", ".join([f"{first} {noun} {rest}", *parts[1:]])


def changed(
    stamp_then: Any,
    record_then: dict[str, Any] | None,
    now: dict[str, Any],
    settings_changed: list[str],
    step: int,
) -> str | None:
    """None when the data of ``now`` is that of a checkpoint's ``stamp_then`` (or the
    checkpoint has no stamp: written before ganforge recorded data); else one clause saying
    what changed: "the image folder DIR changed since step 40: 3 files removed (a.png, ...)".

    ``record_then``: the run's data.json, used for the file names when it is the record of
    that stamp; ``settings_changed``: the data settings a resume changed ("data.limit 64 -> 32").
    """
    if not valid_stamp(stamp_then) or stamp_then["digest"] == now["digest"]:
        return None
    details = []
    if stamp_then["what"] != now["what"]:
        details.append(f"now {now['what']}")
    files = None
    if record_then is not None and record_then.get("digest") == stamp_then["digest"]:
        files = _file_changes(record_then.get("files"), now.get("files"))
    if files is not None:
        details.append(files)
    if stamp_then["count"] != now["count"]:
        details.append(f"{stamp_then['count']:,} examples then, {now['count']:,} now")
    if settings_changed:
        details.append("settings " + ", ".join(settings_changed))
    if not details:
        details.append("the same number of examples, other content")
    return f"{stamp_then['what']} changed since step {step}: {'; '.join(details)}"
