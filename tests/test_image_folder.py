"""image-folder: a tree of mixed image files -> one uint8 tensor; bad files named or skipped."""

from __future__ import annotations

import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ganforge.config import DataConfig
from ganforge.data import data_shape, folder, load_data
from ganforge.errors import DataError


def _cfg(path: Path | None = None, **kw) -> DataConfig:
    return DataConfig(name="image-folder", path=None if path is None else str(path), **kw)


def _save(img: Image.Image, path: Path, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)
    return path


def make_tree(root: Path) -> dict[str, Path]:
    """Sorted names -> files: RGB PNG and JPEG, gray, RGBA, palette, 16-bit, nested folders."""
    half = np.zeros((64, 128, 3), np.uint8)
    half[:, 64:] = 255  # left half black, right half white, 128 wide
    files = {
        "a/b/photo.jpg": _save(Image.new("RGB", (100, 120), (200, 30, 30)), root / "a/b/photo.jpg"),
        "a/half.png": _save(Image.fromarray(half), root / "a/half.png"),
        "clear.png": _save(Image.new("RGBA", (40, 40), (0, 0, 0, 0)), root / "clear.png"),
        "deep16.png": _save(
            Image.fromarray(np.full((20, 30), 0x8000, np.uint16)), root / "deep16.png"
        ),
        "gray.png": _save(Image.new("L", (30, 30), 77), root / "gray.png"),
        "palette.gif": _save(
            Image.new("RGB", (50, 70), (0, 0, 255)).convert("P"), root / "palette.gif"
        ),
    }
    (root / "notes.txt").write_text("not an image, and not named like one: ignored")
    (root / ".hidden.png").write_bytes(b"hidden files are ignored")
    return files


def test_mixed_tree_becomes_one_uint8_tensor(tmp_path):
    make_tree(tmp_path)
    d = load_data(_cfg(tmp_path))
    assert d.x.shape == (6, 3, 64, 64) and d.x.dtype == torch.uint8 and d.labels is None
    photo, half, clear, deep, gray, palette = d.x
    red = photo.float().mean(dim=(1, 2))
    assert red[0] > 180 and red[1] < 50 and red[2] < 50  # JPEG: approximately (200, 30, 30)
    # 128x64 -> short side 64 already, center crop keeps columns 32..95: black, then white
    assert half[:, :, :30].max() == 0 and half[:, :, 34:].min() == 255
    assert clear.min() == 255  # transparent -> white
    assert deep.unique().tolist() == [128]  # high byte of 0x8000, not clipped to 255
    assert gray.unique().tolist() == [77]  # gray -> R = G = B
    assert palette[2].min() == 255 and palette[:2].max() == 0
    assert "6 images" in d.source


def test_size_channels_and_pad_change_the_shape(tmp_path):
    make_tree(tmp_path)
    cfg = _cfg(tmp_path, size=24, channels=1, pad=4)
    d = load_data(cfg)
    assert d.x.shape == (6, 1, 32, 32) and data_shape(cfg) == (1, 32, 32)
    assert data_shape(_cfg()) == (3, 64, 64)


def test_threads_give_the_same_result(tmp_path, monkeypatch):
    make_tree(tmp_path)
    two = load_data(_cfg(tmp_path)).x
    monkeypatch.setattr(folder, "WORKERS", 1)
    assert torch.equal(load_data(_cfg(tmp_path)).x, two)


def _damage(root: Path) -> None:
    jpeg = _save(Image.effect_noise((64, 64), 50).convert("RGB"), root / "sub/cut.jpg")
    jpeg.write_bytes(jpeg.read_bytes()[:-800])  # truncated in the middle of the pixels
    (root / "fake.png").write_text("this is text")


def test_bad_files_are_named_by_relative_path(tmp_path):
    make_tree(tmp_path)
    _damage(tmp_path)
    with pytest.raises(DataError) as e:
        load_data(_cfg(tmp_path))
    msg = str(e.value)
    assert "\n" not in msg and "2 of 8 files cannot be used" in msg
    assert "fake.png (UnidentifiedImageError" in msg and "sub/cut.jpg (OSError" in msg
    assert "data.skip_bad=true" in msg


def test_skip_bad_keeps_the_rest_and_counts(tmp_path):
    make_tree(tmp_path)
    _damage(tmp_path)
    d = load_data(_cfg(tmp_path, skip_bad=True))
    assert len(d) == 6 and "skipped 2 unreadable" in d.source
    clean = tmp_path / "clean"
    make_tree(clean)
    assert torch.equal(d.x, load_data(_cfg(clean)).x)


def test_skip_bad_with_fewer_than_two_left(tmp_path):
    _save(Image.new("RGB", (8, 8)), tmp_path / "ok.png")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(DataError, match="only 1 readable image"):
        load_data(_cfg(tmp_path, skip_bad=True))


def _png_claiming(path: Path, width: int, height: int) -> Path:
    """A small valid PNG whose header (IHDR, CRC fixed) claims width x height."""
    _save(Image.new("RGB", (4, 4)), path)
    raw = bytearray(path.read_bytes())
    raw[16:24] = struct.pack(">II", width, height)
    raw[29:33] = struct.pack(">I", zlib.crc32(bytes(raw[12:29])))
    path.write_bytes(bytes(raw))
    return path


def test_decompression_bomb_is_refused_from_the_header(tmp_path):
    _save(Image.new("RGB", (8, 8)), tmp_path / "ok.png")
    _png_claiming(tmp_path / "bomb.png", 100_000, 100_000)  # 10 gigapixels
    start = time.monotonic()
    with pytest.raises(DataError, match=r"bomb.png \(DecompressionBombError"):
        load_data(_cfg(tmp_path))
    assert time.monotonic() - start < 2


@pytest.mark.parametrize("limit", [5000, 3000])  # 64x64 = 4096: over 1x and over 2x the limit
def test_images_over_the_pixel_limit_are_refused(tmp_path, monkeypatch, limit):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    _save(Image.new("RGB", (8, 8)), tmp_path / "small.png")
    _save(Image.new("RGB", (32, 32)), tmp_path / "small2.png")
    _save(Image.new("RGB", (64, 64)), tmp_path / "large.png")
    if limit > 4096:
        assert len(load_data(_cfg(tmp_path))) == 3
        return
    with pytest.raises(DataError, match=r"large.png \(") as e:
        load_data(_cfg(tmp_path))
    assert "small" not in str(e.value)


def test_empty_and_single_image_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        load_data(_cfg(tmp_path / "empty"))
    (tmp_path / "empty" / "readme.txt").write_text("text only")
    with pytest.raises(DataError, match="no images found"):
        load_data(_cfg(tmp_path / "empty"))
    _save(Image.new("RGB", (8, 8)), tmp_path / "one" / "deep" / "only.png")
    with pytest.raises(DataError, match=r"only one image \(deep/only.png\)"):
        load_data(_cfg(tmp_path / "one"))


def test_where_the_folder_comes_from(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="needs a folder of images: pass --data DIR"):
        load_data(_cfg())
    make_tree(tmp_path / "env")  # images directly in $GANFORGE_DATA: not taken
    monkeypatch.setenv("GANFORGE_DATA", str(tmp_path / "env"))
    with pytest.raises(DataError, match="needs a folder of images"):
        load_data(_cfg())
    make_tree(tmp_path / "env" / "image-folder" / "x")
    assert str(tmp_path / "env" / "image-folder") in load_data(_cfg()).source
    with pytest.raises(DataError, match="a file; image-folder reads a folder"):
        load_data(_cfg(tmp_path / "env" / "gray.png"))


def test_limit_decodes_only_the_first_files(tmp_path, monkeypatch):
    make_tree(tmp_path)
    decoded = []
    real = folder.decode

    def counting(path, size, channels, background):
        decoded.append(path.name)
        return real(path, size, channels, background)

    monkeypatch.setattr(folder, "decode", counting)
    d = load_data(_cfg(tmp_path, limit=2))
    assert len(d) == 2 and sorted(decoded) == ["half.png", "photo.jpg"]
