"""Take a trained generator elsewhere: ONNX or TorchScript files with a dynamic batch size.

The exported network is the sampling G (the EMA of G when the run keeps one), in eval mode:
``x = G(z)``, or ``x = G(z, y)`` with ``y`` int64 class labels for a class-conditional run.
ganforge writes these files but never loads a user-given ``.pt``: TorchScript archives are
not free of pickle in general (tests load ganforge's own export only).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from . import nets
from .ckpt_read import read_run
from .config import Config
from .data import data_shape
from .errors import GanforgeError
from .runfiles import RunPin, atomic_write, atomic_write_bytes, atomic_write_text, check_output

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
ONNX_OPSET = 17


@dataclass
class Sampler:
    """A run's sampling generator and where it came from."""

    g: torch.nn.Module
    cfg: Config
    checkpoint: Path
    ema: bool  # the EMA of G (model.ema) rather than G itself

    @property
    def conditional(self) -> bool:
        return self.cfg.model.num_classes is not None

    @property
    def which(self) -> str:
        """'the EMA of G' or 'G', for messages."""
        return "the EMA of G" if self.ema else "G"


def load_sampler(
    run_dir: Path | RunPin, checkpoint: str | None = None, device: torch.device | str = "cpu"
) -> Sampler:
    """The G that ``sample``, ``evaluate`` and ``export`` use: of checkpoint ``best`` if
    present, else ``last`` (or the one asked for); its EMA when the run keeps one. Given a
    ``RunPin``, config and checkpoint come from the folder it holds open."""
    if isinstance(run_dir, RunPin):
        return _load_sampler(run_dir, checkpoint, device)
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise GanforgeError(f"{run_dir}: no such run directory")
    with RunPin(run_dir) as pin:
        return _load_sampler(pin, checkpoint, device)


def _load_sampler(pin: RunPin, checkpoint: str | None, device: torch.device | str) -> Sampler:
    cfg, snap = read_run(pin, (checkpoint,) if checkpoint else ("best", "last"))
    g = nets.build_generator(cfg.model, data_shape(cfg.data)).to(device)
    snap.load_into("sampler", g, device)
    g.eval()
    return Sampler(g, cfg, snap.path, snap.has_ema)


def example_inputs(s: Sampler, n: int = 2) -> tuple[torch.Tensor, ...]:
    """Inputs of batch ``n`` for tracing: noise, and labels 0..n-1 for a conditional G."""
    z = torch.zeros(n, s.cfg.model.z_dim)
    k = s.cfg.model.num_classes
    if not s.conditional or k is None:
        return (z,)
    return (z, torch.arange(n, dtype=torch.long) % k)


def _onnx_bytes(s: Sampler, inputs: tuple[torch.Tensor, ...]) -> bytes:
    try:
        import onnx  # noqa: F401  (torch's exporter needs it)
    except ImportError:
        raise GanforgeError(
            "--format onnx needs the onnx package: pip install 'ganforge[export]'"
        ) from None
    names = ["z", "y"][: len(inputs)]
    dynamic = {name: {0: "batch"} for name in [*names, "x"]}
    buf = io.BytesIO()
    with warnings.catch_warnings():  # tracing warns about the labels' range check
        warnings.simplefilter("ignore")
        torch.onnx.export(
            s.g,
            inputs,
            buf,  # pyright: ignore[reportArgumentType]  (a file object is taken too)
            input_names=names,
            output_names=["x"],
            dynamic_axes=dynamic,
            opset_version=ONNX_OPSET,
            dynamo=False,  # the TorchScript-based exporter: no onnxscript needed
        )
    return buf.getvalue()


def _torchscript_bytes(s: Sampler, inputs: tuple[torch.Tensor, ...]) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(s.g, inputs, check_trace=False)
    return traced.save_to_buffer()  # pyright: ignore[reportAttributeAccessIssue]  (what jit.save does)


def export_run(
    run_dir: Path, fmt: str, out: Path | None = None, checkpoint: str | None = None
) -> tuple[Path, Sampler]:
    """Export a run's sampling G to ``out`` (default RUN_DIR/generator.onnx or .pt); the
    file appears complete or not at all. Returns the path and the sampler exported.

    The file is made in memory first, then written through ``atomic_write``: torch's C++
    writers abort the process on a full disk, a Python write fails with one line."""
    if fmt not in FORMATS:
        raise GanforgeError(f"--format {fmt}: choose one of {', '.join(FORMATS)}")
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise GanforgeError(f"{run_dir}: no such run directory")
    out = Path(out) if out else run_dir / f"generator{FORMATS[fmt]}"
    check_output(out, f"-o {out}", reads=[run_dir])  # before any work
    with RunPin(run_dir, "it was exported") as pin:
        s = load_sampler(pin, checkpoint)
        inputs = example_inputs(s)
        data = _onnx_bytes(s, inputs) if fmt == "onnx" else _torchscript_bytes(s, inputs)
        out = pin.place(out)  # into the run exported, even if it was moved aside meanwhile
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out, data)
    return out, s


def describe(out: Path, s: Sampler, fmt: str) -> str:
    """The one line ``ganforge export`` prints."""
    lo, hi = ("0", "1") if s.cfg.data.range == "unit" else ("-1", "1")
    inputs = f"z (batch, {s.cfg.model.z_dim}) {s.cfg.model.z_dist}"
    if s.conditional:
        inputs += f", y (batch,) int64 labels 0-{(s.cfg.model.num_classes or 1) - 1}"
    shape = data_shape(s.cfg.data)
    output = f"x in [{lo}, {hi}]" if len(shape) == 3 else f"x (batch, {shape[0]}) points"
    return (
        f"wrote {out} ({fmt}, {s.which} of {s.checkpoint}; inputs {inputs}; "
        f"output {output}; any batch size)"
    )


# ---------------------------------------------------------------- samples as files

MARKER = ".ganforge-samples"  # marks a folder of samples written by ganforge


def _check_dir(out: Path, run_dir: Path) -> None:
    """A new or empty folder, or one ganforge filled before (its files are replaced), that
    can take files and is none of a run's own (``runfiles.check_output``)."""
    check_output(out, f"-o {out}", reads=[run_dir], folder=True)
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise GanforgeError(
            f"-o {out}: folder is not empty and not written by ganforge sample; "
            "choose a new or empty folder"
        )


def to_uint8(x: torch.Tensor, range_: str) -> torch.Tensor:
    """(N, C, H, W) images in the model's range as uint8 (N, H, W, C), rounded as
    torchvision's save_image rounds."""
    lo, hi = (0.0, 1.0) if range_ == "unit" else (-1.0, 1.0)
    x = ((x.detach().float().cpu() - lo) / (hi - lo)).clamp(0, 1)
    return x.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def write_sample_dir(
    s: Sampler,
    z: torch.Tensor,
    y: torch.Tensor | None,
    out: Path,
    batch: int = 256,
) -> list[Path]:
    """Write one PNG per sample of G(z[, y]) into folder ``out`` (checked by ``sample_dir``):
    ``000000.png``, ... (with ``_class<k>`` for a conditional run). Each file is written
    through ``atomic_write``, so a reader never sees half a PNG and a full disk gives one line;
    files of an earlier ``sample --format dir`` into the same folder that this one does not
    rewrite are removed, and so are the temporary files of a killed one."""
    from PIL import Image

    if len(data_shape(s.cfg.data)) != 3:
        raise GanforgeError(
            f"--format dir writes images; {s.cfg.data.name} is 2-D point data: write a grid "
            "(the default) instead"
        )
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / MARKER, "ganforge sample --format dir\n")
    device = next(s.g.parameters()).device
    written: list[Path] = []
    for i in range(0, len(z), batch):
        zb = z[i : i + batch].to(device)
        yb = None if y is None else y[i : i + batch].to(device)
        with torch.no_grad():
            img = to_uint8(nets.generate(s.g, zb, yb), s.cfg.data.range).numpy()
        for j, a in enumerate(img):
            k = i + j
            name = f"{k:06d}.png" if y is None else f"{k:06d}_class{int(y[k])}.png"
            path = out / name
            with atomic_write(path) as f:  # a reader never sees half a PNG
                Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a).save(f, format="PNG")
            written.append(path)
    keep = {p.name for p in written}
    for old in out.glob("[0-9][0-9][0-9][0-9][0-9][0-9]*.png"):
        if old.name not in keep:
            old.unlink()
    for tmp in out.glob(".[0-9][0-9][0-9][0-9][0-9][0-9]*.png.[0-9]*.tmp"):  # of a killed sample
        tmp.unlink()
    return written


def sample_dir(
    run_dir: Path,
    n: int,
    out: Path,
    seed: int,
    checkpoint: str | None,
    device: torch.device | str,
    y: torch.Tensor | None,
) -> str:
    """``ganforge sample --format dir``: n PNGs from the same noise as the grid of ``sample``
    with this seed; returns the line to print."""
    from .seeding import mix_seed

    _check_dir(out, run_dir)  # before any work
    with RunPin(run_dir, "it was sampled") as pin:
        s = load_sampler(pin, checkpoint, device)
        gen = torch.Generator().manual_seed(mix_seed(seed))
        z = nets.sample_noise(n, s.cfg.model.z_dim, s.cfg.model.z_dist, gen, "cpu")
        out = pin.place(out)  # -o inside the run: into the run sampled, wherever it is now
        written = write_sample_dir(s, z, y, out)
    return f"wrote {len(written)} PNG files to {out}/ from {s.which} of {s.checkpoint}"
