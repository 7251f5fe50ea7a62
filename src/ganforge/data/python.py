"""Data handed over from Python (``ganforge.train(data=...)``): tensors, Datasets, DataLoaders.

Everything becomes one ``TensorData``: images as uint8 (N, C, H, W) (float images in the run's
range are kept as float), 2-D data as float (N, D), labels (N,) int64 when the items are
(x, y) pairs. Each refusal is one line that says what was expected.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..config import DataConfig
from ..errors import DataError

RANGES = {"tanh": (-1.0, 1.0), "unit": (0.0, 1.0)}
FLOAT32_MAX = float(torch.finfo(torch.float32).max)  # larger values become inf in float32
MAX_ITEMS_SHOWN = 3


def from_python(obj: Any, cfg: DataConfig) -> TensorData:
    """``obj`` (a tensor, numpy array, (x, y) tuple of those, Dataset or DataLoader) as a
    ``TensorData`` in the run's range ``cfg.range``."""
    from torch.utils.data import DataLoader, Dataset

    from . import TensorData

    if isinstance(obj, TensorData):
        return obj
    labels = None
    if isinstance(obj, tuple) and len(obj) == 2 and not isinstance(obj[0], (int, float)):
        obj, labels = obj
        labels = _labels(labels, "data=(x, y)")
    if isinstance(obj, DataLoader):
        x, labels = _collect(iter(obj), "DataLoader", batched=True)
        source = f"a DataLoader of {type(obj.dataset).__name__}"
    elif isinstance(obj, Dataset):
        if not hasattr(obj, "__len__"):
            raise DataError(
                "data=: an iterable Dataset has no length; pass a map-style Dataset, a "
                "DataLoader or a tensor"
            )
        x, labels = _collect((obj[i] for i in range(len(obj))), "Dataset", batched=False)  # type: ignore[arg-type]
        source = f"a {type(obj).__name__}"
    else:
        x = _tensor(obj, "data=")
        source = f"a {x.dtype} tensor"
    x = _check_range(x, cfg.range)
    if labels is not None and len(labels) != len(x):
        raise DataError(
            f"data=: {len(x)} examples but {len(labels)} labels; give one label per example"
        )
    return TensorData(x.contiguous(), labels, f"{source} from Python", cfg.range)


def _tensor(v: Any, what: str) -> torch.Tensor:
    """A tensor from a tensor, numpy array or PIL image; a one-line error otherwise."""
    if isinstance(v, torch.Tensor):
        return v.detach().cpu()
    if isinstance(v, np.ndarray):
        if v.dtype == object:
            raise DataError(f"{what}: a numpy array of Python objects; give numbers")
        return torch.from_numpy(np.ascontiguousarray(v))
    from PIL import Image

    if isinstance(v, Image.Image):
        from torchvision.transforms.v2 import functional as TF

        return TF.pil_to_tensor(v.convert("RGB") if v.mode not in ("L", "RGB") else v)
    raise DataError(
        f"{what}: got {type(v).__name__}; expected a tensor, a numpy array, a PIL image, "
        "a Dataset of those (or of (x, y) pairs) or a DataLoader"
    )


def _labels(v: Any, what: str) -> torch.Tensor:
    t = v if isinstance(v, torch.Tensor) else torch.as_tensor(v)
    if t.dtype.is_floating_point or t.dtype == torch.bool or t.dim() != 1:
        raise DataError(
            f"{what}: labels must be integers, one per example; got {t.dtype} {tuple(t.shape)}"
        )
    return t.long().cpu()


def _collect(items: Any, what: str, batched: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Stack a Dataset's items (or a DataLoader's batches): x, and y when items are pairs."""
    xs, ys = [], []
    pairs: bool | None = None
    for i, item in enumerate(items):
        if isinstance(item, (tuple, list)) and len(item) == 1:  # e.g. TensorDataset(x)
            item = item[0]
        is_pair = isinstance(item, (tuple, list)) and len(item) == 2
        if pairs is None:
            pairs = is_pair
        elif pairs != is_pair:
            raise DataError(
                f"data=: item {i} of the {what} is {'an' if is_pair else 'not an'} (x, y) "
                "pair unlike the first; make every item the same kind"
            )
        x = _tensor(item[0] if is_pair else item, f"data= ({what} item {i})")
        xs.append(x if batched else x.unsqueeze(0))
        if is_pair:
            y = item[1]
            y = torch.as_tensor(y)
            ys.append(_labels(y if batched else y.reshape(1), f"data= ({what} item {i})"))
    if not xs:
        raise DataError(f"data=: the {what} is empty; give at least one batch of examples")
    shapes = {tuple(x.shape[1:]) for x in xs}
    if len(shapes) > 1:
        shown = ", ".join(str(s) for s in sorted(shapes)[:MAX_ITEMS_SHOWN])
        raise DataError(
            f"data=: the {what}'s examples differ in shape ({shown}); resize them to one size "
            "(e.g. torchvision's Resize and CenterCrop)"
        )
    return torch.cat(xs), torch.cat(ys) if ys else None


def _check_range(x: torch.Tensor, range_: str) -> torch.Tensor:
    """uint8 images pass; float data must lie in the run's range (images) or be finite
    points (N, D); a one-line error names the range and the fix otherwise."""
    if x.dim() == 3:  # (N, H, W): one channel
        x = x.unsqueeze(1)
    if x.dim() not in (2, 4):
        raise DataError(
            f"data=: examples of shape {tuple(x.shape[1:])}; expected images (C, H, W) or "
            "(H, W), or points (D,)"
        )
    if x.dtype == torch.uint8:
        if x.dim() == 2:
            raise DataError("data=: uint8 points; give 2-D data as float (N, D)")
        return x
    if not (x.dtype.is_floating_point or x.dtype in (torch.int16, torch.int32, torch.int64)):
        raise DataError(f"data=: {x.dtype} data; give uint8 images or float images/points")
    if not bool(torch.isfinite(x).all()):
        raise DataError(
            f"data=: the data holds NaN or infinite values (the first in example "
            f"{_first(~torch.isfinite(x))}); clean them first"
        )
    if x.dtype.is_floating_point and x.dtype.itemsize > 4:  # float64: may not fit float32
        over = x.abs() > FLOAT32_MAX
        if bool(over.any()):
            i = _first(over)
            raise DataError(
                f"data=: example {i} holds {float(x[i][over[i]].reshape(-1)[0]):.4g}, beyond "
                f"float32's limit of {FLOAT32_MAX:.4g} (training runs in float32; bf16 has the "
                "same range); rescale the data"
            )
    x = x.float()
    if x.dim() == 2:
        return x  # points: any finite values
    lo, hi = RANGES[range_]
    got_lo, got_hi = float(x.min()), float(x.max())
    tol = 1e-4
    if got_lo < lo - tol or got_hi > hi + tol:
        hint = "pass uint8 images in [0, 255]"
        if got_lo >= -tol and got_hi <= 255 + tol and math.isclose(round(got_hi), got_hi):
            hint = "these look like 0-255 values: pass them as uint8"
        raise DataError(
            f"data=: float images span [{got_lo:.3g}, {got_hi:.3g}], outside the run's range "
            f"[{lo:g}, {hi:g}] (data.range={range_}); scale them, {hint}, or set data.range"
        )
    return x.clamp_(lo, hi)


def _first(mask: torch.Tensor) -> int:
    """The index of the first example with any True in ``mask`` (N, ...)."""
    return int(mask.reshape(len(mask), -1).any(1).nonzero()[0, 0])


from . import TensorData, dataset  # noqa: E402  (the package imports this module lazily)


@dataset("python", ())
def load_python(cfg: DataConfig) -> TensorData:
    """A run trained on data given from Python has no files to read again."""
    raise DataError(
        "this run's data was given from Python (ganforge.train(data=...)); pass the data "
        "again (ganforge.load(run).resume(data=...)) or set data.name and --data"
    )
