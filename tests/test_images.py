"""Every kind of upload of issue 2 §6 through :func:`vizcore.data.load_image`.

Test images are generated here with Pillow and NumPy (no third-party files).
"""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from vizcore.data import ImageLoadError, load_image
from vizcore.data import images as images_mod


def _bytes(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _two_tone(w: int = 40, h: int = 20) -> Image.Image:
    """Left half red, right half blue."""
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 2] = (255, 0, 0)
    a[:, w // 2:] = (0, 0, 255)
    return Image.fromarray(a, "RGB")


def _px(img: Image.Image, x: int, y: int) -> tuple[int, int, int]:
    return img.getpixel((x, y))


def test_cmyk_jpeg_becomes_rgb():
    cmyk = Image.new("CMYK", (32, 32), (0, 255, 255, 0))  # pure red in CMYK
    img = load_image(_bytes(cmyk, "JPEG", quality=95))
    assert img.mode == "RGB" and img.size == (32, 32)
    r, g, b = _px(img, 16, 16)
    assert r > 200 and g < 60 and b < 60


def test_16bit_png_keeps_its_range():
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (8, 1))
    src = Image.fromarray(ramp)
    assert src.mode.startswith("I")
    img = load_image(_bytes(src, "PNG"))
    a = np.asarray(img)
    assert img.mode == "RGB" and a.shape == (8, 64, 3)
    assert a[..., 0].min() == 0 and a[..., 0].max() == 255  # stretched, not clipped to white
    assert (np.diff(a[0, :, 0].astype(int)) >= 0).all()
    assert (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all()


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_composited_on_white(mode):
    a = np.zeros((10, 10, 4), np.uint8)
    a[..., 3] = 0
    a[:, 5:] = (0, 0, 0, 255)  # right half opaque black, left half fully transparent
    img = Image.fromarray(a, "RGBA").convert(mode)
    out = load_image(_bytes(img, "PNG"))
    assert out.mode == "RGB"
    assert _px(out, 1, 5) == (255, 255, 255)
    assert _px(out, 8, 5) == (0, 0, 0)


def test_palette_with_transparency():
    p = Image.new("P", (10, 10), 0)
    p.putpalette([255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 6))
    p.paste(1, (5, 0, 10, 10))
    p.info["transparency"] = 0  # palette index 0 (red) is transparent
    out = load_image(_bytes(p, "PNG", transparency=0))
    assert out.mode == "RGB"
    assert _px(out, 1, 1) == (255, 255, 255)
    assert _px(out, 8, 1) == (0, 255, 0)


@pytest.mark.parametrize("mode", ["L", "1", "I;16"])
def test_greyscale_and_bilevel(mode):
    src = Image.fromarray(np.tile(np.arange(0, 256, 16, dtype=np.uint8), (4, 1)), "L")
    img = src.convert(mode) if mode != "I;16" else Image.fromarray(
        np.asarray(src).astype(np.uint16) * 257)
    out = load_image(_bytes(img, "PNG"))
    a = np.asarray(out)
    assert out.mode == "RGB" and (a[..., 0] == a[..., 2]).all() and (a[..., 0] == a[..., 1]).all()
    if mode == "L":
        assert (a[..., 0] == np.asarray(src)).all()  # 8-bit grey kept exactly
    elif mode == "1":
        assert set(np.unique(a)) <= {0, 255}
    else:
        assert a.min() == 0 and a.max() == 255  # 16-bit stretched to the full range


@pytest.mark.parametrize("orientation,size,top_colour", [
    (1, (40, 20), None),
    (3, (40, 20), None),  # 180 degrees: blue on the left
    (6, (20, 40), (255, 0, 0)),  # rotate 90 clockwise to display: left (red) becomes top
    (8, (20, 40), (0, 0, 255)),  # rotate 90 counter-clockwise: right (blue) becomes top
])
def test_exif_orientation_is_honoured(orientation, size, top_colour):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _bytes(_two_tone(), "JPEG", quality=95, exif=exif.tobytes())
    img = load_image(data)
    assert img.size == size

    def close(c, ref):
        return all(abs(int(u) - v) < 60 for u, v in zip(c, ref))

    if top_colour is not None:
        assert close(_px(img, 10, 3), top_colour)
    elif orientation == 1:
        assert close(_px(img, 3, 10), (255, 0, 0))
    else:
        assert close(_px(img, 3, 10), (0, 0, 255))


def test_not_an_image():
    with pytest.raises(ImageLoadError, match="not an image"):
        load_image(b"%PDF-1.4 definitely not a picture")
    with pytest.raises(ImageLoadError):
        load_image(b"")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_files_are_rejected(fmt, tmp_path):
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8), "RGB")
    data = _bytes(img, fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError) as e:
        load_image(path)
    assert "truncated" in str(e.value) or "decode" in str(e.value)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _bomb(w: int, h: int) -> bytes:
    """A tiny PNG whose header claims ``w`` x ``h`` pixels."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _png_chunk(b"IEND", b""))


@pytest.mark.parametrize("w, h", [(20000, 20000), (12000, 12000), (10000, 9500)])
def test_decompression_bomb_is_refused_with_our_limit(tmp_path, w, h):
    """400 M pixels (past Pillow's own hard limit), 144 M (past ours, under Pillow's hard limit) and
    95 M (past Pillow's warning limit, under ours: not a bomb). The message names our limit, never Pillow's."""
    bomb = _bomb(w, h)
    assert len(bomb) < 200
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb)
    if w * h <= images_mod.MAX_PIXELS:  # within our limit: Pillow's lower warning limit does not apply
        with pytest.raises(ImageLoadError) as e:
            load_image(path)
        assert "bomb" not in str(e.value) and "Pillow" not in str(e.value)  # fails later: no pixel data
        return
    with pytest.raises(ImageLoadError) as e:
        load_image(path)
    claimed = f"{w}x{h}" if w * h <= 2 * Image.MAX_IMAGE_PIXELS else f"{w * h:,}"  # Pillow stops those at open
    assert str(e.value) == (f"bomb.png: {claimed} pixels is more than the {images_mod.MAX_PIXELS:,} "
                            "allowed (possible decompression bomb)")
    with pytest.raises(ImageLoadError) as e:
        load_image(bomb)
    assert f"the {images_mod.MAX_PIXELS:,} allowed (possible decompression bomb)" in str(e.value)
    assert str(Image.MAX_IMAGE_PIXELS) not in str(e.value).replace(",", "")


def test_pixel_limit_applies_to_real_files(monkeypatch):
    monkeypatch.setattr(images_mod, "MAX_PIXELS", 50 * 50)
    with pytest.raises(ImageLoadError, match="decompression bomb"):
        load_image(_bytes(Image.new("RGB", (64, 64)), "PNG"))
    assert load_image(_bytes(Image.new("RGB", (40, 40)), "PNG")).size == (40, 40)


def test_huge_image_is_resized():
    big = Image.new("RGB", (5000, 2500), (10, 200, 30))
    img = load_image(_bytes(big, "JPEG", quality=80))
    assert img.size == (2048, 1024)
    assert load_image(big, max_side=300).size == (300, 150)
    small = load_image(_bytes(Image.new("RGB", (30, 20)), "PNG"), max_side=300)
    assert small.size == (30, 20)  # never upscaled


def test_missing_path_and_folder(tmp_path):
    with pytest.raises(ImageLoadError, match="no such file"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageLoadError, match="folder"):
        load_image(tmp_path)


def test_file_object_and_pil_input(tmp_path):
    p = tmp_path / "a.png"
    _two_tone().save(p)
    with open(p, "rb") as f:
        assert load_image(f).size == (40, 20)
    assert load_image(Image.open(p).convert("L")).mode == "RGB"
