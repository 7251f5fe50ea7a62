"""Seeds and devices: the leaf that every part of ganforge may import.

All randomness of a run is a pure function of ``train.seed``: independent streams are mixed
from (seed, stream number, step or epoch, ...), so a resumed run, another process of a
distributed job, or an evaluation later on draws exactly what an uninterrupted run would.
"""

from __future__ import annotations

import numpy as np
import torch

from .errors import ArgumentError, ConfigError

# Independent random streams derived from the one seed.
STREAM_INIT, STREAM_ORDER, STREAM_NOISE, STREAM_SAMPLE, STREAM_EVAL, STREAM_AUG = 0, 1, 2, 3, 4, 5


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers, well mixed (numpy's SeedSequence)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, np.uint64)[0] >> 1)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when visible, else CPU; ``cuda`` without a GPU is a one-line error,
    as is a name other than auto, cpu, cuda or cuda:N."""
    import re

    if not isinstance(name, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", name):
        raise ArgumentError(f"device={name!r}: choose auto, cpu, cuda or cuda:N")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            "train.device: cuda was asked for but no CUDA GPU is visible; use --device cpu or auto"
        )
    return torch.device(name)


def epoch_order(seed: int, epoch: int, n: int, shuffle: bool) -> torch.Tensor:
    """Example indices of epoch ``epoch`` (0-based): a permutation seeded by (seed, epoch)."""
    if not shuffle:
        return torch.arange(n)
    gen = torch.Generator().manual_seed(mix_seed(seed, STREAM_ORDER, epoch))
    return torch.randperm(n, generator=gen)


# ``sync_free``: the one switch of the host decisions a training step may take. None: by the
# device; True / False: forced (tests run the accelerator path on the CPU with True).
SYNC_FREE: bool | None = None


def sync_free(device: torch.device | str) -> bool:
    """Whether a training step on ``device`` must not read device values on the host.

    On the CPU reading a tensor's value costs nothing, so the step may decide on the host
    (check the losses every step, augment only the chosen images, check the labels); on an
    accelerator each such read waits for the device, so there these decisions are left to
    the log steps or done without a read. Every such branch asks this function, so that
    setting ``SYNC_FREE = True`` runs the accelerator path on the CPU
    (tests/test_host_sync.py counts its host reads: none between log steps).
    """
    if SYNC_FREE is not None:
        return SYNC_FREE
    return torch.device(device).type != "cpu"
