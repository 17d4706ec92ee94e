"""Concepts: what a layer encodes as a whole, not channel by channel.

UI only. Neuron groups of the session image at two taps side by side
(:func:`vizcore.concepts.neuron_groups`, each group's top channels linked to their unit pages);
the concepts of a tap over a dataset (:class:`vizcore.concepts.ConceptsJob`), their heatmaps and
class importance on the session image, their top dataset crops (:class:`ConceptCropsJob`) and
their feature visualisations (:class:`DirectionIconsJob`), every long part through
``dashboard.widgets.jobs.run_job`` (progress, Stop, Resume, cached on disk).
"""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from dashboard import widgets as w
from dashboard.widgets.jobs import run_job

KEY = "concepts"

st.title("Concepts")
st.caption("A layer with hundreds of channels cannot be read one channel at a time, and single channels are "
           "often polysemantic. Here a layer's activation vectors are factored into a few **groups** (on one "
           "image) or **concepts** (over a dataset): A ≈ U W with U ≥ 0, after Olah et al., *The Building "
           "Blocks of Interpretability* (Distill 2018) and CRAFT (Fel et al., CVPR 2023).")

with st.sidebar:
    st.header("Concepts")
    model = w.model_picker(KEY)
    weights = w.weights_picker(KEY)

lm = w.load_model_or_stop(model, weights)
taps = [t.name for t in lm.taps() if t.kind not in ("pool", "logits", "input")]
image, caption = w.image_input(KEY)
digest, raw, size = w.image_payload(image)


@st.cache_data(max_entries=64, show_spinner="Factoring the map…")
def _groups(model: str, weights: str, digest: str, _raw: bytes, size: tuple[int, int], layer: str, k: int) -> dict:
    from vizcore.concepts import neuron_groups

    g = neuron_groups(w.get_model(model, weights), w.from_raw(_raw, size), layer, k)
    return {**g.to_json(), "regions": w.png_bytes(g.regions()), "W": g.W}


# ------------------------------------------------------------------ neuron groups on one image
st.header("Neuron groups on this image")
st.caption(f"The map of **{caption}** at a tap, its positions × channels, factored into k groups of channels "
           "(NMF; semi-NMF where the tap is signed). Each position is coloured by its strongest group; each "
           "group's top channels link to their unit pages. A deeper tap beside an early one shows what depth buys.")
g1, g2, g3 = st.columns([2, 2, 1])
left = g1.selectbox("Tap", taps, index=min(4, len(taps) - 1), key=f"{KEY}_g_left")
right = g2.selectbox("Deeper tap", taps, index=len(taps) - 1, key=f"{KEY}_g_right")
k_groups = g3.slider("Groups (k)", 2, 8, 4, key=f"{KEY}_g_k")
cols = st.columns(2)
for col, layer in zip(cols, (left, right)):
    with col:
        try:
            g = _groups(model, weights, digest, raw, size, layer, k_groups)
        except Exception as e:  # noqa: BLE001 - a tap without spatial map, k above the channels: one line
            w.show_error(e, f"No groups at {layer}")
            continue
        st.subheader(layer)
        st.image(g["regions"], caption=f"{g['k']} groups ({g['method']}), explained variance "
                                       f"{g['explained_variance']:.2f}", width=300)
        for gi, (share, tops, colour) in enumerate(zip(g["share"], g["top_channels"], g["colours"])):
            hexc = "#%02x%02x%02x" % tuple(colour)
            st.markdown(f"<span style='color:{hexc}'>■</span> **group {gi}** · {share:.0%} of the map · top "
                        f"channels {', '.join(map(str, tops))}", unsafe_allow_html=True)
            links = st.columns(min(3, len(tops)))
            for lc, ch in zip(links, tops[:3]):
                with lc:
                    w.unit_link(model, weights, layer, ch, label=f"{layer} · {ch}")

# ------------------------------------------------------------------ concepts over a dataset
st.header("Concepts of a tap over a dataset")
with st.sidebar:
    st.subheader("Dataset")
    spec, _ = w.dataset_input(f"{KEY}_ds", sources=("imagenet-samples", "samples", "folder"))
    n_max = st.number_input("Images (the first N; 0: all)", 0, 100_000, 64, step=16, key=f"{KEY}_n")
    engine = w.engine_input(KEY)
c1, c2, c3, c4 = st.columns([2, 1, 1, 1])
layer = c1.selectbox("Tap", taps, index=len(taps) - 1, key=f"{KEY}_layer",
                     help="The last feature map (head) sits below global pooling and the linear head: there each "
                          "concept's share of a class logit is exact.")
k = int(c2.number_input("Concepts (k)", 1, 64, 8, key=f"{KEY}_k"))
per_image = int(c3.number_input("Positions per image", 1, 4096, 16, key=f"{KEY}_per_image",
                                help="A seeded sample of each image's positions (bounded memory)."))
seed = int(c4.number_input("Seed", 0, 10_000, 0, key=f"{KEY}_seed"))
if not spec:
    st.info("Choose the images in the sidebar.")
    st.stop()
ds = w.open_dataset_or_stop(spec).first(n_max)
opts = w.run_options(engine)

from vizcore.concepts import (ConceptCropsJob, ConceptsJob, DirectionIconsJob, concept_importance,  # noqa: E402
                              concept_maps)

try:
    job = ConceptsJob(lm, ds, layer, k, per_image=per_image, seed=seed, options=opts)
except Exception as e:  # noqa: BLE001 - k above the channels, a tap without spatial map: one line
    w.show_error(e, "Cannot find concepts")
    st.stop()
concepts = run_job(f"{KEY}_run", job, opts, what=f"Concepts of {layer} over {ds.name}", start_label="Find concepts",
                   idle_note=f"Press **Find concepts**: {per_image} positions of each of the {len(ds):,} images, "
                             f"then {k} concepts (cached on disk).")
if concepts is None:
    st.stop()

st.success(f"{concepts.k} concepts ({concepts.method}) from {concepts.n_vectors:,} vectors of {concepts.n_images:,} "
           f"images: relative error {concepts.rel_error:.3f}, explained variance {concepts.explained_variance:.3f}")
st.dataframe(pd.DataFrame(concepts.sweep), hide_index=True, key=f"{KEY}_sweep")

maps = concept_maps(lm, concepts, image)
imp = concept_importance(lm, concepts, image, None)
st.subheader(f"On {caption}: where each concept is, and its part of “{imp.label}”")
expl = (f"logit share: shares {imp.shares.sum():.3f} + residual {imp.residual:.3f} + bias {imp.bias:.3f} = "
        f"logit {imp.logit:.3f}" if imp.method == "logit share" else
        "gradient x concept (a first-order estimate: this tap is not right below the pooled linear head)")
st.caption(f"Importance by **{imp.method}**: {expl}.")
fig = go.Figure(go.Bar(x=[f"concept {i}" for i in range(concepts.k)] + ["residual"],
                       y=list(map(float, imp.shares)) + [imp.residual]))
fig.update_layout(height=260, margin=dict(l=10, r=10, t=10, b=10), yaxis_title=imp.method)
st.plotly_chart(fig, key=f"{KEY}_importance")
from vizcore.render import overlay_grid  # noqa: E402

st.image(overlay_grid(lm, layer, maps.maps, maps.image, list(range(concepts.k)), cell=120, cols=concepts.k),
         caption=" · ".join(f"concept {i}" for i in range(concepts.k)))

st.subheader("Top dataset crops of each concept")
crops = run_job(f"{KEY}_crops", ConceptCropsJob(lm, ds, concepts, 6), opts, what="Crops per concept",
                start_label="Find crops", autostart=True)
if crops is not None:
    from vizcore.render import channel_montage

    tops = concepts.top_channels(5)
    for i in range(concepts.k):
        st.image(channel_montage(crops, layer, i, cell=80),
                 caption=f"concept {i} · top channels {', '.join(map(str, tops[i]))}")

st.subheader("Feature visualisation of each concept's direction")
steps = st.slider("Steps", 8, 256, 48, key=f"{KEY}_fv_steps")
icons = run_job(f"{KEY}_icons", DirectionIconsJob(lm, layer, concepts.W, steps=steps, size=96, seed=seed), opts,
                what="Feature visualisations", start_label="Render",
                idle_note="Press **Render**: one image per concept (cosine-weighted direction objective).")
if icons is not None:
    st.image(icons.images, caption=[f"concept {i}" for i in range(len(icons.images))], width=120)
    st.caption("Objective from start to end: "
               + ", ".join(f"{a:.2f}→{b:.2f}" for a, b in zip(icons.start, icons.final)))
