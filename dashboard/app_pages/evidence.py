"""Evidence: where each method finds the evidence for a class, and how much each map is worth.

UI only: maps and scores (deletion/insertion curves, with a random map scored on the same image
and class) come from :class:`vizcore.evidence.ExplainJob` run by the job widget
(:func:`dashboard.widgets.jobs.run_job`: cached on disk, progress, Stop and Resume for occlusion
and integrated gradients), the channels behind the CAM and Grad-CAM maps from
:func:`vizcore.evidence.evidence_channels` (each linked to its unit page), the BagNet view from
the ``bagnet`` method and :func:`vizcore.evidence.top_patches`, the FCN view from
:func:`vizcore.evidence.fcn_scene`.
The other views' results are cached with ``st.cache_data`` keyed by the image digest and every setting.
"""
from __future__ import annotations


import streamlit as st
from PIL import Image

from dashboard import widgets as w

KEY = "evidence"
FAST = ("cam", "gradcam", "guided", "deconv")
SLOW = ("occlusion", "ig")
BAGNETS = ("bagnet9", "bagnet17", "bagnet33")
FCNS = ("alexnet", "vgg11", "vgg16")
CHANNELS = 6
VIEWS = {"methods": "Methods side by side", "bagnet": "BagNet patches", "fcn": "Fully convolutional"}


# ------------------------------------------------------------------ cached engine calls
def _image(raw: bytes, size: tuple[int, int]) -> Image.Image:
    """The RGB image behind ``w.image_payload`` (cached calls take raw bytes plus a digest)."""
    return Image.frombytes("RGB", tuple(size), raw)


@st.cache_data(max_entries=16, show_spinner=False)
def _top5(model: str, weights: str, digest: str, _raw: bytes, size: tuple[int, int]) -> list[tuple]:
    from vizcore.activations import predict

    preds = predict(w.get_model(model, weights), [_image(_raw, size)], topk=5)[0]
    return [(p.index, p.label, p.prob) for p in preds]


def _rows(rep) -> dict[str, dict]:
    """The page's view of an :class:`vizcore.evidence.EvidenceReport` (or the partial one of a running
    job): per method its overlay, shape, settings, caveats, seconds and (once scored) its curves."""
    out = {}
    for n, ev in rep.maps.items():
        f = rep.scores.get(n)
        out[n] = {"overlay": w.png_bytes(ev.overlay()), "raw_shape": tuple(ev.raw.shape),
                  "geometry": ev.geometry.to_json() if ev.geometry else None, "settings": ev.settings,
                  "caveats": list(ev.caveats), "seconds": ev.seconds,
                  **(f.to_json(curves=True) if f is not None else {})}
    return out


def _show_maps(results: dict[str, dict]) -> None:
    cols = st.columns(max(1, min(3, len(results))))
    for i, (m, r) in enumerate(results.items()):
        with cols[i % len(cols)]:
            st.image(r["overlay"], caption=f"{m} · raw {'×'.join(map(str, r['raw_shape']))} · {r['seconds']:.2f} s",
                     width="stretch")
            if "deletion_auc" in r:
                st.markdown(f"deletion **{r['deletion_auc']:.3f}** · insertion **{r['insertion_auc']:.3f}**")
            for c in r["caveats"]:
                st.caption(f":material/info: {c}")


@st.cache_data(max_entries=32, show_spinner=False)
def _channels(model: str, weights: str, digest: str, _raw: bytes, size: tuple[int, int], target: int) -> dict:
    """The channels behind the Grad-CAM map (page-ready), each with its map over the crop."""
    from vizcore.evidence import evidence_channels
    from vizcore.render import overlay_grid

    lm = w.get_model(model, weights)
    ec = evidence_channels(lm, _image(_raw, size), target, k=CHANNELS)
    thumbs = {c.channel: w.png_bytes(overlay_grid(lm, ec.layer, ec.activation, ec.image, [c.channel], cell=96, pad=0))
              for c in ec.top + ec.bottom}
    return {**ec.to_json(), "thumbs": thumbs}


@st.cache_data(max_entries=16, show_spinner=False)
def _bagnet(model: str, weights: str, digest: str, _raw: bytes, size: tuple[int, int],
            targets: tuple[int, ...], k: int) -> dict:
    from vizcore.evidence import evidence, top_patches

    lm = w.get_model(model, weights)
    image = _image(_raw, size)
    out = {"pretrained": lm.weights.pretrained, "maps": []}
    for t in targets:
        ev = evidence(lm, image, t, "bagnet")
        crops = [(v, w.png_bytes(ev.image.crop(box).resize((72, 72), 0)))
                 for v, box in top_patches(ev, k=k)]
        out["maps"].append({"target": t, "label": ev.target.label, "overlay": w.png_bytes(ev.overlay()),
                            "raw_shape": tuple(ev.raw.shape), "patch": ev.geometry.rf, "mean": float(ev.raw.mean()),
                            "crops": crops, "caveats": list(ev.caveats)})
    return out


@st.cache_data(max_entries=16, show_spinner=False)
def _fcn(model: str, weights: str, digest: str, _raw: bytes, size: tuple[int, int], target: int | None,
         short_side: int) -> dict:
    from vizcore.evidence import fcn_scene

    lm = w.get_model(model, weights)
    ev = fcn_scene(lm, _image(_raw, size), target, short_side=short_side)
    return {"overlay": w.png_bytes(ev.overlay()), "raw_shape": tuple(ev.raw.shape), "label": ev.target.label,
            "index": ev.target.index, "input_size": ev.extra["input_size"], "caveats": list(ev.caveats),
            "pretrained": lm.weights.pretrained, "geometry": ev.geometry.to_json()}


# ------------------------------------------------------------------ figures
def curves_figure(results: dict[str, dict], random: dict | None):
    """Deletion and insertion curves of every method (solid) and the random map (dashed)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("Deletion (lower is better)",
                                                        "Insertion (higher is better)"))
    items = list(results.items()) + ([("random", random)] if random else [])
    for i, (name, r) in enumerate(items):
        dash = "dash" if name == "random" else "solid"
        for col, curve in ((1, "deletion"), (2, "insertion")):
            fig.add_trace(go.Scatter(x=r["fractions"], y=r[curve], mode="lines", name=name, legendgroup=name,
                                     showlegend=col == 1, line=dict(dash=dash),
                                     hovertemplate=f"{name}: %{{y:.3f}} at %{{x:.0%}}<extra></extra>"),
                          row=1, col=col)
    fig.update_xaxes(title_text="fraction of pixels", tickformat=".0%")
    fig.update_yaxes(title_text="probability of the class", range=[0, 1.02], row=1, col=1)
    fig.update_layout(height=320, margin=dict(l=0, r=0, t=30, b=0))
    return fig


def _class_picker(preds: list[tuple], cats) -> int:
    src = st.radio("Class", ["top-5", "any"], horizontal=True, key=f"{KEY}_class_src",
                   format_func={"top-5": "from the top-5", "any": "any of the 1,000"}.get)
    if src == "top-5" and preds:
        return st.selectbox("Explain the class", [p[0] for p in preds], key=f"{KEY}_top5",
                            format_func={p[0]: f"{p[1]} ({p[2]:.1%})" for p in preds}.get)
    return st.selectbox("Explain the class", list(range(len(cats))), key=f"{KEY}_any",
                        index=preds[0][0] if preds else 0, format_func=lambda i: f"{cats[i]} ({i})")


def _channels_behind(model: str, weights: str, digest: str, raw: bytes, size: tuple[int, int], target: int,
                     results: dict[str, dict]) -> None:
    """The CAM and Grad-CAM maps as sums of channels: the top channels of the layer they use, each
    linked to its unit page. A failure here is one error line; the rest of the page stays."""
    shown = [m for m in ("cam", "gradcam") if m in results]
    if not shown:
        return
    try:
        with st.spinner("Channels behind the map…"):
            ch = _channels(model, weights, digest, raw, size, int(target))
    except Exception as e:  # noqa: BLE001
        st.error(f"Channels behind the map: {e}")
        return
    if ch["bias"] is None:  # AlexNet/VGG's CAM is the convolutionalised head; DenseNet's has a ReLU first
        shown = [m for m in shown if m != "cam"]
    if not shown:
        return
    tap = ch["layer"]
    st.subheader("Channels behind this map")
    names = {"cam": "class activation map", "gradcam": "Grad-CAM map"}
    st.caption(f"The {' and the '.join(names[m] for m in shown)} of **{ch['target']['label']}** "
               f"{'are' if len(shown) > 1 else 'is'} a weighted sum of the {ch['n_channels']} channels of "
               f"**{tap}**; a channel's share is its part of the map summed (all shares: {ch['total']:.4g}). "
               f"Method: {ch['method']}. Each link opens that unit's page; the thumbnails are each channel's map "
               "over the crop.")
    if not ch["top"]:
        st.info(f"No channel of {tap} adds to this map.")
    for caption, row in ((None, ch["top"]), ("Most against the class:", ch["bottom"])):
        if not row:
            continue
        if caption:
            st.caption(caption)
        cols = st.columns(CHANNELS)
        for i, c in enumerate(row):
            with cols[i % CHANNELS]:
                st.image(ch["thumbs"][c["channel"]], width=96)
                st.markdown(f"share **{c['share']:+.3g}**")
                w.unit_link(model, weights, tap, c["channel"], label=f"{tap} · {c['channel']}")


# ------------------------------------------------------------------ page
st.title("Evidence")
st.caption("Where in the image is the evidence for a class? Each method answers differently; the "
           "deletion and insertion curves (Petsiuk et al., 2018) say how much to believe each answer: "
           "remove the most important pixels first and the class probability should fall fast (low "
           "deletion area); reveal them first on a blurred image and it should rise fast (high insertion "
           "area). A random map, scored in the same run, is the baseline.")

with st.sidebar:
    st.subheader("Network")
    model = w.model_picker(KEY)
    weights = w.weights_picker(KEY)
    st.subheader("Settings")
    steps = st.select_slider("Curve steps", [8, 16, 32, 64], value=16, key=f"{KEY}_steps",
                             help="Each step removes or reveals this fraction of the pixels.")
    window = st.select_slider("Occlusion window (px)", [8, 16, 32, 48, 64], value=16, key=f"{KEY}_window")
    stride = st.select_slider("Occlusion stride (px)", [4, 8, 16, 32], value=8, key=f"{KEY}_stride")
    ig_steps = st.select_slider("IG steps", [8, 16, 32, 64, 128], value=32, key=f"{KEY}_ig_steps")
    seed = st.number_input("Random-map seed", 0, 10_000, 0, key=f"{KEY}_seed")

image, caption = w.image_input(KEY)
digest, raw, size = w.image_payload(image)
view = st.radio("View", list(VIEWS), format_func=VIEWS.get, horizontal=True, key=f"{KEY}_view")

lm = w.load_model_or_stop(model, weights)
cats = list(lm.categories or [])
if not cats:
    st.error(f"{model} has no ImageNet classification head: there is no class to explain.")
    st.stop()
try:
    preds = _top5(model, weights, digest, raw, size)
except Exception as e:  # noqa: BLE001 - a model the engine cannot run: say so, keep the app alive
    st.error(f"{model} could not process {caption}: {e}")
    st.stop()

if view == "methods":
    left, right = st.columns([1, 2])
    with right:
        w.weights_badge(lm)
        target = _class_picker(preds, cats)
        methods = st.pills("Methods", FAST + SLOW, selection_mode="multi", default=["cam", "gradcam"],
                           key=f"{KEY}_methods", help="Occlusion and integrated gradients take many forward "
                                                       "passes: they run when you press Run.")
    with left:
        st.image(w.png_bytes(image), caption=caption, width="stretch")
    settings = {"occlusion": {"window": int(window), "stride": int(min(stride, window))},
                "ig": {"n_steps": int(ig_steps)}}
    from dashboard.widgets.jobs import run_job
    from vizcore.evidence import ExplainJob
    from vizcore.jobs import RunOptions

    # Two jobs of the job layer (every map and score cached on disk by image, model, class and
    # settings): the fast methods at once, occlusion and IG on Run, with progress, Stop and Resume.
    fast = [m for m in methods if m not in SLOW]
    slow = [m for m in methods if m in SLOW]
    reports = []
    try:
        for key, names, auto in ((f"{KEY}_fast", fast, True), (KEY, slow, False)):
            if not names:
                continue
            job = ExplainJob(lm, image, int(target), names, settings=settings, steps=int(steps), seed=int(seed))
            rep = run_job(key, job, RunOptions(), what=f"Evidence by {', '.join(names)}", autostart=auto,
                          units_per_step=None if not auto else job.total,
                          partial=lambda p: _show_maps(_rows(p)),
                          idle_note="" if auto else f"Press **Run** to compute {', '.join(names)} (many forward "
                                                    "passes; cached on disk once complete).")
            if rep is not None:
                reports.append(rep)
    except Exception as e:  # noqa: BLE001 - a method that cannot explain this model: say so, keep the page
        st.error(str(e))
        reports = []
    results: dict[str, dict] = {}
    for rep in reports:
        results.update(_rows(rep))
    results = {m: results[m] for m in methods if m in results}
    _show_maps(results)
    _channels_behind(model, weights, digest, raw, size, int(target), results)
    if results:
        rnd = reports[0].random.to_json(curves=True)
        st.markdown(f"**Random map** (baseline, same image and class): deletion **{rnd['deletion_auc']:.3f}** · "
                    f"insertion **{rnd['insertion_auc']:.3f}**")
        st.plotly_chart(curves_figure(results, rnd), key=f"{KEY}_curves")
    elif not methods:
        st.info("Pick at least one method.")

elif view == "bagnet":
    st.caption("BagNet (Brendel & Bethge, ICLR 2019) sums the class evidence of small patches: "
               "ImageNet with tiny 9x9, 17x17 or 33x33 puzzle pieces. Each cell is one patch's logit; "
               "their mean is the image's logit.")
    c1, c2 = st.columns(2)
    bag = c1.selectbox("BagNet", BAGNETS, key=f"{KEY}_bagnet")
    blm = w.load_model_or_stop(bag, "auto")
    with c2:
        w.weights_badge(blm)
    bag_preds = _top5(bag, "auto", digest, raw, size)
    second = st.selectbox("Second class", list(range(len(cats))), index=bag_preds[1][0],
                          format_func=lambda i: f"{cats[i]} ({i})", key=f"{KEY}_bag_second")
    k = st.slider("Top patches shown", 4, 16, 8, key=f"{KEY}_bag_k")
    if not blm.weights.pretrained:
        st.warning(f"{bag} has random weights (its published weights could not be found or downloaded): "
                   "the maps show how patch evidence is computed, not what ImageNet taught it.")
    try:
        with st.spinner(f"{bag} patch evidence…"):
            res = _bagnet(bag, "auto", digest, raw, size, (bag_preds[0][0], int(second)), int(k))
    except Exception as e:  # noqa: BLE001
        st.error(f"{bag}: {e}")
        st.stop()
    cols = st.columns(2)
    for col, m, name in zip(cols, res["maps"], ("predicted", "second")):
        with col:
            st.image(m["overlay"], width="stretch",
                     caption=f"{name}: {m['label']} · {'×'.join(map(str, m['raw_shape']))} patches of "
                             f"{m['patch']} px · mean logit {m['mean']:.3f}")
            st.markdown(f"**Top {len(m['crops'])} patches for {m['label']}**")
            st.image([c for _, c in m["crops"]], caption=[f"{v:.2f}" for v, _ in m["crops"]], width=72)

else:
    st.caption("AlexNet and VGG end in fully connected layers. Read fc6 as a convolution (7x7 for VGG, 6x6 "
               "for AlexNet) and fc7, fc8 as 1x1 convolutions, and the network takes any image larger than "
               "224 px and returns a coarse map of class scores (Long et al., CVPR 2015). Here it sees the "
               "whole image, not the centre crop.")
    c1, c2, c3 = st.columns(3)
    fcn = c1.selectbox("Network", FCNS, key=f"{KEY}_fcn")
    short = c2.select_slider("Short side (px)", [256, 320, 448, 640], value=448, key=f"{KEY}_fcn_side")
    flm = w.load_model_or_stop(fcn, "auto")
    with c3:
        w.weights_badge(flm)
    if not flm.weights.pretrained:
        st.warning(f"{fcn} has random weights (no pretrained weights here, e.g. offline): the heatmap shows "
                   "the geometry of the convolutionalised network, not ImageNet evidence.")
    fcn_target = st.selectbox("Class", [None, *range(len(cats))], key=f"{KEY}_fcn_target",
                              format_func=lambda i: "best class over the scene" if i is None else f"{cats[i]} ({i})")
    try:
        with st.spinner(f"{fcn} over the whole image…"):
            r = _fcn(fcn, "auto", digest, raw, size, fcn_target, int(short))
    except Exception as e:  # noqa: BLE001
        st.error(f"{fcn}: {e}")
        st.stop()
    st.image(r["overlay"], width="stretch",
             caption=f"{r['label']} ({r['index']}) · {'×'.join(map(str, r['raw_shape']))} score map over "
                     f"{r['input_size'][1]}×{r['input_size'][0]} px · cells see {r['geometry']['rf']} px, "
                     f"{r['geometry']['jump']} px apart")
    for c in r["caveats"]:
        st.caption(f":material/info: {c}")
