"""Similarity: linear CKA between every tap of two networks.

UI only: :class:`vizcore.similarity.CKAJob` computes the minibatch CKA in one dataset pass, run
by the job widget (:func:`dashboard.widgets.jobs.run_job`: progress, time left, Stop, Resume, the
engine chosen, the cached result at once). A highlighted row or column opens a channel of that tap
on the unit page. Nearest neighbours of the session's image are on the Activations page (linked at
the end).
"""
from __future__ import annotations

import numpy as np
import streamlit as st

from dashboard import pages
from dashboard import widgets as w
from vizcore.models import list_models

KEY = "similarity"
PAGE_ACTIVATIONS = pages.ACTIVATIONS.path
AGAINST = {"random": "its random-init twin", "model": "another network", "self": "itself"}

st.title("Similarity")
st.caption("How alike are the representations of two layers? Linear CKA (Kornblith et al. 2019) compares "
           "the similarity structure two layers impose on the same images: 1 for the same representation up "
           "to rotation and scale, about 0 for unrelated ones. Computed with the unbiased minibatch "
           "estimator of Nguyen et al. (2021) in one pass over a dataset.")

with st.sidebar:
    st.subheader("Network A")
    model = w.model_picker(KEY, allow_timm=False)
    weights = w.weights_picker(KEY)
    st.subheader("Compared with")
    against = st.radio("B is", list(AGAINST), format_func=AGAINST.__getitem__, key=f"{KEY}_against")
    if against == "model":
        names = list_models()
        model_b = st.selectbox("Network B", names, index=names.index("resnet18") if "resnet18" in names else 0,
                               key=f"{KEY}_model_b")
        weights_b = st.radio("Weights of B", ["auto", "random"], key=f"{KEY}_weights_b", horizontal=True,
                             format_func={"auto": "best available (auto)", "random": "random init"}.get)
    else:
        model_b, weights_b = model, ("random" if against == "random" else weights)

lm = w.load_model_or_stop(model, weights)
lm_b = w.load_model_or_stop(model_b, weights_b) if (model_b, weights_b) != (model, weights) else lm

taps_a = [t.name for t in lm.taps() if t.kind != "input"]
taps_b = [t.name for t in lm_b.taps() if t.kind != "input"]
with st.sidebar:
    st.subheader("Layers")
    layers = st.multiselect("Taps of A", taps_a, default=taps_a, key=f"{KEY}_layers_{model}",
                            help="Curated taps, in network order.")
    if model_b == model:
        layers_b = layers
    else:
        layers_b = st.multiselect("Taps of B", taps_b, default=taps_b, key=f"{KEY}_layers_b_{model_b}")
    st.subheader("Dataset")
    spec, _ = w.dataset_input(KEY, sources=("folder", "samples", "cue-conflict"), folder_default="imagenet-samples")

w.weights_badge(lm)
if lm_b is not lm:
    st.caption(f"B: **{w.plain(model_b)}**, weights {w.plain(lm_b.weights.label())}")
ds_all = w.open_dataset_or_stop(spec)
if len(ds_all) < 4:
    st.error(f"CKA needs at least 4 images; {w.plain(ds_all.name)} has {len(ds_all)}.")
    st.stop()
if not layers or not layers_b:
    st.info("Choose at least one tap of each network.")
    st.stop()

with st.sidebar:
    n_max = len(ds_all)
    n_use = int(st.number_input("Images to use", 4, n_max, min(n_max, 256), key=f"{KEY}_n",
                                help="Spread evenly over the dataset. More images, a steadier estimate."))
    if st.session_state.get(f"{KEY}_batch", 0) > n_use:  # fewer images chosen than the batch held
        st.session_state[f"{KEY}_batch"] = n_use
    batch = int(st.number_input("Batch size", 4, max(4, n_use), min(32, n_use), key=f"{KEY}_batch",
                                help="Images per HSIC estimate (at least 4). A shorter last batch is dropped."))
    mode = st.radio("Maps", ["pool", "flatten"], key=f"{KEY}_mode", horizontal=True,
                    format_func={"pool": "pooled (~9,600 features)", "flatten": "flattened whole"}.get,
                    help="Pooled first keeps memory bounded for the early layers of big networks; "
                         "flattened whole is Kornblith et al.'s protocol.")
    engine = w.engine_input(KEY)

ds = ds_all.evenly_spaced(n_use)
st.write(f"**{w.plain(ds.name)}**: {len(ds)} images · A: **{w.plain(model)}** · B: **{w.plain(model_b)}** ({AGAINST[against]})")

from dashboard.widgets.jobs import run_job  # noqa: E402
from vizcore.similarity import CKAJob  # noqa: E402

try:
    job = CKAJob.of(lm, lm_b, ds, layers=layers, layers_b=layers_b, batch_size=batch, mode=mode)
except (ValueError, KeyError) as e:
    st.error(str(e).strip("'\""))
    st.stop()

# ------------------------------------------------------------------------------ the pass
# The job layer: the cached result at once, else Compute with progress, Stop and Resume; cached once complete.
res = run_job(KEY, job, w.run_options(engine, batch), what=f"CKA over {w.plain(ds.name)}",
              start_label="Compute CKA",
              idle_note="Press **Compute CKA**. Results are cached on disk: a repeated run is instant.")
if res is None:
    st.stop()
src = "from the cache" if res.from_cache else "computed now"
dropped = f" · {res.dropped} images of a short batch dropped" if res.dropped else ""
skipped = f" · {len(res.skipped)} unreadable" if res.skipped else ""
st.success(f"CKA of {len(res.layers_a)} x {len(res.layers_b)} taps on {res.n_images} images in {res.batches} "
           f"batches of {res.settings['batch_size']} ({src}){dropped}{skipped}")

# ------------------------------------------------------------------------------ heatmap
import plotly.graph_objects as go  # noqa: E402

c1, c2 = st.columns(2)
focus_a = c1.selectbox("Highlight a tap of A (row)", ["(none)"] + res.layers_a, key=f"{KEY}_focus")
col_default = focus_a if focus_a in res.layers_b else "(none)"
focus_b = c2.selectbox("Highlight a tap of B (column)", ["(none)"] + res.layers_b,
                       index=(["(none)"] + res.layers_b).index(col_default), key=f"{KEY}_focus_b_{focus_a}")

m = res.matrix
fig = go.Figure(go.Heatmap(
    z=m, x=res.layers_b, y=res.layers_a, zmin=0, zmax=1, colorscale=w.colorscale("Magma"), colorbar={"title": "CKA"},
    hovertemplate="A: %{y}<br>B: %{x}<br>CKA %{z:.6f}<extra></extra>"))
n_a, n_b = len(res.layers_a), len(res.layers_b)
if focus_a != "(none)":
    i = res.layers_a.index(focus_a)
    fig.add_shape(type="rect", x0=-0.5, x1=n_b - 0.5, y0=i - 0.5, y1=i + 0.5, line={"color": "cyan", "width": 3})
if focus_b != "(none)":
    j = res.layers_b.index(focus_b)
    fig.add_shape(type="rect", x0=j - 0.5, x1=j + 0.5, y0=-0.5, y1=n_a - 0.5, line={"color": "lime", "width": 3})
fig.update_yaxes(autorange="reversed", title=f"A: {res.models[0]} ({res.weights[0]})", type="category")
fig.update_xaxes(title=f"B: {res.models[1]} ({res.weights[1]})", type="category", tickangle=-60)
fig.update_layout(height=max(420, 22 * n_a + 160), margin={"l": 10, "r": 10, "t": 10, "b": 10})
st.plotly_chart(fig, key=f"{KEY}_heatmap")


def _unit_opener(side: str, model_: str, weights_: str, tap: str) -> int:
    """A channel of ``tap`` (default: the one most active on the session image, by its mean) and a
    link to its unit page. Shapes and means come from the cached overview the Activations page uses."""
    image, caption = w.current_image()
    digest, raw, size = w.image_payload(image)
    try:
        ov = w.activation_overview(model_, weights_, digest, raw, size)
        la = next(la for la in ov["layers"] if la["name"] == tap)
    except Exception as e:  # noqa: BLE001 - a network that cannot run the image: say so, keep the heatmap
        st.error(w.plain(f"{side}: {model_} could not process {caption}: {e}"))
        return 0
    n = int(la["shape"][0]) if la["shape"] else 1
    best = int(np.argmax(la["mean"]))
    ch = int(st.number_input(f"Channel of {tap} in {side} (0-{n - 1})", 0, n - 1, best, step=1,
                             key=f"{KEY}_unit_{side}_{model_}_{weights_}_{tap}_{digest}",
                             help=f"Starts at the channel most active on {caption} (its mean over the map)."))
    w.unit_link(model_, weights_, tap, ch, label=w.plain(f"{side}: {model_} · {tap} · {ch}"))
    return ch


ch_a = 0  # the channel of A's highlighted tap that the buttons below open
if focus_a != "(none)" or focus_b != "(none)":
    u1, u2 = st.columns(2)
    if focus_a != "(none)":
        with u1:
            ch_a = _unit_opener("A", model, weights, focus_a)
    if focus_b != "(none)":
        with u2:
            _unit_opener("B", model_b, weights_b, focus_b)

if focus_a != "(none)":
    i = res.layers_a.index(focus_a)
    row = m[i]
    j = int(np.nanargmax(row)) if np.isfinite(row).any() else 0
    st.markdown(f"**{focus_a}** of A is most like **{res.layers_b[j]}** of B (CKA {row[j]:.4f})"
                + (f"; at the same tap: {res.value(focus_a, focus_a):.4f}" if focus_a in res.layers_b else "")
                + ".")
    l1, l2, _ = st.columns([1, 1, 2])
    if l1.button("Activations", key=f"{KEY}_to_act", icon=":material/layers:",
                 help=f"What {focus_a} does with one image, opened on channel {ch_a}"):
        w.set_channel_target(model, focus_a, ch_a)
        st.switch_page(PAGE_ACTIVATIONS)
    if l2.button("Dataset examples", key=f"{KEY}_to_dsx", icon=":material/grid_view:",
                 help=f"Dataset patches that excite channel {ch_a} of {focus_a} most"):
        w.set_channel_target(model, focus_a, ch_a)
        st.switch_page(w.PAGE_DATASET_EXAMPLES)

st.download_button("Download CKA (CSV)", res.csv_text(), file_name="cka.csv", mime="text/csv", key=f"{KEY}_csv")

# ------------------------------------------------------------------------------ neighbours
st.page_link(PAGE_ACTIVATIONS, label="Nearest dataset images of your image at every depth: on the Activations page",
             icon=":material/travel_explore:",
             help="The session's image is the query; an early, a middle and the last tap by default.")
