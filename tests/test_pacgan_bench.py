"""benchmarks/pacgan.py: a stacked trial trains as ``ganforge train`` with the same seed does."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from ganforge import nets
from ganforge.checkpoint import find_checkpoint, load_weights
from ganforge.data import TensorData, load_data
from ganforge.engine import loop

SPEC = importlib.util.spec_from_file_location(
    "pacgan_bench", Path(__file__).parents[1] / "benchmarks" / "pacgan.py"
)
assert SPEC is not None and SPEC.loader is not None
pacgan = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(pacgan)

STEPS = 30
# In float64 the stacked trial and the single run differ only by the order of float sums
# (batched against plain matmuls): G's and D's outputs agree to ~1e-7 after 30 steps, while
# 30 steps move them by ~1 and another seed is ~1 away. (In float32 the same rounding grows
# chaotically, ~1e-1 in 30 steps, as between any two float orders of one GAN: Adam turns the
# rounding noise of near-zero gradients, such as those of the biases before BatchNorm, into
# full +-lr steps.)
ATOL = 1e-5


@pytest.fixture(autouse=True)
def _float64():
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def outputs(cfg, g_state, d_state) -> tuple[torch.Tensor, torch.Tensor]:
    """The sampling G's points (eval mode) and D's logits, on fixed inputs."""
    z = torch.randn(400, 2, generator=torch.Generator().manual_seed(9))
    g, d = nets.build_generator(cfg.model, (2,)), nets.build_discriminator(cfg.model, (2,))
    g.load_state_dict({k: v for k, v in g_state.items() if k in g.state_dict()})
    d.load_state_dict(d_state)
    y = () if cfg.model.clusters is None else (torch.arange(400) % cfg.model.clusters,)
    with torch.no_grad():  # a self-conditioned G draws its clusters; D is given some
        return g.eval()(z), d(z, *y)


@pytest.mark.parametrize(
    "extra",
    [
        [],  # the recipe as it ships: PacGAN's plain GAN
        # packing, lazy R1, two D steps per G step, an EMA from step 1, a decaying lr
        [
            "model.pack=2",
            "loss.r1=0.1",
            "loss.r1_every=2",
            "train.d_steps=2",
            "model.ema=0.9",
            "model.ema_start=1",
            "optim.g.decay=0.01",
            "loss.name=hinge",
        ],
        # self-conditioned: each trial clusters with its seed; G and D take the clusters
        ["model.clusters=4", "loss.r1=0.1", "loss.r1_every=2", "model.ema=0.9"],
    ],  # fmt: skip
    ids=["gan", "pac2-r1-dsteps-ema-hinge", "clusters-r1-ema"],
)
def test_stacked_trial_matches_a_ganforge_run(extra, tmp_path):
    sets = [*extra, "data.points=2000", f"train.iterations={STEPS}", "eval.every=null"]
    sets += ["train.sample_every=null", "train.log_every=10"]
    cfg = pacgan.variant_config("ring-8", "gan", sets)
    pool = load_data(cfg.data)
    data = TensorData(pool.x.double(), None, pool.source)
    loop.train(cfg, tmp_path / "run", verbose=False, data=data)
    ckpt = find_checkpoint(tmp_path / "run", ("last",))
    single = outputs(cfg, load_weights(ckpt, "sampler"), load_weights(ckpt, "d"))

    st = pacgan.Stacked(cfg, [1, 0], data)  # trial 1 has seed 0, as the run
    start = outputs(cfg, st.sampler_state(1), {k: v[1] for k, v in {**st.dp, **st.db}.items()})
    for _ in range(STEPS):
        st.train_step()
    trials = [
        outputs(cfg, st.sampler_state(i), {k: v[i] for k, v in {**st.dp, **st.db}.items()})
        for i in (0, 1)
    ]
    for ours, theirs, before, other in zip(trials[1], single, start, trials[0], strict=True):
        assert (ours - theirs).abs().max() < ATOL
        assert (before - theirs).abs().max() > 1e4 * ATOL  # training moved it
        assert (other - theirs).abs().max() > 1e4 * ATOL  # another seed is elsewhere


def test_unsupported_options_are_refused():
    cfg = pacgan.variant_config("ring-8", "gan", ["model.spectral_norm=true"])
    with pytest.raises(SystemExit, match="spectral_norm"):
        pacgan.Stacked(cfg, [0], None)
    cfg = pacgan.variant_config("ring-8", "pac3", ["data.points=300"])  # batch 100, packs of 3
    with pytest.raises(SystemExit, match="make train.batch_size a multiple of model.pack"):
        pacgan.Stacked(cfg, [0], load_data(cfg.data))
