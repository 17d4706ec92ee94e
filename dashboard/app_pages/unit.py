"""Unit: everything about one channel on one page, at an address that names it.

``unit?model=efficientnet_lite0&weights=auto&layer=blocks.4.0&channel=12[&dataset=NAME]``
(``NAME`` a short name the server resolves, :mod:`vizcore.data.refs`, never a server path):
the address is read and written by :func:`dashboard.widgets.links.unit_address` /
``set_unit_address`` and kept in sync with the sidebar, so opening it in a new browser
shows the same unit. The activation on the session's image is always shown (one forward
pass); the long sections (receptive field, mining and crops of the top images, feature
visualisation, class support, drivers) are jobs (:mod:`vizcore.unit`, ``MiningJob``,
``FeatVizJob``) run by ``run_job`` (progress, Stop, Resume),
cached on disk by the engine: a unit reopened in a new session shows them at once
(engine: :mod:`vizcore.unit`, :mod:`vizcore.patches`, :mod:`vizcore.featureviz`).
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from dashboard import widgets as w
from dashboard.widgets.jobs import run_job
from vizcore.featureviz import FeatVizJob
from vizcore.jobs import RunOptions
from vizcore.models import DEFAULT_MODEL, list_models
from vizcore.patches import MiningJob
from vizcore.unit import ClassSupportJob, CropsJob, DriversJob, EffectiveRFJob, previous_tap

KEY = "unit"
WEIGHTS = ("auto", "random")
K = 9
DATASET_LABELS = {"builtin": "built-in sample photographs", "imagenet-samples": "ImageNet sample images (1,000)"}


# ------------------------------------------------------------------ cached engine calls
@st.cache_data(max_entries=64, show_spinner=False)
def _shapes(model: str, weights: str) -> dict[str, tuple[int, ...]]:
    """Output shape (without batch) of every tap, from one forward pass of a blank image."""
    import torch

    from vizcore.tap import forward_until, tap

    lm = w.get_model(model, weights)
    taps = lm.taps()
    size = lm.spec.input_size
    with torch.no_grad(), tap(lm.model, [t.module for t in taps], stop=True, lock=lm.lock) as store:
        forward_until(lm.model, torch.zeros(1, 3, size, size, device=lm.device))
        return {t.name: tuple(int(s) for s in store[t.module].shape[1:]) for t in taps if t.module in store}


@st.cache_data(max_entries=32, show_spinner=False)
def _on_image(model: str, weights: str, digest: str, _raw: bytes, size: tuple[int, int], layer: str,
              channel: int) -> dict:
    """The channel's map for the session image, upsampled to the input, and where it peaks."""
    from vizcore.render import upsampled_map

    res = w.cached_extract(model, weights, digest, _raw, size)
    act = res.layers[layer].output[channel].detach().float().cpu()
    m = act if act.dim() == 2 else act.reshape(1, 1)
    y, x = divmod(int(m.reshape(-1).argmax()), int(m.shape[1]))
    up = upsampled_map(w.get_model(model, weights), layer, m, res.image.size[0])
    return {"crop": np.asarray(res.image), "up": up, "map": m.numpy(), "y": y, "x": x, "max": float(m.max()),
            "mean": float(m.mean())}


@st.cache_data(max_entries=32, show_spinner=False)
def _map_thumbs(model: str, weights: str, digest: str, _raw: bytes, size: tuple[int, int], layer: str,
                channels: tuple[int, ...]) -> dict[int, bytes]:
    """Each channel's map over the session image, upsampled (small thumbnails)."""
    from vizcore.render import overlay_grid

    res = w.cached_extract(model, weights, digest, _raw, size)
    lm = w.get_model(model, weights)
    act = res.layers[layer].output
    return {c: w.png_bytes(overlay_grid(lm, layer, act, res.image, [c], cell=96, pad=0)) for c in channels}


@st.cache_data(max_entries=16, show_spinner=False)
def _erf_view(key: str, _erf) -> dict:
    """The input gradient over the input, the theoretical field in cyan and the 90 % box in yellow."""
    from PIL import ImageDraw

    from vizcore.render import overlay

    erf = _erf
    g = erf.grad / erf.grad.max() if erf.grad.max() > 0 else erf.grad
    img = overlay(erf.input, np.sqrt(g), alpha=0.6, cmap="inferno")
    d = ImageDraw.Draw(img)
    t = erf.theoretical
    d.rectangle([t[0], t[1], t[2] - 1, t[3] - 1], outline=(0, 255, 255), width=2)
    if erf.box:
        b = erf.box
        d.rectangle([b[0], b[1], b[2] - 1, b[3] - 1], outline=(255, 255, 0), width=2)
    return {"png": w.png_bytes(img), "theoretical": t, "box": erf.box, "rf": erf.geometry.rf,
            "jump": erf.geometry.jump, "size": erf.input.size[0]}


@st.cache_data(max_entries=64, show_spinner="Activation maps of the top images…")
def _hit_maps(model: str, weights: str, key: str, layer: str, channel: int, _result) -> list[bytes]:
    """Per hit, the channel's map over the whole image."""
    from vizcore.render import heatmap_overlay

    lm = w.get_model(model, weights)
    return [w.png_bytes(heatmap_overlay(lm, _result, layer, channel, r))
            for r in range(len(_result.hits(layer, channel)))]


def _images_for(files: tuple[str, ...], raw: bytes, size: tuple[int, int]) -> list:
    """The images a unit analysis runs over: the top images when mined, else the session image."""
    return list(files) if files else [w.from_raw(raw, size)]


# ------------------------------------------------------------------ the address
def _clear_problem() -> None:
    st.session_state[f"{KEY}_problem"] = None


want, fresh = w.unit_address(KEY)
if fresh:  # a new address (opened, pasted, or a link followed): it sets the sidebar
    st.session_state[f"{KEY}_problem"] = None


def _problem(text: str) -> None:
    if not st.session_state.get(f"{KEY}_problem"):
        st.session_state[f"{KEY}_problem"] = text


names = list_models() + w.backbone_models()  # a detector's or segmenter's backbone taps are units too
if fresh:
    m = want.get("model", DEFAULT_MODEL)
    if m in names or m.startswith("timm/"):
        st.session_state[f"{KEY}_model"] = m
    else:
        _problem(f"The address names model {m!r}, which vizcore does not know. Choose one in the sidebar.")
    wt = want.get("weights", "auto")
    if wt in WEIGHTS:
        st.session_state[f"{KEY}_weights"] = wt
    else:
        _problem(f"The address asks for weights {wt!r}; the unit page offers {', '.join(WEIGHTS)}.")
st.session_state.setdefault(f"{KEY}_model", DEFAULT_MODEL)
st.session_state.setdefault(f"{KEY}_weights", "auto")
current = st.session_state[f"{KEY}_model"]
options = names + ([current] if current and current not in names else [])

with st.sidebar:
    st.subheader("Unit")
    model = st.selectbox("Model", options, key=f"{KEY}_model", on_change=_clear_problem)
    weights = st.radio("Weights", WEIGHTS, key=f"{KEY}_weights", horizontal=True, on_change=_clear_problem,
                       format_func={"auto": "best available (auto)", "random": "random init"}.get)

lm = w.load_model_or_stop(model, weights, task=None)
shapes = _shapes(model, weights)
taps = [t.name for t in lm.taps() if t.name in shapes]
if fresh and "layer" in want:
    lay = want["layer"]
    if lay in taps:
        st.session_state[f"{KEY}_layer"] = lay
    else:
        try:
            lm.resolve(lay)
            _problem(f"{lay!r} is a module of {model} but not one of its taps ({', '.join(taps[:4])}, …).")
        except Exception as e:  # noqa: BLE001 - UnknownLayerError carries the closest names
            _problem(f"The address names layer {lay!r}: {e}")
if st.session_state.get(f"{KEY}_layer") not in taps:
    st.session_state[f"{KEY}_layer"] = taps[len(taps) // 2]
with st.sidebar:
    layer = st.selectbox("Layer", taps, key=f"{KEY}_layer", on_change=_clear_problem)
shape = shapes[layer]
n_ch = int(shape[0]) if shape else 1
if fresh and "channel" in want:
    try:
        ch = int(want["channel"])
        if not 0 <= ch < n_ch:
            raise ValueError
        st.session_state[f"{KEY}_channel"] = ch
    except ValueError:
        _problem(f"The address asks for channel {want['channel']!r} of {layer}, which has {n_ch} channels "
                 f"(0-{n_ch - 1}).")
if not 0 <= int(st.session_state.get(f"{KEY}_channel", 0)) < n_ch:
    st.session_state[f"{KEY}_channel"] = 0
with st.sidebar:
    channel = int(st.number_input(f"Channel (0-{n_ch - 1})", 0, n_ch - 1, step=1, key=f"{KEY}_channel",
                                  on_change=_clear_problem))
    st.subheader("Dataset")
    # Short names only (vizcore.data.refs): the address never carries a path of this server.
    ds_options = ["builtin"] + (["imagenet-samples"] if w.offered_imagenet() is not None else [])
    if fresh:  # the address's dataset, else the session's (the one just mined on Dataset examples, say)
        ds_want = st.query_params.get("dataset") or w.session_dataset() or want.get("dataset")
        ds_want = "builtin" if ds_want == "samples" else ds_want
        if ds_want:
            if ds_want not in ds_options:
                ds_options.append(ds_want)
            st.session_state[f"{KEY}_dataset"] = ds_want
    if st.session_state.get(f"{KEY}_dataset") and st.session_state[f"{KEY}_dataset"] not in ds_options:
        ds_options.append(st.session_state[f"{KEY}_dataset"])
    dataset = st.selectbox("Top images from", ds_options, key=f"{KEY}_dataset", index=None,
                           placeholder="no dataset yet", on_change=_clear_problem,
                           format_func=lambda s: DATASET_LABELS.get(s, s),
                           help="Where the unit's top images come from (mined once, cached on disk).")
    other = st.text_input("…or another dataset (folder, cifar10, cue-conflict:ROOT)", key=f"{KEY}_dataset_other")
    if other.strip():
        try:
            dataset = w.dataset_ref(other.strip())  # a typed path, named by its data root
        except (PermissionError, ValueError) as e:
            w.show_error(e, "Cannot use that dataset")
            st.stop()
spec = None
if dataset:
    try:
        spec = w.dataset_spec(dataset)
    except (PermissionError, ValueError) as e:
        _problem(f"The address names dataset {dataset!r}: {e}")
    else:
        st.session_state[w.SESSION_DATASET] = dataset  # the session's dataset, as its image is

problem = st.session_state.get(f"{KEY}_problem")
if problem:
    st.error(w.plain(problem))
    st.stop()

w.set_unit_address(KEY, model, weights, layer, channel, dataset)
opts = RunOptions(workers=0)

# ------------------------------------------------------------------ the page
st.title(w.plain(f"{model} · {layer} · channel {channel}"))
st.caption(f"Output {'×'.join(map(str, shape))} · link to this unit: `/{w.unit_url(model, weights, layer, channel, dataset)}`")
w.weights_badge(lm)
image, caption = w.image_input(KEY)
digest, raw, size = w.image_payload(image)

# -- on the session's image
st.subheader("On your image")
try:
    on = _on_image(model, weights, digest, raw, size, layer, channel)
except Exception as e:  # noqa: BLE001 - a model the engine cannot run: say so, keep the app alive
    st.error(w.plain(f"{model} could not process {caption}: {e}"))
    st.stop()
fig = go.Figure(go.Image(z=on["crop"], hoverinfo="skip"))
fig.add_trace(go.Heatmap(z=on["up"], colorscale=w.colorscale("Inferno"), opacity=0.55,
                         zmin=min(0.0, float(on["up"].min())),
                         colorbar=dict(title="activation"), hovertemplate="x %{x}, y %{y}: %{z:.3g}<extra></extra>"))
fig.update_layout(height=380, margin=dict(l=0, r=0, t=0, b=0), xaxis=dict(visible=False),
                  yaxis=dict(visible=False, scaleanchor="x"))
c1, c2 = st.columns([3, 2])
with c1:
    st.plotly_chart(fig, key=f"{KEY}_on_image")
with c2:
    mh, mw = on["map"].shape
    st.markdown(f"**{w.plain(caption)}**: channel {channel} peaks at {on['max']:.3g} (unit y={on['y']}, x={on['x']} of "
                f"the {mh}×{mw} map); mean {on['mean']:.3g}.")
    st.caption("The map is upsampled bilinearly with each unit placed at the centre of its receptive field, "
               "and laid over the crop the network sees.")

# -- receptive field
st.subheader("Receptive field")
erf_job = EffectiveRFJob(lm, layer, channel, w.from_raw(raw, size), on["y"], on["x"])
erf = run_job(f"{KEY}_rf", erf_job, opts, what="Receptive field", start_label="Show the receptive field",
              idle_note="The theoretical and effective receptive field of the peak unit: one backward pass, the "
                        "gradient of the unit's activation with respect to the input pixels.")
if erf is not None:
    rf = _erf_view(erf_job.key(), erf)
    t, b = rf["theoretical"], rf["box"]
    c1, c2 = st.columns([2, 3])
    c1.image(rf["png"], caption="cyan: theoretical field; yellow: 90 % of the input gradient")
    eff = (f"{b[2] - b[0]}×{b[3] - b[1]} px" if b else "none: the gradient is zero here (a clipped activation)")
    c2.markdown(f"- theoretical field: **{rf['rf']} px** (jump {rf['jump']} px), "
                f"{t[2] - t[0]}×{t[3] - t[1]} px inside the {rf['size']} px input\n"
                f"- effective field (smallest box holding 90 % of |d unit / d input|): **{eff}**")
    c2.caption("Luo et al. 2016 (arxiv.org/abs/1701.04128): the gradient concentrates in the middle of the "
               "theoretical field, which deep layers and squeeze-excitation gates stretch to the whole image.")

# -- feature visualisation
st.subheader("Feature visualisation")
f1, f2, f3 = st.columns([2, 1, 1])
fv_steps = f2.select_slider("Steps", [16, 32, 64, 128, 256, 512], value=128, key=f"{KEY}_fv_steps")
fv_size = f3.select_slider("Size (px)", [64, 96, 128, 160, 224], value=128, key=f"{KEY}_fv_size")
from vizcore.precompute import precomputed_featviz  # noqa: E402 - a precomputed one shows at once

pre = precomputed_featviz(lm, layer, channel, n_ch, steps=int(fv_steps), size=int(fv_size))
if pre is not None:
    st.image(w.png_bytes(pre.image), width=256, caption=f"precomputed · objective {pre.objective_start:.3g} → "
                                                       f"{pre.objective_final:.3g}")
elif f1.toggle("Render the channel's feature visualisation (its progress bar shows the steps done; the "
               "Feature visualisation page estimates the time on this machine)",
               key=f"{KEY}_show_fv"):
    fv_job = FeatVizJob(lm, layer, [channel], steps=int(fv_steps), size=int(fv_size))
    fvs = run_job(f"{KEY}_fv", fv_job, opts, what=f"Feature visualisation of channel {channel}", autostart=True,
                  units_per_step=8)
    if fvs is not None:
        (fv,) = fvs
        st.image(w.png_bytes(fv.image), width=256, caption=f"objective {fv.objective_start:.3g} → {fv.objective_final:.3g}")

# -- dataset examples
st.subheader("Top dataset images")
prev = previous_tap(lm, layer)
mine_layers = ((prev[0],) if prev else ()) + (layer,)  # the drivers' top patches come in the same pass
result = None
if not dataset:
    st.info("Choose a dataset in the sidebar to see the images that excite this channel most.")
else:
    ds = w.open_dataset_or_stop(spec)
    job_key = (model, weights, spec, ds.fingerprint(), mine_layers)
    # The job is kept with the session: building it reads the layers already cached (once, not per rerun).
    held = st.session_state.get(f"{KEY}_mining")
    if held is None or held[0] != job_key:
        held = st.session_state[f"{KEY}_mining"] = (job_key, MiningJob(lm, ds, list(mine_layers), k=K))
    result = run_job(f"{KEY}_mine", held[1], opts.but(batch_size=16), job_id=job_key, what=f"Mining {len(ds)} images",
                     start_label=f"Find the top images in {w.plain(ds.name)} ({len(ds)} images)")


def _show_crops(crops, maps: list[bytes] | None = None) -> None:
    from vizcore.render import fit

    hits = result.hits(layer, channel)
    cols = st.columns(min(len(hits), 5) or 1)
    for i, c in enumerate(crops):
        with cols[i % len(cols)]:
            st.image(w.png_bytes(fit(c.image, 160)), width="stretch",
                     caption=f"#{i + 1} · {hits[i].value:.3g} · {w.plain(w.short_name(hits[i].file))}")
            if maps is not None:
                st.image(maps[i], width="stretch")


if result is not None:
    crops = run_job(f"{KEY}_crops", CropsJob(lm, result, layer, channel), opts, what="Crops of the top images",
                    unit="crops", rate_unit="crop", autostart=True, partial=_show_crops)
    if crops is not None:
        methods = sorted({c.method for c in crops})
        st.caption(f"The {len(crops)} images of {w.plain(ds.name)} ({result.n_images} mined) where channel {channel} "
                   f"peaks highest (rank · the channel's activation at its peak · file). Crop: {', '.join(methods)}"
                   + (" (cyan: where the map is at least half its maximum; yellow: the peak unit's receptive "
                      "field where it fits)" if any(m.startswith("activation") for m in methods) else "")
                   + "; then the channel's map over the whole image.")
        _show_crops(crops, _hit_maps(model, weights, f"{job_key}", layer, channel, result))
files = tuple(h.file for h in result.hits(layer, channel)) if result is not None else ()
on_what = (f"its {len(files)} top images in {w.plain(ds.name)}" if files
           else f"your image ({caption}); choose a dataset for its top images")
images = _images_for(files, raw, size)

# -- class support
st.subheader("Classes it supports")


def _show_support(cs) -> None:
    st.caption(f"Method: {cs.method}.")
    c1, c2 = st.columns(2)
    c1.markdown("**Supports**\n" + "\n".join(f"1. {c.label} ({c.value:+.3g})" for c in cs.top))
    c2.markdown("**Opposes**\n" + "\n".join(f"1. {c.label} ({c.value:+.3g})" for c in cs.bottom))


if not lm.categories or lm.spec.task != "classification":
    st.info(f"{w.plain(model)} has no classification head"
            + (f": a {lm.spec.task} model, whose taps are its backbone's (its classes are scored per box or "
               "pixel, on the Regions and pixels page)." if lm.spec.task != "classification" else "."))
elif layer == taps[-1] and shape == (len(lm.categories),):
    st.info(f"{layer} is the classification head itself: channel {channel} is the logit of "
            f"“{lm.categories[channel]}”.")
else:
    cs = run_job(f"{KEY}_cs", ClassSupportJob(lm, layer, channel, images), opts, what="Class support",
                 start_label="Compute class support", partial=_show_support,
                 idle_note=f"Gradients through the head over {on_what}.")
    if cs is not None:
        _show_support(cs)

# -- drivers
st.subheader("What drives it")
dr = run_job(f"{KEY}_dr", DriversJob(lm, layer, channel, images), opts, what="Drivers",
             start_label="Find the drivers",
             idle_note=f"The units of the previous layer that drive it most (over {on_what}).")
if dr is not None:
    st.caption(f"Method: {w.plain(dr.method)}.")
    ds_ = dr.drivers
    thumbs: dict[int, bytes] = {}
    if ds_ and ds_[0].layer is not None:
        src = ds_[0].layer
        chans = tuple(d.channel for d in ds_)
        if result is not None and src in result.layers:
            from vizcore.render import patch_image

            for d in ds_:
                if result.hits(src, d.channel):
                    thumbs[d.channel] = w.png_bytes(patch_image(result, src, d.channel, 0))
            how = f"top patch in {ds.name}"
        elif st.toggle("Feature-visualisation thumbnails (64 px, 48 steps each)", key=f"{KEY}_dr_fv"):
            for fv in run_job(f"{KEY}_dr_fvjob", FeatVizJob(lm, src, list(chans), steps=48, size=64), opts,
                              what="Feature visualisation of the drivers", autostart=True, units_per_step=8) or ():
                thumbs[fv.channel] = w.png_bytes(fv.image)
            how = "feature visualisation, 64 px"
        else:
            thumbs = _map_thumbs(model, weights, digest, raw, size, src, chans)
            how = f"map over your image ({caption}); choose a dataset for top patches"
        st.caption(f"Thumbnails: each driver's {how}. Each link opens that unit's page.")
    cols = st.columns(4)
    for i, d in enumerate(ds_):
        with cols[i % 4]:
            if d.channel in thumbs:
                st.image(thumbs[d.channel], width=96)
            st.markdown(f"**{d.label}** · {d.value:.3g}")
            if d.layer is not None:
                w.unit_link(model, weights, d.layer, d.channel, dataset, label=f"{d.layer} · {d.channel}")

# -- concept relevance (CRP conditional heatmap, RelMax): a self-contained section
from dashboard.widgets.relevance import unit_relevance  # noqa: E402

unit_relevance(KEY, model, weights, layer, channel, digest, raw, size, caption, spec)  # the spec the address names
