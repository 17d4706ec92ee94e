"""Widgets shared by every page: model and layer pickers, image input, grids, badges.

Models come from ``st.cache_resource`` (one object for all sessions; never
mutated: hooks are attached per call by :func:`vizcore.tap.tap`).
Session-state keys are prefixed with the calling page's ``key``.

Engine results are cached with ``st.cache_data`` keyed by an image digest computed here
(:func:`image_payload`), the model name and the weights choice: :func:`cached_extract`
(one forward pass, all taps), :func:`activation_overview` (predictions, per-layer stats),
:func:`cached_grids` (channel-grid PNGs) and :func:`cached_gradcam` (one layer, on demand).
:func:`channel_links` implements the cross-page contract: it sets
``st.session_state["channel_target"] = {"model", "layer", "channel"}`` and switches page.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import streamlit as st
from PIL import Image

from vizcore.data import ImageLoadError, load_image, load_sample, sample_names
from vizcore.models import DEFAULT_MODEL, LoadedModel, list_models, load_model


@st.cache_resource(show_spinner="Loading model…")
def get_model(name: str, weights: str = "auto") -> LoadedModel:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_model(name, weights, progress=False)


def load_model_or_stop(name: str, weights: str = "auto") -> LoadedModel:
    """The cached model, or an error message and ``st.stop()`` (unknown timm name, unreadable weights, ...)."""
    try:
        return get_model(name, weights)
    except Exception as e:  # noqa: BLE001 - any failure to build or load is shown, never raised
        st.error(f"Cannot load model {name!r}: {e}")
        st.stop()


def model_picker(key: str, *, label: str = "Model", default: str = DEFAULT_MODEL,
                 allow_timm: bool = True) -> str:
    """A select box of registered models, plus a free-text ``timm/<name>`` option."""
    names = list_models()
    # A value already in session state (another page preselected it) wins; passing no default
    # then avoids Streamlit's "default value but also set via Session State" warning.
    preset = st.session_state.get(f"{key}_model") in names
    choice = st.selectbox(label, names, index=0 if preset or default not in names else names.index(default),
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
    if st.session_state.get(f"{key}_layer") in taps:
        idx = 0  # the preset value wins; no competing default (see model_picker)
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


# --------------------------------------------------------------------------------------------
# Activations: image identity, cached engine calls, figures and the cross-page channel link.
# Cached functions take the image as raw RGB bytes plus a digest computed here (``_raw`` is not
# hashed by Streamlit; ``digest`` is the key), never as a PIL object.

GRID_ORDERS = ("mean", "max", "index")
PAGE_DATASET_EXAMPLES = "app_pages/dataset_examples.py"
PAGE_FEATURE_VIZ = "app_pages/feature_viz.py"


def image_digest(img: Image.Image) -> str:
    """A content hash of an RGB image (size and pixels), used as the cache key."""
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    h.update(f"{img.mode}:{img.size[0]}x{img.size[1]}:".encode())
    h.update(img.tobytes())
    return h.hexdigest()


def image_payload(img: Image.Image) -> tuple[str, bytes, tuple[int, int]]:
    """``(digest, raw RGB bytes, (width, height))`` to hand to the cached functions below."""
    img = img if img.mode == "RGB" else img.convert("RGB")
    return image_digest(img), img.tobytes(), img.size


def _from_raw(raw: bytes, size: tuple[int, int]) -> Image.Image:
    return Image.frombytes("RGB", tuple(size), raw)


def weights_picker(key: str, *, default: str = "auto") -> str:
    """Weight source: ``auto`` (bundled, hub cache, download, else random) or ``random``."""
    opts = ["auto", "random"]
    labels = {"auto": "best available (auto)", "random": "random init"}
    return st.radio("Weights", opts, index=opts.index(default), key=f"{key}_weights",
                    format_func=labels.__getitem__, horizontal=True,
                    help="auto: bundled package, local hub cache, download, and random "
                         "initialisation as the last resort; the badge says which was used.")


@st.cache_data(max_entries=3, show_spinner=False)
def cached_extract(model: str, weights: str, digest: str, _raw: bytes, size: tuple[int, int]):
    """All taps of ``model`` for one image (one forward pass); a few results kept in memory."""
    from vizcore.activations import extract

    lm = get_model(model, weights)
    return extract(lm, _from_raw(_raw, size))


def _is_spatial(shape: Sequence[int]) -> bool:
    return len(shape) == 3 and (shape[1] > 1 or shape[2] > 1)


@st.cache_data(max_entries=32, show_spinner=False)
def activation_overview(model: str, weights: str, digest: str, _raw: bytes, size: tuple[int, int]) -> dict:
    """Small, page-ready facts of one extraction: predictions, crop, and per-layer shape/stats."""
    res = cached_extract(model, weights, digest, _raw, size)
    layers = []
    for name, la in res.layers.items():
        shape = tuple(int(s) for s in la.output.shape)
        st_ = la.stats
        layers.append({
            "name": name, "module": la.module, "kind": la.kind, "shape": shape,
            "spatial": _is_spatial(shape),
            "mean": np.asarray(st_.mean, dtype=np.float32), "max": np.asarray(st_.max, dtype=np.float32),
            "std": np.asarray(st_.std, dtype=np.float32),
            "frac_active": np.asarray(st_.frac_active, dtype=np.float32),
        })
    return {
        "model": res.model,
        "weights": res.weights,
        "predictions": [(p.index, p.label, float(p.prob)) for p in res.predictions],
        "crop_png": png_bytes(res.image),
        "layers": layers,
    }


@st.cache_data(max_entries=32, show_spinner=False)
def cached_grids(model: str, weights: str, digest: str, _raw: bytes, size: tuple[int, int], *,
                 top: int = 16, order: str = "mean", shared_scale: bool = False, cell: int = 64,
                 layers: tuple[str, ...] | None = None) -> dict[str, dict]:
    """Per layer: ``{"png": grid PNG, "channels": [...]}`` for maps, or the top values for vectors."""
    from vizcore.activations import channel_grid

    res = cached_extract(model, weights, digest, _raw, size)
    out: dict[str, dict] = {}
    for name, la in res.layers.items():
        if layers is not None and name not in layers:
            continue
        act = la.output.detach().float().cpu()
        if act.dim() == 3 and _is_spatial(act.shape):
            img, chans = channel_grid(act, top=min(top, act.shape[0]), order=order,
                                      shared_scale=shared_scale, cell=cell)
            out[name] = {"png": png_bytes(img), "channels": [int(c) for c in chans]}
        else:
            vec = act.reshape(act.shape[0], -1).mean(dim=1).numpy()
            k = min(top, vec.shape[0])
            idx = np.argsort(-vec, kind="stable")[:k] if order != "index" else np.arange(k)
            out[name] = {"png": None, "channels": [int(i) for i in idx],
                         "values": [float(vec[i]) for i in idx]}
    return out


@st.cache_data(max_entries=64, show_spinner=False)
def cached_gradcam(model: str, weights: str, digest: str, _raw: bytes, size: tuple[int, int],
                   layer: str, target: int | None = None, alpha: float = 0.5) -> bytes:
    """PNG of the Grad-CAM heatmap of ``layer`` over the preprocessed crop (one backward pass)."""
    from vizcore.activations import gradcam, overlay

    lm = get_model(model, weights)
    image = _from_raw(_raw, size)
    heat = gradcam(lm, image, [layer], target=target)[layer]
    crop = cached_extract(model, weights, digest, _raw, size).image
    return png_bytes(overlay(crop, heat, alpha=alpha))


def predictions_figure(preds: Sequence[tuple[int, str, float]], *, height: int = 220):
    """A horizontal plotly bar chart of top-k ``(index, label, prob)``, best on top."""
    import plotly.graph_objects as go

    preds = list(preds)[::-1]
    fig = go.Figure(go.Bar(
        x=[p[2] for p in preds], y=[f"{p[1]} ({p[0]})" for p in preds], orientation="h",
        text=[f"{p[2]:.1%}" for p in preds], textposition="auto",
        hovertemplate="%{y}: %{x:.2%}<extra></extra>"))
    fig.update_layout(height=height, margin=dict(l=0, r=0, t=10, b=0),
                      xaxis=dict(title="probability", range=[0, max([p[2] for p in preds] + [0.05]) * 1.05],
                                 tickformat=".0%"),
                      yaxis=dict(automargin=True))
    return fig


def vector_figure(channels: Sequence[int], values: Sequence[float], *, height: int = 200):
    """Top units of a non-spatial layer (pooled features, fc, logits) as a bar chart."""
    import plotly.graph_objects as go

    fig = go.Figure(go.Bar(x=[str(c) for c in channels], y=list(values),
                           hovertemplate="unit %{x}: %{y:.3f}<extra></extra>"))
    fig.update_layout(height=height, margin=dict(l=0, r=0, t=10, b=0),
                      xaxis=dict(title="unit", type="category"), yaxis=dict(title="activation"))
    return fig


def nearest_tap(names: Sequence[str], depth: float) -> tuple[int, float]:
    """Index of the tap whose relative depth (position / (n - 1), 0 = first, 1 = last) is
    nearest ``depth``, and that relative depth. Ties go to the shallower tap."""
    n = len(names)
    if n == 0:
        raise ValueError("no taps to choose from")
    if n == 1:
        return 0, 0.0
    rel = [i / (n - 1) for i in range(n)]
    i = min(range(n), key=lambda j: (abs(rel[j] - depth), j))
    return i, rel[i]


def set_channel_target(model: str, layer: str, channel: int) -> dict:
    """Record the channel the other pages should open on (the cross-page contract)."""
    target = {"model": model, "layer": layer, "channel": int(channel)}
    st.session_state["channel_target"] = target
    return target


def receive_channel_target(key: str) -> dict | None:
    """The receiving half: preselect a page's model and layer pickers once per new ``channel_target``.

    Returns the new target (the page sets its own channel widgets from it), or ``None``
    when there is none or it was already applied.
    """
    target = st.session_state.get("channel_target")
    if not target or st.session_state.get(f"{key}_applied_target") == target:
        return None
    st.session_state[f"{key}_applied_target"] = dict(target)
    if target["model"] in list_models():
        st.session_state[f"{key}_model"] = target["model"]
        st.session_state[f"{key}_timm"] = ""
    else:
        st.session_state[f"{key}_timm"] = target["model"]
    st.session_state[f"{key}_layer"] = target["layer"]
    return target


def channel_links(model: str, layer: str, channel: int, key: str) -> None:
    """Two buttons that open the Dataset examples / Feature visualisation pages on a channel."""
    c1, c2 = st.columns(2)
    if c1.button("Dataset examples", key=f"{key}_dsx", icon=":material/grid_view:",
                 help="Image patches that excite this channel most"):
        set_channel_target(model, layer, channel)
        st.switch_page(PAGE_DATASET_EXAMPLES)
    if c2.button("Feature visualisation", key=f"{key}_fv", icon=":material/palette:",
                 help="An image optimised to excite this channel"):
        set_channel_target(model, layer, channel)
        st.switch_page(PAGE_FEATURE_VIZ)


# ----------------------------------------------------------------------- datasets
# The reference data beside a developer's checkout, offered as defaults when present.
SHARED_DATA = Path(os.environ.get("VIZCORE_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
DATASET_SOURCES = {
    "samples": "Built-in sample photographs",
    "folder": "Image folder (class subfolders or flat)",
    "cue-conflict": "Cue-conflict stimuli (Geirhos et al.)",
    "cifar10": "CIFAR-10 test set (download)",
    "stl10": "STL-10 test set (download)",
}


def _shared_default(name: str) -> str:
    return str(SHARED_DATA / name) if (SHARED_DATA / name).is_dir() else ""


def dataset_input(key: str, sources: Sequence[str] = ("samples", "folder", "cue-conflict"),
                  folder_default: str = "") -> tuple[str, str]:
    """Dataset source widgets; returns (spec for ``vizcore.data.open_dataset`` or '', default label kind)."""
    source = st.radio("Images", list(sources), format_func=DATASET_SOURCES.__getitem__, key=f"{key}_source")
    if source == "folder":
        path = st.text_input("Folder (class subfolders or flat), or a .txt list of files", key=f"{key}_folder",
                             value=_shared_default(folder_default) if folder_default else "")
        return path.strip(), "class"
    if source == "cue-conflict":
        path = st.text_input("Stimuli root (holds style-transfer-preprocessed-512/)", key=f"{key}_cc",
                             value=_shared_default("cue-conflict"))
        return (f"cue-conflict:{path.strip()}" if path.strip() else ""), "shape"
    if source in ("cifar10", "stl10"):
        st.caption("Downloaded by torchvision on first use (needs a network), then exported once as PNGs.")
        return (source if st.checkbox("Download / use it", key=f"{key}_dl_{source}") else ""), "class"
    return "samples", "class"


@st.cache_resource(show_spinner="Listing images…", max_entries=8, ttl=600)
def _open_dataset(spec: str):
    from vizcore.data import open_dataset

    return open_dataset(spec)


def open_dataset_or_stop(spec: str):
    """The dataset for ``spec``; an info or error message and ``st.stop()`` when there is none."""
    if not spec:
        st.info("Choose a dataset in the sidebar.")
        st.stop()
    try:
        return _open_dataset(spec)
    except Exception as e:  # noqa: BLE001 - missing folder, no network for a download, ...
        st.error(f"Cannot open dataset {spec!r}: {e}")
        st.stop()
