"""Inception FID, KID and IS through torch-fidelity (its "inception-v3-compat" extractor).

torch-fidelity reproduces the TensorFlow Inception of the original FID code. Its weights
(``weights-inception-2015-12-05-6726825d.pth``, about 95 MB) come from, in order:
``--inception-weights PATH``, torch's hub cache (``$TORCH_HOME/hub/checkpoints``, filled by
an earlier download), or a download when the host is reachable. Offline and without weights,
``resolve_weights`` raises a one-line GanforgeError at once, before any sample is made.

Images of any size and 1 or 3 channels are accepted (gray is repeated to RGB); torch-fidelity
resizes them to 299x299 itself. On CPU this is slow: about 6 GFLOPs per image.

Nothing is unpickled: torch-fidelity and torch's hub load weights with ``weights_only=False``,
so ``import ganforge`` sets ``TORCH_FORCE_WEIGHTS_ONLY_LOAD`` (every ``torch.load`` in the
process then admits tensors and plain containers only), and ``check_weights`` reads the file
once itself first, so a file that is not plain tensors gets a one-line error naming it.
Inputs are handed over as datasets or absolute folder paths, never as names of
torch-fidelity's registered data sets (whose loaders unpickle CIFAR-10 through torchvision).
"""

from __future__ import annotations

import socket
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch.utils.data import Dataset

from ..checkpoint import sha256_file
from ..errors import GanforgeError

WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + WEIGHTS_FILE
EXTRACTOR = "inception-v3-compat"
INCEPTION_METRICS = ("fid", "kid", "inception-is")
MAX_WEIGHTS_BYTES = 1 << 30  # the real file is 95 MB


class _Images(Dataset):
    """uint8 (N, C, H, W) images as torch-fidelity wants them: (3, H, W) uint8 items."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> torch.Tensor:
        img = self.x[i]
        return img.expand(3, -1, -1).contiguous() if img.shape[0] == 1 else img


def online(url: str = WEIGHTS_URL, timeout: float = 3.0) -> bool:
    """Whether the weights' host answers a TCP connection within ``timeout`` seconds."""
    host = urlparse(url).hostname or ""
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def hub_weights() -> Path:
    """Where torch's hub keeps a downloaded copy of the weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE


def check_weights(path: Path, how: str = "--inception-weights") -> Path:
    """Read a weights file as plain tensors (``weights_only=True`` or safetensors) and return
    its path, or raise a one-line GanforgeError: a pickle that names any other global (code)
    is refused before anything in it is called."""
    import pickle

    if path.stat().st_size > MAX_WEIGHTS_BYTES:
        raise GanforgeError(f"{how} {path}: larger than any Inception weights file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            with warnings.catch_warnings():  # torch warns about pickle protocols it reads
                warnings.simplefilter("ignore")
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=False)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        named = [ln for ln in lines if ln.lower().startswith(("unsupported", "trying to load"))]
        why = (named or lines or [type(e).__name__])[0].removeprefix("Trying to load ")
        why = why[:160]
        raise GanforgeError(
            f"{how} {path}: not a file of plain tensors ({why}); use torch-fidelity's "
            f"{WEIGHTS_FILE}"
        ) from None
    except Exception as e:  # untrusted bytes: any failure of the reader means not weights
        raise GanforgeError(f"{how} {path}: not a weights file ({type(e).__name__})") from None
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()
    ):
        raise GanforgeError(f"{how} {path}: not a mapping of names to tensors (a state dict)")
    return path


def resolve_weights(path: str | Path | None, instead: str | None = None) -> Path | None:
    """The weights file to use; None means download. Fails at once when that cannot work,
    in one line saying what is missing and how to get it, then ``instead``: what else can
    score the run's data, or that nothing else can."""
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise GanforgeError(f"--inception-weights {path}: no such file")
        return check_weights(p)
    if hub_weights().is_file():
        return check_weights(hub_weights(), "torch's hub cache:")
    if not online():
        raise GanforgeError(
            f"Inception metrics need torch-fidelity's Inception weights (about 95 MB), which "
            f"are not in {hub_weights().parent} and this machine is offline; download "
            f"{WEIGHTS_URL} where you are online and pass --inception-weights PATH (or copy "
            f"the file into that folder)" + (f"; {instead}" if instead else "")
        )
    return None


def inception_metrics(
    fake: torch.Tensor | str,
    real: torch.Tensor | str,
    metrics: tuple[str, ...],
    weights: Path | None,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """FID / KID / IS of ``fake`` against ``real``: uint8 (N, C, H, W) images or image folders.

    Returns {"fid", "kid", "kid_std", "inception_is", "inception_is_std"} for those asked.
    """
    import torch_fidelity

    def as_input(x: torch.Tensor | str) -> Any:
        if not isinstance(x, (str, Path)):
            return _Images(x.cpu())
        folder = Path(x).resolve()  # absolute: never one of torch-fidelity's registered names
        if not folder.is_dir():
            raise GanforgeError(f"{x}: no such folder of images")
        return str(folder)

    sizes = [len(x) for x in (fake, real) if torch.is_tensor(x)]
    try:
        out = torch_fidelity.calculate_metrics(
            input1=as_input(fake),
            input2=as_input(real),
            fid="fid" in metrics,
            kid="kid" in metrics,
            isc="inception-is" in metrics,
            feature_extractor=EXTRACTOR,
            feature_extractor_weights_path=None if weights is None else str(weights),
            kid_subset_size=min([1000, *sizes]),
            cuda=torch.device(device).type == "cuda",
            cache=False,
            save_cpu_ram=True,  # no DataLoader worker processes (4 of them on 2 cores)
            verbose=False,
        )
    except (ValueError, RuntimeError, OSError) as e:
        raise GanforgeError(f"Inception metrics failed: {str(e).splitlines()[0]}") from None
    names = {
        "frechet_inception_distance": "fid",
        "kernel_inception_distance_mean": "kid",
        "kernel_inception_distance_std": "kid_std",
        "inception_score_mean": "inception_is",
        "inception_score_std": "inception_is_std",
    }
    return {names[k]: float(v) for k, v in out.items() if k in names}


def describe(weights: Path | None) -> dict[str, Any]:
    """The protocol entry of metrics.json for the Inception extractor."""
    import torch_fidelity

    path = weights if weights is not None else hub_weights()
    return {
        "name": f"torch-fidelity {torch_fidelity.__version__} {EXTRACTOR}",
        "sha256": sha256_file(path) if path.is_file() else None,
        "file": str(path),
        "kid_subset_size": "min(1000, n)",
        "inception_is_splits": 10,
    }
