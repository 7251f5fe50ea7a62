"""A 2-D data set from a file (``points``): ``--data points.npy`` or ``points.csv``.

A .npy file is read with ``np.load(allow_pickle=False)`` (an object array is refused, nothing
is unpickled); a .csv file holds one point per line, two numbers separated by a comma (a
header line of names is skipped). The points must be finite, shaped (N, 2), N >= 2. The
evaluator scores generated points against the pool's own mean and covariance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..config import DataConfig
from ..errors import DataError
from . import POINTS_FILE, Origin, TensorData, dataset

SUFFIXES = (".npy", ".csv")
FLOAT32_MAX = float(np.finfo(np.float32).max)  # about 3.4e38; larger values become inf


def read_points(path: Path) -> np.ndarray:
    """The (N, 2) float array in ``path`` (.npy or .csv); a DataError saying what is wrong."""
    skip = 0
    try:
        if path.suffix.lower() == ".npy":
            x = np.load(path, allow_pickle=False)
        else:
            with open(path, encoding="utf-8") as f:
                first = f.readline()
            try:
                [float(v) for v in first.split(",")]
                skip = 0
            except ValueError:  # a header line of column names
                skip = 1
            x = np.loadtxt(path, delimiter=",", skiprows=skip, ndmin=2, dtype=np.float64)
    except (ValueError, OSError, EOFError, UnicodeDecodeError) as e:
        why = f"{type(e).__name__}: {e}".replace("\n", " ")
        raise DataError(f"{path}: cannot read points ({why})") from None
    if x.dtype.kind not in "fiu" or x.ndim != 2 or x.shape[1] != 2:
        raise DataError(
            f"{path}: expected an (N, 2) array of numbers, got shape {x.shape} {x.dtype}"
        )
    if len(x) < 2:
        raise DataError(f"{path}: only {len(x)} point(s); a GAN learns from many")
    header = " (after the header line)" if path.suffix.lower() == ".csv" and skip else ""
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if len(bad):
        raise DataError(
            f"{path}: holds NaN or infinite values ({len(bad):,} row{'s' * (len(bad) > 1)}, "
            "the first row "
            f"{bad[0] + 1}{header}: {_row(x[bad[0]])}); remove those rows"
        )
    big = np.flatnonzero((np.abs(x) > FLOAT32_MAX).any(axis=1))
    if len(big):
        raise DataError(
            f"{path}: {len(big):,} {'row holds' if len(big) == 1 else 'rows hold'} values "
            f"beyond float32's limit of "
            f"{FLOAT32_MAX:.4g} (the first row {big[0] + 1}{header}: {_row(x[big[0]])}); "
            "training runs in float32 (bf16 has the same range): rescale the points, or "
            "remove those rows"
        )
    return x


def _row(values: np.ndarray) -> str:
    return ", ".join(f"{float(v):.4g}" for v in values)


@dataset(POINTS_FILE, (2,))
def points_file(cfg: DataConfig) -> TensorData:
    """The points of the file ``data.path`` as float32 (N, 2)."""
    if cfg.path is None:
        raise DataError("data.name=points reads a file: pass --data FILE.npy or FILE.csv")
    path = Path(cfg.path).expanduser()
    if not path.is_file() or path.suffix.lower() not in SUFFIXES:
        raise DataError(f"--data {cfg.path}: not a .npy or .csv file of (N, 2) points")
    x = torch.from_numpy(read_points(path).astype(np.float32))
    origin = Origin(f"the points file {path}", path.parent, (path,))
    return TensorData(x, None, f"{path} ({len(x):,} points)", origin=origin)
