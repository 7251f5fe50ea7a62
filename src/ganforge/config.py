"""Run configuration: frozen dataclasses, filled from a recipe YAML and ``--set`` overrides.

Every field is typed and, where it matters, constrained through ``field(metadata=...)``
(``choices``, ``gt``, ``ge``, ``le``, ``lt``). Loading is strict: an unknown key, a value of the
wrong type or an impossible value is a ``ConfigError`` that names the key and what is valid.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .files import YamlLimitError, load_yaml
from .registry import is_import_path
from .trust import check_run_config, leaf_keys, remember_written

FLOAT32_MAX = 3.4028234663852886e38  # the largest float32: data beyond it becomes inf


def _f(default: Any, **meta: Any) -> Any:
    """A dataclass field with validation metadata (choices / gt / ge / le / lt)."""
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class DataConfig:
    """Which data, where it is, and how it is presented to the networks."""

    name: str = "fashion-mnist"  # a registered data set, see ``ganforge.data``
    path: str | None = None  # explicit location; else $GANFORGE_DATA, system folders, download
    split: str = _f("train", choices=("train", "test", "train+test"))
    classes: tuple[int, ...] | None = None  # keep only these labels (labelled sets)
    size: int | None = _f(None, gt=0, le=1024)  # resize (and center-crop) images to size x size
    channels: int | None = _f(None, choices=(1, 3))  # convert to grayscale or RGB
    pad: int = _f(0, ge=0, le=256)  # zero-pad images on each side by this many pixels, in black
    skip_bad: bool = False  # image folders: skip unreadable files (counted) instead of failing
    range: str = _f("tanh", choices=("tanh", "unit"))  # tanh: [-1, 1]; unit: [0, 1]
    shuffle: bool = True  # False walks the data in order, wrapping around (seed 003)
    download: bool = True  # allow torchvision's download when no local copy is found
    limit: int | None = _f(None, gt=0)  # use only the first N examples (quick runs, tests)
    points: int = _f(1000, gt=0, le=10_000_000)  # number of points of a generated (2-D) data set
    shape: tuple[int, ...] | None = None  # data given from Python: the shape of one example
    # image folders: the colour transparent pixels are laid on (a name, #rrggbb or [r, g, b])
    background: tuple[int, int, int] | str = "white"
    # gaussian-2d: points X @ A + b with X ~ N(0, I), so mean b and covariance A^T A
    gaussian_a: tuple[tuple[float, float], tuple[float, float]] = ((1.0, 2.0), (-0.1, 0.5))
    gaussian_b: tuple[float, float] = (1.0, 2.0)
    # image folders: stream from disk when the decoded images exceed data.memory_limit (auto),
    # always or never; memory_limit in GiB, None = a quarter of RAM (data/stream.py)
    stream: str = _f("auto", choices=("auto", "always", "never"))
    memory_limit: float | None = _f(None, gt=0)
    # train --resume over data that changed since the checkpoint (files added, removed or
    # edited): refused unless true; for that resume only, config.yaml keeps false
    allow_changed: bool = False

    def __post_init__(self) -> None:
        background_rgb(self.background)  # a ConfigError naming data.background if not a colour
        (a, b), (c, d) = self.gaussian_a
        values = [a, b, c, d, *self.gaussian_b]
        if not all(math.isfinite(v) for v in values):
            raise ConfigError("data.gaussian_a / gaussian_b: every value must be a finite number")
        if any(abs(v) > FLOAT32_MAX for v in values):
            raise ConfigError(
                f"data.gaussian_a / gaussian_b: {max(values, key=abs):g} is beyond float32's "
                f"limit of {FLOAT32_MAX:.4g} (training runs in float32); give smaller values"
            )
        if a * d - b * c == 0:
            raise ConfigError(
                f"data.gaussian_a: {[list(r) for r in self.gaussian_a]} is singular (its "
                "covariance A^T A has no inverse); give a matrix with a nonzero determinant"
            )


def background_rgb(value: tuple[int, int, int] | str) -> tuple[int, int, int]:
    """``data.background`` as (r, g, b) in 0-255; a ConfigError when it is not a colour."""
    if isinstance(value, tuple):
        if len(value) == 3 and all(0 <= v <= 255 for v in value):
            return value
    else:
        from PIL import ImageColor

        try:
            return ImageColor.getrgb(value)[:3]
        except ValueError:
            pass
    raise ConfigError(
        f"data.background: {value!r} is not a colour; give a name (white, black, gray), "
        "#rrggbb or [r, g, b] with values 0-255"
    )


@dataclass(frozen=True)
class ModelConfig:
    """Generator and discriminator, by registered name, and the latent distribution."""

    g: str = "mlp"
    d: str = "mlp"
    z_dim: int = _f(100, gt=0, le=10_000)
    z_dist: str = _f("normal", choices=("normal", "uniform"))  # uniform is U[-1, 1]
    init_std: float | None = _f(None, gt=0)  # N(0, std) init of conv/linear weights
    g_args: dict[str, Any] = _f({})  # extra keyword arguments of the G builder
    d_args: dict[str, Any] = _f({})  # extra keyword arguments of the D builder
    num_classes: int | None = _f(None, gt=1, le=100_000)  # conditional G and D on the data's labels
    # self-conditioning: G and D conditioned on k-means clusters of the data (data/clusters.py);
    # samples draw a cluster by its size, so the run is unconditional to its users
    clusters: int | None = _f(None, gt=1, le=10_000)
    spectral_norm: bool = False  # spectral normalisation of D's conv and linear weights
    pack: int = _f(1, ge=1, le=8)  # PacGAN: D judges `pack` samples at once (1 = off)
    ema: float | None = _f(None, gt=0, lt=1)  # decay of an EMA copy of G used for sampling
    # steps before the EMA starts averaging (sampling uses G until then); auto: at once, with
    # a warm-up of the decay, min(ema, (1 + n) / (10 + n)) after n updates (train/ema.py)
    ema_start: int | str = 0

    def __post_init__(self) -> None:
        s = self.ema_start
        if not (s == "auto" or (isinstance(s, int) and not isinstance(s, bool) and s >= 0)):
            raise ConfigError(
                f"model.ema_start: {s!r} is not allowed; give a step count (0 or more) or auto"
            )
        if self.clusters is not None and self.num_classes is not None:
            raise ConfigError(
                "model.clusters and model.num_classes both condition the nets; set one of them "
                "(--set model.num_classes=null to use clusters)"
            )

    @property
    def conditioned(self) -> int | None:
        """How many labels G and D take: classes, or clusters; None for plain nets."""
        return self.num_classes or self.clusters


def _losses() -> list[str]:
    from .losses import LOSSES

    return LOSSES.names()


def _augments() -> list[str]:
    from .augment import POLICIES

    return POLICIES.names()


@dataclass(frozen=True)
class LossConfig:
    """The adversarial loss and the label tricks of the seeds."""

    # bce: non-saturating; minimax: saturating log(1 - D(G(z))); hinge; wgan-gp: Wasserstein
    # with gradient penalty; lsgan: least squares; relativistic: relativistic average (BCE)
    name: str = _f("bce", choices=_losses)  # a registered loss, or package.module:attr
    gp_weight: float = _f(10.0, ge=0)  # wgan-gp: weight of the gradient penalty
    r1: float = _f(0.0, ge=0)  # R1 penalty weight gamma on real data (0 = off)
    r1_every: int = _f(16, gt=0)  # lazy R1: apply every k D steps, scaled by k
    real_label: float = _f(1.0, ge=0, le=1)  # 0.9 = one-sided label smoothing (seed 001)
    fake_label: float = _f(0.0, ge=0, le=1)
    label_noise: float = _f(0.0, ge=0)  # add noise * U[0, 1) to D's targets (seed 003)
    d_batch: str = _f("separate", choices=("separate", "concat"))  # concat: one [fake; real]
    d_average: bool = False  # D loss = (real + fake) / 2 instead of the sum (seed 004)


@dataclass(frozen=True)
class OptimConfig:
    """One network's optimizer."""

    name: str = _f("adam", choices=("adam", "rmsprop"))
    lr: float = _f(2e-4, gt=0)
    betas: tuple[float, float] = _f((0.5, 0.999), ge=0, lt=1)  # Adam's (beta1, beta2)
    alpha: float = _f(0.99, gt=0, le=1)  # RMSprop's smoothing constant (Keras' rho)
    eps: float = _f(1e-8, gt=0)
    clip_value: float | None = _f(None, gt=0)  # clip each gradient element to [-c, c]
    decay: float = _f(0.0, ge=0)  # Keras legacy decay: lr_t = lr / (1 + decay * t)


@dataclass(frozen=True)
class OptimPair:
    d: OptimConfig = field(default_factory=OptimConfig)
    g: OptimConfig = field(default_factory=OptimConfig)


@dataclass(frozen=True)
class TrainConfig:
    """Length, batching, precision, and how often to log, sample and checkpoint."""

    batch_size: int = _f(128, gt=0, le=1_000_000)
    epochs: int | None = _f(200, gt=0)
    iterations: int | None = _f(None, gt=0)  # when set, the run's length in steps
    max_seconds: float | None = _f(None, gt=0)  # end the run after this much training time
    max_cpu_seconds: float | None = _f(None, gt=0)  # ... after this much process CPU time
    seed: int = _f(0, ge=0)
    device: str = _f("auto", choices=("auto", "cpu", "cuda"))
    # fp32; bf16 or fp16 (CUDA, with a loss scaler) autocast; auto: bf16 where the device
    # runs it fast, else fp32 (engine/precision.py; config.yaml records the choice)
    precision: str = _f("fp32", choices=("fp32", "bf16", "fp16", "auto"))
    tf32: bool = False  # CUDA: TF32 matmuls and convolutions in fp32 (ignored on the CPU)
    threads: int | None = _f(None, gt=0, le=1024)  # CPU: torch intra-op threads; None = torch's
    channels_last: bool = False  # image nets' weights and batches in NHWC (faster convolutions)
    malloc_tune: bool = True  # CPU, glibc: keep freed heap memory between steps (engine/heap.py)
    d_steps: int = _f(1, gt=0)  # D updates per G update (G steps on every d_steps-th step)
    augment: tuple[str, ...] = _f((), choices=_augments)  # DiffAugment on D's real and fake
    # the share of images augmented: 1 = all, or auto: from 0, raised while D calls more
    # than 60% of the real images real and lowered below (ADA's rule, engine/step.py)
    augment_p: float | str = 1.0
    log_every: int = _f(50, gt=0)  # steps between log.jsonl records
    progress_every_s: float = _f(30.0, gt=0)  # piped output: seconds between progress lines
    sample_every: int | None = _f(None, gt=0)  # steps between sample grids; None = each epoch
    grid: tuple[int, int] = _f((8, 8), gt=0, le=100)  # rows, columns of the fixed-noise samples
    checkpoint_every: int | None = _f(None, gt=0)  # steps between checkpoints; None = samples'
    rollback: int = _f(0, ge=0, le=3)  # on divergence, retry from the last checkpoint at half
    # the learning rate, at most this many times (0 = stop with an error at once)
    tensorboard: bool = False  # also write TensorBoard events to RUN_DIR/tensorboard
    report: bool = True  # write RUN_DIR/report.html when training ends
    batch_per_rank: bool = False  # under torchrun: batch_size is per process, not global
    sync_bn: bool = False  # under torchrun on GPUs: BatchNorm statistics over all processes
    dist_timeout: float = _f(
        900.0, gt=0, le=604_800
    )  # seconds a collective may wait before failing

    def __post_init__(self) -> None:
        p = self.augment_p
        if not (
            p == "auto" or (isinstance(p, (int, float)) and not isinstance(p, bool) and 0 <= p <= 1)
        ):
            raise ConfigError(
                f"train.augment_p: {p!r} is not allowed; give a share from 0 to 1 or auto"
            )


@dataclass(frozen=True)
class EvalConfig:
    """Sample-quality evaluation during training (``ganforge.metrics``); off by default."""

    every: int | None = _f(None, gt=0)  # steps between evaluations (and at the end); None = off
    n: int | None = _f(
        None, gt=0, le=1_000_000
    )  # samples per evaluation; None = 10,000 images / 2,500 points
    metrics: tuple[str, ...] | None = None  # e.g. [fd, pr, is, coverage]; None = the data's set
    reference: str = _f("test", choices=("test", "train"))  # real split compared against
    seed: int = _f(0, ge=0)  # seed of the evaluation noise (the same at every evaluation)


@dataclass(frozen=True)
class Config:
    """Everything a run needs; written fully resolved to ``RUN_DIR/config.yaml``."""

    recipe: str = "vanilla-fmnist"
    description: str = ""
    source: str = ""  # the seed the recipe comes from
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimPair = field(default_factory=OptimPair)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


DEFAULT_RECIPE = "vanilla-fmnist"


# ---------------------------------------------------------------- recipes


def safe_yaml(text: str | bytes, where: str) -> Any:
    """YAML text -> plain data (a bounded SafeLoader: no Python objects, limited nesting and
    aliases); a one-line ConfigError naming ``where`` when it is not valid YAML."""
    try:
        return load_yaml(text)
    except YamlLimitError as e:
        raise ConfigError(f"{where}: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: not valid YAML ({e.__class__.__name__})") from None


def recipe_names() -> list[str]:
    files = resources.files("ganforge") / "recipes"
    return sorted(p.name[:-5] for p in files.iterdir() if p.name.endswith(".yaml"))


def recipe_dict(name: str) -> dict[str, Any]:
    """The raw YAML mapping of a shipped recipe."""
    names = recipe_names()
    if name not in names:
        raise ConfigError(f"unknown recipe {name!r}; choose one of: {', '.join(names)}")
    text = (resources.files("ganforge") / "recipes" / f"{name}.yaml").read_text()
    try:
        raw = load_yaml(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"recipe {name}: not valid YAML ({_yaml_reason(e)})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"recipe {name}: expected a mapping of config keys")
    raw.setdefault("recipe", name)
    return raw


# ---------------------------------------------------------------- building and checking


def _yaml_reason(e: yaml.YAMLError) -> str:
    """One line on why YAML was refused: the limit's own words, else the error's class."""
    return str(e) if isinstance(e, YamlLimitError) else e.__class__.__name__


# Bounds every number of a config must meet whatever its field's own range: torch's int64 for
# integers, and finite floats (NaN passes no comparison, inf passes "greater than 0").
INT_MAX = 2**63 - 1


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert ``value`` to the annotated type ``tp`` or raise a ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(e)
        raise errors[0]
    if origin is tuple:
        args = typing.get_args(tp)
        if isinstance(value, str):
            value = [v for v in value.replace("[", "").replace("]", "").split(",") if v.strip()]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {_short(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], key) for v in value)
        if len(value) != len(args):
            raise ConfigError(
                f"{key}: expected {len(args)} values, got {len(value)} ({_short(value)})"
            )
        return tuple(_coerce(v, a, key) for v, a in zip(value, args, strict=True))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {_short(value)}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
            return value.lower() in ("true", "yes")
        raise ConfigError(f"{key}: expected true or false, got {_short(value)}")
    if tp is int:
        number = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, float) and value.is_integer():
            number = int(value)
        elif isinstance(value, str) and len(value) < 100:
            try:
                number = int(value.replace("_", ""))
            except ValueError:
                pass
        if number is None:
            raise ConfigError(f"{key}: expected an integer, got {_short(value)}")
        if abs(number) > INT_MAX:
            raise ConfigError(f"{key}: {_short(number)} is too large (at most {INT_MAX})")
        return number
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str) and len(value) < 100:
            try:
                number = float(value)
            except ValueError:
                pass
        try:
            number = None if number is None else float(number)
        except OverflowError:  # an integer beyond any float
            number = math.inf
        if number is None:
            raise ConfigError(f"{key}: expected a number, got {_short(value)}")
        if not math.isfinite(number):
            raise ConfigError(f"{key}: expected a finite number, got {_short(value)}")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {_short(value)}")
    raise ConfigError(f"{key}: cannot read a value of type {_type_name(tp)}")


def _range(meta: typing.Mapping[str, Any]) -> str:
    """The valid range of a field's metadata in interval notation, e.g. ``[0, 1)``."""
    low = f"[{meta['ge']}" if "ge" in meta else f"({meta['gt']}" if "gt" in meta else "(-inf"
    high = f"{meta['le']}]" if "le" in meta else f"{meta['lt']})" if "lt" in meta else "inf)"
    return f"{low}, {high}"


def _short(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters: a message stays one short line."""
    try:
        text = repr(value)
    except ValueError:  # an integer of more digits than Python converts to text
        return "a number of thousands of digits"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check(value: Any, meta: typing.Mapping[str, Any], key: str) -> None:
    """Apply the field's validation metadata (to each item of a tuple)."""
    if value is None:
        return
    if isinstance(value, tuple):  # a list of choices, betas, a grid: check each item
        for item in value:
            _check(item, meta, key)
        return
    if "choices" in meta:
        allowed: Any = meta["choices"]() if callable(meta["choices"]) else meta["choices"]
        # a registry's names, or an import path (package.module:attr) checked when used
        plugin = callable(meta["choices"]) and isinstance(value, str) and is_import_path(value)
        if value not in allowed and not plugin:
            choices = ", ".join(str(c) for c in allowed)
            hint = " (or package.module:attr)" if callable(meta["choices"]) else ""
            raise ConfigError(
                f"{key}: {_short(value)} is not allowed; choose one of: {choices}{hint}"
            )
    valid = f"valid range {_range(meta)}"
    if "gt" in meta and not value > meta["gt"]:
        raise ConfigError(
            f"{key}: must be greater than {meta['gt']}, got {_short(value)} ({valid})"
        )
    if "ge" in meta and not value >= meta["ge"]:
        raise ConfigError(f"{key}: must be at least {meta['ge']}, got {_short(value)} ({valid})")
    if "le" in meta and not value <= meta["le"]:
        raise ConfigError(f"{key}: must be at most {meta['le']}, got {_short(value)} ({valid})")
    if "lt" in meta and not value < meta["lt"]:
        raise ConfigError(f"{key}: must be less than {meta['lt']}, got {_short(value)} ({valid})")


def build(cls: type, raw: typing.Mapping[str, Any] | None, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a nested mapping, strictly."""
    raw = {} if raw is None else raw
    if not isinstance(raw, typing.Mapping):
        raise ConfigError(
            f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {_short(raw)}"
        )
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields), key=str)
    if unknown:
        name = unknown[0]
        if not (isinstance(name, str) and name.isprintable() and len(name) <= 60):
            name = _short(name)
        raise ConfigError(f"unknown key {prefix}{name}; valid keys here: {', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        if name not in raw:
            continue
        key = prefix + name
        tp = hints[name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            kwargs[name] = build(tp, raw[name], key + ".")
        else:
            value = _coerce(raw[name], tp, key)
            _check(value, f.metadata, key)
            kwargs[name] = value
    return cls(**kwargs)


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: write it as key=value, e.g. train.epochs=5")
    key, _, text = item.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {item!r}: the key is empty; write e.g. train.epochs=5")
    try:
        value = load_yaml(text) if text.strip() else None
    except YamlLimitError as e:
        raise ConfigError(f"--set {key}: {e}") from None
    except yaml.YAMLError:
        value = text
    return key.split("."), value


def apply_overrides(raw: dict[str, Any], overrides: typing.Iterable[str]) -> dict[str, Any]:
    """Set ``a.b.c=value`` items into a nested mapping (the strict build checks them)."""
    for item in overrides:
        path, value = _parse_override(item)
        node = raw
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                group = ".".join(path[: i + 1])
                raise ConfigError(f"--set {item!r}: {group} is a value, not a group")
            node = child
        node[path[-1]] = value
    return raw


def load_config(
    recipe: str | None = None,
    overrides: typing.Iterable[str] = (),
    base: dict[str, Any] | None = None,
) -> Config:
    """Resolve a recipe (or a saved config mapping ``base``) plus overrides into a Config."""
    from .arguments import strings

    overrides = strings(overrides, "overrides=")  # one string would be read letter by letter
    raw = base if base is not None else recipe_dict(recipe or DEFAULT_RECIPE)
    raw = apply_overrides(_deep_copy(raw), overrides)
    cfg = build(Config, raw)
    if cfg.train.epochs is None and cfg.train.iterations is None:
        raise ConfigError("train: set train.epochs or train.iterations")
    return cfg


def _deep_copy(raw: Any) -> Any:
    if isinstance(raw, dict):
        return {k: _deep_copy(v) for k, v in raw.items()}
    if isinstance(raw, list):
        return [_deep_copy(v) for v in raw]
    return raw


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a config (tuples as lists), suitable for YAML."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


def save_config(cfg: Config, path: Path) -> None:
    """Write the resolved config atomically (a reader never sees half a file)."""
    from .runfiles import atomic_write_text  # synced and renamed: a full disk keeps the old one

    text = yaml.safe_dump(to_dict(cfg), sort_keys=False)
    atomic_write_text(path, text)
    remember_written(path, text.encode())  # this process built it: its names are trusted here


def read_config(
    path: Path,
    overrides: typing.Iterable[str] = (),
    trust_code: bool | None = None,
    given: typing.Iterable[str] = (),
    resuming: bool = False,
) -> Config:
    """Load a run's resolved ``config.yaml`` (plus overrides, e.g. a longer length).

    A run directory is data: a config that names code to import is refused before anything
    is built unless ``trust_code`` (``ganforge.trust``). ``given``: dotted keys the caller
    sets itself (a net passed from Python); ``overrides`` count as given too."""
    overrides = list(overrides)
    try:
        data = path.read_bytes()
        raw = load_yaml(data)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no config.yaml; is this a ganforge run directory?") from None
    except OSError as e:  # a folder in its place, unreadable
        raise ConfigError(f"{path}: cannot be read ({e.strerror}); move it away") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({_yaml_reason(e)})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys")
    user = leaf_keys(apply_overrides({}, overrides)) | set(given)
    check_run_config(raw, path, data, trust_code, user, resuming)
    try:
        return load_config(base=raw, overrides=overrides)
    except ConfigError as e:
        try:  # a problem of the file itself (not of an override) names the file
            load_config(base=raw)
        except ConfigError:
            raise ConfigError(f"{path}: {e}") from None
        raise
