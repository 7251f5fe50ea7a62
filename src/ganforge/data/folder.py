"""Any folder of images as a data set (``image-folder``), the way seed 004 uses its sprites.

Images are found recursively (hidden files and folders skipped, sorted by path), decoded with
Pillow, converted to RGB (or ``data.channels``), resized so the short side is ``data.size``
(64 by default) and center-cropped, and stored as one uint8 (N, C, size, size) tensor. Each
image is resized as soon as it is decoded, so memory holds the small copies only.

Bad files (not an image, truncated, too large) are collected with the reason and reported by
their path relative to the folder: the load stops with a DataError naming them, or with
``data.skip_bad=true`` they are left out and counted in the data's source line.
"""

from __future__ import annotations

import functools
import os
import stat
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from ..config import DataConfig
from ..errors import DataError
from . import TensorData, _resize, candidate_dirs, dataset

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


def list_images(root: Path) -> list[Path]:
    """Image files under ``root``, recursively, by suffix; hidden names skipped; sorted."""
    found = []
    for folder, dirs, files in os.walk(root):  # symlinked folders are not entered (no loops)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [
            Path(folder, f)
            for f in files
            if not f.startswith(".") and os.path.splitext(f)[1].lower() in SUFFIXES
        ]
    return sorted(found)


def _flatten_alpha(img: Image.Image) -> Image.Image:
    """Transparent pixels become white: icons and sprites are drawn for a light page."""
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba)
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


def decode(path: Path, size: int, channels: int) -> torch.Tensor:
    """One image file -> (channels, size, size) uint8: short side to ``size``, center crop."""
    limit = Image.MAX_IMAGE_PIXELS or FALLBACK_MAX_PIXELS
    mode = "RGB" if channels == 3 else "L"
    _check_regular(path)
    with Image.open(path, formats=raster_formats()) as img:  # reads the header only
        if img.width * img.height > limit:
            raise BadImage(f"{img.width}x{img.height} pixels, over the {limit:,} limit")
        img.draft(mode, (size, size))  # JPEG: decode at the smallest scale still >= size
        ImageOps.exif_transpose(img, in_place=True)  # camera rotation; loads the pixels
        img = _flatten_alpha(img).convert(mode)
    hwc = torch.from_numpy(np.array(img).reshape(img.height, img.width, -1))
    chw = hwc.permute(2, 0, 1).unsqueeze(0)  # (1, C, H, W)
    return _resize(chw, size)[0]  # the same resize as every other data set's


def _try(path: Path, size: int, channels: int) -> torch.Tensor | str:
    """The image, or why the file cannot be used."""
    try:
        return decode(path, size, channels)
    except BadImage as e:
        return str(e)
    except Exception as e:  # untrusted bytes: any failure of any decoder means a bad file
        return f"{type(e).__name__}: {e}".replace("\n", " ")


def load_folder(
    root: Path, size: int, channels: int = 3, skip_bad: bool = False, limit: int | None = None
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
    with warnings.catch_warnings():  # Pillow's bomb warning, raised in any thread, is an error
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with ThreadPoolExecutor(WORKERS) as pool:
            results = pool.map(lambda f: _try(f, size, channels), files)
            for i, result in enumerate(results):
                if isinstance(result, str):
                    bad.append((i, result))
                else:
                    x[i] = result
    source = f"{root} ({len(files) - len(bad):,} images"
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
    x, source = load_folder(
        root, cfg.size or DEFAULT_SIZE, cfg.channels or 3, cfg.skip_bad, cfg.limit
    )
    return TensorData(x, None, source)
