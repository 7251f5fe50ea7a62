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
from . import POINTS_FILE, TensorData, dataset

SUFFIXES = (".npy", ".csv")


def read_points(path: Path) -> np.ndarray:
    """The (N, 2) float array in ``path`` (.npy or .csv); a DataError saying what is wrong."""
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
    if not np.isfinite(x).all():
        raise DataError(f"{path}: holds NaN or infinite values; remove those rows")
    return x


@dataset(POINTS_FILE, (2,))
def points_file(cfg: DataConfig) -> TensorData:
    """The points of the file ``data.path`` as float32 (N, 2)."""
    if cfg.path is None:
        raise DataError("data.name=points reads a file: pass --data FILE.npy or FILE.csv")
    path = Path(cfg.path).expanduser()
    if not path.is_file() or path.suffix.lower() not in SUFFIXES:
        raise DataError(f"--data {cfg.path}: not a .npy or .csv file of (N, 2) points")
    x = torch.from_numpy(read_points(path).astype(np.float32))
    return TensorData(x, None, f"{path} ({len(x):,} points)")
