"""Concept relevance on the Evidence page (UI only): below "Channels behind this map", the LRP relevance
of the class at each channel of the same tap and each top channel's conditional heatmap
(:func:`vizcore.relevance.channel_relevance`, zennit-crp), each linked to its unit page; and the
dataset images ranked by relevance (RelMax) beside those ranked by activation, on the unit page and in
the Dataset examples page's channel detail."""
from __future__ import annotations

from pathlib import Path

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


# ------------------------------------------------------------------ the unit page
@st.cache_data(max_entries=32, show_spinner=False)
def _unit_crp(model: str, weights: str, digest: str, _raw: bytes, size: tuple[int, int], layer: str,
              channel: int) -> dict:
    from vizcore.relevance import channel_relevance, conditional_heatmaps

    lm = get_model(model, weights)
    from vizcore.activations import preprocess

    x = preprocess(lm, Image.frombytes("RGB", tuple(size), _raw))
    cr = channel_relevance(lm, x, None, layer, k=0)
    cond = conditional_heatmaps(lm, x, cr.target["index"], layer, [int(channel)])[0]
    rank = int((cr.relevance > cr.relevance[int(channel)]).sum()) + 1
    return {"target": cr.target, "share": cr.share(int(channel)), "relevance": float(cr.relevance[int(channel)]),
            "rank": rank, "n": int(cr.relevance.size), "map": _heat(cond, cr.image), "lrp": _heat(cr.heatmap, cr.image)}


def _thumb(path: str) -> bytes:
    from vizcore.data import load_image

    img = load_image(path).convert("RGB")
    img.thumbnail((112, 112))
    return png_bytes(img)


def unit_relevance(key: str, model: str, weights: str, layer: str, channel: int, digest: str, raw: bytes,
                   size: tuple[int, int], caption: str, dataset: str | None) -> None:
    """The unit page's concept-relevance section: where on the session image this channel supports the top
    class (CRP conditional heatmap and share), and the dataset's relevance-ranked images (RelMax) beside the
    activation-ranked ones, run as a job (progress, Stop, Resume, cache)."""
    st.subheader("Concept relevance")
    lm = get_model(model, weights)
    if not lm.categories:
        st.info(f"{model} has no classes: there is no decision to take relevance from.")
        return
    if st.toggle(f"Where this channel supports the top class on your image ({caption}; CRP, a few seconds)",
                 key=f"{key}_crp"):
        try:
            with st.spinner("Concept relevance…"):
                r = _unit_crp(model, weights, digest, raw, size, layer, int(channel))
        except Exception as e:  # noqa: BLE001
            st.error(f"Concept relevance: {e}")
        else:
            c1, c2 = st.columns(2)
            c1.image(r["map"], width=224, caption=f"channel {channel}: its relevance for {r['target']['label']}")
            c2.image(r["lrp"], width=224, caption="all channels (the LRP map)")
            st.markdown(f"Channel {channel} carries **{r['share']:.2%}** of the relevance of **{r['target']['label']}** "
                        f"at {layer} (rank {r['rank']} of {r['n']}).")
    if not dataset:
        st.caption("Choose a dataset in the sidebar for the images where this channel matters most for the decision.")
        return
    if not st.toggle("Relevance-ranked dataset images (RelMax: where this channel matters most for the model's "
                     "decision)", key=f"{key}_relmax"):
        return
    from dashboard.widgets.datasets import open_dataset_or_stop

    relmax_examples(f"{key}_relmax", lm, open_dataset_or_stop(dataset), layer, int(channel), k=K)


def relmax_examples(key: str, lm, ds, layer: str, channel: int, *, k: int = K, batch_size: int = 8) -> None:
    """RelMax over ``ds`` run as a job (progress, Stop, Resume, cache): the images where ``channel`` of
    ``layer`` matters most for the model's decision, beside the images where it is most active."""
    from dashboard.widgets.jobs import run_job
    from vizcore.jobs import RunOptions
    from vizcore.relevance import RelMaxJob

    res = run_job(key, RelMaxJob(lm, ds, layer, k=k), RunOptions(batch_size=batch_size, workers=0),
                  what=f"Relevance of every channel of {layer} over {ds.name}", start_label="Rank by relevance",
                  idle_note=f"{len(ds)} images; about 1 s per image on a CPU")
    if res is None:
        return
    cols = st.columns(2)
    for col, title, rows in ((cols[0], "By relevance for the model's prediction", res.relevance_ranked(channel)),
                             (cols[1], "By activation", res.activation_ranked(channel))):
        with col:
            st.markdown(f"**{title}**")
            if not rows:
                st.info(f"Channel {channel} has no positive relevance on any image of {ds.name}."
                        if col is cols[0] else f"No images of {ds.name} were read.")
                continue
            st.image([_thumb(ds.items[i].path) for i, _ in rows], width=112,
                     caption=[f"{Path(ds.items[i].path).name} · {v:.3g}" for i, v in rows])


def relmax_section(key: str, lm, ds, layer: str, channel: int, *, k: int = K, batch_size: int = 8) -> None:
    """A toggle; when on, :func:`relmax_examples` (the Dataset examples page's channel detail)."""
    if not lm.categories:
        return
    if st.toggle("Relevance-ranked images beside the activation-ranked ones (RelMax: where this channel "
                 "matters most for the model's decision)", key=f"{key}_relmax",
                 help="CRP's RelMax (Achtibat et al., 2023): each image ranked by the LRP relevance of its "
                      "predicted class at this channel. One pass over the dataset for every channel of the layer."):
        relmax_examples(f"{key}_relmax", lm, ds, layer, int(channel), k=k, batch_size=batch_size)
