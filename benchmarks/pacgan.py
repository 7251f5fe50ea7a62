"""PacGAN's 2-D protocol: ring-8 and grid-25, the plain GAN and PacGAN2-4, many trials at once.

    PYTHONPATH=src .venv/bin/python benchmarks/pacgan.py   # all, to 20,000 steps: ~8 CPU-h
    PYTHONPATH=src .venv/bin/python benchmarks/pacgan.py --datasets grid-25 --variants plus \
        --trials 10 --steps 2000,4000,6000,8000                          # some of it
    PYTHONPATH=src .venv/bin/python benchmarks/pacgan.py --speed --variants gan --steps 100
    PYTHONPATH=src .venv/bin/python benchmarks/pacgan.py --report-only   # table + figure again

The protocol (Lin et al. 2018, after VEEGAN): each trial's G is scored on 2,500 points with
ganforge's own points metrics (``ganforge.metrics.evaluate.Evaluation``: modes with at least
one point within 3 std, the share of such high-quality points, reverse KL of the mode
histogram); the table gives the mean over trials, the fewest modes of any trial, and how many
trials found every mode, beside the paper's numbers.

Variants are recipes plus overrides: ``gan`` is the recipe as it ships (ring-8 / grid-25),
``pacM`` adds ``model.pack=M``, ``plus`` is the ``<data>-plus`` recipe. The trials of one
variant (train.seed = 0 .. T-1) train together in one process: every net of the recipe is built
by ganforge (the same seeded init as ``ganforge train --set train.seed=s``), their weights are
stacked (``torch.func.stack_module_state``) and one step runs the recipe's step for all trials
at once (``vmap`` over ``functional_call``): the same real batches and noise as the engine
(``engine.loop.Batches`` / ``draw``), the loss by name, D step then G step through the updated
D, Adam (the recipe's betas and decay), packing, lazy R1, ``train.d_steps``, and the EMA of G
(``model.ema`` / ``ema_start``). Adam is elementwise, so one Adam over the stacked tensors is
T independent Adams. tests/test_pacgan_bench.py checks a stacked trial against a ganforge run.
Options the stacked step does not implement (spectral norm, label tricks, DiffAugment,
WGAN-GP, bf16, clipping, RMSprop) are refused with one line.

G is evaluated at each step count of ``--steps`` (the sampling G: the EMA where the recipe keeps
one); results go to ``OUT/<data>/<variant>.json`` (the trials' last sampling G, stacked, beside
it as ``.safetensors``) and every file there is printed as one table and drawn as a scatter of
trial 0 per variant (``--figure``). CPU time is process time (``time.process_time``), one
thread, evaluation excluded. The speed-up (``--speed``) compares a ``ganforge.train`` run's CPU
time per step (a callback's clock) with the stacked step's per trial. Only the stacked step's
equivalence is tested (tests/test_pacgan_bench.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

import ganforge
from ganforge import nets
from ganforge.config import Config, load_config
from ganforge.data import load_data
from ganforge.data.clusters import with_clusters
from ganforge.engine.distributed import Dist
from ganforge.engine.ema import start_step, warmup_decay
from ganforge.engine.loop import Batches, Length, build_models, draw
from ganforge.engine.optim import make_optimizer, optimizer_step
from ganforge.engine.step import check_techniques
from ganforge.errors import GanforgeError
from ganforge.losses import d_loss, g_loss, get_loss
from ganforge.metrics.evaluate import Evaluation

# PacGAN (Lin et al. 2018), 2-D mixtures, 10 trials, 2,500 samples: (modes, high-quality %)
PAPER = {
    "ring-8": {"gan": (6.3, 98.2), "pac4": (7.8, 95.9)},
    "grid-25": {"gan": (17.3, 94.8), "pac4": (24.8, 93.6)},
}
OUT = Path("runs/pacgan")


def variant_config(data: str, variant: str, extra: list[str] = ()) -> Config:
    """The recipe of ``variant`` on ``data`` (``gan``, ``pacM``, ``plus``), one thread."""
    if variant == "gan":
        recipe, sets = data, []
    elif variant.startswith("pac") and variant[3:].isdigit():
        recipe, sets = data, [f"model.pack={int(variant[3:])}"]
    elif variant == "plus":
        recipe, sets = f"{data}-plus", []
    else:
        sys.exit(f"pacgan.py: error: variant {variant!r}: use gan, pac2, pac3, pac4 or plus")
    return load_config(recipe, [*sets, *extra, "train.threads=1", "train.device=cpu"])


def check_stackable(cfg: Config) -> None:
    """Exit with one line when the recipe uses what the stacked step does not implement."""
    lc, tc, mc = cfg.loss, cfg.train, cfg.model
    bad = [
        ("model.spectral_norm", mc.spectral_norm),
        ("model.num_classes", mc.num_classes is not None),
        ("loss.label_noise / real_label / fake_label",
         lc.label_noise or lc.real_label != 1 or lc.fake_label != 0),
        ("loss.d_batch=concat", lc.d_batch == "concat"),
        ("train.augment", bool(tc.augment)),
        ("a gradient-penalty loss", get_loss(lc.name).gradient_penalty),
        ("train.precision", tc.precision != "fp32"),
        ("optim.*.clip_value", None not in (cfg.optim.d.clip_value, cfg.optim.g.clip_value)),
        ("optim rmsprop", cfg.optim.d.name != "adam" or cfg.optim.g.name != "adam"),
    ]  # fmt: skip
    for name, used in bad:
        if used:
            sys.exit(f"pacgan.py: error: {name} is not implemented by the stacked step; drop it")


def over_trials(fn: Any, *args: Any) -> Any:
    """``fn`` of one trial, run on every trial at once: vmap over the first axis of each
    argument (a None argument, such as the labels of unlabelled data, is passed as it is)."""
    return vmap(fn, in_dims=tuple(None if a is None else 0 for a in args))(*args)


class Stacked:
    """T trials of one recipe (seeds ``seeds``) with their weights stacked along a first axis."""

    def __init__(self, cfg: Config, seeds: list[int], data: Any) -> None:
        check_stackable(cfg)
        try:  # what ganforge train checks before its first step (packs must divide the batch)
            check_techniques(cfg, data.shape, cfg.train.batch_size)
        except GanforgeError as e:
            sys.exit(f"pacgan.py: error: {e}")
        self.cfg, self.seeds, self.data = cfg, seeds, data
        self.cfgs = [replace(cfg, train=replace(cfg.train, seed=s)) for s in seeds]
        self.length = Length.of(cfg, len(data))
        k = cfg.model.clusters  # self-conditioned: each trial clusters with its own seed
        labelled = [with_clusters(data, k, s) if k else (data, None) for s in seeds]
        self.batches = [
            Batches(c, d, self.length, cfg.train.batch_size, Dist())
            for c, (d, _) in zip(self.cfgs, labelled, strict=True)
        ]
        models = [
            build_models(c, data.shape, torch.device("cpu"), sizes=sizes)
            for c, (_, sizes) in zip(self.cfgs, labelled, strict=True)
        ]
        self.g_base, self.d_base = models[0].g, models[0].d  # the modules functional_call runs
        self.gp, self.gb = stack_module_state([m.g for m in models])
        self.dp, self.db = stack_module_state([m.d for m in models])
        self.opt_g = make_optimizer(self.gp.values(), cfg.optim.g)
        self.opt_d = make_optimizer(self.dp.values(), cfg.optim.d)
        self.ema: dict[str, torch.Tensor] | None = None
        self.ema_n = 0
        self.step = 0

        def g_one(p: dict, b: dict, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
            return functional_call(self.g_base, (p, b), (z,) if y is None else (z, y))

        def d_one(p: dict, b: dict, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
            return functional_call(self.d_base, (p, b), (x,) if y is None else (x, y))

        self.g_one, self.d_one = g_one, d_one

    def sampler_state(self, i: int) -> dict[str, torch.Tensor]:
        """Trial ``i``'s sampling G (its EMA once begun, else G) as a state dict."""
        src = self.ema if self.ema is not None else {**self.gp, **self.gb}
        return {k: v[i].detach().clone() for k, v in src.items()}

    def train_step(self) -> None:
        """One step of every trial: the engine's ``train_step`` with the weights stacked."""
        cfg, step = self.cfg, self.step
        lc, tc = cfg.loss, cfg.train
        batches = [b.at(step) for b in self.batches]
        real = torch.stack([r for r, _ in batches])  # (T, B, 2)
        # the clusters of the real points (T, B), for the fakes too, as the engine does
        y = None if batches[0][1] is None else torch.stack([c for _, c in batches])
        z = torch.stack([draw(c, step, tc.batch_size, real.device, Dist()).z for c in self.cfgs])
        g_step = (step + 1) % tc.d_steps == 0
        r1_now = lc.r1 > 0 and step % lc.r1_every == 0
        with torch.enable_grad() if g_step else torch.no_grad():
            fake = over_trials(self.g_one, self.gp, self.gb, z, y)
        fd = fake.detach()
        d_one = self.d_one

        def loss_d_one(
            p: dict, b: dict, r: torch.Tensor, f: torch.Tensor, c: torch.Tensor | None
        ) -> torch.Tensor:
            rl, fl = d_one(p, b, r, c), d_one(p, b, f, c)
            return d_loss(lc.name, rl.float(), fl.float(), average=lc.d_average)

        total = over_trials(
            loss_d_one, self.dp, self.db, real, fd, y
        ).sum()  # trials are independent
        if r1_now:  # lazy R1 on the real batch, as engine.step.r1_penalty
            x = real.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(
                over_trials(d_one, self.dp, self.db, x, y).sum(), x, create_graph=True
            )
            r1 = grad.square().sum(-1).mean(-1)  # (T,)
            total = total + 0.5 * lc.r1 * lc.r1_every * r1.sum()
        self.opt_d.zero_grad(set_to_none=True)
        total.backward()
        optimizer_step(self.opt_d, cfg.optim.d, step)
        if g_step:
            frozen = {k: v.detach() for k, v in self.dp.items()}

            def loss_g_one(
                p: dict, b: dict, f: torch.Tensor, r: torch.Tensor, c: torch.Tensor | None
            ) -> torch.Tensor:
                real_now = None
                if get_loss(lc.name).g_needs_real:
                    real_now = d_one(p, b, r, c).float().detach()
                return g_loss(lc.name, d_one(p, b, f, c).float(), real_now)

            loss_g = over_trials(loss_g_one, frozen, self.db, fake, real, y).sum()
            self.opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            optimizer_step(self.opt_g, cfg.optim.g, step // tc.d_steps)
            if cfg.model.ema is not None and step >= start_step(cfg):
                self.update_ema()
        self.step += 1

    @torch.no_grad()
    def update_ema(self) -> None:
        """AveragedModel's update over params and buffers: a copy first, then a lerp."""
        cur = {**self.gp, **self.gb}
        if self.ema is None:
            self.ema = {k: v.detach().clone() for k, v in cur.items()}
        else:
            d = self.cfg.model.ema
            if self.cfg.model.ema_start == "auto":
                d = warmup_decay(d, self.ema_n)
            for k, v in self.ema.items():
                if v.is_floating_point():
                    v.lerp_(cur[k], 1 - d)
                else:
                    v.copy_(v * d + cur[k] * (1 - d))
        self.ema_n += 1


def trial_generator(cfg: Config, state: dict[str, torch.Tensor]) -> nn.Module:
    """A ganforge G of ``cfg`` holding ``state`` (one trial's sampling weights)."""
    g = nets.build_generator(cfg.model, (2,))
    kept = g.state_dict()  # the stacked state also holds buffers that are not saved
    g.load_state_dict({k: v for k, v in state.items() if k in kept})
    return g


def run_variant(data_name: str, variant: str, trials: int, marks: list[int],
                extra: list[str]) -> dict[str, Any]:  # fmt: skip
    """Train ``trials`` stacked trials to the last mark; score every trial at each mark."""
    cfg = variant_config(data_name, variant, extra)
    cfg = replace(cfg, train=replace(cfg.train, iterations=max(marks), epochs=None))
    torch.set_num_threads(1)
    data = load_data(cfg.data)
    st = Stacked(cfg, list(range(trials)), data)
    evaluation = Evaluation(cfg, "points", 2500, seed=cfg.eval.seed)
    results: dict[str, Any] = {"data": data_name, "variant": variant, "trials": trials,
                               "overrides": extra, "marks": {}}  # fmt: skip
    cpu, wall = 0.0, 0.0
    for mark in sorted(marks):
        c0, w0 = time.process_time(), time.perf_counter()
        while st.step < mark:
            st.train_step()
        cpu += time.process_time() - c0
        wall += time.perf_counter() - w0
        rows = []
        for i in range(trials):
            m = evaluation(trial_generator(cfg, st.sampler_state(i)))
            rows.append({k: m[k] for k in ("modes", "modes_of", "hq", "reverse_kl")})
        results["marks"][str(mark)] = {"trials": rows, "cpu_s": round(cpu, 1),
                                       "wall_s": round(wall, 1)}  # fmt: skip
        print(f"{data_name} {variant} step {mark}: " + summary_line(rows)
              + f"  [{cpu:.0f} CPU s, {cpu / mark / trials * 1e3:.1f} ms per trial-step]",
              flush=True)  # fmt: skip
        # trial 0's scored points, for the figure
        results["points"] = evaluation.sample(trial_generator(cfg, st.sampler_state(0))).tolist()
    results["state"] = {k: v.detach().clone() for k, v in (st.ema or {**st.gp, **st.gb}).items()}
    return results


def summary_line(rows: list[dict[str, Any]]) -> str:
    modes = [r["modes"] for r in rows]
    k = rows[0]["modes_of"]
    hq = statistics.mean(r["hq"] for r in rows)
    every = sum(m == k for m in modes)
    mean = statistics.mean(modes)
    return f"modes {mean:.1f}/{k} (min {min(modes)}, all in {every}/{len(rows)}), HQ {hq:.1f}%"


class StepClock(ganforge.Callback):
    """Process CPU time of the steps after the first ``skip`` (warm-up) of a ganforge run."""

    def __init__(self, skip: int) -> None:
        self.skip, self.start, self.seconds, self.steps = skip, 0.0, 0.0, 0

    def on_step_end(self, state: Any, out: dict[str, torch.Tensor]) -> None:
        if state.step == self.skip:
            self.start = time.process_time()
        elif state.step > self.skip:
            self.seconds, self.steps = time.process_time() - self.start, state.step - self.skip


def speed(data_name: str, variant: str, trials: int, steps: int) -> None:
    """CPU seconds per trial-step: ganforge.train (one trial), against the stacked step."""
    torch.set_num_threads(1)
    quiet = ["eval.every=null", "train.sample_every=1000000", "train.log_every=1000000"]
    cfg = variant_config(data_name, variant, [f"train.iterations={steps + 10}", *quiet])
    clock = StepClock(10)
    with tempfile.TemporaryDirectory() as tmp:
        ganforge.train(cfg, out=Path(tmp) / "run", verbose=False, callbacks=[clock])
    seq = clock.seconds / clock.steps
    st = Stacked(cfg, list(range(trials)), load_data(cfg.data))
    for _ in range(10):  # warm-up, as above
        st.train_step()
    c0 = time.process_time()
    for _ in range(steps):
        st.train_step()
    stacked = (time.process_time() - c0) / steps / trials
    print(
        f"{data_name} {variant}: ganforge.train {seq * 1e3:.1f} ms CPU per step (one trial, "
        f"{steps} steps); stacked x{trials}: {stacked * 1e3:.1f} ms CPU per trial-step; "
        f"speed-up {seq / stacked:.2f}x"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default="ring-8,grid-25")
    p.add_argument("--variants", default="gan,pac2,pac3,pac4,plus")
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--steps", default="5000,10000,20000", help="evaluate at these steps")
    p.add_argument("--set", action="append", default=[], help="an override for every variant")
    p.add_argument("--tag", default="", help="suffix of the variant's name in the results")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--speed", action="store_true", help="measure the stacked speed-up only")
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--figure", type=Path, default=Path("docs/images/pacgan-grid.png"))
    args = p.parse_args()
    datasets = args.datasets.split(",")
    if args.speed:
        for name in datasets:
            speed(name, args.variants.split(",")[0], args.trials, int(args.steps.split(",")[0]))
        return
    if not args.report_only:
        marks = [int(s) for s in args.steps.split(",")]
        for name in datasets:
            for variant in args.variants.split(","):
                res = run_variant(name, variant, args.trials, marks, args.set)
                path = args.out / name / f"{variant}{args.tag}.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                # the trials' sampling G at the last step, stacked: for a second look
                save_file(res.pop("state"), path.with_suffix(".safetensors"))
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(res))
                tmp.replace(path)
    report(args.out, args.figure)


def report(out: Path, figure: Path) -> None:
    """Print every result under ``out`` as one Markdown table; draw the scatter figure."""
    files = sorted(out.glob("*/*.json"))
    print("| data | variant | trials | steps | modes (mean) | HQ % (mean) | min modes | "
          "all modes | reverse KL | paper modes | paper HQ % | CPU s |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for f in files:
        res = json.loads(f.read_text())
        name, variant = res["data"], f.stem
        paper = PAPER.get(name, {}).get(variant.split("-")[0])
        for mark, m in sorted(res["marks"].items(), key=lambda kv: int(kv[0])):
            rows = m["trials"]
            k = rows[0]["modes_of"]
            modes = [r["modes"] for r in rows]
            print(
                f"| {name} | {variant} | {len(rows)} | {int(mark):,} | "
                f"{statistics.mean(modes):.1f}/{k} | "
                f"{statistics.mean(r['hq'] for r in rows):.1f} | "
                f"{min(modes)} | {sum(x == k for x in modes)}/{len(rows)} | "
                f"{statistics.mean(r['reverse_kl'] for r in rows):.3f} | "
                f"{paper[0] if paper else ''} | {paper[1] if paper else ''} | {m['cpu_s']:.0f} |"
            )
    if files and figure:
        draw_figure(files, figure)


def draw_figure(files: list[Path], figure: Path) -> None:
    """Trial 0 of each variant at its last step: 2,500 points over the mixture's means."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ganforge.data.generated import MIXTURES

    by_data: dict[str, list[dict]] = {}
    for f in files:
        res = json.loads(f.read_text())
        res["name"] = f.stem
        by_data.setdefault(res["data"], []).append(res)
    cols = max(len(v) for v in by_data.values())
    fig, axes = plt.subplots(len(by_data), cols, figsize=(2.6 * cols, 2.6 * len(by_data)),
                             squeeze=False)  # fmt: skip
    for r, (name, results) in enumerate(sorted(by_data.items(), reverse=True)):
        means = MIXTURES[name][0]
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([]), ax.set_yticks([])
            if c >= len(results):
                ax.axis("off")
                continue
            res = results[c]
            pts = torch.tensor(res["points"])
            last = max(res["marks"], key=int)
            row = res["marks"][last]["trials"][0]
            ax.scatter(pts[:, 0], pts[:, 1], s=1, alpha=0.5)
            ax.scatter(means[:, 0], means[:, 1], s=6, c="red", marker="x")
            ax.set_title(
                f"{name} {res['name']}, {int(last):,} steps\n"
                f"{row['modes']}/{row['modes_of']} modes, {row['hq']:.1f}% HQ",
                fontsize=8,
            )
    fig.tight_layout()
    figure.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(figure, dpi=110)
    print(f"figure: {figure}")


if __name__ == "__main__":
    main()
