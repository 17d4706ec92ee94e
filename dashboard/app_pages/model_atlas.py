"""Model atlas: every channel of a precomputed layer at a glance, as OpenAI Microscope showed it.

Pick a model, its weights, the dataset it was precomputed on and a layer: a paged grid of
every channel's feature visualisation with its top dataset patch beside it, in channel order,
by activation on the session's image, or by how strongly a chosen class depends on the
channel for that image; each tile links to the unit page. A layer that is not precomputed
says how, with the exact command (engine: :mod:`vizcore.precompute`, :mod:`vizcore.model_atlas`).
"""
from __future__ import annotations

import numpy as np
import streamlit as st

from dashboard import widgets as w
from vizcore import precompute as pc
from vizcore.jobs import cached

KEY = "atlas"
PER_PAGE = 24
ORDERS = {"channel": "channel number", "activation": "activation on your image (mean of its map)",
          "class": "how much a class depends on it, on your image (gradient × activation)"}


@st.cache_data(max_entries=16, show_spinner=False)
def _channels(model: str, weights: str) -> dict[str, int]:
    """Channels of every tap with channel maps (one forward pass of a blank image)."""
    from vizcore.activations import tap_shapes

    lm = w.get_model(model, weights)
    return {t.name: int(s[0]) for t, s in tap_shapes(lm) if t.kind != "input" and s and len(s) == 3}


@st.cache_data(max_entries=32, show_spinner=False)
def _scores(model: str, weights: str, layer: str, order: str, target: int, digest: str, _raw: bytes,
            size: tuple[int, int]) -> list[float]:
    from vizcore import model_atlas as atlas

    lm, img = w.get_model(model, weights), w.from_raw(_raw, size)
    s = atlas.channel_means(lm, img, layer) if order == "activation" else atlas.class_dependence(lm, img, layer, target)
    return [float(v) for v in s]


st.title("Model atlas")
st.caption("Every channel of a layer: its feature visualisation (left) and its top dataset patch (right). "
           "Computed once by `vizcore precompute` (or the unit page), read here from the cache.")
with st.sidebar:
    st.subheader("Model atlas")
    model = w.model_picker(KEY, allow_timm=False)
    weights = w.weights_picker(KEY)
    dataset = st.text_input("Precomputed on (dataset)", value="samples", key=f"{KEY}_dataset",
                            help="As given to `vizcore precompute --data`: samples, a folder, imagenet-samples, …")
    d = pc.PrecomputeSettings()
    with st.expander("Precompute settings", expanded=False):
        steps = st.number_input("Featviz steps", 1, 4096, d.featviz_steps, key=f"{KEY}_steps")
        fsize = st.number_input("Featviz size (px)", 8, 512, d.featviz_size, key=f"{KEY}_size")
        batch = st.number_input("Featviz batch", 1, 256, d.featviz_batch, key=f"{KEY}_batch")
        k = st.number_input("Top images (k)", 1, 100, d.k, key=f"{KEY}_k")
        seed = st.number_input("Seed", 0, 2**31 - 1, d.seed, key=f"{KEY}_seed")

lm = w.load_model_or_stop(model, weights)
w.weights_badge(lm)
channels = _channels(model, weights)
if not channels:
    st.error(f"{model} has no tap with channel maps.")
    st.stop()
taps = list(channels)
with st.sidebar:
    layer = st.selectbox("Layer", taps, index=len(taps) // 2, key=f"{KEY}_layer")
ds = w.open_dataset_or_stop(dataset)
settings = pc.PrecomputeSettings(featviz_steps=int(steps), featviz_size=int(fsize), featviz_batch=int(batch),
                                 seed=int(seed), k=int(k))
plan = pc.Plan(lm, ds, [layer], {layer: channels[layer]}, settings)
status = pc.status(plan, layer)
n = channels[layer]
cmd = pc.command(plan, dataset)
fv_done, top_done = status.done["feature visualisation"], status.done["top images"]
if fv_done == 0 and top_done == 0:
    st.info(f"{layer} ({n} channels) is not precomputed for {dataset} with these settings. Precompute it with:")
    st.code(cmd, language="bash")
    st.stop()
if not status.complete:
    parts = ", ".join(f"{p} {status.done[p]}/{status.total[p]}" for p in status.total)
    st.warning(f"{layer} is partly precomputed ({parts}). The same command computes only what is missing:")
    st.code(cmd, language="bash")

image, caption = w.image_input(KEY)
c1, c2, c3 = st.columns([2, 2, 1])
order = c1.radio("Order", list(ORDERS), format_func=ORDERS.__getitem__, key=f"{KEY}_order")
target = 0
if order == "class":
    cats = list(lm.categories or [])
    if not cats:
        st.error(f"{model} has no class names to choose from; order by channel or activation.")
        st.stop()
    target = c2.selectbox("Class", range(len(cats)), format_func=lambda i: f"{i}: {cats[i]}", key=f"{KEY}_class")
if order == "channel":
    ranked, scores = list(range(n)), None
else:
    digest, raw, size = w.image_payload(image)
    scores = _scores(model, weights, layer, order, int(target), digest, raw, size)
    ranked = [int(i) for i in np.argsort(-np.asarray(scores), kind="stable")]
    c2.caption(f"On {caption}; largest first.")
pages = max(1, -(-n // PER_PAGE))
page_no = int(c3.number_input(f"Page (1-{pages})", 1, pages, 1, key=f"{KEY}_page"))
shown = ranked[(page_no - 1) * PER_PAGE: page_no * PER_PAGE]

mining = cached(plan.mining_job())
batches: dict[int, list | None] = {}
for i, c in enumerate(shown):
    if i % 6 == 0:  # one row of columns at a time, so the grid reads in order (and so do its elements)
        cols = st.columns(6)
    b = c // settings.featviz_batch
    if b not in batches:
        batches[b] = cached(plan.featviz_job(layer, c))
    fv = next((r for r in (batches[b] or []) if r.channel == c), None)
    hits = mining.hits(layer, c) if mining is not None and layer in mining.layers else []
    with cols[i % 6]:
        pics = st.columns(2)
        if fv is not None:
            pics[0].image(w.png_bytes(fv.image), caption="featviz", width="stretch")
        else:
            pics[0].caption("featviz not precomputed")
        if hits:
            from vizcore.render import patch_image

            pics[1].image(w.png_bytes(patch_image(mining, layer, c, 0)), caption="top patch",
                          width="stretch")
        else:
            pics[1].caption("top images not precomputed")
        label = f"channel {c}" + ("" if scores is None else f" · {scores[c]:.3g}")
        w.unit_link(model, weights, layer, c, dataset, label=label)
st.caption(f"Channels {(page_no - 1) * PER_PAGE + 1}-{(page_no - 1) * PER_PAGE + len(shown)} of {n}, "
           f"{ORDERS[order]}. Settings: {settings.to_json()}.")
