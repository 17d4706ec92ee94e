"""Image input and image identity: uploads, built-in samples, digests and raw payloads.

Cached engine functions take an image as raw RGB bytes plus a digest computed here
(:func:`image_payload`), never as a PIL object (``_raw`` is not hashed by Streamlit).
"""
from __future__ import annotations

import io

import streamlit as st
from PIL import Image

from vizcore.data import ImageLoadError, load_image, load_sample, sample_names


def image_input(key: str) -> tuple[Image.Image | None, str]:
    """Upload an image or choose a built-in one; returns (RGB image or None, caption).

    Bad uploads show an error and fall back to the chosen sample, so the page keeps working.
    """
    samples = sample_names()
    col1, col2 = st.columns([2, 1])
    with col2:
        sample = st.selectbox("Built-in image", samples, key=f"{key}_sample")
    with col1:
        up = st.file_uploader("Upload an image", key=f"{key}_upload",
                              type=None, help="Any format Pillow reads; large images are resized.")
    if up is not None:
        data = up.getvalue()
        try:
            return _decode_upload(_bytes_digest(data), data), up.name
        except ImageLoadError as e:
            st.error(f"Could not use {up.name}: {e} Showing the built-in image instead.")
    return _cached_sample(sample), sample


def _bytes_digest(data: bytes) -> str:
    import hashlib

    return hashlib.blake2b(data, digest_size=16).hexdigest()


@st.cache_data(max_entries=8, show_spinner=False)
def _decode_upload(digest: str, _data: bytes) -> Image.Image:
    """Decode an upload once (errors are raised, not cached)."""
    return load_image(_data)


@st.cache_data(max_entries=16, show_spinner=False)
def _cached_sample(name: str) -> Image.Image:
    return load_sample(name)


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()



def image_digest(img: Image.Image) -> str:
    """A content hash of an RGB image (size and pixels), used as the cache key."""
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    h.update(f"{img.mode}:{img.size[0]}x{img.size[1]}:".encode())
    h.update(img.tobytes())
    return h.hexdigest()


def image_payload(img: Image.Image) -> tuple[str, bytes, tuple[int, int]]:
    """``(digest, raw RGB bytes, (width, height))`` to hand to the cached functions."""
    img = img if img.mode == "RGB" else img.convert("RGB")
    return image_digest(img), img.tobytes(), img.size


def from_raw(raw: bytes, size: tuple[int, int]) -> Image.Image:
    return Image.frombytes("RGB", tuple(size), raw)
