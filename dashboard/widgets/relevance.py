"""Concept relevance on the Evidence page (UI only): below "Channels behind this map", the LRP relevance
of the class at each channel of the same tap and each top channel's conditional heatmap
(:func:`vizcore.relevance.channel_relevance`, zennit-crp), each linked to its unit page."""
from __future__ import annotations

import numpy as np
import streamlit as st
from PIL import Image

from dashboard.widgets.images import png_bytes
from dashboard.widgets.links import unit_link
from dashboard.widgets.models import get_model

K = 6


def _heat(m: np.ndarray, image: Image.Image) -> bytes:
    """Positive relevance over the image (the share of the map's largest value)."""
    from vizcore.render import overlay

    pos = np.clip(m, 0, None)
    hi = float(pos.max())
    return png_bytes(overlay(image, pos / hi if hi > 0 else pos, alpha=0.6, cmap="jet"))


@st.cache_data(max_entries=16, show_spinner=False)
def _crp(model: str, weights: str, digest: str, _raw: bytes, size: tuple[int, int], target: int, k: int) -> dict:
    from vizcore.relevance import channel_relevance

    lm = get_model(model, weights)
    cr = channel_relevance(lm, Image.frombytes("RGB", tuple(size), _raw), target, k=k)
    return {**cr.to_json(), "heatmap": _heat(cr.heatmap, cr.image),
            "thumbs": {c: _heat(cr.conditional[c], cr.image) for c in cr.channels}}


def relevance_section(key: str, model: str, weights: str, digest: str, raw: bytes, size: tuple[int, int],
                      target: int) -> None:
    """A toggle; when on, the channels' relevance shares and conditional heatmaps (one error line on failure)."""
    if not st.toggle("Concept relevance of these channels (CRP)", key=f"{key}_crp",
                     help="LRP relevance of the class at every channel of the tap, and where in the image each "
                          "top channel's relevance lies (Achtibat et al., 2023). About 1 s per channel on a CPU."):
        return
    try:
        with st.spinner("Concept relevance…"):
            r = _crp(model, weights, digest, raw, size, int(target), K)
    except Exception as e:  # noqa: BLE001 - one line, the page stays
        st.error(f"Concept relevance: {e}")
        return
    st.caption(f"LRP ({r['composite']} rules) hands the logit of **{r['target']['label']}** back to the "
               f"{r['n_channels']} channels of **{r['layer']}** (relevance there: {r['total']:.4g}; logit "
               f"{r['logit']:.4g}, the rest is absorbed by biases). Each map is the input relevance that flows "
               "through that channel alone (its conditional heatmap); all channels' maps add up to the LRP map.")
    cols = st.columns(K + 1)
    with cols[0]:
        st.image(r["heatmap"], width=96)
        st.markdown("all channels")
    for i, c in enumerate(r["channels"]):
        with cols[(i + 1) % (K + 1)]:
            st.image(r["thumbs"][c["channel"]], width=96)
            st.markdown(f"relevance share **{c['share']:.1%}**")
            unit_link(model, weights, r["layer"], c["channel"], label=f"{r['layer']} · {c['channel']}")
