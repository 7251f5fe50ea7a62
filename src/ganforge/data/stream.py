"""Image folders bigger than memory: decoded from disk as training reads them.

``image-folder`` streams when its decoded size (N x C x size x size bytes) is over
``data.memory_limit`` (GiB; by default a quarter of the machine's RAM) or when
``data.stream=always``. The data set is then a ``StreamData``: the sorted file list, no pixels.
The training loop asks for the same examples as from memory (``Batches``: epoch ``e``'s
seeded order, the step's global batch, this process's slice), so a streamed run is bitwise
the run it would be in memory, resumes exactly from any step, mid-epoch included, and each
DDP rank decodes only its own slice.

``Prefetch`` decodes the next steps' images in a pool of threads while the current step
trains (Pillow and torch's resize release the GIL). Threads, not DataLoader worker
processes: those send every batch through multiprocessing queues, i.e. pickled, and ganforge
unpickles nothing, anywhere. Memory holds the images of ``DEPTH + 1`` steps at most.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch

from ..errors import DataError
from . import TensorData, scale

DEPTH = 2  # steps decoded ahead of the one training


def ram_bytes() -> int:
    """Physical memory of this machine (0 if unknown)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def memory_budget(limit_gib: float | None) -> int:
    """``data.memory_limit`` in bytes; None: a quarter of RAM (4 GiB when RAM is unknown)."""
    if limit_gib is not None:
        return int(limit_gib * 2**30)
    return ram_bytes() // 4 or 4 * 2**30


class StreamedFileError(DataError):
    """A file of a streamed folder cannot be decoded when training reads it (removed, cut
    short, replaced since the run began). The message names the file; the training loop
    adds the checkpoint it saved and how to go on (engine/datacheck.py)."""

    def __init__(self, problem: str) -> None:
        super().__init__(
            f"{problem}; streamed images are decoded as training reads them: fix or restore "
            "the file and resume the run"
        )
        self.problem = problem


@dataclass(frozen=True)
class StreamData(TensorData):
    """An image folder read from disk batch by batch; ``x`` is an empty (0, C, S, S) tensor
    that carries the shape, dtype and device only."""

    streamed: ClassVar[bool] = True
    files: tuple[Path, ...] = ()
    root: Path = Path()
    size: int = 64
    channels: int = 3
    background: tuple[int, int, int] = (255, 255, 255)
    device: str = "cpu"
    _pool: list[ThreadPoolExecutor] = field(default_factory=list, compare=False, repr=False)

    def __len__(self) -> int:
        return len(self.files)

    def to(self, device: torch.device | str) -> StreamData:
        from dataclasses import replace

        return replace(self, x=self.x.to(device), device=str(device))

    def decode(self, path: Path) -> torch.Tensor:
        """One file as (C, S, S) uint8; a DataError naming it when it cannot be used."""
        from .folder import _try

        result = _try(path, self.size, self.channels, self.background)
        if isinstance(result, str):
            if not path.exists():
                result = "it is gone: removed or renamed since the run began"
            raise StreamedFileError(
                f"{self.root}: {path.relative_to(self.root)} cannot be used as an image ({result})"
            )
        return result.x

    def pool(self) -> ThreadPoolExecutor:
        """The decoding threads, made on first use."""
        from .folder import WORKERS

        if not self._pool:
            self._pool.append(ThreadPoolExecutor(WORKERS, thread_name_prefix="ganforge-decode"))
        return self._pool[0]

    def take(self, index: torch.Tensor) -> torch.Tensor:
        """uint8 (len(index), C, S, S) of the files at ``index``, decoded in the pool."""
        files = [self.files[i] for i in index.tolist()]
        return torch.stack(list(self.pool().map(self.decode, files)))

    def batch(self, index: torch.Tensor) -> torch.Tensor:
        """Examples at ``index`` as float32 in the model's range, on the data's device."""
        return scale(self.take(index).to(self.x.device), self.range)


class Prefetch:
    """The real images of step after step: ``indices(step)`` names them, threads decode
    ``DEPTH`` steps ahead. Steps asked out of order (resume, rollback) restart the queue."""

    def __init__(self, data: StreamData, indices: Callable[[int], torch.Tensor]) -> None:
        self.data, self.indices = data, indices
        self.pending: dict[int, list[Future[torch.Tensor]]] = {}
        self.pin = data.x.device.type == "cuda"

    def _submit(self, step: int) -> None:
        if step not in self.pending:
            files = [self.data.files[i] for i in self.indices(step).tolist()]
            self.pending[step] = [self.data.pool().submit(self.data.decode, f) for f in files]

    def at(self, step: int, total: int) -> torch.Tensor:
        """Step ``step``'s images as float32 in the model's range on the data's device."""
        for stale in [s for s in self.pending if s < step or s > step + DEPTH]:
            for f in self.pending.pop(stale):
                f.cancel()
        for ahead in range(step, min(step + DEPTH, total - 1) + 1):
            self._submit(ahead)
        x = torch.stack([f.result() for f in self.pending.pop(step)])
        if self.pin:
            x = x.pin_memory()
        return scale(x.to(self.data.x.device, non_blocking=True), self.data.range)
