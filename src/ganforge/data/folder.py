"""Any folder of images as a data set (``image-folder``), the way seed 004 uses its sprites.

Images are found recursively (hidden files and folders skipped, sorted by path), decoded with
Pillow, converted to RGB (or ``data.channels``), resized so the short side is ``data.size``
(64 by default) and center-cropped, and stored as one uint8 (N, C, size, size) tensor. Each
image is resized as soon as it is decoded, so memory holds the small copies only.

Transparent pixels are laid on ``data.background`` (white by default). What was done to
some images (transparency flattened, grayscale files made RGB, enlargement by more than 2x) is
counted once in the data's source line, printed when the run starts.

Bad files (not an image, truncated, too large) are collected with the reason and reported by
their path relative to the folder: the load stops with a DataError naming them, or with
``data.skip_bad=true`` they are left out and counted in the data's source line.
"""

from __future__ import annotations

import functools
import os
import stat
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from ..config import DataConfig, background_rgb
from ..errors import DataError
from . import Origin, TensorData, _resize, candidate_dirs, dataset

DEFAULT_SIZE = 64
# Raster formats taken from a folder. Pillow recognises more extensions, but several are
# stubs or need outside tools (EPS, MPEG, HDF5, WMF): a docs folder would fail on them.
SUFFIXES = frozenset(
    ".png .apng .jpg .jpeg .jpe .jfif .gif .bmp .dib .webp .tif .tiff .ppm .pgm .pbm .pnm "
    ".tga .qoi .avif .jp2 .j2k".split()
)
# Decompression bombs: a file whose header claims more pixels than Pillow's own limit
# (PIL.Image.MAX_IMAGE_PIXELS, about 89 megapixels: larger than ordinary camera photos) is
# refused from its header, before any pixel is decoded. A limit tied to the 64x64 target
# (say 64x its pixels, 512x512) would refuse every ordinary photo, so the fixed one is used.
FALLBACK_MAX_PIXELS = 89_478_485  # Pillow's default, used if a program set the limit to None
# Decoding threads: Pillow releases the GIL while decoding; on 2 cores, 2 threads load 96x96
# PNG icons 1.3-1.8x faster than 1 (benchmarks/image_folder.py).
WORKERS = min(4, os.cpu_count() or 1)
LISTED = 5  # bad files named in a message


class BadImage(Exception):
    """One file that cannot be used, with the reason."""


def _walk(root: Path) -> Iterator[Path]:
    """Image files under ``root``, recursively, by suffix; hidden names skipped."""
    for folder, dirs, files in os.walk(root):  # symlinked folders are not entered (no loops)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            if not f.startswith(".") and os.path.splitext(f)[1].lower() in SUFFIXES:
                yield Path(folder, f)


def list_images(root: Path) -> list[Path]:
    """Image files under ``root``, recursively, by suffix; hidden names skipped; sorted."""
    return sorted(_walk(root))


def has_images(root: Path) -> bool:
    """Whether ``root`` holds at least one image file (stops at the first)."""
    return next(_walk(root), None) is not None


GRAY_MODES = frozenset(("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F"))
UPSCALE_NOTE = 2.0  # images enlarged by more than this factor are counted in the source line


@dataclass(frozen=True)
class Decoded:
    """One decoded image and what was done to it, for the data set's one-line notes."""

    x: torch.Tensor  # (channels, size, size) uint8
    transparent: bool  # had an alpha channel or a transparent colour: laid on the background
    gray: bool  # a grayscale file repeated into RGB
    upscale: float  # size / the short side of the file (> 1: enlarged)


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info


def _flatten_alpha(img: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """Transparent pixels are laid on ``background`` (``data.background``, white by default:
    icons and sprites are drawn for a light page)."""
    if _has_alpha(img):
        rgba = img.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(base, rgba)
    if img.mode.startswith("I"):  # 16-bit grayscale: keep the high byte (convert() clips)
        high = np.asarray(img.convert("I"), dtype=np.int64) >> 8
        return Image.fromarray(high.clip(0, 255).astype(np.uint8))
    return img


@functools.cache
def raster_formats() -> list[str]:
    """Pillow's format names for ``SUFFIXES``: files are decoded only by these plugins, whatever
    their bytes claim (an EPS renamed x.png would otherwise run Ghostscript)."""
    Image.init()
    return sorted({f for ext, f in Image.registered_extensions().items() if ext in SUFFIXES})


def _check_regular(path: Path) -> None:
    """Refuse anything but a regular file before opening it: opening a FIFO blocks until a
    writer comes, a device may never end; a symlink loop or a dangling link is an OSError."""
    mode = os.stat(path).st_mode  # follows symlinks
    if not stat.S_ISREG(mode):
        kind = (
            "a FIFO"
            if stat.S_ISFIFO(mode)
            else "a socket"
            if stat.S_ISSOCK(mode)
            else "a device"
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a folder"
            if stat.S_ISDIR(mode)
            else "not a regular file"
        )
        raise BadImage(f"{kind}, not an image file")


def decode(
    path: Path, size: int, channels: int, background: tuple[int, int, int] = (255, 255, 255)
) -> Decoded:
    """One image file -> (channels, size, size) uint8: short side to ``size``, center crop."""
    limit = Image.MAX_IMAGE_PIXELS or FALLBACK_MAX_PIXELS
    mode = "RGB" if channels == 3 else "L"
    _check_regular(path)
    with Image.open(path, formats=raster_formats()) as img:  # reads the header only
        if img.width * img.height > limit:
            raise BadImage(f"{img.width}x{img.height} pixels, over the {limit:,} limit")
        upscale = size / max(1, min(img.width, img.height))
        gray = channels == 3 and img.mode in GRAY_MODES
        img.draft(mode, (size, size))  # JPEG: decode at the smallest scale still >= size
        ImageOps.exif_transpose(img, in_place=True)  # camera rotation; loads the pixels
        transparent = _has_alpha(img)
        img = _flatten_alpha(img, background).convert(mode)
    hwc = torch.from_numpy(np.array(img).reshape(img.height, img.width, -1))
    chw = hwc.permute(2, 0, 1).unsqueeze(0)  # (1, C, H, W)
    return Decoded(_resize(chw, size)[0], transparent, gray, upscale)  # every data set's resize


def _try(path: Path, size: int, channels: int, background: tuple[int, int, int]) -> Decoded | str:
    """The image, or why the file cannot be used."""
    try:
        return decode(path, size, channels, background)
    except BadImage as e:
        return str(e)
    except Exception as e:  # untrusted bytes: any failure of any decoder means a bad file
        return f"{type(e).__name__}: {e}".replace("\n", " ")


def _colour(rgb: tuple[int, int, int]) -> str:
    """white, black, or #rrggbb: the background as the notes say it."""
    names = {(255, 255, 255): "white", (0, 0, 0): "black"}
    return names.get(rgb, "#{:02x}{:02x}{:02x}".format(*rgb))


def notes(decoded: list[Decoded], size: int, background: tuple[int, int, int]) -> list[str]:
    """What was done to some of the images, said once in the data's source line:
    transparency laid on the background, grayscale made RGB, enlargement by more than 2x."""
    out = []
    transparent = sum(d.transparent for d in decoded)
    if transparent:
        out.append(f"{transparent:,} with transparency laid on {_colour(background)} "
                   "(data.background)")  # fmt: skip
    gray = sum(d.gray for d in decoded)
    if gray:
        out.append(f"{gray:,} grayscale made RGB")
    big = [d.upscale for d in decoded if d.upscale > UPSCALE_NOTE]
    if big:
        out.append(
            f"{len(big):,} up-scaled more than {UPSCALE_NOTE:g}x to {size}x{size} "
            f"(up to {max(big):.1f}x; a smaller data.size keeps them sharp)"
        )
    return out


def load_folder(
    root: Path,
    size: int,
    channels: int = 3,
    skip_bad: bool = False,
    limit: int | None = None,
    background: tuple[int, int, int] = (255, 255, 255),
) -> tuple[torch.Tensor, str]:
    """Every image under ``root`` as (N, channels, size, size) uint8, and a source line."""
    files = list_images(root)
    if not files:
        kinds = ", ".join(sorted(SUFFIXES)[:8])
        raise DataError(f"{root}: no images found (looked recursively for {kinds}, ...)")
    if len(files) == 1:
        raise DataError(
            f"{root}: only one image ({files[0].relative_to(root)}); "
            "a GAN learns from many, add more images"
        )
    files = files[:limit]
    x = torch.empty((len(files), channels, size, size), dtype=torch.uint8)
    bad: list[tuple[int, str]] = []  # (index in files, reason)
    good: list[Decoded] = []
    with warnings.catch_warnings():  # Pillow's bomb warning, raised in any thread, is an error
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with ThreadPoolExecutor(WORKERS) as pool:
            results = pool.map(lambda f: _try(f, size, channels, background), files)
            for i, result in enumerate(results):
                if isinstance(result, str):
                    bad.append((i, result))
                else:
                    x[i] = result.x
                    good.append(replace(result, x=torch.empty(0)))  # keep the notes only
    source = "; ".join(
        [f"{root} ({len(files) - len(bad):,} images", *notes(good, size, background)]
    )
    if bad:
        listing = "; ".join(f"{files[i].relative_to(root)} ({why})" for i, why in bad[:LISTED])
        more = f"; and {len(bad) - LISTED} more" if len(bad) > LISTED else ""
        if not skip_bad:
            raise DataError(
                f"{root}: {len(bad)} of {len(files)} files cannot be used as images: "
                f"{listing}{more}; fix or remove them, or set data.skip_bad=true to skip them"
            )
        keep = torch.ones(len(files), dtype=torch.bool)
        keep[[i for i, _ in bad]] = False
        x = x[keep]
        source += f"; skipped {len(bad)} unreadable: {listing}{more}"
        if len(x) < 2:
            raise DataError(f"{root}: only {len(x)} readable image(s) left after skipping")
    return x, source + ")"


def _folder(cfg: DataConfig) -> Path:
    """``data.path`` (``--data``), else ``$GANFORGE_DATA/image-folder``; never the whole root."""
    for how, path in candidate_dirs(cfg):
        if how == "$GANFORGE_DATA" and path.name != cfg.name:
            continue
        if not path.is_dir():
            raise DataError(f"{how} {path}: a file; image-folder reads a folder of images")
        return path
    raise DataError(
        "image-folder needs a folder of images: pass --data DIR (data.path=DIR), "
        "or put them in $GANFORGE_DATA/image-folder"
    )


@dataset("image-folder", (3, DEFAULT_SIZE, DEFAULT_SIZE))
def image_folder(cfg: DataConfig) -> TensorData:
    """Any folder of images, RGB 64x64 unless ``data.channels`` / ``data.size`` say otherwise.

    ``data.limit`` is applied to the sorted file list before decoding, to keep quick runs quick.
    """
    root = _folder(cfg)
    size, channels = cfg.size or DEFAULT_SIZE, cfg.channels or 3
    background = background_rgb(cfg.background)
    streamed = _streamed(root, cfg, size, channels, background)
    if streamed is not None:
        return streamed
    x, source = load_folder(root, size, channels, cfg.skip_bad, cfg.limit, background)
    return TensorData(x, None, source, origin=folder_origin(root, list_images(root)[: cfg.limit]))


def folder_origin(root: Path, files: list[Path]) -> Origin:
    """An image folder's files as the run records them: the list, sizes and mtimes."""
    return Origin(f"the image folder {root}", root, tuple(files), listed=True)


def _streamed(
    root: Path, cfg: DataConfig, size: int, channels: int, background: tuple[int, int, int]
) -> TensorData | None:
    """A ``StreamData`` when the folder is to be read from disk as training goes
    (``data.stream``, ``data.memory_limit``), else None (decode it all into memory)."""
    from .stream import StreamData, memory_budget

    if cfg.stream == "never":
        return None
    files = list_images(root)[: cfg.limit]
    decoded = len(files) * channels * size * size
    budget = memory_budget(cfg.memory_limit)
    if cfg.stream == "auto" and decoded <= budget:
        return None
    if len(files) < 2:
        raise DataError(f"{root}: {len(files)} image(s); a GAN learns from many, add more images")
    if cfg.pad:
        raise DataError("data.pad is not supported on streamed data; set data.pad=0")
    why = (
        "data.stream=always"
        if cfg.stream == "always"
        else f"over data.memory_limit {budget / 2**30:.2f} GiB"
    )
    source = (
        f"{root} ({len(files):,} images, streamed from disk: {decoded / 2**30:.2f} GiB "
        f"decoded, {why})"
    )
    empty = torch.empty((0, channels, size, size), dtype=torch.uint8)
    return StreamData(
        empty, None, source, cfg.range, origin=folder_origin(root, files), files=tuple(files),
        root=root, size=size, channels=channels, background=background,
    )  # fmt: skip
