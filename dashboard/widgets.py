"""Widgets shared by every page: model and layer pickers, image input, grids, badges.

Models come from ``st.cache_resource`` (one object for all sessions; never
mutated: hooks are attached per call by :func:`vizcore.tap.tap`).
Session-state keys are prefixed with the calling page's ``key``.
"""
from __future__ import annotations

import io
import warnings
from typing import Sequence

import streamlit as st
from PIL import Image

from vizcore.data import ImageLoadError, load_image, load_sample, sample_names
from vizcore.models import DEFAULT_MODEL, LoadedModel, list_models, load_model


@st.cache_resource(show_spinner="Loading model…")
def get_model(name: str, weights: str = "auto") -> LoadedModel:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_model(name, weights, progress=False)


def model_picker(key: str, *, label: str = "Model", default: str = DEFAULT_MODEL,
                 allow_timm: bool = True) -> str:
    """A select box of registered models, plus a free-text ``timm/<name>`` option."""
    names = list_models()
    choice = st.selectbox(label, names, index=names.index(default) if default in names else 0,
                          key=f"{key}_model")
    if allow_timm:
        custom = st.text_input("…or any timm model (timm/<name>)", value="", key=f"{key}_timm",
                               placeholder="timm/convnext_tiny")
        if custom.strip():
            return custom.strip() if custom.strip().startswith("timm/") else f"timm/{custom.strip()}"
    return choice


def weights_badge(lm: LoadedModel) -> None:
    """Show where the weights came from; a warning when they are random."""
    if lm.weights.pretrained:
        st.badge(f"weights: {lm.weights.source}", icon=":material/verified:", color="green")
        st.caption(lm.weights.detail)
    else:
        st.badge("weights: random init", icon=":material/warning:", color="orange")
        if lm.weights.warning:
            st.caption(lm.weights.warning)


def layer_picker(lm: LoadedModel, key: str, *, label: str = "Layer", multi: bool = False,
                 default: Sequence[str] | str | None = None):
    """Pick tap names of ``lm`` (network order)."""
    taps = [t.name for t in lm.taps()]
    if multi:
        return st.multiselect(label, taps, default=list(default or []), key=f"{key}_layers")
    idx = taps.index(default) if isinstance(default, str) and default in taps else max(0, len(taps) // 2)
    return st.selectbox(label, taps, index=idx, key=f"{key}_layer")


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
        try:
            return load_image(up.getvalue()), up.name
        except ImageLoadError as e:
            st.error(f"Could not use {up.name}: {e}")
    return load_sample(sample), sample


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
