"""The domain classifier ("evaluator") of a labelled data set: its net, training, storage, lookup.

A small CNN trained on the real training split gives two things for generated images: a
feature vector (the penultimate layer, ``FEATURES`` wide) for Frechet distance and
precision/recall, and class probabilities for the classifier Inception Score and class
coverage. Training is deterministic (fixed seed, order and protocol), and the weights are
stored as safetensors beside a JSON of the protocol, test accuracy and the file's SHA-256.

Lookup order for data set ``NAME``: the weights shipped in ``ganforge/evaluators/`` (so
numbers are comparable everywhere), then ``cache_dir()/evaluators/`` (where
``ganforge evaluator train`` writes).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import nn

from ..checkpoint import check_tensors, sha256_file
from ..data import TensorData, cache_dir, scale
from ..errors import GanforgeError
from ..files import load_json
from ..runfiles import atomic_write_bytes, atomic_write_text, check_output

ARCH = "ganforge-cnn-v1"
FEATURES = 128  # width of the feature layer: FD over 128 dimensions takes milliseconds

# The training protocol; part of the evaluator's identity (written into its JSON).
PROTOCOL: dict[str, Any] = {
    "seed": 0,
    "epochs": 5,
    "batch_size": 128,
    "optimizer": "adamw",
    "lr": 2e-3,
    "schedule": "one-cycle (cosine), 20% warm-up",
    "weight_decay": 5e-4,
    "augment": "random shift by up to 2 pixels",
    "split": "train",
}


class Classifier(nn.Module):
    """Three strided conv blocks (32 k5 s2, 64 k3 s2, 128 k3 s2; each BN, ReLU), a 4x4
    adaptive average pool, a ``features``-wide fully connected layer (the feature layer, after
    ReLU), dropout, then the class logits. 28x28 -> 14 -> 7 -> 4; 32x32 -> 16 -> 8 -> 4.

    Strided convolutions rather than max-pooling: about 2.5 M multiply-adds per 28x28 image,
    so 10,000 images take seconds on two CPU cores.
    """

    def __init__(self, channels: int, classes: int = 10, features: int = FEATURES) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        width_in = channels
        for width, k in ((32, 5), (64, 3), (128, 3)):
            blocks += [
                nn.Conv2d(width_in, width, k, stride=2, padding=k // 2, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            width_in = width
        self.body = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(4), nn.Flatten())
        self.feature = nn.Sequential(nn.Linear(128 * 16, features), nn.ReLU(inplace=True))
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(features, classes)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(features (N, F), logits (N, classes)) of images scaled to [-1, 1]."""
        f = self.feature(self.body(x))
        return f, self.head(self.drop(f))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[1]


@dataclass
class Evaluator:
    """A trained classifier with its identity: data set, input shape, SHA-256, protocol."""

    net: Classifier
    meta: dict[str, Any]  # the JSON: dataset, input_shape, classes, sha256, test_accuracy, ...
    path: Path

    @property
    def name(self) -> str:
        return f"{ARCH}/{self.meta['dataset']}"

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.meta["input_shape"])  # type: ignore[return-value]

    def describe(self) -> dict[str, Any]:
        """The protocol entry of metrics.json: which network, which weights."""
        return {
            "name": self.name,
            "sha256": self.meta["sha256"],
            "test_accuracy": self.meta["test_accuracy"],
            "file": str(self.path),
        }

    @torch.no_grad()
    def features(
        self, images: torch.Tensor, batch: int = 1000
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(features (N, F) float64, probabilities (N, classes) float64) of uint8 images.

        Images of another shape are converted first (channels, then a bilinear resize) so that
        real and generated images go through the same path.
        """
        self.net.eval()
        device = next(self.net.parameters()).device
        feats, probs = [], []
        for chunk in images.split(batch):
            x = scale(to_shape(chunk, self.shape).to(device))
            f, logits = self.net.forward_features(x)
            feats.append(f.double().cpu())
            probs.append(torch.softmax(logits.double(), 1).cpu())
        return torch.cat(feats), torch.cat(probs)


def to_shape(x: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """uint8 images (N, C, H, W) converted to the evaluator's (C, H, W)."""
    c, h, w = shape
    if x.shape[1] != c:
        if c == 1:  # RGB -> luminance (ITU-R 601), as torchvision's grayscale
            weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            x = (x.float() * weights).sum(1, keepdim=True).round().clamp(0, 255).byte()
        else:
            x = x.expand(-1, c, -1, -1)
    if tuple(x.shape[-2:]) != (h, w):
        y = F.interpolate(x.float(), size=(h, w), mode="bilinear", antialias=True)
        x = y.round().clamp(0, 255).byte()
    return x


# ---------------------------------------------------------------- training


def _shift(x: torch.Tensor, gen: torch.Generator, pad: int = 2) -> torch.Tensor:
    """Shift each image of a float batch by up to ``pad`` pixels (zero fill, here -1)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), value=-1.0)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    rows = (dy.view(n, 1) + torch.arange(h).view(1, h)).view(n, 1, h, 1)
    cols = (dx.view(n, 1) + torch.arange(w).view(1, w)).view(n, 1, 1, w)
    idx_n = torch.arange(n).view(n, 1, 1, 1)
    idx_c = torch.arange(x.shape[1]).view(1, -1, 1, 1)
    return padded[idx_n, idx_c, rows, cols]


def accuracy(net: Classifier, data: TensorData, batch: int = 1000) -> float:
    """Top-1 accuracy of ``net`` on labelled uint8 images."""
    net.eval()
    correct = 0
    assert data.labels is not None  # the evaluator's data sets are labelled
    with torch.no_grad():
        for x, y in zip(data.x.split(batch), data.labels.split(batch), strict=True):
            correct += int((net(scale(x)).argmax(1) == y).sum())
    return correct / len(data)


def train_classifier(
    train: TensorData,
    test: TensorData,
    classes: int,
    protocol: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
) -> tuple[Classifier, dict[str, Any]]:
    """Train the classifier on ``train`` by ``protocol``; return it and its metadata."""
    p = {**PROTOCOL, **(protocol or {})}
    if train.labels is None or test.labels is None:
        raise GanforgeError("the evaluator needs a labelled data set")
    torch.manual_seed(p["seed"])
    gen = torch.Generator().manual_seed(p["seed"])
    net = Classifier(train.x.shape[1], classes)
    opt = torch.optim.AdamW(net.parameters(), lr=p["lr"], weight_decay=p["weight_decay"])
    steps_per_epoch = len(train) // p["batch_size"]
    if steps_per_epoch == 0:
        raise GanforgeError(
            f"{len(train)} training images are fewer than one batch ({p['batch_size']})"
        )
    total_steps = p["epochs"] * steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(  # warm-up: 20% of the steps, at least 2
        opt, p["lr"], total_steps=total_steps, pct_start=min(0.5, max(0.2, 2 / total_steps))
    )
    t0 = time.perf_counter()
    for epoch in range(p["epochs"]):
        net.train()
        order = torch.randperm(len(train), generator=gen)
        total = 0.0
        for i in range(steps_per_epoch):
            idx = order[i * p["batch_size"] : (i + 1) * p["batch_size"]]
            x = _shift(scale(train.x[idx]), gen)
            loss = F.cross_entropy(net(x), train.labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        log(
            f"epoch {epoch + 1}/{p['epochs']}: loss {total / steps_per_epoch:.4f}, "
            f"{time.perf_counter() - t0:.0f} s"
        )
    net.eval()
    acc = accuracy(net, test)
    meta = {
        "arch": ARCH,
        "input_shape": list(train.x.shape[1:]),
        "classes": classes,
        "feature_dim": FEATURES,
        "protocol": p,
        "train_examples": len(train),
        "test_examples": len(test),
        "test_accuracy": round(acc, 4),
        "train_time_s": round(time.perf_counter() - t0, 1),
        "threads": torch.get_num_threads(),  # float sums differ slightly with the count
        "torch": torch.__version__,
    }
    return net, meta


# ---------------------------------------------------------------- storage and lookup


def save_evaluator(net: Classifier, meta: dict[str, Any], folder: Path, dataset: str) -> Path:
    """Write ``folder/DATASET.safetensors`` and its JSON (with the file's SHA-256)."""
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / f"{dataset}.safetensors"
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    # made in memory, written atomically: a full disk gives one line, never half a file
    atomic_write_bytes(
        weights, safetensors_bytes(state, metadata={"arch": ARCH, "dataset": dataset})
    )
    meta = {"dataset": dataset, **meta, "sha256": sha256_file(weights)}
    atomic_write_text(folder / f"{dataset}.json", json.dumps(meta, indent=1) + "\n")
    return weights


def shipped_dir() -> Path:
    """The folder of the evaluators that ship with the package."""
    return Path(str(resources.files("ganforge") / "evaluators"))


def evaluator_dirs() -> list[Path]:
    """Where evaluators are looked for, in order."""
    return [shipped_dir(), cache_dir() / "evaluators"]


def load_evaluator(dataset: str, device: torch.device | str = "cpu") -> Evaluator:
    """The evaluator of ``dataset``, verified against its SHA-256; a GanforgeError if none."""
    for folder in evaluator_dirs():
        weights, info = folder / f"{dataset}.safetensors", folder / f"{dataset}.json"
        if not (weights.is_file() and info.is_file()):
            continue
        retrain = f"delete it and run 'ganforge evaluator train --dataset {dataset}'"
        try:
            meta = load_json(info.read_bytes())
        except (OSError, ValueError):
            meta = None
        shape = meta.get("input_shape") if isinstance(meta, dict) else None
        sizes = [shape[0] if isinstance(shape, list) and shape else None]
        if isinstance(meta, dict) and shape:
            sizes += [meta.get(k) for k in ("classes", "feature_dim")]
        if (
            not isinstance(meta, dict)
            or len(sizes) != 3
            or not all(type(v) is int and 0 < v <= 100_000 for v in sizes)
        ):
            raise GanforgeError(f"{info} is damaged (not the evaluator's JSON); {retrain}")
        if sha256_file(weights) != meta.get("sha256"):
            raise GanforgeError(f"{weights} fails its SHA-256 check (corrupted); {retrain}")
        net = Classifier(*(int(v or 0) for v in sizes))
        try:
            state = load_file(weights)
            check_tensors(weights, state, net)
            net.load_state_dict(state)
        except (SafetensorError, RuntimeError, OSError, GanforgeError) as e:
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise GanforgeError(
                f"{weights}: cannot read the evaluator ({why}); {retrain}"
            ) from None
        return Evaluator(net.to(device).eval(), meta, weights)
    raise GanforgeError(
        f"no evaluator (domain classifier) for data set {dataset!r}; train one with "
        f"'ganforge evaluator train --dataset {dataset}', or ask for Inception metrics "
        "with --metrics fid,kid,inception-is"
    )


def has_evaluator(dataset: str) -> bool:
    """Whether ``load_evaluator(dataset)`` would find weights (without loading them)."""
    return any((d / f"{dataset}.safetensors").is_file() for d in evaluator_dirs())


def build_evaluator(
    dataset: str,
    data_path: str | None = None,
    out: Path | None = None,
    protocol: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Train the evaluator of ``dataset`` on its train split, test it, save it; return its path.

    ``out`` defaults to ``cache_dir()/evaluators``. Images are used at their stored shape.
    """
    from ..config import DataConfig
    from ..data import load_data

    folder = out or cache_dir() / "evaluators"
    check_output(folder, f"--out {folder}", folder=True)  # before any work
    base = DataConfig(name=dataset, path=data_path)
    train = load_data(replace(base, split="train"))
    test = load_data(replace(base, split="test"))
    if not train.is_image or train.labels is None or test.labels is None:
        raise GanforgeError(f"{dataset} is not a labelled image data set; no evaluator for it")
    classes = int(max(train.labels.max(), test.labels.max())) + 1
    log(f"training the {ARCH} evaluator of {dataset} on {len(train):,} images ({train.source})")
    net, meta = train_classifier(train, test, classes, protocol, log)
    path = save_evaluator(net, meta, folder, dataset)
    log(f"test accuracy {meta['test_accuracy']:.2%} on {len(test):,} images; wrote {path}")
    return path
