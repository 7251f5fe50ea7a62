"""Metrics of image samples: FD, precision/recall, classifier IS, class coverage, evaluators."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ganforge.data import TensorData
from ganforge.errors import GanforgeError
from ganforge.metrics import classify, features, frechet, precision_recall

FMNIST = Path("/usr/share/datasets/fashion-mnist")


def shapes(n: int, seed: int) -> torch.Tensor:
    """Synthetic 'garments': n uint8 1x28x28 images of 10 kinds of sharp-edged silhouettes."""
    gen = torch.Generator().manual_seed(seed)
    cls = torch.arange(n) % 10
    yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    w = 3 + cls.float() + torch.rand(n, generator=gen) * 2  # half width grows with the class
    h = 12 - cls.float() * 0.8 + torch.rand(n, generator=gen) * 2
    cx = 14 + torch.randn(n, generator=gen)
    cy = 14 + torch.randn(n, generator=gen)
    box = ((xx - cx.view(n, 1, 1)).abs() <= w.view(n, 1, 1)) & (
        (yy - cy.view(n, 1, 1)).abs() <= h.view(n, 1, 1)
    )
    stripes = (yy.long() // (1 + cls.view(n, 1, 1) % 4)) % 2 == 0  # class-dependent texture
    level = 120 + 100 * stripes.float() + 15 * torch.randn(n, 28, 28, generator=gen)
    return (box * level).clamp(0, 255).byte().unsqueeze(1)


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    from torchvision.transforms.v2 import functional as TF

    if sigma == 0:
        return x
    k = 2 * math.ceil(3 * sigma) + 1
    return TF.gaussian_blur(x, [k, k], [sigma, sigma])


@pytest.fixture(scope="module")
def evaluator() -> features.Evaluator:
    return features.load_evaluator("fashion-mnist")


# ---------------------------------------------------------------- the Frechet formula


def _tr_sqrt_2x2(m: np.ndarray) -> float:
    """tr sqrt(M) of a 2x2 matrix with positive eigenvalues: sqrt(tr M + 2 sqrt(det M))."""
    return math.sqrt(np.trace(m) + 2 * math.sqrt(np.linalg.det(m)))


def test_fd_matches_a_hand_computed_value_for_2x2_gaussians():
    mu1, mu2 = np.array([0.0, 1.0]), np.array([1.0, -1.0])
    s1 = np.array([[2.0, 0.5], [0.5, 1.0]])
    s2 = np.array([[1.0, -0.3], [-0.3, 0.5]])
    expected = 1 + 4 + np.trace(s1) + np.trace(s2) - 2 * _tr_sqrt_2x2(s1 @ s2)
    assert frechet.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-10)
    # symmetric, and zero for equal Gaussians
    assert frechet.frechet_distance(mu2, s2, mu1, s1) == pytest.approx(expected, rel=1e-10)
    assert frechet.frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0, abs=1e-10)


def test_fd_of_diagonal_gaussians_is_the_closed_form():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    got = frechet.frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
    assert got == pytest.approx(expected, rel=1e-9)


def test_fd_from_samples_and_singular_covariances():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(20_000, 4, generator=gen, dtype=torch.float64)
    shift = torch.tensor([0.5, 0.0, 0.0, 1.0], dtype=torch.float64)
    assert frechet.fd(x, x) == pytest.approx(0, abs=1e-9)
    assert frechet.fd(x, x + shift) == pytest.approx(1.25, rel=1e-6)  # |shift|^2
    assert frechet.fd(x, 2 * x) == pytest.approx(4 * 1.0, rel=0.05)  # sum (1 - 2)^2 over 4 dims
    dead = x.clone()
    dead[:, 2:] = 0  # dead units: a singular covariance stays finite and real
    assert frechet.fd(dead, dead) == pytest.approx(0, abs=1e-9)
    assert math.isfinite(frechet.fd(x, dead))


# ---------------------------------------------------------------- precision and recall


def test_precision_recall_real_vs_real_near_one_and_failures_detected():
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(1000, 8, generator=gen)
    other = torch.randn(1000, 8, generator=gen)
    pr = precision_recall.precision_recall(real, other)
    assert pr["precision"] > 0.85 and pr["recall"] > 0.85  # k=3 in 8-D: about 0.9
    collapsed = 0.05 * torch.randn(1000, 8, generator=gen)  # all samples near the mode
    pr = precision_recall.precision_recall(real, collapsed)
    assert pr["precision"] > 0.95 and pr["recall"] < 0.2
    shifted = other + 5.0  # samples off the real manifold
    assert precision_recall.precision_recall(real, shifted)["precision"] < 0.05


def test_knn_radius_is_the_kth_neighbour_excluding_itself():
    x = torch.tensor([[0.0], [1.0], [3.0], [6.0], [10.0]])
    # for 0: neighbours at 1, 3, 6 -> the 3rd is 6
    assert precision_recall.knn_radii(x, 3).tolist() == [6.0, 5.0, 3.0, 5.0, 9.0]


# ---------------------------------------------------------------- class predictions


def test_inception_score_bounds():
    k = 10
    confident_diverse = F.one_hot(torch.arange(1000) % k, k).double()
    assert classify.inception_score(confident_diverse) == pytest.approx(k, rel=1e-6)
    one_class = F.one_hot(torch.zeros(1000, dtype=torch.long), k).double()
    assert classify.inception_score(one_class) == pytest.approx(1.0, abs=1e-6)
    unsure = torch.full((1000, k), 1 / k, dtype=torch.float64)
    assert classify.inception_score(unsure) == pytest.approx(1.0, abs=1e-6)


def test_one_class_generator_has_coverage_one_and_high_kl():
    real = F.one_hot(torch.arange(1000) % 10, 10).double()
    one = F.one_hot(torch.full((1000,), 7), 10).double()
    c = classify.class_coverage(one, real)
    assert c["coverage"] == 1 and c["classes_expected"] == 10
    assert c["class_kl"] == pytest.approx(math.log(10), rel=0.01)
    assert c["class_hist"][7] == 1.0
    same = classify.class_coverage(real.flip(0), real)
    assert same["coverage"] == 10 and same["class_kl"] < 1e-3
    half = F.one_hot(torch.arange(1000) % 5, 10).double()  # half the classes
    assert classify.class_coverage(half, real)["coverage"] == 5


def test_coverage_expects_only_the_classes_of_a_filtered_data_set():
    ships = F.one_hot(torch.full((500,), 8), 10).double()
    c = classify.class_coverage(ships, ships)
    assert (c["coverage"], c["classes_expected"]) == (1, 1) and c["class_kl"] < 0.05


# ---------------------------------------------------------------- the evaluator's features


def test_shipped_evaluator_is_verified_and_small(evaluator):
    meta = json.loads((features.shipped_dir() / "fashion-mnist.json").read_text())
    assert evaluator.meta["sha256"] == meta["sha256"]
    assert evaluator.path.stat().st_size < 2_000_000
    assert meta["test_accuracy"] >= 0.9 and meta["feature_dim"] == features.FEATURES
    assert evaluator.describe()["sha256"] == meta["sha256"]


def test_fd_separates_real_from_noise_and_grows_with_blur_and_noise(evaluator):
    a, _ = evaluator.features(shapes(600, seed=1))
    b_images = shapes(600, seed=2)
    b, _ = evaluator.features(b_images)
    noise = torch.randint(0, 256, b_images.shape, generator=torch.Generator().manual_seed(0))
    fd_real = frechet.fd(a, b)
    fd_noise = frechet.fd(a, evaluator.features(noise.byte())[0])
    assert fd_real * 20 < fd_noise
    blurred = [frechet.fd(a, evaluator.features(blur(b_images, s))[0]) for s in (0, 0.7, 1.4, 2.5)]
    assert blurred == sorted(blurred) and blurred[-1] > 5 * fd_real
    gen = torch.Generator().manual_seed(1)
    noised = []
    for amount in (0, 30, 60, 120):
        x = b_images.float() + amount * torch.randn(b_images.shape, generator=gen)
        noised.append(frechet.fd(a, evaluator.features(x.clamp(0, 255).byte())[0]))
    assert noised == sorted(noised) and noised[-1] > 5 * fd_real


def test_identical_inputs_give_identical_numbers(evaluator):
    x = shapes(300, seed=3)
    f1, p1 = evaluator.features(x)
    f2, p2 = evaluator.features(x.clone(), batch=128)  # batching must not matter (eval mode)
    assert torch.allclose(f1, f2, atol=1e-5) and torch.allclose(p1, p2, atol=1e-6)
    y, _ = evaluator.features(shapes(300, seed=4))
    assert frechet.fd(f1, y) == frechet.fd(f1.clone(), y.clone())
    assert precision_recall.precision_recall(f1, y) == precision_recall.precision_recall(f1, y)


def test_to_shape_converts_channels_and_size():
    rgb = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    rgb[:, 1] = 200  # pure green -> luminance 0.587 * 200
    gray = features.to_shape(rgb, (1, 28, 28))
    assert gray.shape == (2, 1, 28, 28) and gray.dtype == torch.uint8
    assert int(gray[0, 0, 14, 14]) == round(0.587 * 200)
    assert features.to_shape(gray, (3, 28, 28)).shape == (2, 3, 28, 28)


def test_missing_and_corrupted_evaluators_are_one_line_errors(tmp_path, monkeypatch):
    with pytest.raises(GanforgeError, match="ganforge evaluator train --dataset cifar10"):
        features.load_evaluator("cifar10")
    copy = tmp_path / "shipped"
    shutil.copytree(features.shipped_dir(), copy)
    weights = copy / "fashion-mnist.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    monkeypatch.setattr(features, "shipped_dir", lambda: copy)
    with pytest.raises(GanforgeError, match="SHA-256"):
        features.load_evaluator("fashion-mnist")


def test_training_is_deterministic_and_learns(tmp_path, monkeypatch):
    x = shapes(320, seed=5)
    labels = torch.arange(320) % 10
    train = TensorData(x[:256], labels[:256], "synthetic")
    test = TensorData(x[256:], labels[256:], "synthetic")
    protocol = {"epochs": 2, "batch_size": 32}
    net1, meta1 = features.train_classifier(train, test, 10, protocol, log=lambda s: None)
    net2, _ = features.train_classifier(train, test, 10, protocol, log=lambda s: None)
    for (k, v1), v2 in zip(net1.state_dict().items(), net2.state_dict().values(), strict=True):
        assert torch.equal(v1, v2), k
    assert meta1["test_accuracy"] > 0.5  # chance is 0.1
    path = features.save_evaluator(net1, meta1, tmp_path, "toy")
    monkeypatch.setattr(features, "evaluator_dirs", lambda: [tmp_path])
    ev = features.load_evaluator("toy")
    assert ev.path == path and ev.shape == (1, 28, 28)
    before = features.Evaluator(net1, meta1, path).features(x[:50])[0]
    assert torch.allclose(ev.features(x[:50])[0], before)


@pytest.mark.skipif(not FMNIST.is_dir(), reason="real Fashion-MNIST is not installed")
def test_real_fashion_mnist_floor(evaluator):
    from ganforge.config import DataConfig
    from ganforge.data import load_data

    test = load_data(DataConfig(name="fashion-mnist", path=str(FMNIST), split="test")).x[:1000]
    train = load_data(DataConfig(name="fashion-mnist", path=str(FMNIST))).x[:1000]
    ft, pt = evaluator.features(test)
    fr, _ = evaluator.features(train)
    noise = torch.randint(0, 256, test.shape, generator=torch.Generator().manual_seed(0))
    floor = frechet.fd(ft, fr)
    assert floor * 50 < frechet.fd(ft, evaluator.features(noise.byte())[0])
    pr = precision_recall.precision_recall(ft, fr)
    assert pr["precision"] > 0.6 and pr["recall"] > 0.6
    assert classify.inception_score(pt) > 7
    blurred = [frechet.fd(ft, evaluator.features(blur(train, s))[0]) for s in (0, 0.7, 1.4)]
    assert blurred == sorted(blurred)
