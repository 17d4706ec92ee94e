"""Embeddings: 2-D maps (t-SNE, PCA, UMAP) of a dataset at an early and a late layer.

UI only: :func:`vizcore.embed.embed` pools the layer's features (shared disk cache
with the probes), projects them and scores the map (k-NN label accuracy in 2-D,
trustworthiness). Plotly's hover boxes cannot show images, so the hover names the
file and its label, and clicking or lasso-selecting points shows their thumbnails
below the maps (``st.plotly_chart(on_select="rerun")``); a point can also be picked
from a list.
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from dashboard import widgets as w

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
    label = st.selectbox("Colour by", kinds, index=kinds.index(default_label), key=f"{KEY}_label")
    st.subheader("Projection")
    method = st.radio("Method", list(METHODS), format_func=METHODS.__getitem__, key=f"{KEY}_method")
    seed = int(st.number_input("Seed", 0, 10_000, 0, key=f"{KEY}_seed"))
    perplexity = st.slider("Perplexity (t-SNE)", 2, 100, 30, key=f"{KEY}_perplexity") if method == "tsne" else 30

w.weights_badge(lm)
ds = w.open_dataset_or_stop(spec)
st.write(f"**{ds.name}**: {len(ds)} images, {len(ds.classes(label))} **{label}** classes.")

request = (model, weights, spec, ds.fingerprint(), early, late, label, method, seed, perplexity)
results: dict = st.session_state.setdefault(f"{KEY}_results", {})

c1, c2 = st.columns([1, 5])
run = c1.button("Compute maps", type="primary", key=f"{KEY}_run")
stop = c2.button("Stop", key=f"{KEY}_stop", help="Interrupt a running computation.")
if stop:
    st.session_state.pop(f"{KEY}_pending", None)
    st.warning("Stopped. Nothing half-done is cached.")
if run:
    st.session_state[f"{KEY}_pending"] = request

if st.session_state.get(f"{KEY}_pending") == request and request not in results:
    from vizcore.embed import Stopped, embed
    from vizcore.features import extract_features

    if engine == "ray":
        w.ray_or_stop()
    bar = st.progress(0.0, text="Features…")
    try:
        # one pass for both layers (shared cache), then the two projections
        extract_features(lm, ds, list(dict.fromkeys([early, late])), workers=0, batch_size=16, engine=engine,
                         progress=lambda d, t: bar.progress(0.7 * d / max(1, t), text=f"features {d}/{t}"))
        maps = []
        for i, layer in enumerate((early, late)):
            bar.progress(0.7 + 0.15 * i, text=f"{METHODS[method]} of {layer}…")
            maps.append(embed(lm, ds, layer, method=method, label=label, seed=seed, perplexity=perplexity,
                              workers=0, batch_size=16))
        results[request] = maps
        bar.progress(1.0, text="Done")
    except (ValueError, Stopped) as e:
        st.error(str(e))
        st.session_state.pop(f"{KEY}_pending", None)
        st.stop()
    st.session_state.pop(f"{KEY}_pending", None)

if request not in results:
    st.info("Press **Compute maps**. Features and maps are cached on disk, so a repeated run is instant.")
    st.stop()

# ----------------------------------------------------------------------------- results
import plotly.express as px  # noqa: E402

maps = results[request]
selected: list[int] = []
cols = st.columns(2)
for col, emb, which in zip(cols, maps, ("early", "late")):
    with col:
        st.subheader(f"{which}: {emb.layer}")
        q = emb.quality
        m1, m2, m3 = st.columns(3)
        m1.metric(f"{q.knn_k}-NN accuracy", "n/a" if q.knn_accuracy is None else f"{q.knn_accuracy:.3f}",
                  help="Label accuracy of a k-NN classifier in the 2-D map (stratified cross-validation).")
        m2.metric("Trustworthiness", f"{q.trustworthiness:.3f}",
                  help=f"Are 2-D neighbours also feature-space neighbours? (k={q.trust_k}, n={q.trust_n})")
        m3.metric("Features", f"{emb.n_features:,}")
        names = [Path(f).name for f in emb.files]
        fig = px.scatter(x=emb.coords[:, 0], y=emb.coords[:, 1],
                         color=[lab if lab is not None else "(none)" for lab in emb.labels],
                         hover_name=names, custom_data=[list(range(len(emb)))],
                         labels={"color": label, "x": "", "y": ""}, height=480)
        fig.update_traces(marker={"size": 6 if len(emb) < 2000 else 3, "opacity": 0.8})
        fig.update_layout(legend={"orientation": "h", "y": -0.15}, margin={"l": 10, "r": 10, "t": 10, "b": 10})
        fig.update_xaxes(showticklabels=False)
        fig.update_yaxes(showticklabels=False)
        event = st.plotly_chart(fig, width="stretch", key=f"{KEY}_chart_{which}", on_select="rerun",
                                selection_mode=("points", "box", "lasso"))
        try:
            pts = event.selection.points if event else []
        except AttributeError:
            pts = []
        for p in pts:
            cd = p.get("customdata")
            if cd is not None:
                selected.append(int(cd[0] if isinstance(cd, (list, tuple)) else cd))
        st.caption(f"{len(emb)} points · {emb.method} ({emb.backend}) · seed {emb.seed}")

st.subheader("Thumbnails")
st.caption("Click or lasso points in either map to see their images here (plotly hover boxes cannot show "
           "images), or pick one from the list.")
files = maps[0].files
pick = st.selectbox("Inspect an image", ["(none)"] + [Path(f).name for f in files], key=f"{KEY}_inspect")
if pick != "(none)":
    selected.insert(0, [Path(f).name for f in files].index(pick))
selected = list(dict.fromkeys(selected))[:24]
if selected:
    from vizcore.data import ImageLoadError, load_image

    thumbs, caps = [], []
    for i in selected:
        try:
            img = load_image(files[i], max_side=256)
        except ImageLoadError:
            continue
        img.thumbnail((128, 128))
        thumbs.append(img)
        caps.append(f"{Path(files[i]).name} · {maps[0].labels[i]}")
    st.image(thumbs, caption=caps, width=128)
