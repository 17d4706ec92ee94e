"""Embeddings: 2-D maps (t-SNE, PCA, UMAP) of a dataset at an early and a late layer.

UI only: :func:`vizcore.embed.embed` pools the layer's features (shared disk cache
with the probes), projects them and scores the map (k-NN label accuracy in 2-D,
trustworthiness). Plotly's hover boxes cannot show images, so the hover names the
file and its label, and clicking or lasso-selecting points shows their thumbnails
below the maps (``st.plotly_chart(on_select="rerun")``); a point can also be picked
from a list.

The work is one :class:`vizcore.jobs.ChainJob` (a :class:`vizcore.features.FeaturesJob` for both
layers, then a :class:`vizcore.embed.EmbedMapsJob`, one projection per step) run by the shared job
widget (:func:`dashboard.widgets.jobs.run_job`): the time left, Stop, Resume, the early map as soon
as it is ready, and cached maps at once. Every class gets its own colour (plotly's 26-colour Alphabet
palette beyond 10 classes), the same in both maps.
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from dashboard import widgets as w
from dashboard.widgets.jobs import run_job
from vizcore.embed import EmbedMapsJob
from vizcore.features import FeaturesJob
from vizcore.jobs import ChainJob

KEY = "embeddings"
METHODS = {"tsne": "t-SNE (openTSNE)", "pca": "PCA", "umap": "UMAP"}

st.title("Embeddings")
st.caption("Every image of a dataset as one point, placed by its pooled features at a layer. Compare an early "
           "and a late layer side by side: the numbers under each map say how well it keeps the labels "
           "(k-NN accuracy in 2-D) and the feature-space neighbourhoods (trustworthiness).")


with st.sidebar:
    st.subheader("Network")
    model = w.model_picker(KEY)
    weights = w.weights_picker(KEY)

lm = w.load_model_or_stop(model, weights)

taps = [t.name for t in lm.taps()]
late_default = next((t.name for t in reversed(lm.taps()) if t.kind != "logits"), taps[-1])
with st.sidebar:
    early = st.selectbox("Early layer", taps, index=0, key=f"{KEY}_early")
    late = st.selectbox("Late layer", taps, index=taps.index(late_default), key=f"{KEY}_late")
    st.subheader("Dataset")
    spec, default_label = w.dataset_input(KEY, sources=("cue-conflict", "folder", "samples"))
    engine = w.engine_input(KEY)
    kinds = ["class", "shape", "texture"]
    label = st.selectbox("Colour by", kinds, index=kinds.index(default_label), key=f"{KEY}_label",
                         help="class: the folder's labels; shape / texture: the two labels of each "
                              "cue-conflict stimulus (colour by texture to see a texture bias).")
    max_images = st.number_input("Images (0 = all)", 0, 100_000, 600, step=100, key=f"{KEY}_max_images",
                                 help="An evenly spaced subset (every class kept): about a minute on a "
                                      "2-core CPU; all 1,200 cue-conflict stimuli take about twice as long.")
    st.subheader("Projection")
    method = st.radio("Method", list(METHODS), format_func=METHODS.__getitem__, key=f"{KEY}_method")
    seed = int(st.number_input("Seed", 0, 10_000, 0, key=f"{KEY}_seed"))
    perplexity = st.slider("Perplexity (t-SNE)", 2, 100, 30, key=f"{KEY}_perplexity") if method == "tsne" else 30

w.weights_badge(lm)
ds = w.open_dataset_or_stop(spec)
if max_images and max_images < len(ds):
    ds = ds.evenly_spaced(int(max_images))
classes = ds.classes(label)
st.write(f"**{w.plain(ds.name)}**: {len(ds)} images, {len(classes)} **{label}** classes.")


# ------------------------------------------------------------------------- the run, as one chain of jobs
# The features of both layers in one pass (shared disk cache), then one map per layer (each cached).
opts = w.run_options(engine)
PER_STEP = 2 * opts.batch_size  # images per script run; a map counts as PER_STEP, so one map per step
job = ChainJob({"features": FeaturesJob(lm, ds, list(dict.fromkeys([early, late]))),
                "maps": EmbedMapsJob(lm, ds, [early, late], method=method, label=label, seed=seed,
                                     perplexity=perplexity, units_per_map=PER_STEP, options=opts)})


def palette(n: int) -> list[str]:
    """A distinct colour for each of ``n`` classes: plotly's 10 colours, its 26-colour Alphabet beyond
    that, and Dark24 + Light24 after it (74 in all) before colours repeat."""
    from plotly.colors import qualitative

    return list(qualitative.Plotly) if n <= 10 else list(qualitative.Alphabet) + list(qualitative.Dark24) + \
        list(qualitative.Light24)


def _map(emb, which: str, *, interactive: bool) -> list[int]:
    """One map with its numbers; returns the indices of the points selected in it."""
    import plotly.express as px

    st.subheader(f"{which}: {emb.layer}")
    q = emb.quality
    m1, m2, m3 = st.columns(3)
    m1.metric(f"{q.knn_k}-NN accuracy", "n/a" if q.knn_accuracy is None else f"{q.knn_accuracy:.3f}",
              help="Label accuracy of a k-NN classifier in the 2-D map (stratified cross-validation).")
    m2.metric("Trustworthiness", f"{q.trustworthiness:.3f}",
              help=f"Are 2-D neighbours also feature-space neighbours? (k={q.trust_k}, n={q.trust_n})")
    m3.metric("Features", f"{emb.n_features:,}")
    names = [Path(f).name for f in emb.files]
    colours = [lab if lab is not None else "(none)" for lab in emb.labels]
    order = classes + (["(none)"] if "(none)" in colours else [])
    fig = px.scatter(x=emb.coords[:, 0], y=emb.coords[:, 1], color=colours, hover_name=names,
                     custom_data=[list(range(len(emb)))], labels={"color": label, "x": "", "y": ""}, height=480,
                     category_orders={"color": order}, color_discrete_sequence=palette(len(order)))
    fig.update_traces(marker={"size": 6 if len(emb) < 2000 else 3, "opacity": 0.8})
    fig.update_layout(legend={"orientation": "h", "y": -0.15}, margin={"l": 10, "r": 10, "t": 10, "b": 10})
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    picked: list[int] = []
    if not interactive:
        st.plotly_chart(fig, width="stretch", key=f"{KEY}_chart_{which}_partial")
        return picked
    event = st.plotly_chart(fig, width="stretch", key=f"{KEY}_chart_{which}", on_select="rerun",
                            selection_mode=("points", "box", "lasso"))
    try:
        pts = event.selection.points if event else []
    except AttributeError:
        pts = []
    for p in pts:
        cd = p.get("customdata")
        if cd is not None:
            picked.append(int(cd[0] if isinstance(cd, (list, tuple)) else cd))
    st.caption(f"{len(emb)} points · {emb.method} ({emb.backend}) · seed {emb.seed}")
    return picked


def _partial(res) -> None:
    if maps := (res or {}).get("maps"):
        cols = st.columns(2)
        with cols[0]:
            _map(maps[0], "early", interactive=False)


done = run_job(KEY, job, opts, what="Embeddings", partial=_partial, start_label="Compute maps",
               units_per_step=PER_STEP, autostart=st.session_state.pop(f"{KEY}_autostart", False),
               idle_note=f"Press **Compute maps**: one pass over {len(ds):,} images for both layers, then two "
                         f"{METHODS[method]} maps (on the bar, a map counts as {PER_STEP} images). Features and "
                         "maps are cached on disk, so a repeated run is instant.")
if done is None:
    st.stop()

# ----------------------------------------------------------------------------- results
maps = done["maps"]
selected: list[int] = []
cols = st.columns(2)
for col, emb, which in zip(cols, maps, ("early", "late")):
    with col:
        selected += _map(emb, which, interactive=True)

n_cls = len(classes)
st.markdown(
    f"**{maps[0].quality.knn_k}-NN accuracy**: how often the {maps[0].quality.knn_k} nearest neighbours of a "
    f"point in the 2-D map vote for its own **{label}** label (cross-validated; chance is about "
    f"{1 / max(1, n_cls):.2f} with {n_cls} classes): high when the layer keeps images of one {label} together. "
    "**Trustworthiness** (0 to 1): whether points close together in the map were also close in the layer's "
    "feature space (1: the map invents no neighbours), so a cluster in the map is one in the layer.")
if set(ds.labels("shape")) - {None} and set(ds.labels("texture")) - {None}:
    other = "texture" if label != "texture" else "shape"
    if label == "texture":
        st.info("Coloured by **texture**: where the late map groups one texture's colour, the network sorts "
                "these images by texture. A texture k-NN accuracy above the shape one at the late layer is "
                "the texture bias of ImageNet CNNs (Geirhos et al., ICLR 2019).")
    else:
        st.info("Cue-conflict stimuli have a shape and a texture. A low **shape** k-NN accuracy at the late "
                "layer means the network does not group them by shape; colour them by **texture** to see "
                "what it groups them by: that is the texture bias (Geirhos et al., ICLR 2019).")
    st.button(f"Colour by {other}", key=f"{KEY}_swap_label", icon=":material/palette:",
              on_click=lambda: st.session_state.update({f"{KEY}_label": other, f"{KEY}_autostart": True}),
              help="Recolours both maps (the features are cached: only the maps' numbers are recomputed).")

st.subheader("Thumbnails")
st.caption("Click or lasso points in either map to see their images here (plotly hover boxes cannot show "
           "images), or pick one from the list.")
files = maps[0].files
pick = st.selectbox("Inspect an image", ["(none)"] + [Path(f).name for f in files], key=f"{KEY}_inspect")
if pick != "(none)":
    selected.insert(0, [Path(f).name for f in files].index(pick))
selected = list(dict.fromkeys(selected))[:24]
if selected:
    thumbs, caps = [], []
    for i in selected:
        if (img := w.thumbnail(files[i])) is not None:
            thumbs.append(img)
            caps.append(w.plain(f"{Path(files[i]).name} · {maps[0].labels[i]}"))
    st.image(thumbs, caption=caps, width=128)
