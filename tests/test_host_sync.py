"""A training step on an accelerator never waits on the host: no value read, no copy to the
host, no shape that depends on values between log steps (tests/hostsync.py counts them).

The accelerator path runs here on the CPU with ``seeding.SYNC_FREE = True``; the CPU path
(``False``) may keep the host decisions that are free there, and its counts are shown too.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
from hostsync import SyncCounter, quiet_steps, syncs_between_logs
from test_recipes import CHEAP_NETS, random_data
from test_stream import folder

import ganforge
from ganforge import seeding
from ganforge.config import Config, load_config, recipe_names
from ganforge.data import TensorData, data_shape

from runhelpers import assert_same_checkpoints

STEPS = 8  # logs at 4 and 8, samples and checkpoint at 8: steps 2, 3, 5, 6, 7 are counted
RUN = [f"train.iterations={STEPS}", "train.log_every=4", f"train.sample_every={STEPS}"]
RUN += [f"train.checkpoint_every={STEPS}", "train.device=cpu", "eval.every=null"]
RUN += ["train.report=false"]
RUN += ["train.threads=1"]
IMAGES = ["train.batch_size=4", "train.grid=[2, 2]", *CHEAP_NETS]  # cheap: well under 1 s
AUG = "train.augment=[color, translation, cutout]"

# technique -> (recipe, settings); the recipes' own techniques are covered by recipe_names()
TECHNIQUES: dict[str, tuple[str, list[str]]] = {
    "ada (augment_p=auto)": ("dcgan-mnist", [AUG, "train.augment_p=auto"]),
    "diffaugment p=0.5": ("dcgan-mnist", [AUG, "train.augment_p=0.5"]),
    "r1 (lazy)": ("dcgan-mnist", ["loss.r1=1.0", "loss.r1_every=2"]),
    "wgan-gp": ("dcgan-mnist", ["loss.name=wgan-gp"]),
    "ema (start 0)": ("dcgan-mnist", ["model.ema=0.99", "model.ema_start=0"]),
    "ema (start auto)": ("dcgan-mnist", ["model.ema=0.99", "model.ema_start=auto"]),
    "label noise": ("dcgan-mnist", ["loss.label_noise=0.1"]),
    "label smoothing": ("dcgan-mnist", ["loss.real_label=0.9"]),
    "rollback": ("dcgan-mnist", ["train.rollback=1"]),
    "d_steps=2": ("dcgan-mnist", ["train.d_steps=2"]),
    "pack=2": ("dcgan-mnist", ["model.pack=2"]),
    "bf16": ("dcgan-mnist", ["train.precision=bf16"]),
    "clusters": ("cgan-fmnist", ["model.num_classes=null", "model.clusters=2"]),
    "streamed folder + clusters": ("folder-plus-large", ["data.stream=always", "model.clusters=2"]),
}


def run_config(name: str, tmp: Path) -> tuple[Config, TensorData | None]:
    """The cheap config of a recipe or technique and its data (None: the config's own)."""
    recipe, extra = TECHNIQUES.get(name, (name, []))
    shape = data_shape(load_config(recipe).data)
    sets = [*RUN, *(["train.batch_size=8"] if len(shape) == 1 else IMAGES), *extra]
    if "data.stream=always" in extra:
        root = folder(tmp / "images", n=32)
        cfg = load_config(recipe, [*sets, f"data.path={root}", "data.size=8"])
        return cfg, None
    b = 8 if len(shape) == 1 else 4
    return load_config(recipe, sets), random_data(shape, 4 * b)


def count(name: str, tmp: Path, sync_free: bool, monkeypatch: Any) -> dict[int, Counter]:
    monkeypatch.setattr(seeding, "SYNC_FREE", sync_free)
    cfg, data = run_config(name, tmp)
    return SyncCounter().train(cfg, tmp / f"run-{sync_free}", data)


@pytest.mark.parametrize("name", [*recipe_names(), *TECHNIQUES])
def test_no_host_sync_between_log_steps_on_the_accelerator_path(name, tmp_path, monkeypatch):
    per_step = count(name, tmp_path, True, monkeypatch)
    cfg, _ = run_config(name, tmp_path)
    assert per_step[4]["item()"] + per_step[4]["__float__()"] > 0  # it sees the log's reads
    assert syncs_between_logs(per_step, cfg, STEPS) == Counter()


def test_the_cpu_path_checks_the_losses_every_step(tmp_path, monkeypatch):
    """The switch decides: on the CPU path each step reads its losses once (guard.py)."""
    per_step = count("gaussian-2d", tmp_path, False, monkeypatch)
    cfg, _ = run_config("gaussian-2d", tmp_path)
    assert [sum(per_step[s].values()) for s in quiet_steps(cfg, STEPS)] == [1] * 5


def test_the_cpu_path_augments_the_chosen_images_only(tmp_path, monkeypatch):
    per_step = count("diffaugment p=0.5", tmp_path, False, monkeypatch)
    cfg, _ = run_config("diffaugment p=0.5", tmp_path)
    # the real and the fake images of D's step, the fakes of G's: three choices a step
    assert syncs_between_logs(per_step, cfg, STEPS)["aten::nonzero"] == 3 * 5


class Reads:
    """A caller's hook that reads the step's values in each way the counter knows."""

    def on_step_end(self, state: Any, out: dict[str, torch.Tensor]) -> None:
        loss = out["loss_d"]
        x = torch.stack([loss, -loss])
        _ = loss.item(), float(loss), bool(loss > 0), f"{loss:.2f}", x.tolist(), x.numpy()
        _ = x.cpu(), x.to("cpu"), x.nonzero(), x[x > 0], x.unique(), x.masked_select(x > 0)


def test_the_counter_sees_every_kind_of_read(tmp_path, monkeypatch):
    monkeypatch.setattr(seeding, "SYNC_FREE", True)
    cfg, data = run_config("gaussian-2d", tmp_path)
    counter = SyncCounter()
    real_train = ganforge.train

    def with_reads(*args: Any, **kwargs: Any) -> Any:
        kwargs["callbacks"] = [Reads(), *kwargs.get("callbacks", [])]
        return real_train(*args, **kwargs)

    monkeypatch.setattr(ganforge, "train", with_reads)
    per_step = counter.train(cfg, tmp_path / "run", data)
    want = {"item()", "__float__()", "__bool__()", "__format__()", "tolist()", "numpy()"}
    want |= {"cpu()", "to(cpu)", "aten::nonzero", "aten::index(bool)", "aten::_unique2"}
    want |= {"aten::masked_select"}
    assert set(per_step[2]) == want
    assert all(n == 1 for n in per_step[2].values())


@pytest.mark.parametrize("name", ["diffaugment p=0.5", "ema (start auto)"])
def test_both_paths_train_the_same_weights(name, tmp_path, monkeypatch):
    """The accelerator path's choices (all images transformed, then the chosen kept; the
    EMA's count kept on the host) give the CPU path's weights bit for bit."""
    runs = []
    for sync_free in (False, True):
        monkeypatch.setattr(seeding, "SYNC_FREE", sync_free)
        cfg, data = run_config(name, tmp_path)
        runs.append(tmp_path / f"run-{sync_free}")
        ganforge.train(cfg, out=runs[-1], verbose=False, data=data)
    assert_same_checkpoints(*runs, names=("g", "d", "g_ema")[: 3 if "ema" in name else 2])


def test_the_ema_count_is_read_again_after_another_writer():
    """``EMA.updates`` follows ``n_averaged`` when a checkpoint's load writes it."""
    from ganforge.engine.step import EMA, get_ema_multi_avg_fn

    g = torch.nn.Linear(2, 2)
    ema = EMA(g, get_ema_multi_avg_fn(0.5))
    ema.update_parameters(g)
    ema.update_parameters(g)
    assert ema.updates() == 2
    ema.n_averaged.fill_(7)  # as checkpoint.load_checkpoint does
    assert ema.updates() == 7
    ema.update_parameters(g)
    assert ema.updates() == 8 == int(ema.n_averaged)


def test_a_log_step_finds_a_divergence_of_the_steps_before_it():
    """The accelerator path checks at log steps: the sums since the last one count too."""
    from ganforge.engine.guard import check_losses
    from ganforge.errors import Diverged

    out = {"loss_d": torch.tensor(0.5), "loss_g": torch.tensor(0.7)}
    check_losses(out, 4, {"loss_d": torch.tensor(2.0)})  # all finite: no error
    with pytest.raises(Diverged, match="step 4: generator loss_g = nan"):
        check_losses(out, 4, {"loss_g": torch.tensor(float("nan"))})
