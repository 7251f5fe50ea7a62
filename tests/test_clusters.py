"""Self-conditioning (model.clusters): k-means clusters as labels, drawn by size at sampling."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import ganforge
from ganforge.config import load_config
from ganforge.data.clusters import find_clusters, with_clusters
from ganforge.errors import ConfigError
from ganforge.nets.cond import SelfConditioned

from runhelpers import tiny_images


def _blobs(n: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """Three tight 2-D blobs of n points each, far apart, and which blob each point is in."""
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    truth = torch.arange(3).repeat_interleave(n)
    return centres[truth] + 0.1 * torch.randn(3 * n, 2, generator=gen), truth


def test_k_means_finds_separated_groups_the_same_way_every_time():
    x, truth = _blobs()
    found = find_clusters(x, 3, seed=0)
    assert sorted(found.sizes.tolist()) == [100, 100, 100]
    for k in range(3):  # every blob is one cluster
        assert found.labels[truth == k].unique().numel() == 1
    assert torch.equal(found.labels, find_clusters(x, 3, seed=0).labels)


def test_images_cluster_by_their_pixels():
    gen = torch.Generator().manual_seed(1)
    dark = torch.randint(0, 40, (50, 3, 28, 28), generator=gen, dtype=torch.uint8)
    light = torch.randint(200, 256, (70, 3, 28, 28), generator=gen, dtype=torch.uint8)
    found = find_clusters(torch.cat([dark, light]), 2, seed=0)
    assert found.labels[:50].unique().numel() == 1 and found.labels[50:].unique().numel() == 1
    assert sorted(found.sizes.tolist()) == [50, 70]


class _Echo(torch.nn.Module):
    """A conditional 'G' that returns the label it was given (and z, to see which noise)."""

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y


def test_sampling_draws_clusters_by_size_with_normal_noise_in_each():
    g = SelfConditioned(_Echo(), 4, z_dim=64)
    g.set_prior(torch.tensor([1, 0, 3, 6]))
    z = torch.randn(200_000, 64, generator=torch.Generator().manual_seed(0))
    y = g(z)
    freq = torch.bincount(y, minlength=4).double() / len(y)
    assert torch.allclose(freq, torch.tensor([0.1, 0.0, 0.3, 0.6], dtype=torch.float64), atol=0.005)
    # the draw is a function of each noise vector alone: in any batch, on any split
    assert torch.equal(y, torch.cat([g(z[:777]), g(z[777:])]))
    # and it does not restrict the noise: one cluster's z are still N(0, I)
    zk = z[y == 2]
    assert zk.mean(0).abs().max() < 0.03 and (zk.std(0) - 1).abs().max() < 0.03
    assert torch.equal(g(z[:5], torch.tensor([1, 1, 1, 1, 1])), torch.ones(5, dtype=torch.long))
    with pytest.raises(ValueError, match="non-negative"):
        g.set_prior(torch.tensor([1, -1, 0, 0]))


def test_clusters_and_classes_are_exclusive():
    with pytest.raises(ConfigError, match="set one of them"):
        load_config("cgan-fmnist", ["model.clusters=5"])


def test_fewer_examples_than_clusters_leave_the_rest_empty():
    labelled, sizes = with_clusters(tiny_images(5), 8, seed=0)
    assert sorted(sizes.tolist()) == [0, 0, 0, 1, 1, 1, 1, 1]
    assert "3 empty" in labelled.source


def test_a_streamed_folder_gets_the_in_memory_clusters_and_trains_the_same(tmp_path, monkeypatch):
    """A folder streamed from disk is clustered chunk by chunk (fitted on a subset when it
    has more than FIT images) with the labels of the in-memory path, and a self-conditioned
    run on it is the in-memory run, weight for weight."""
    import numpy as np
    from PIL import Image

    from ganforge.cli import main
    from ganforge.config import DataConfig
    from ganforge.data import clusters, load_data

    rng = np.random.default_rng(0)
    root = tmp_path / "f"
    root.mkdir()
    for i in range(40):  # two kinds of image: dark and light, with noise
        base = 40 if i % 2 else 200
        px = np.clip(base + rng.integers(-30, 30, (12, 12, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(px).save(root / f"{i:03d}.png")
    monkeypatch.setattr(clusters, "FIT", 24)  # fit on a subset, then label all 40
    got = {}
    for mode in ("never", "always"):
        data = load_data(DataConfig(name="image-folder", path=str(root), size=8, stream=mode))
        assert data.streamed == (mode == "always")
        labelled, sizes = with_clusters(data, 2, seed=0)
        got[mode] = labelled.labels
        assert sorted(sizes.tolist()) == [20, 20]
    assert torch.equal(got["never"], got["always"])
    runs = {}
    for mode in ("never", "always"):
        run = tmp_path / mode
        argv = ["train", "-r", "folder-plus-large", "--data", str(root), "--out", str(run), "-q"]
        sets = [f"data.stream={mode}", "data.size=32", "model.clusters=2", "train.iterations=3"]
        sets += ["train.batch_size=8", "train.report=false", "train.threads=1"]
        assert main([*argv, "--device", "cpu", *[a for x in sets for a in ("--set", x)]]) == 0
        runs[mode] = load_file(run / "checkpoints" / "last" / "g.safetensors")
    for key, value in runs["never"].items():
        assert torch.equal(value, runs["always"][key]), key


RUN = {
    "model": {"clusters": 4, "ema": 0.9},
    "train": {"batch_size": 16, "log_every": 2, "device": "cpu"},
}


def test_a_self_conditioned_run_samples_unconditionally_and_resumes_exactly(tmp_path):
    data = tiny_images(64)
    ref = ganforge.train(
        "vanilla-fmnist", out=tmp_path / "ref", data=data, verbose=False,
        model=RUN["model"], train={**RUN["train"], "iterations": 8},
    )  # fmt: skip
    g = ref.generator
    assert isinstance(g, SelfConditioned)
    sizes = find_clusters(data.x, 4, seed=0).sizes  # the run's seed is 0
    assert torch.allclose(g.prior, sizes.float() / 64)
    assert ref.sample(10, seed=1).shape == (10, 1, 28, 28)
    assert torch.equal(ref.sample(10, seed=1), ref.sample(10, seed=1))
    part = ganforge.train(
        "vanilla-fmnist", out=tmp_path / "part", data=data, verbose=False,
        model=RUN["model"], train={**RUN["train"], "iterations": 4},
    )  # fmt: skip
    done = part.resume(train={"iterations": 8}, verbose=False)
    for k, v in ref.generator.state_dict().items():
        assert torch.equal(v, done.generator.state_dict()[k]), k
    labelled, _ = with_clusters(data, 4, seed=0)  # what the run's first line says of its data
    assert "4 k-means clusters of the 64 training examples" in labelled.source
    assert "the data's own labels are not used" in labelled.source
