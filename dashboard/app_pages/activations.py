"""Activations: every tap of one network for one image, with predictions, Grad-CAM and the image's
nearest dataset images at several depths.

UI only: the engine call is :func:`vizcore.activations.extract` (through the cached
wrappers in :mod:`dashboard.widgets`); Grad-CAM runs per layer on demand; neighbours are
:func:`vizcore.neighbours.nearest_neighbours` over a :class:`vizcore.features.FeaturesJob`
(the shared features cache, computed a few batches per step of the progress widget, with Stop).
A channel target from another page (``channel_target``, e.g. Similarity's highlighted tap) opens
this page on that layer and channel.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from dashboard import widgets as w

KEY = "activations"

st.title("Activations")
st.caption("What every layer of a network does with one image: the most active channels of each "
           "layer as a grid, the network's predictions, where each layer finds evidence for a "
           "class (Grad-CAM), and which dataset images each depth finds most alike (at the end of the page).")

# Opened from another page on one channel (e.g. a highlighted tap of the Similarity heatmap): that
# layer comes first, expanded, with the channel picked. Sets the model picker before it is drawn.
if (arrived := w.receive_channel_target(KEY)) is not None:
    st.session_state[f"{KEY}_focus"] = {**arrived, "fresh": True}

with st.sidebar:
    st.subheader("Network")
    model = w.model_picker(KEY, backbones=True)  # a detector's or segmenter's backbone taps too
    weights = w.weights_picker(KEY)
    st.subheader("Channel grids")
    top = st.slider("Channels per grid", 4, 64, 16, step=4, key=f"{KEY}_top")
    order = st.radio("Rank channels by", w.GRID_ORDERS, key=f"{KEY}_order", horizontal=True,
                     format_func={"mean": "mean", "max": "max", "index": "index (no ranking)"}.get,
                     help="Show the channels with the highest mean or peak activation, or the first ones.")
    cell = st.select_slider("Cell size (px)", [32, 48, 64, 96, 128], value=64, key=f"{KEY}_cell")
    shared = st.toggle("Shared colour scale", key=f"{KEY}_shared",
                       help="Off: each channel stretched to its own range. On: one range for the "
                            "whole grid, so weak channels look weak.")

image, caption = w.image_input(KEY)
digest, raw, size = w.image_payload(image)

lm = w.load_model_or_stop(model, weights, task=None)

try:
    with st.spinner(w.plain(f"Running {model} on {caption}…")):
        ov = w.activation_overview(model, weights, digest, raw, size)
        grids = w.cached_grids(model, weights, digest, raw, size, top=top, order=order,
                               shared_scale=shared, cell=cell)
except Exception as e:  # noqa: BLE001 - a model the engine cannot run: say so, keep the app alive
    st.error(w.plain(f"{model} could not process {caption}: {e}"))
    st.stop()

left, right = st.columns([1, 2])
with left:
    st.image(ov["crop_png"], caption=f"{w.plain(caption)}: the {lm.spec.input_size}px crop the network sees")
with right:
    w.weights_badge(lm)
    preds = ov["predictions"]
    if preds:
        st.markdown("**Top-5 predictions**")
        st.plotly_chart(w.predictions_figure(preds), key=f"{KEY}_pred_chart")
    else:
        st.info(f"{w.plain(model)} has no classification head: no predictions, no Grad-CAM"
                + (f" (a {lm.spec.task} model: these are its backbone's taps; its boxes and masks are on "
                   "the Regions and pixels page)." if lm.spec.task != "classification" else "."))
    cam_target = None if not preds else st.selectbox(
        "Grad-CAM explains the class", [p[0] for p in preds], key=f"{KEY}_cam_target_{model}",
        format_func={p[0]: f"{p[1]} ({p[2]:.1%})" for p in preds}.get,
        help="Grad-CAM (Selvaraju et al., 2017, arxiv.org/abs/1610.02391): the layer's feature "
             "maps weighted by the pooled gradient of this class score.")

layers = ov["layers"]
first_spatial = next((i for i, la in enumerate(layers) if la["spatial"]), 0)
order_shown = list(range(len(layers)))
focus = st.session_state.get(f"{KEY}_focus")
focus_i = None
if focus and focus["model"] == model:
    names_here = [la["name"] for la in layers]
    if focus["layer"] in names_here:
        focus_i = names_here.index(focus["layer"])
        order_shown = [focus_i] + [i for i in order_shown if i != focus_i]
        if focus.pop("fresh", False) and layers[focus_i]["spatial"]:
            n_ch = layers[focus_i]["shape"][0]
            st.session_state[f"{KEY}_ch_{model}_{focus['layer']}"] = min(max(0, int(focus["channel"])), n_ch - 1)
            st.session_state[f"{KEY}_ch_{model}_{focus['layer']}_image"] = digest  # the link's channel, kept
    elif focus.pop("fresh", False):
        st.warning(w.plain(f"{focus['layer']} is not one of the taps shown here for {model}."))
labels = {p[0]: p[1] for p in preds}

if cam_target is not None:
    with st.expander("Grad-CAM across layers", icon=":material/layers:"):
        st.caption("Where each chosen layer finds evidence for the class above; one backward pass "
                   "per layer, computed on demand and cached.")
        cam_layers = st.multiselect("Layers", [la["name"] for la in layers if la["spatial"]],
                                    key=f"{KEY}_cam_layers_{model}")
        cam_cols = st.columns(4)
        for j, name in enumerate(cam_layers):
            with cam_cols[j % 4], st.spinner(f"Grad-CAM at {name}…"):
                try:
                    cam = w.cached_gradcam(model, weights, digest, raw, size, name, int(cam_target))
                    st.image(cam, output_format="PNG", caption=f"{name}")
                except Exception as e:  # noqa: BLE001 - show, keep the page alive
                    st.error(w.plain(f"Grad-CAM failed for {name}: {e}"))
st.subheader(f"{len(layers)} layers of {w.plain(model)}")
st.caption("Expand a layer to see its channels (each tile carries its channel number). Pick a channel "
           "number to open it on the Dataset examples or Feature visualisation page, or on its own unit page; "
           "it starts at the image's top channel.")
if focus_i is not None:
    f1, f2 = st.columns([4, 1], vertical_alignment="center")
    f1.info(f"Opened on **{focus['layer']}** (channel {focus['channel']}): it comes first below, expanded.",
            icon=":material/my_location:")
    f2.button("Network order", key=f"{KEY}_unfocus", icon=":material/sort:",
              on_click=lambda: st.session_state.pop(f"{KEY}_focus", None),
              help="Show the layers in network order again.")


@st.cache_data(max_entries=64, show_spinner="Upsampling the maps…")
def _overlays(model: str, weights: str, digest: str, _raw: bytes, size: tuple[int, int], layer: str,
              channels: tuple[int, ...], cell: int, shared: bool) -> bytes:
    """The grid's channels upsampled over the crop (same order as the tile grid)."""
    from vizcore.render import overlay_grid

    res = w.cached_extract(model, weights, digest, _raw, size)
    img = overlay_grid(w.get_model(model, weights), layer, res.layers[layer].output, res.image, channels,
                       cell=max(cell, 64), shared_scale=shared, labels=True)
    return w.png_bytes(img)


def _shape_str(shape: tuple[int, ...]) -> str:
    return "×".join(str(s) for s in shape)


for i in order_shown:
    la = layers[i]
    name, shape, g = la["name"], la["shape"], grids[la["name"]]
    label = f"**{name}** · {la['kind']} · {_shape_str(shape)}"
    with st.expander(label, expanded=(i == (first_spatial if focus_i is None else focus_i))):
        st.caption(
            f"module `{la['module']}` · output {_shape_str(shape)} · mean {la['mean'].mean():.3g} · "
            f"max {la['max'].max():.3g} · active units {la['frac_active'].mean():.1%}")
        if la["spatial"]:
            show_cam = st.toggle("Grad-CAM overlay", key=f"{KEY}_cam_{model}_{name}", disabled=not preds,
                                 help="One backward pass for this layer; computed when switched on.")
            show_cam = show_cam and cam_target is not None
            cols = st.columns([3, 2]) if show_cam else [st.container()]
            upsampled = st.toggle("Upsampled over the image", key=f"{KEY}_up_{model}_{name}",
                                  help="Each map resampled bilinearly to the input, every unit placed at the "
                                       "centre of its receptive field, and laid over the crop: easier to read "
                                       "than 7×7 or 14×14 tiles.")
            with cols[0]:
                png = _overlays(model, weights, digest, raw, size, name, tuple(g["channels"]), cell,
                                shared) if upsampled else g["png"]
                st.image(png, output_format="PNG", caption=f"top {len(g['channels'])} channels by {order}: "
                         + ", ".join(map(str, g["channels"])))
            if show_cam:
                with cols[1], st.spinner("Grad-CAM…"):
                    try:
                        cam = w.cached_gradcam(model, weights, digest, raw, size, name, int(cam_target))
                        st.image(cam, output_format="PNG", caption=f"Grad-CAM at {name} for {labels[cam_target]}")
                    except Exception as e:  # noqa: BLE001 - show, keep the page alive
                        st.error(w.plain(f"Grad-CAM failed for {name}: {e}"))
            st.download_button("Download grid PNG", g["png"], file_name=f"{model.replace('/', '_')}_{name}.png",
                               mime="image/png", key=f"{KEY}_dl_{model}_{name}", on_click="ignore",
                               icon=":material/download:")
        else:
            st.plotly_chart(w.vector_figure(g["channels"], g["values"]), key=f"{KEY}_vec_{model}_{name}")
        chans = g["channels"]
        stats = pd.DataFrame({
            "channel": chans,
            "mean": [float(la["mean"][c]) for c in chans],
            "max": [float(la["max"][c]) for c in chans],
            "std": [float(la["std"][c]) for c in chans],
            "active": [float(la["frac_active"][c]) for c in chans],
        })
        with st.popover("Channel statistics", icon=":material/table:"):
            st.dataframe(stats, hide_index=True, column_config={
                "active": st.column_config.NumberColumn("active", format="percent")})
        if la["spatial"]:
            c0, _ = st.columns([1, 2])
            ch_key = f"{KEY}_ch_{model}_{name}"
            if st.session_state.get(f"{ch_key}_image") != digest:  # a new image: its top channel
                st.session_state[f"{ch_key}_image"] = digest
                st.session_state[ch_key] = chans[0] if chans else 0
            ch = c0.number_input(f"Channel of {name} (0-{shape[0] - 1})", 0, shape[0] - 1, step=1, key=ch_key)
            w.channel_links(model, name, int(ch), key=f"{KEY}_link_{model}_{name}", weights=weights)


# ------------------------------------------------------------------------------ neighbours
st.header("Nearest dataset images at every depth")
st.caption(f"The dataset images whose pooled features at a tap of **{w.plain(model)}** are closest (cosine) to those of "
           f"**{w.plain(caption)}**: early taps group by colour and texture, deep taps by what is in the picture. "
           "The dataset's features are computed once and cached on disk (shared with the probes and "
           "embeddings pages).")
taps_nb = [la["name"] for la in layers if la["kind"] not in ("input", "logits")] or [la["name"] for la in layers]
nb_default = list(dict.fromkeys([taps_nb[0], taps_nb[len(taps_nb) // 2], taps_nb[-1]]))
n1, n2, n3 = st.columns([2, 2, 1])
with n1:
    nb_spec, _ = w.dataset_input(f"{KEY}_nb", sources=("imagenet-samples", "samples", "folder", "cue-conflict"))
picks = n2.multiselect("Taps", taps_nb, default=nb_default, key=f"{KEY}_nb_layers_{model}",
                       help="By default an early, a middle and the last tap before the classifier.")
k_nb = n3.slider("Neighbours per tap", 1, 12, 6, key=f"{KEY}_nb_k")
if not picks or not nb_spec:
    st.info("Choose at least one tap." if not picks else "Choose the images to search above.")
    st.stop()
nb_ds = w.open_dataset_or_stop(nb_spec)
nb_id = (model, weights, nb_spec, nb_ds.fingerprint(), tuple(picks))


from dashboard.widgets.jobs import run_job  # noqa: E402
from vizcore.features import FeaturesJob  # noqa: E402
from vizcore.jobs import RunOptions  # noqa: E402

held = st.session_state.get(f"{KEY}_nb_job")
if held is None or held["id"] != nb_id:  # the job of this request (it reads the cached layers once)
    held = st.session_state[f"{KEY}_nb_job"] = {"id": nb_id, "job": FeaturesJob(lm, nb_ds, picks)}
feats = run_job(f"{KEY}_nb", held["job"], RunOptions(batch_size=16, workers=0), what=f"Pooled features of {nb_ds.name}",
                start_label="Find neighbours", units_per_step=64,
                idle_note=f"Press **Find neighbours**: one pass over the {len(nb_ds):,} images of {nb_ds.name} "
                          f"({len(picks)} taps, cached on disk, so it runs once for this model and dataset).")
if feats is None:
    st.stop()

from vizcore.neighbours import nearest_neighbours  # noqa: E402

found_for = st.session_state[f"{KEY}_nb_job"].setdefault("found", {})  # per query image and k: reruns are free
if (digest, caption, k_nb) not in found_for:
    try:
        found_for[(digest, caption, k_nb)] = nearest_neighbours(lm, image, nb_ds, picks, k=k_nb, query_name=caption,
                                                                features=feats)
    except Exception as e:  # noqa: BLE001 - e.g. no image of the dataset could be read: say so
        w.show_error(e, "Cannot find neighbours")
        st.stop()
nb = found_for[(digest, caption, k_nb)]
st.caption(f"{nb.n_images:,} images of {w.plain(nb_ds.name)} searched"
           + (" (features from the cache)." if feats.from_cache else "."))
query_thumb = image.copy()
query_thumb.thumbnail((128, 128))
for layer, hits in nb.layers.items():
    st.subheader(layer)
    thumbs, caps = [query_thumb], [f"query: {w.plain(caption)}"]
    for h in hits:
        if (img := w.thumbnail(h.file)) is not None:
            thumbs.append(img)
            caps.append(f"{w.plain(Path(h.file).name)} · {h.similarity:.3f}")
    st.image(thumbs, caption=caps, width=128)
