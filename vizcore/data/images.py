"""Robust image decoding: any format Pillow reads, any mode, EXIF rotation.

Every image that enters vizcore goes through :func:`load_image`, so the CLI,
the dashboard and dataset loaders reject bad input the same way.
"""
from __future__ import annotations

import io
import os
import re
import warnings
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

ImageSource = Union[str, os.PathLike, bytes, BinaryIO, Image.Image]

# Larger images are downscaled on load; work happens at a few hundred pixels anyway.
MAX_SIDE = 2048
# Decompression-bomb guard: refuse images whose header claims more pixels than this.
MAX_PIXELS = 100_000_000
MAX_FILE_BYTES = 200 * 1024 * 1024


class ImageLoadError(ValueError):
    """An input that is not a usable image; the message is meant for users."""


def _open(src: ImageSource) -> tuple[Image.Image, str]:
    if isinstance(src, Image.Image):
        return src, "image"
    if isinstance(src, (bytes, bytearray)):
        if len(src) > MAX_FILE_BYTES:
            raise ImageLoadError(f"file is too large ({len(src) / 2**20:.0f} MB)")
        return Image.open(io.BytesIO(bytes(src))), "upload"
    if isinstance(src, (str, os.PathLike)):
        p = Path(src).expanduser()
        if not p.exists():
            raise ImageLoadError(f"no such file: {p}")
        if p.is_dir():
            raise ImageLoadError(f"{p} is a folder, not an image")
        if p.stat().st_size > MAX_FILE_BYTES:
            raise ImageLoadError(f"{p.name} is too large ({p.stat().st_size / 2**20:.0f} MB)")
        return Image.open(p), p.name
    return Image.open(src), getattr(src, "name", "stream")


def _name(src: ImageSource) -> str:
    """How messages name ``src`` (as :func:`_open` does)."""
    if isinstance(src, Image.Image):
        return "image"
    if isinstance(src, (bytes, bytearray)):
        return "upload"
    if isinstance(src, (str, os.PathLike)):
        return Path(src).expanduser().name
    return str(getattr(src, "name", "stream"))


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; transparency is composited on white.

    The one RGB conversion of vizcore: every image that enters a model or a picture passes here
    (an RGB image comes back as it is)."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # High-bit-depth greyscale: stretch the actual range to 0..255 instead of clipping.
        a = np.asarray(img, dtype=np.float64)
        lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
        a = np.zeros_like(a) if hi <= lo else (a - lo) / (hi - lo) * 255.0
        img = Image.fromarray(np.nan_to_num(a).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("LA", "La", "PA"):
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "RGBa"):
        bg = Image.new("RGB", img.size, (255, 255, 255))
        bg.paste(img, mask=img.getchannel("A"))
        return bg
    if img.mode != "RGB":
        img = img.convert("RGB")  # CMYK, YCbCr, LAB, HSV, L, 1
    return img


def load_image(src: ImageSource, *, max_side: int = MAX_SIDE) -> Image.Image:
    """Decode ``src`` into an RGB image no larger than ``max_side`` on its long side.

    Accepts a path, bytes, a file object or a PIL image. Honours EXIF
    orientation. Raises :class:`ImageLoadError` with a readable message for
    non-images, truncated files, decompression bombs and missing files.
    """
    try:
        with warnings.catch_warnings():
            # Our own MAX_PIXELS is the limit: Pillow's warning (at its own, lower limit) is ignored,
            # and its hard error (at twice that) is reported below with our limit.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img, name = _open(src)
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise ImageLoadError(
                    f"{name}: {w}x{h} pixels is more than the {MAX_PIXELS:,} allowed "
                    "(possible decompression bomb)")
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)  # animated GIF / multipage TIFF: first frame
            if img.format == "JPEG" and max(w, h) > 2 * max_side:
                img.draft("RGB", (max_side, max_side))  # decode at reduced scale: much faster
            ImageFile.LOAD_TRUNCATED_IMAGES = False
            img.load()
            img = ImageOps.exif_transpose(img)
            img = to_rgb(img)
    except ImageLoadError:
        raise
    except UnidentifiedImageError:
        raise ImageLoadError("not an image Pillow can read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        m = re.search(r"\((\d+) pixels\)", str(e))
        claimed = f"{int(m.group(1)):,} pixels" if m else "its size"
        raise ImageLoadError(f"{_name(src)}: {claimed} is more than the {MAX_PIXELS:,} allowed "
                             "(possible decompression bomb)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        msg = str(e) or type(e).__name__
        if "truncated" in msg.lower():
            raise ImageLoadError("the image file is truncated (incomplete download?)") from None
        raise ImageLoadError(f"cannot decode image: {msg}") from None
    if max(img.size) > max_side:
        img = img.copy()
        img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return img
