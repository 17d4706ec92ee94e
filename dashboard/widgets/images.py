"""Image input and image identity: uploads, built-in samples, digests and raw payloads.

Cached engine functions take an image as raw RGB bytes plus a digest computed here
(:func:`image_payload`), never as a PIL object (``_raw`` is not hashed by Streamlit).
"""
from __future__ import annotations

import io

import streamlit as st
from PIL import Image

from dashboard.widgets.text import plain
from vizcore.data import ImageLoadError, load_image, load_sample, sample_names, to_rgb


SESSION_IMAGE = "session_image"
"""Session-state key of the session's image: ``{"kind": "sample"|"upload", "name", "data", "digest"}``.
Not a widget key, so it survives page switches; every page's :func:`image_input` reads and replaces it."""


def session_image() -> dict:
    """The session's image record (the first built-in sample until something else is chosen)."""
    rec = st.session_state.get(SESSION_IMAGE)
    if rec is None:
        names = sample_names()
        rec = {"kind": "sample", "name": "cat" if "cat" in names else names[0], "data": None, "digest": None}
        st.session_state[SESSION_IMAGE] = rec
    return rec


def set_session_image(kind: str, name: str, data: bytes | None = None) -> None:
    """Make an upload (raw file bytes) or a built-in sample the image of every page."""
    st.session_state[SESSION_IMAGE] = {"kind": kind, "name": name, "data": data,
                                       "digest": _bytes_digest(data) if data is not None else None}


def _choose_sample(key: str) -> None:
    name = st.session_state.get(f"{key}_sample")
    if name:
        set_session_image("sample", name)


def image_input(key: str) -> tuple[Image.Image | None, str]:
    """The session's image, with widgets to replace it; returns (RGB image, its name).

    One image for the whole session: an upload or a built-in choice on any page becomes
    the image of every page (kept in ``st.session_state[SESSION_IMAGE]``, which page
    switches keep) until it is replaced. The widgets are keyed per page (``{key}_upload``,
    ``{key}_sample``); an upload is applied once, when a new file appears in the uploader.
    A bad upload shows an error and the session image stays as it was.
    """
    samples = sample_names()
    col1, col2 = st.columns([2, 1])
    # The upload first, the built-in picker after it: the picker then shows, in this same run, what
    # the session image is now (a picker drawn before would show the old sample, and its stale
    # value could come back as a change that replaces the upload).
    with col1:
        up = st.file_uploader("Upload an image", key=f"{key}_upload", type=None,
                              help="Any format Pillow reads; large images are resized. It stays the image "
                                   "of every page until you replace it.")
    seen_key, err_key = f"{key}_upload_seen", f"{key}_upload_error"
    if up is None:
        st.session_state.pop(seen_key, None)
        st.session_state.pop(err_key, None)
    else:
        data = up.getvalue()
        marker = f"{getattr(up, 'file_id', '')}:{_bytes_digest(data)}"
        if st.session_state.get(seen_key) != marker:  # a new file in this uploader: apply it once
            st.session_state[seen_key] = marker
            st.session_state.pop(err_key, None)
            try:
                _decode_upload(_bytes_digest(data), data)
            except ImageLoadError as e:  # the session image is left as it was
                st.session_state[err_key] = f"Could not use {up.name}: {e} Keeping {session_image()['name']}."
            else:
                set_session_image("upload", up.name, data)
    rec = session_image()
    # The built-in picker shows the session's sample, or says that an upload is in use.
    st.session_state[f"{key}_sample"] = rec["name"] if rec["kind"] == "sample" and rec["name"] in samples else None
    with col2:
        st.selectbox("Built-in image", samples, key=f"{key}_sample", on_change=_choose_sample, args=(key,),
                     placeholder=f"in use: your upload {rec['name']}" if rec["kind"] == "upload" else "choose one")
    if err_key in st.session_state:
        st.error(plain(st.session_state[err_key]))
    image, _ = current_image()
    rec = session_image()
    st.caption(f"Image of this session: **{plain(rec['name'])}** "
               f"({'your upload' if rec['kind'] == 'upload' else 'built-in'}), used on every page until replaced.")
    return image, rec["name"]


def current_image() -> tuple[Image.Image, str]:
    """The session's image and its name, without widgets: for a part of a page above the page's
    own :func:`image_input` (one set of image widgets per page)."""
    rec = session_image()
    image = _decode_upload(rec["digest"], rec["data"]) if rec["kind"] == "upload" else _cached_sample(rec["name"])
    return image, rec["name"]


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


def thumbnail(file: str, side: int = 128) -> Image.Image | None:
    """A dataset image shrunk to fit ``side`` px, or ``None`` when it cannot be read (a grid of
    thumbnails leaves it out rather than failing)."""
    try:
        img = load_image(file, max_side=2 * side)
    except ImageLoadError:
        return None
    img.thumbnail((side, side))
    return img



def short_name(file: str, n: int = 16) -> str:
    """A file's name for a one-line caption: the stem without an ImageNet WordNet id
    (``n02099601_golden_retriever.JPEG`` → ``golden retriever``), cut to ``n`` characters."""
    import re
    from pathlib import Path

    stem = re.sub(r"^n\d{8}_", "", Path(file).stem).replace("_", " ")
    return stem if len(stem) <= n else stem[: n - 1] + "…"


def image_digest(img: Image.Image) -> str:
    """A content hash of an RGB image (size and pixels), used as the cache key."""
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    h.update(f"{img.mode}:{img.size[0]}x{img.size[1]}:".encode())
    h.update(img.tobytes())
    return h.hexdigest()


def image_payload(img: Image.Image) -> tuple[str, bytes, tuple[int, int]]:
    """``(digest, raw RGB bytes, (width, height))`` to hand to the cached functions."""
    img = to_rgb(img)
    return image_digest(img), img.tobytes(), img.size


def from_raw(raw: bytes, size: tuple[int, int]) -> Image.Image:
    return Image.frombytes("RGB", tuple(size), raw)
