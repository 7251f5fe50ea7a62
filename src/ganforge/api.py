"""The public Python API: ``train``, ``resume``, ``load`` and the ``Run`` they return.

The command line is one client of these functions (``ganforge.cli`` parses and calls them).
Config fields are set in three ways, applied in this order on top of the recipe:

- ``**config``: one keyword per config section, a mapping of that section's fields,
  e.g. ``train={"epochs": 2, "batch_size": 64}, model={"ema": 0.999}``;
- ``overrides``: the command line's ``key=value`` strings, e.g. ``["optim.g.lr=1e-4"]``;
- ``data=``, ``generator=``, ``discriminator=``: objects, see ``train``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeAlias

import torch
from torch import nn

from . import arguments, nets
from .ckpt_read import Snapshot, open_checkpoint, read_checkpoint, read_run
from .config import (
    DEFAULT_RECIPE,
    Config,
    apply_overrides,
    load_config,
    read_config,
    recipe_dict,
    to_dict,
)
from .data import TensorData, data_shape, generated, resolve_path, select, to_uint8
from .errors import ArgumentError, ConfigError, GanforgeError, option
from .nets import NetSpec
from .registry import PYTHON_PREFIX, path_of
from .runfiles import RunPin
from .seeding import mix_seed, resolve_device
from .trust import leaf_keys

SAMPLE_BATCH = {False: 512, True: 4096}  # Run.sample: images, points through G at a time
RecipeLike: TypeAlias = str | os.PathLike | Config
NetLike: TypeAlias = NetSpec  # a custom G or D: a module, or a builder of one


# ---------------------------------------------------------------- configs


def make_config(
    recipe: RecipeLike | None = None,
    overrides: Iterable[str] = (),
    sections: Mapping[str, Any] | None = None,
    base: Mapping[str, Any] | None = None,
) -> Config:
    """A strict Config from a recipe (name, YAML path or Config), or a saved run's mapping
    ``base``, then ``sections`` (``{"train": {"epochs": 2}}``), then ``overrides``."""
    overrides = arguments.strings(overrides, "overrides=")
    if recipe is not None and not isinstance(recipe, (str, os.PathLike, Config)):
        raise ArgumentError(
            f"recipe={recipe!r}: give a recipe name (ganforge.recipes() lists them), a YAML "
            "file or a ganforge.Config"
        )
    if base is not None:
        raw = dict(base)
    elif isinstance(recipe, Config):
        raw = to_dict(recipe)
    elif recipe is not None and _is_yaml_path(recipe):
        raw = _read_yaml_recipe(Path(recipe))
    else:
        raw = recipe_dict(str(recipe or DEFAULT_RECIPE))
    return load_config(None, overrides, base=_merge(raw, sections))


def _is_yaml_path(recipe: str | os.PathLike) -> bool:
    text = os.fspath(recipe)
    return text.endswith((".yaml", ".yml")) or os.sep in text


def _read_yaml_recipe(path: Path) -> dict[str, Any]:
    from .config import safe_yaml

    if not path.is_file():
        raise ConfigError(f"recipe {path}: no such file; give a recipe name or a YAML file")
    raw = safe_yaml(path.read_text(errors="replace"), str(path))
    if not isinstance(raw, dict):
        raise ConfigError(f"recipe {path}: expected a mapping of config keys")
    raw.setdefault("recipe", path.stem)
    return raw


def _merge(raw: dict[str, Any], sections: Mapping[str, Any] | None) -> dict[str, Any]:
    """``raw`` with each section's fields set from ``sections`` (nested mappings merged)."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    names = [f.name for f in dataclasses.fields(Config)]
    for key, value in (sections or {}).items():
        if key not in names:
            raise ConfigError(
                f"ganforge.train: unknown keyword {key}=; config sections are "
                f"{', '.join(names)} (e.g. train={{'epochs': 2}})"
            )
        if isinstance(value, Mapping):
            out[key] = _merge_tree(out.get(key) or {}, value)
        else:
            out[key] = value  # a plain field (recipe, description) or a wrong type: build() says
    return out


def _merge_tree(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = (
            _merge_tree(out[k], v)
            if isinstance(v, Mapping) and isinstance(out.get(k), Mapping)
            else v
        )
    return out


def new_run_dir(recipe: str, root: Path = Path("runs")) -> Path:
    """``runs/<recipe>-<time>`` (numbered when taken): one folder name made from the recipe,
    never a path (``--set recipe=/abs/path`` stays in the runs folder)."""
    from .runfiles import safe_run_name

    name = safe_run_name(recipe)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = root / f"{name}-{stamp}"
    i = 1
    while path.exists():
        i += 1
        path = root / f"{name}-{stamp}-{i}"
    return path


def _net_name(net: NetLike, kind: str) -> str | None:
    """What config.yaml records for a custom net: its import path when it has one (a builder
    or a module class importable in a new process), else ``python:<name>``."""
    if net is None:
        return None
    if isinstance(net, nn.Module):
        return f"{PYTHON_PREFIX}{type(net).__name__}"
    if not callable(net):
        raise ArgumentError(
            f"{kind}={type(net).__name__}: give an nn.Module, or a function or class that "
            "builds one"
        )
    return path_of(net) or f"{PYTHON_PREFIX}{getattr(net, '__qualname__', repr(net))}"


def _with_data(cfg: Config, data: Any) -> tuple[Config, TensorData | None]:
    """The config and the in-memory data of ``data=``: None (the recipe's data set), a path
    (``data.path``), or Python data (tensor, Dataset, DataLoader), recorded as
    ``data.name=python`` with its shape."""
    from .data.python import from_python

    if data is None:
        return cfg, None
    if isinstance(data, TensorData):  # ganforge's own form: the data set cfg.data names
        return cfg, data
    if isinstance(data, (str, os.PathLike)):
        return dataclasses.replace(
            cfg, data=dataclasses.replace(cfg.data, path=os.fspath(data))
        ), None
    tensors = select(from_python(data, cfg.data), cfg.data)
    dc = dataclasses.replace(cfg.data, name="python", path=None, shape=tensors.shape)
    return dataclasses.replace(cfg, data=dc), tensors


def _resolve_path(cfg: Config, verbose: bool) -> Config:
    """``--data`` naming a folder of images for a recipe of another image data set, or a
    points file for a 2-D recipe: the data config it means, said once (``resolve_path``)."""
    dc, note = resolve_path(cfg.data, cfg.model.num_classes)
    if note is None:
        generated.refuse_path(cfg.data)  # gaussian-2d etc. read no files
        return cfg
    if verbose and int(os.environ.get("RANK", "0")) == 0:
        print(f"ganforge: {note}")
    return dataclasses.replace(cfg, data=dc)


def _data_section(data: Any, config: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """``data=`` given as a mapping is the data config section (``data={"size": 64}``), as
    every other section is given; anything else is the data itself."""
    if isinstance(data, Mapping):
        return None, {**config, "data": data}
    return data, config


def _with_nets(cfg: Config, generator: NetLike, discriminator: NetLike) -> Config:
    g, d = _net_name(generator, "generator"), _net_name(discriminator, "discriminator")
    if g is None and d is None:
        return cfg
    mc = cfg.model
    if g is not None:  # the recipe's keyword arguments were for its own G
        mc = dataclasses.replace(mc, g=g, g_args={} if g != mc.g else mc.g_args)
    if d is not None:
        mc = dataclasses.replace(mc, d=d, d_args={} if d != mc.d else mc.d_args)
    return dataclasses.replace(cfg, model=mc)


# ---------------------------------------------------------------- training


def train(
    recipe: RecipeLike = "vanilla-fmnist",
    *,
    data: Any = None,
    generator: NetLike = None,
    discriminator: NetLike = None,
    out: str | os.PathLike | None = None,
    overrides: Iterable[str] | None = None,
    callbacks: Sequence[Any] = (),
    verbose: bool = True,
    overwrite: bool = False,
    **config: Any,
) -> Run:
    """Train a recipe into a new run directory and return the finished ``Run``.

    ``recipe``: a recipe name, a YAML file or a ``Config``. ``data``: None (the recipe's data
    set), a mapping (the data config section, like the other sections), a path, a tensor
    (uint8 images in [0, 255], float images in the run's range, float (N, D) points), an
    ``(x, labels)`` tuple, a torch ``Dataset`` (of tensors, PIL images or
    (x, y) pairs) or a ``DataLoader``. ``generator`` / ``discriminator``: an ``nn.Module`` or a
    callable building one (called with those of ``z_dim``, ``shape``, ``num_classes`` it takes).
    ``out``: the run directory (default ``runs/<recipe>-<time>``); it must not hold a run,
    unless ``overwrite``, which first moves that run aside (``OUT.replaced-<time>``, whole and
    resumable).
    ``callbacks``: hooks, see ``ganforge.Callback``. ``**config``: config sections as
    mappings, e.g. ``train={"epochs": 2}``; ``overrides``: ``key=value`` strings as ``--set``.
    """
    out = None if out is None else arguments.path(out, "out=")
    callbacks = _checked(callbacks, verbose)
    arguments.flag(overwrite, "overwrite=")
    data, config = _data_section(data, config)
    cfg = make_config(recipe, overrides or (), config)
    cfg, tensors = _with_data(cfg, data)
    cfg = _resolve_path(cfg, verbose)
    cfg = _with_nets(cfg, generator, discriminator)
    run_dir = Path(out) if out is not None else new_run_dir(cfg.recipe)
    from .runfiles import holds_run, set_aside

    if overwrite and holds_run(run_dir):
        moved = set_aside(run_dir)
        print(f"ganforge: moved the run in {run_dir} to {moved} (resumable there)")
    elif (run_dir / "config.yaml").exists():
        again = option(f"--resume {run_dir}", f"ganforge.resume({str(run_dir)!r})")
        other = option("choose another --out", "choose another out=")
        aside = option("add --overwrite", "pass overwrite=True")
        raise GanforgeError(
            f"{option('--out', 'out=')} {run_dir} already holds a run; continue it with "
            f"{again}, {other}, or {aside} to move that run aside"
        )
    return _run(cfg, run_dir, False, tensors, generator, discriminator, callbacks, verbose)


def resume(
    run: str | os.PathLike,
    *,
    data: Any = None,
    generator: NetLike = None,
    discriminator: NetLike = None,
    overrides: Iterable[str] | None = None,
    callbacks: Sequence[Any] = (),
    verbose: bool = True,
    trust_code: bool | None = None,
    **config: Any,
) -> Run:
    """Continue run directory ``run`` from its last good checkpoint (a longer length, say
    ``train={"epochs": 40}``); results are bitwise those of one unbroken run on the CPU.
    A run trained on Python data or nets needs them again here (``data=``, ``generator=``).
    ``trust_code``: import the code the run's config names by import path (refused by
    default, unless given again here; ``GANFORGE_TRUST_CODE=1`` when None), see ``load``."""
    run_dir = Path(arguments.path(run, "run="))
    callbacks = _checked(callbacks, verbose)
    if not run_dir.is_dir():
        where = option(f"--resume {run_dir}", f"run={str(run_dir)!r}")
        raise GanforgeError(f"{where}: no such run directory")
    data, config = _data_section(data, config)
    overrides = list(overrides or ())
    given = leaf_keys(apply_overrides({}, overrides)) | leaf_keys(config)
    given |= _given_nets(generator, discriminator)  # what the caller sets replaces the run's
    saved = read_config(run_dir / "config.yaml", (), trust_code, given, resuming=True)
    cfg = make_config(None, overrides, config, base=to_dict(saved))
    tensors = None
    if data is not None:
        cfg, tensors = _with_data(cfg, data)
    cfg = _with_nets(cfg, generator, discriminator)
    return _run(cfg, run_dir, True, tensors, generator, discriminator, callbacks, verbose)


def _given_nets(generator: NetLike, discriminator: NetLike) -> set[str]:
    """The config keys that nets given from Python set (they replace the run's names)."""
    return {k for k, net in (("model.g", generator), ("model.d", discriminator)) if net is not None}


def _checked(callbacks: Any, verbose: Any) -> list[Any]:
    """``callbacks`` as a list of hooks (each checked) and ``verbose`` a bool, or one line."""
    from .engine.callbacks import check_callbacks

    arguments.flag(verbose, "verbose=")
    hooks = arguments.sequence(callbacks, "callbacks=")
    check_callbacks(hooks)
    return hooks


def _run(
    cfg: Config,
    run_dir: Path,
    resuming: bool,
    tensors: TensorData | None,
    generator: NetLike,
    discriminator: NetLike,
    callbacks: Sequence[Any],
    verbose: bool,
) -> Run:
    import contextlib

    from .engine.loop import train as train_loop
    from .report.runs import latest_link
    from .streams import while_training

    note = (  # said once on stderr if stdout goes: the run is worth more than its log lines
        "ganforge: stdout was closed by its reader; training goes on without printing; "
        f"follow it with 'ganforge runs {run_dir}'"
    )
    with while_training(note):
        # runs/latest points at a new run in the default runs folder while and after it trains
        with contextlib.nullcontext() if resuming else latest_link(run_dir):
            result = train_loop(
                cfg, run_dir, resuming, verbose, tensors, callbacks, generator, discriminator
            )
        if result.get("complete"):  # resumed at its end: nothing trained or written
            run = _open(run_dir, cfg, ("last",), generator, discriminator)  # the config as resumed
            run.result, run._data = result, tensors
            return run
        main = int(os.environ.get("RANK", "0")) == 0
        if main and cfg.train.report:
            _report(run_dir, result["steps"], print if verbose else None)
    models = result.pop("models")
    run = Run(run_dir, cfg, models.sampler(), models.d, checkpoint=run_dir / "checkpoints" / "last")
    run.result = result
    run._data, run._nets = tensors, (generator, discriminator)
    return run


def _report(run_dir: Path, step: int, say: Callable[[str], None] | None) -> None:
    """report.html once training has ended; a stop signal here ends it at once with one line
    (the run itself is complete and saved)."""
    from .engine.guard import StopSignals
    from .report.html import report_after_training

    with StopSignals() as stop:
        with stop.phase("while writing the report", step, run_dir, complete=True):
            report_after_training(run_dir, say)


# ---------------------------------------------------------------- reopening runs


def load(
    run: str | os.PathLike,
    checkpoint: str = "best",
    *,
    generator: NetLike = None,
    discriminator: NetLike = None,
    device: str = "auto",
    fallback: bool = True,
    trust_code: bool | None = None,
) -> Run:
    """Reopen a finished or running run directory: the ``Run`` with the sampling G of
    ``checkpoint`` ("best", falling back to "last" unless ``fallback=False``; "last";
    "previous"). ``generator`` / ``discriminator``: the run's custom nets when it was
    trained with Python objects. A checkpoint a training is rotating is read whole.
    ``trust_code``: a run directory is data, so a config that names code by import path
    (``model.g: mypkg.nets:build``) is refused unless True (None: ``GANFORGE_TRUST_CODE``)."""
    run_dir = Path(arguments.path(run, "run="))
    arguments.choice(checkpoint, "checkpoint=", ("best", "last", "previous"))
    arguments.flag(fallback, "fallback=")
    for net, kind in ((generator, "generator"), (discriminator, "discriminator")):
        _net_name(net, kind)  # a module, a builder or None
    resolve_device(device)  # checked before any file is read
    if not run_dir.is_dir():
        raise GanforgeError(f"{run_dir}: no such run directory")
    with RunPin(run_dir) as pin:  # config and checkpoint of one run, even if it is replaced
        return load_pinned(pin, checkpoint, generator, discriminator, device, fallback, trust_code)


def load_pinned(
    pin: RunPin,
    checkpoint: str = "best",
    generator: NetLike = None,
    discriminator: NetLike = None,
    device: str = "auto",
    fallback: bool = True,
    trust_code: bool | None = None,
) -> Run:
    """``load`` of the run folder ``pin`` holds open (wherever it has been moved)."""
    prefer = ("best", "last") if checkpoint == "best" and fallback else (checkpoint,)
    given = _given_nets(generator, discriminator)
    cfg, snap = read_run(pin, prefer, trust_code=trust_code, given=given)
    return _with_sampler(cfg, snap, generator, discriminator, device)


def _open(
    run_dir: Path,
    cfg: Config,
    prefer: tuple[str, ...],
    generator: NetLike,
    discriminator: NetLike,
    device: str = "auto",
) -> Run:
    """The ``Run`` of ``run_dir`` under ``cfg`` (already read and checked) with the sampling G
    of the first checkpoint of ``prefer``."""
    return _with_sampler(cfg, open_checkpoint(run_dir, prefer), generator, discriminator, device)


def _with_sampler(
    cfg: Config, snap: Snapshot, generator: NetLike, discriminator: NetLike, device: str
) -> Run:
    """The ``Run`` of checkpoint ``snap`` under ``cfg``, its sampling G built and loaded."""
    dev = resolve_device(device)
    g = nets.build_generator(cfg.model, data_shape(cfg.data), generator).to(dev)
    snap.load_into("sampler", g, dev)
    out = Run(snap.path.parent.parent, cfg, g, None, checkpoint=snap.path)
    out._nets = (generator, discriminator)
    out.sampled_with = snap.generator()
    return out


class Run:
    """A run directory and its networks: sample, show, evaluate, continue.

    ``generator`` is the sampling G (the EMA of G when the run keeps one), in eval mode;
    ``discriminator`` is built on first use; ``config`` the resolved Config; ``dir`` the
    run directory; ``log`` its records.
    """

    def __init__(
        self,
        run_dir: Path,
        config: Config,
        generator: nn.Module,
        discriminator: nn.Module | None = None,
        checkpoint: Path | None = None,
    ) -> None:
        self.dir, self.config, self.checkpoint = Path(run_dir), config, checkpoint
        self.generator = generator.eval()
        self._discriminator = discriminator
        self.result: dict[str, Any] = {}  # the training summary when this Run was trained
        self.sampled_with = "G"  # or "the EMA of G (N updates)": what ``generator`` is
        self._data: TensorData | None = None
        self._nets: tuple[NetLike, NetLike] = (None, None)

    def __repr__(self) -> str:
        ck = self.checkpoint.name if self.checkpoint else "-"
        return f"Run({str(self.dir)!r}, recipe={self.config.recipe!r}, checkpoint={ck!r})"

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    @property
    def discriminator(self) -> nn.Module:
        """D of the same checkpoint (built and loaded on first use)."""
        if self._discriminator is None:
            if self.checkpoint is None:
                raise GanforgeError(f"{self.dir}: no checkpoint to load D from")
            d = nets.build_discriminator(
                self.config.model, data_shape(self.config.data), self._nets[1]
            ).to(self.device)
            read_checkpoint(self.checkpoint).load_into("d", d, self.device)
            self._discriminator = d.eval()
        return self._discriminator

    def log_records(self) -> list[dict[str, Any]]:
        """The records of log.jsonl (training and evaluation), in step order."""
        from .report.runlog import read_log

        log = read_log(self.dir)
        return sorted(log.train + log.evals, key=lambda r: r.get("step", 0))

    @property
    def log(self) -> Any:
        """The records of log.jsonl (training and evaluation) as a pandas DataFrame when
        pandas is installed, else as a list of dicts."""
        records = self.log_records()
        try:
            import pandas as pd  # pyright: ignore[reportMissingImports]  (optional)
        except ImportError:
            return records
        return pd.DataFrame.from_records(records)

    def _labels(self, n: int, labels: Any) -> torch.Tensor | None:
        k = self.config.model.num_classes
        if k is None:
            if labels is not None:
                raise ArgumentError(f"labels=: {self.dir} is not class-conditional; drop labels")
            return None
        return arguments.labels(labels, n, k)

    @torch.no_grad()
    def sample(self, n: int = 64, seed: int | None = None, labels: Any = None) -> torch.Tensor:
        """``n`` samples on the CPU, in the data's range ([-1, 1] or [0, 1]; points as they
        are). ``seed``: the same samples as ``ganforge sample --seed``; None draws fresh
        noise. ``labels``: a class (int) or n classes for a conditional run (default: every
        class in turn)."""
        mc, shape = self.config.model, data_shape(self.config.data)
        n = arguments.count(n, "n=", mc.z_dim + arguments.floats_of(shape))
        gen = torch.Generator()
        if seed is None:
            gen.seed()
        else:
            gen.manual_seed(mix_seed(arguments.seed(seed)))
        z = nets.sample_noise(n, mc.z_dim, mc.z_dist, gen, "cpu")  # at once: the same z for all n
        y = self._labels(n, labels)
        batch = SAMPLE_BATCH[len(shape) == 1]  # G runs on batches of this many
        return nets.generate_batched(self.generator, z, y, batch, self.device)

    def grid(self, n: int = 64, seed: int | None = None, labels: Any = None) -> Any:
        """A PIL image of ``n`` samples (a grid of images, or a scatter of 2-D points over
        the real data) that a notebook cell shows as it is."""
        import tempfile

        from PIL import Image

        from .visual import MAX_IMAGES, MAX_POINTS, render

        points = len(data_shape(self.config.data)) == 1
        arguments.integer(n, "n=", 1, MAX_POINTS if points else MAX_IMAGES)
        x = self.sample(n, seed, labels)
        cols = math.ceil(math.sqrt(n))
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "grid.png"
            render(x, path, (math.ceil(n / cols), cols), self.config.data.range)
            with Image.open(path) as im:
                return im.copy()

    def images(self, n: int = 64, seed: int | None = None, labels: Any = None) -> torch.Tensor:
        """``n`` samples as uint8 images (n, C, H, W), as a PNG would hold them."""
        return to_uint8(self.sample(n, seed, labels), self.config.data.range)

    def evaluate(
        self,
        metrics: str | Sequence[str] | None = None,
        n: int | None = None,
        reference: str = "test",
        seed: int = 0,
    ) -> dict[str, Any]:
        """Sample-quality metrics of this Run's G (as ``ganforge evaluate``): a flat mapping
        name -> value; the protocol is in ``.last_eval["protocol"]``."""
        from .metrics.evaluate import Evaluation, evaluate_generator

        if metrics is not None and not isinstance(metrics, str):
            metrics = arguments.strings(metrics, "metrics=")
        names = metrics if metrics is None or isinstance(metrics, str) else tuple(metrics)
        if isinstance(names, str):
            names = ",".join(s.strip() for s in names.split(","))
        real = self._data if self.config.data.name == "python" else None  # data from Python
        evaluation = Evaluation(self.config, names, n, reference, seed, self.device, real=real)
        self.last_eval = evaluate_generator(self.generator, self.config, evaluation)
        return dict(self.last_eval["metrics"])

    def resume(self, **more: Any) -> Run:
        """Continue training this run (keywords as ``ganforge.resume``); the data and nets
        given from Python when it was trained are passed again unless given here."""
        more.setdefault("data", self._data)
        more.setdefault("generator", self._nets[0])
        more.setdefault("discriminator", self._nets[1])
        return resume(self.dir, **more)

    def counters(self) -> dict[str, Any]:
        """step, epoch and images of this Run's checkpoint."""
        return read_checkpoint(self.checkpoint).state if self.checkpoint else {}
