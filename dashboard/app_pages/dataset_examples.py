"""Dataset examples: the image patches that excite each channel of a layer most.

UI only: mining is a :class:`vizcore.patches.MiningJob` (one streaming pass, cached on disk
per layer). It starts on the **Mine** button, never on a sidebar change, and runs a few batches
per step of the job widget (:func:`dashboard.widgets.jobs.run_job`; on Ray in one call), so the
page shows the time left, fills the channel grid in as images are mined and can be stopped; crops, montages and heatmaps come
from :mod:`vizcore.render`. The channel detail can also rank the images by the channel's relevance for the
model's prediction (RelMax, :func:`dashboard.widgets.relevance.relmax_section`), beside the ranking by activation.
"""
from __future__ import annotations

import streamlit as st

from dashboard import widgets as w
from vizcore.render import fit
from vizcore.unit import hit_crop

KEY = "dataset_examples"
st.title("Dataset examples")
st.caption("For every channel of a layer, the dataset images that excite it most, cropped to the "
           "unit's receptive field around the maximum (Zeiler & Fergus 2014). One pass over the "
           "dataset mines every channel at once; results are cached on disk, so a second visit is instant.")


# ------------------------------------------------------- cross-page target (Activations page)
def _apply_channel_target() -> dict | None:
    """Preselect model, layer and channel once per new ``channel_target``."""
    target = w.receive_channel_target(KEY)
    if target:
        st.session_state[f"{KEY}_channel"] = int(target["channel"])
    return target


target = _apply_channel_target()

with st.sidebar:
    st.subheader("Network")
    model = w.model_picker(KEY, backbones=True)  # a detector's or segmenter's backbone taps too
    weights = w.weights_picker(KEY)

lm = w.load_model_or_stop(model, weights, task=None)

with st.sidebar:
    layer = w.layer_picker(lm, KEY)
    st.subheader("Dataset")
    # The ImageNet sample images first: 1,000 photos, one per class, so each channel finds its own
    # photos (on the 10 built-in photos with k = 9 every channel shows nearly the same ones).
    spec, _ = w.dataset_input(KEY, sources=("imagenet-samples", "samples", "folder", "cue-conflict",
                                            "cifar10", "stl10"))
    st.subheader("Mining")
    k = st.slider("Patches per channel (k)", 1, 16, 9, key=f"{KEY}_k")
    batch = st.select_slider("Batch size", [4, 8, 16, 32, 64], value=16, key=f"{KEY}_batch")
    earlier = st.toggle("Also mine every earlier layer", value=True, key=f"{KEY}_earlier",
                        help="The forward pass runs through them anyway, so mining them in the same pass "
                             "costs little and makes them instant later.")
    engine = w.engine_input(KEY)

w.weights_badge(lm)
ds = w.open_dataset_or_stop(spec)
ds_ref = w.set_session_dataset(spec)  # the session's dataset from now on: the unit page and links show it

taps = [t.name for t in lm.taps()]
layers = taps[: taps.index(layer) + 1] if earlier and layer in taps else [layer]
job_id = (model, weights, spec, ds.fingerprint(), tuple(layers), k, batch)


# ------------------------------------------------------------------------------ mining
from dashboard.widgets.jobs import run_job  # noqa: E402
from vizcore.jobs import RunOptions  # noqa: E402
from vizcore.patches import MiningJob  # noqa: E402

held = st.session_state.get(f"{KEY}_mining")
if held is None or held[0] != job_id:  # built once per settings: it reads the cached layers from disk
    held = st.session_state[f"{KEY}_mining"] = (job_id, MiningJob(lm, ds, layers, k))
mining = held[1]  # the layers already cached (by any engine) are not mined again
status = st.container()
MINE_NOTE = (f"Press **Mine** to find the top {k} images of every channel of {layer}"
             f"{' and the layers before it' if len(layers) > 1 else ''} in {len(ds):,} images of {ds.name} "
             "(one pass; cached on disk, so it runs once).")


def _partial_grid(part) -> None:
    """The first channels' top images so far: the grid fills in while the pass runs."""
    if layer not in part.layers:
        return
    st.caption(f"So far: the top {k} of the first {part.n_images:,} images for each channel "
               f"(the first 12 of {part.n_channels(layer)} channels).")
    cols = st.columns(6)
    for n in range(min(12, part.n_channels(layer))):
        hits = part.layers[layer][n]
        with cols[n % 6]:
            if hits:
                st.image(_montage(f"{job_key}|partial|{part.n_images}", layer, n, 40, cols_k, part),
                         caption=f"channel {n} · max activation {hits[0].value:.3g}")


@st.cache_data(max_entries=4000, show_spinner=False)
def _montage(key: str, layer: str, channel: int, cell: int, cols: int, _result) -> bytes:
    from vizcore.render import channel_montage

    return w.png_bytes(channel_montage(_result, layer, channel, cell=cell, cols=cols))


cols_k = max(1, int(round(k ** 0.5)))
job_key = "|".join(map(str, job_id))
if engine == "ray" and not mining.from_cache:
    w.ray_or_stop()
with status:
    try:
        # The job layer: the cached result at once; else Mine, a few batches per step (on Ray, one call that
        # Stop ends), progress and time left, the grid filling in, Stop and Resume; cached once complete.
        result = run_job(KEY, mining, RunOptions(batch_size=batch, workers=0, engine=engine),
                         what=f"Mining {len(mining.pass_.todo)} layer(s) of {model} over {w.plain(ds.name)}",
                         partial=_partial_grid, start_label="Mine", idle_note=MINE_NOTE,
                         units_per_step=max(batch, 64))
    except ValueError as e:  # no image of the dataset could be read
        st.error(w.plain(e))
        st.stop()
if result is None:
    st.stop()
if layer not in result.layers:
    st.info("Nothing mined yet.")
    st.stop()
with status:
    src = "from the cache" if result.cached else ("mined now" if result.complete else "partial")
    msg = (f"{result.n_images} images of **{w.plain(ds.name)}** · layer **{layer}** · "
           f"{result.n_channels(layer)} channels · top {k} ({src})")
    if result.complete:
        st.success(msg)
    else:
        st.caption(msg)
    if result.skipped:
        with st.expander(f"{len(result.skipped)} unreadable file(s) skipped"):
            st.dataframe(result.skipped, hide_index=True)

result_key = f"{model}|{weights}|{ds.fingerprint()}|{k}|{batch}|{result.n_images}|{result.complete}"


@st.cache_data(max_entries=512, show_spinner=False)
def _heatmap(key: str, layer: str, channel: int, rank: int, _lm, _result) -> bytes:
    from vizcore.render import heatmap_overlay

    return w.png_bytes(heatmap_overlay(_lm, _result, layer, channel, rank))


# ------------------------------------------------------------------------ channel grid
n_ch = result.n_channels(layer)
st.subheader(f"Channels of {layer}")
g1, g2, g3 = st.columns(3)
order = g1.radio("Order", ["index", "strongest"], horizontal=True, key=f"{KEY}_order",
                 help="strongest: channels whose best image activates them most come first")
per_page = g2.select_slider("Channels per page", [12, 24, 48, 96], value=24, key=f"{KEY}_per_page")
pages = max(1, -(-n_ch // per_page))
page = g3.number_input(f"Page (1-{pages})", 1, pages, 1, key=f"{KEY}_page_{layer}_{per_page}")
chans = list(range(n_ch))
if order == "strongest":
    chans.sort(key=lambda c: -(result.layers[layer][c][0].value if result.layers[layer][c] else float("-inf")))
shown = chans[(page - 1) * per_page: page * per_page]
st.caption(f"**max activation**: the highest value of the channel's output at any position of any image "
           f"(the number {layer} passes on, after its activation function; no physical unit).")
grid = st.container(height=620)
with grid:
    cols = st.columns(4)
    for n, c in enumerate(shown):
        hits = result.layers[layer][c]
        with cols[n % 4]:
            if hits:
                st.image(_montage(result_key, layer, c, 56, cols_k, result),
                         caption=f"channel {c} · max activation {hits[0].value:.3g}")
            else:
                st.caption(f"channel {c}: no images")

# ----------------------------------------------------------------------- channel detail
st.subheader("Channel detail")
d1, d2 = st.columns([1, 3])
channel = d1.number_input(f"Channel (0-{n_ch - 1})", 0, n_ch - 1, 0, step=1, key=f"{KEY}_channel")
target = st.session_state.get(f"{KEY}_applied_target")  # survives the reruns of chunked mining
if target and target.get("layer") == layer and target.get("model") == model:
    d2.info(f"Opened from the Activations page: {target['model']} · {target['layer']} · channel {target['channel']}.")
hits = result.layers[layer][int(channel)]
w.unit_link(model, weights, layer, int(channel), ds_ref)
show_heat = d1.toggle("Activation heatmaps", value=True, key=f"{KEY}_heat",
                      help="The channel's map over each whole image (one forward per image), "
                           "with the receptive-field box outlined.")
per_row = min(len(hits), 5) or 1
crops = [hit_crop(lm, result, layer, int(channel), r) for r in range(len(hits))]  # cached per model
if crops:
    st.caption(f"Each image: rank · the channel's activation at its peak · file. Crop: "
               f"{', '.join(sorted({uc.method for uc in crops}))}"
               + (" (cyan: where the map is at least half its maximum; yellow: the peak unit's receptive field "
                  "where it fits)" if any(uc.method.startswith("activation") for uc in crops)
                  else " (cyan: the peak unit's receptive field)")
               + ". Below each: the channel's map over the whole image, the field outlined.")
for start in range(0, len(hits), per_row):
    row = st.columns(per_row)
    for r in range(start, min(start + per_row, len(hits))):
        h = hits[r]
        with row[r - start]:
            st.image(w.png_bytes(fit(crops[r].image, 160)), width="stretch",  # equal heights: square tiles
                     caption=f"#{r + 1} · {h.value:.3g} · {w.plain(w.short_name(h.file))}")
            if show_heat:
                st.image(_heatmap(result_key, layer, int(channel), r, lm, result), width="stretch",
                         caption=f"map at ({h.y}, {h.x})")

from dashboard.widgets.relevance import relmax_section  # noqa: E402

relmax_section(KEY, lm, ds, layer, int(channel), k=k, batch_size=batch)

try:
    import vizcore.featureviz as fv
except ImportError:  # the feature-visualisation engine is optional here
    fv = None
if fv is not None:
    with st.expander("Feature visualisation of this channel", expanded=False):
        f1, f2 = st.columns(2)
        steps = f1.slider("Steps", 16, 512, 128, step=16, key=f"{KEY}_fv_steps")
        size = f2.select_slider("Size", [96, 128, 160, 224], value=128, key=f"{KEY}_fv_size")
        # A FeatVizJob on the job widget: progress, Stop, Resume, and the cached image at once.
        out = run_job(f"{KEY}_fv", fv.FeatVizJob(lm, layer, [int(channel)], steps=steps, size=size), RunOptions(),
                      what="Optimising", start_label="Render", units_per_step=8)
        if out:
            res = out[0]
            st.image(w.png_bytes(res.image), width=256,
                     caption=f"objective {res.objective_start:.3g} → {res.objective_final:.3g} "
                             f"(best dataset image: {hits[0].value:.3g})" if hits else None)
