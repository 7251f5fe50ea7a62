"""The fixed-noise sample images of a run: finding them in order, compact PNGs, a GIF of them."""

from __future__ import annotations

import io
import os
import re
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageChops, ImageDraw, ImageFont

_NAME = re.compile(r"^(epoch|step)_(\d+)\.png$")
MAX_PIXELS = 8192 * 8192  # a sample grid is far smaller; a larger header is not one of ours


@dataclass(frozen=True)
class Frame:
    """One sample image: its file and a label such as "epoch 3" or "step 1200"."""

    path: Path
    label: str


def sample_frames(run_dir: Path) -> list[Frame]:
    """``samples/epoch_NNNN.png`` and ``samples/step_NNNNNN.png`` in training order.

    The loop names samples by epoch unless ``train.sample_every`` is set, and then only the
    final (partial-epoch) grid is named by step, so epoch files come first, step files after.
    """
    found = []
    for p in (Path(run_dir) / "samples").glob("*.png"):
        m = _NAME.match(p.name)
        if m and readable_png(p):
            kind, num = m.group(1), int(m.group(2))
            found.append(((kind == "step", num), Frame(p, f"{kind} {num}")))
    return [f for _, f in sorted(found, key=lambda t: t[0])]


def readable_png(path: Path) -> bool:
    """Whether ``path`` is a regular file holding an intact PNG of a sane size. A damaged or
    foreign file in samples/ (a FIFO, a truncated or huge PNG) is left out of the report."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=["PNG"]) as im:
                if im.width * im.height > MAX_PIXELS:
                    return False
                im.verify()  # chunk checksums, without decoding
            with Image.open(path, formats=["PNG"]) as im:
                im.load()
    except Exception:  # untrusted bytes: any failure of the decoder means not usable
        return False
    return True


def spread(items: list, n: int) -> list:
    """At most ``n`` items, evenly spaced, always keeping the first and the last."""
    if len(items) <= n:
        return list(items)
    if n <= 1:
        return items[-1:]
    idx = sorted({round(i * (len(items) - 1) / (n - 1)) for i in range(n)})
    return [items[i] for i in idx]


def _flatten_alpha(im: Image.Image) -> Image.Image:
    if im.mode in ("RGBA", "LA", "P"):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    return im.convert("RGB")


def compact(im: Image.Image) -> Image.Image:
    """The same pixels in the smallest plain mode: gray (L) when R = G = B, a palette when the
    image has at most 256 colours, else RGB. Lossless; grids of gray images shrink ~3x."""
    rgb = _flatten_alpha(im)
    r, g, b = rgb.split()
    if not ImageChops.difference(r, g).getbbox() and not ImageChops.difference(r, b).getbbox():
        return r  # gray
    if rgb.getcolors(256) is not None:
        return rgb.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    return rgb


def png_bytes(im: Image.Image | Path) -> bytes:
    """A compact, optimized PNG encoding of an image or image file."""
    if isinstance(im, Path):
        with Image.open(im) as f:
            image = f.copy()
    else:
        image = im
    buf = io.BytesIO()
    compact(image).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _labelled(path: Path, label: str, size: tuple[int, int] | None) -> Image.Image:
    with Image.open(path) as f:
        im = _flatten_alpha(f)
    if size is not None and im.size != size:
        im = im.resize(size, Image.Resampling.NEAREST)
    band = 16  # a white strip under the image with the frame's label
    out = Image.new("RGB", (im.width, im.height + band), "white")
    out.paste(im, (0, 0))
    ImageDraw.Draw(out).text((4, im.height + 2), label, fill="black", font=ImageFont.load_default())
    return out


def write_animation(
    frames: list[Frame], path: Path, max_frames: int = 100, ms: int = 300
) -> Path | None:
    """An animated GIF of the frames (at most ``max_frames``, evenly spread), each labelled;
    the last frame is held longer. Returns None when there are no frames."""
    frames = spread(frames, max_frames)
    if not frames:
        return None
    ims, size = [], None
    for fr in frames:
        im = _labelled(fr.path, fr.label, size)
        size = size or (im.width, im.height - 16)
        ims.append(im)
    durations = [ms] * (len(ims) - 1) + [max(ms, 2000)]
    path.parent.mkdir(parents=True, exist_ok=True)
    ims[0].save(
        path, save_all=True, append_images=ims[1:], duration=durations, loop=0, optimize=True
    )
    return path
