"""Cached engine calls of the Activations and Compare pages, keyed by image digest, model and weights:
:func:`cached_extract` (one forward pass, all taps), :func:`activation_overview` (predictions,
per-layer stats), :func:`cached_grids` (channel-grid PNGs), :func:`cached_gradcam` (one layer, on demand).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import streamlit as st

from dashboard.widgets.images import from_raw, png_bytes
from dashboard.widgets.models import get_model

GRID_ORDERS = ("mean", "max", "index")


@st.cache_data(max_entries=3, show_spinner=False)
def cached_extract(model: str, weights: str, digest: str, _raw: bytes, size: tuple[int, int]):
    """All taps of ``model`` for one image (one forward pass); a few results kept in memory."""
    from vizcore.activations import extract

    lm = get_model(model, weights)
    return extract(lm, from_raw(_raw, size))


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
    from vizcore.render import channel_grid

    res = cached_extract(model, weights, digest, _raw, size)
    out: dict[str, dict] = {}
    for name, la in res.layers.items():
        if layers is not None and name not in layers:
            continue
        act = la.output.detach().float().cpu()
        if act.dim() == 3 and _is_spatial(act.shape):
            img, chans = channel_grid(act, top=min(top, act.shape[0]), order=order,
                                      shared_scale=shared_scale, cell=cell, labels=True)
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
    from vizcore.activations import gradcam
    from vizcore.render import overlay

    lm = get_model(model, weights)
    image = from_raw(_raw, size)
    heat = gradcam(lm, image, [layer], target=target)[layer]
    crop = cached_extract(model, weights, digest, _raw, size).image
    return png_bytes(overlay(crop, heat, alpha=alpha))


