"""Regions and pixels: R-CNN against Fast R-CNN, RoIPool against RoIAlign, Faster / Mask R-CNN's
region proposal network, fully convolutional segmentation, and transposed convolutions.

UI only: proposals from :func:`vizcore.regions.proposals.selective_search`, the two detectors as
:class:`vizcore.regions.rcnn.DetectJob` run by the job widget (progress, Stop, Resume, cached),
RoI geometry from :func:`vizcore.regions.roi.compare_on_image`, the RPN stages from
:func:`vizcore.regions.rpn.run_rpn`, masks from :func:`vizcore.regions.segment.segment`, sizes
and connectivity from :mod:`vizcore.regions.deconv`.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from dashboard import widgets as w
from dashboard.widgets.jobs import run_job
from vizcore.models import get_spec, list_models
from vizcore.regions import deconv, roi
from vizcore.regions.rcnn import DEFAULT_LAYER, DetectJob, default_layer
from vizcore.render import draw_boxes, label_overlay, masks_overlay, overlay

KEY = "regions"
VIEWS = {"rcnn": "R-CNN vs Fast R-CNN", "roi": "RoIPool vs RoIAlign", "rpn": "Faster / Mask R-CNN",
         "segment": "Segmentation", "deconv": "Transposed convolution"}


@st.cache_data(max_entries=16, show_spinner="Selective Search…")
def _proposals(digest: str, _raw: bytes, size: tuple[int, int], mode: str, cap: int) -> np.ndarray:
    from vizcore.regions.proposals import selective_search

    return selective_search(w.from_raw(_raw, size), mode=mode, max_proposals=cap).boxes


@st.cache_data(max_entries=8, show_spinner="Running the detector…")
def _rpn(model: str, weights: str, digest: str, _raw: bytes, size: tuple[int, int], min_size: int, thr: float):
    from vizcore.regions.rpn import run_rpn

    return run_rpn(w.get_model(model, weights), w.from_raw(_raw, size), min_size=min_size, score_threshold=thr)


@st.cache_data(max_entries=8, show_spinner="Segmenting…")
def _segment(model: str, weights: str, digest: str, _raw: bytes, size: tuple[int, int], side: int):
    from vizcore.regions.segment import segment

    return segment(w.get_model(model, weights), w.from_raw(_raw, size), size=side)


def _box_figure(image, rects=(), points=None, *, title: str = "", height: int = 360) -> go.Figure:
    """The image with rectangles ``[(x0, y0, x1, y1, colour, name)]`` and optional points ``(N, 2)``."""
    fig = go.Figure(go.Image(z=np.asarray(image.convert("RGB"))))
    for x0, y0, x1, y1, colour, name in rects:
        fig.add_shape(type="rect", x0=x0, y0=y0, x1=x1, y1=y1, line=dict(color=colour, width=1.5), name=name)
    if points is not None and len(points):
        fig.add_trace(go.Scatter(x=points[:, 0], y=points[:, 1], mode="markers", name="RoIAlign samples",
                                 marker=dict(size=3, color="#00e5ff")))
    fig.update_layout(title=title, height=height, margin=dict(l=0, r=0, t=30 if title else 0, b=0), showlegend=False)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def _detections_table(result) -> list[dict]:
    return [{"label": d.label, "score": round(d.score, 3), "box": [round(v) for v in d.box]} for d in result.detections]


# ------------------------------------------------------------------ views
def _rcnn_view(image, name: str) -> None:
    st.markdown("**R-CNN** warps every proposal to the classifier's input and runs the whole network on "
                "it; **Fast R-CNN** runs the network once to a feature map, pools every proposal from it "
                "(RoIAlign or RoIPool) and runs only the rest of the network per proposal: the lecture's "
                "*reuse convolutions for different candidate boxes*, measured.")
    models = [n for n in list_models() if get_spec(n).family in DEFAULT_LAYER]
    c1, c2, c3, c4 = st.columns(4)
    model = c1.selectbox("Classifier", models, index=models.index("efficientnet_lite0"), key=f"{KEY}_model",
                         format_func=w.model_label)
    mode = c2.radio("Selective Search", ["fast", "quality"], horizontal=True, key=f"{KEY}_mode")
    cap = int(c3.number_input("Proposals (at most)", 1, 5000, 2000, step=100, key=f"{KEY}_cap"))
    thr = c4.slider("Class probability at least", 0.05, 1.0, 0.5, 0.05, key=f"{KEY}_thr")
    lm = w.load_model_or_stop(model)
    w.weights_badge(lm)
    from vizcore.regions.heads import head_taps

    taps = head_taps(lm.model)
    c1, c2 = st.columns(2)
    layer = c1.selectbox("Fast R-CNN pools from", taps, index=taps.index(default_layer(lm)), key=f"{KEY}_layer",
                         help="the rest of the network after this tap runs once per proposal")
    pool = c2.radio("Pooling", ["align", "pool"], horizontal=True, key=f"{KEY}_pool",
                    format_func={"align": "RoIAlign", "pool": "RoIPool"}.__getitem__)
    digest, raw, size = w.image_payload(image)
    try:
        boxes = _proposals(digest, raw, size, mode, cap)
    except ValueError as e:
        w.show_error(e)
        st.stop()
    st.caption(f"{len(boxes):,} proposals on {name} ({size[0]}×{size[1]} px).")
    fast_job = DetectJob(lm, image, boxes, method="fast-rcnn", threshold=thr, layer=layer, pool=pool)
    slow_job = DetectJob(lm, image, boxes, method="rcnn", threshold=thr)
    left, right = st.columns(2)
    with left:
        st.subheader("R-CNN")
        slow = run_job(f"{KEY}_rcnn", slow_job, what="R-CNN: one forward pass per proposal",
                       start_label="Run R-CNN", idle_note=f"{len(boxes):,} full forward passes.")
    with right:
        st.subheader("Fast R-CNN")
        fast = run_job(f"{KEY}_fast", fast_job, what="Fast R-CNN", autostart=True)
    for col, r in ((left, slow), (right, fast)):
        if r is None:
            continue
        with col:
            picked = r.boxes[[d.proposal for d in r.detections]]
            st.image(w.png_bytes(draw_boxes(image, picked, [f"{d.label} {d.score:.2f}" for d in r.detections])),
                     caption=f"{r.method} · {len(r.detections)} detections", width="stretch")
            m1, m2 = st.columns(2)
            m1.metric("Seconds", f"{r.total_seconds:.2f}")
            m2.metric("Full forward passes", f"{r.full_passes:,}",
                      help=None if r.method == "rcnn" else f"plus {r.head_passes:,} passes of the rest of the "
                                                             f"network from {r.layer}")
            st.dataframe(_detections_table(r), width="stretch", height=200)
    if slow is not None and fast is not None:
        from vizcore.regions.rcnn import agreement

        a = agreement(slow, fast)
        st.success(f"Fast R-CNN was **{slow.total_seconds / max(fast.total_seconds, 1e-9):.1f}×** faster "
                   f"({slow.full_passes:,} full forward passes against 1). Same top class on "
                   f"{a['agree_large']:.0%} of the {a['large']} proposals covering at least half the image "
                   f"({a['agree_all']:.0%} of all).")


def _roi_view(image, name: str) -> None:
    st.markdown("\n\n".join(roi.EXPLANATION))
    lm = w.load_model_or_stop("efficientnet_lite0")
    W, H = image.size
    c1, c2, c3 = st.columns(3)
    x0, x1 = c1.slider("Box x", 0, W, (W // 4, 3 * W // 4), key=f"{KEY}_roi_x")
    y0, y1 = c2.slider("Box y", 0, H, (H // 5, 4 * H // 5), key=f"{KEY}_roi_y")
    ratio = int(c3.number_input("RoIAlign samples per bin side", 1, 4, 2, key=f"{KEY}_roi_ratio"))
    from vizcore.regions.heads import head_taps

    taps = [t for t in head_taps(lm.model) if t.count(".") == 1]
    layer = st.selectbox("Feature map", taps, index=taps.index("blocks.6"), key=f"{KEY}_roi_layer")
    if x1 - x0 < 2 or y1 - y0 < 2:
        st.error("The box must be at least 2 px wide and tall.")
        st.stop()
    c, resized = roi.compare_on_image(lm, image, (x0, y0, x1, y1), layer=layer, sampling_ratio=ratio)
    bins = c.pool_bins_px().reshape(-1, 4)
    ex, ey = c.align_bins_px()
    exact = [(ex[j], ey[i], ex[j + 1], ey[i + 1], "#00e5ff", "RoIAlign bin") for i in range(len(ey) - 1)
             for j in range(len(ex) - 1)]
    quant = [(b[0], b[1], b[2], b[3], "#ff9100", "RoIPool bin") for b in bins]
    st.caption(f"Stride {c.stride:g} px: the box lies on cells {tuple(round(v, 2) for v in c.grid_box)} of the "
               f"{c.feature_size[0]}×{c.feature_size[1]} map; RoIPool rounds it to {c.pool_cells}.")
    a, b = st.columns(2)
    a.plotly_chart(_box_figure(resized, quant, title="RoIPool: rounded bins (orange)"), key=f"{KEY}_roi_pool_fig")
    b.plotly_chart(_box_figure(resized, exact, c.align_points_px().reshape(-1, 2),
                               title="RoIAlign: exact bins and sample points"), key=f"{KEY}_roi_align_fig")
    st.metric("Largest bin-edge misalignment of RoIPool", f"{c.max_misalignment:.1f} px",
              help="quantised minus exact edge of every bin, in input pixels")
    ch = int(np.abs(c.difference).mean(axis=(1, 2)).argmax())
    maps = {"RoIPool": c.pooled[ch], "RoIAlign": c.aligned[ch], "difference": c.difference[ch]}
    cols = st.columns(3)
    for col, (title, m) in zip(cols, maps.items()):
        col.plotly_chart(go.Figure(go.Heatmap(z=m, colorscale="RdBu" if title == "difference" else "Viridis"),
                                   layout=dict(title=f"{title} · channel {ch}", height=260,
                                               yaxis=dict(autorange="reversed"), margin=dict(l=0, r=0, t=30, b=0))),
                         key=f"{KEY}_roi_{title}")
    st.caption(f"Channel {ch}: the one where the two pooled maps differ most; mean |difference| over all "
               f"channels {np.abs(c.difference).mean():.4f}.")


def _rpn_view(image, name: str) -> None:
    st.markdown("Faster R-CNN replaces Selective Search by a **region proposal network**: at every cell of "
                "every FPN level, anchors of each size and aspect ratio get an objectness score and a box "
                "correction; the best survive NMS and go to the RoI heads (Mask R-CNN adds a mask per box).")
    models = list_models(task="detection")
    c1, c2, c3 = st.columns(3)
    model = c1.selectbox("Detector", models, key=f"{KEY}_det", format_func=w.model_label)
    side = int(c2.select_slider("Input short side", [256, 384, 512, 640, 800], 512, key=f"{KEY}_det_side"))
    thr = c3.slider("Score at least", 0.0, 1.0, 0.5, 0.05, key=f"{KEY}_det_thr")
    lm = w.load_model_or_stop(model, task="detection")
    w.weights_badge(lm)
    digest, raw, size = w.image_payload(image)
    v = _rpn(model, "auto", digest, raw, size, side, thr)
    W, H = image.size
    c1, c2 = st.columns(2)
    px = c1.slider("Anchors at x", 0, W - 1, W // 2, key=f"{KEY}_ax")
    py = c2.slider("Anchors at y", 0, H - 1, H // 2, key=f"{KEY}_ay")
    st.caption(f"{v.anchors.shape[0]:,} anchors = " + " + ".join(
        f"{lv.grid[0]}×{lv.grid[1]}×{lv.per_location}" for lv in v.levels) + f" (levels {', '.join(lv.name for lv in v.levels)}).")
    ats = v.anchors_at(px, py)
    rects = [(b[0], b[1], b[2], b[3], "#ffea00", f"{at['level']} {s}px {r}") for at in ats
             for b, s, r in zip(at["boxes"], at["sizes"], at["ratios"])]
    a, b = st.columns(2)
    a.plotly_chart(_box_figure(image, rects, np.array([[px, py]], dtype=float), title="Anchors at the chosen point"),
                   key=f"{KEY}_anchors_fig")
    pre = [(bx[0], bx[1], bx[2], bx[3], "#ff9100", "") for bx in v.pre_nms[:50]]
    post = [(bx[0], bx[1], bx[2], bx[3], "#00e676", "") for bx in v.proposals[:50]]
    b.plotly_chart(_box_figure(image, pre + post, title="Top 50 proposals before (orange) and after (green) NMS"),
                   key=f"{KEY}_props_fig")
    st.caption(f"{v.proposals.shape[0]:,} proposals after NMS (at most {v.post_nms_top_n:,}).")
    cols = st.columns(len(v.levels))
    for col, lv, m in zip(cols, v.levels, v.objectness_maps):
        col.image(w.png_bytes(overlay(image, m.max(axis=0), alpha=0.5)),
                  caption=f"objectness · level {lv.name} · {lv.grid[0]}×{lv.grid[1]}", width="stretch")
    labels = [f"{n} {s:.2f}" for n, s in zip(v.label_names, v.scores)]
    a, b = st.columns(2)
    a.image(w.png_bytes(draw_boxes(image, v.boxes, labels)), caption=f"{len(v.boxes)} detections",
            width="stretch")
    if v.masks is not None:
        b.image(w.png_bytes(masks_overlay(image, v.masks)), caption=f"{len(v.masks)} masks", width="stretch")


def _segment_view(image, name: str) -> None:
    st.markdown("A **fully convolutional** network scores every class at every cell of a coarse map "
                "(stride 8 here), then upsamples the scores to the image: the mask is the best class per "
                "pixel. (The Evidence page's *Fully convolutional* view runs a convolutionalised AlexNet/VGG.)")
    models = list_models(task="segmentation")
    c1, c2 = st.columns(2)
    model = c1.selectbox("Segmenter", models, key=f"{KEY}_seg", format_func=w.model_label)
    side = int(c2.select_slider("Input short side", [128, 256, 384, 520], 384, key=f"{KEY}_seg_side"))
    lm = w.load_model_or_stop(model, task="segmentation")
    w.weights_badge(lm)
    digest, raw, size = w.image_payload(image)
    r = _segment(model, "auto", digest, raw, size, side)
    native = r.native.argmax(0)
    a, b = st.columns(2)
    small = image.convert("RGB").resize((native.shape[1], native.shape[0]))
    a.image(w.png_bytes(label_overlay(small, native, alpha=0.6).resize(image.size, 0)),
            caption=f"native score map · {native.shape[0]}×{native.shape[1]} (stride {r.stride:g})",
            width="stretch")
    b.image(w.png_bytes(label_overlay(image, r.mask)), caption="upsampled to the image", width="stretch")
    st.dataframe([{"class": n, "share of pixels": f"{f:.1%}"} for _, n, f in r.classes], width="stretch")


def _deconv_view() -> None:
    st.markdown("After Dumoulin & Visin, *A guide to convolution arithmetic* (2016): a transposed "
                "convolution maps each input cell to a k×k patch of the output, stride s apart; it equals a "
                "unit-stride convolution of the input with s−1 zeros between cells.")
    case = st.selectbox("Case", list(deconv.CASES), key=f"{KEY}_case")
    preset = deconv.CASES[case]
    cols = st.columns(5)
    vals = {}
    for col, (k, label) in zip(cols, [("i", "input"), ("k", "kernel"), ("s", "stride"), ("p", "padding"),
                                      ("a", "output padding")]):
        vals[k] = int(col.number_input(label, 0 if k in "pa" else 1, 16, preset[k], key=f"{KEY}_{case}_{k}"))
    try:
        r = deconv.arithmetic(**vals)
    except deconv.DeconvError as e:
        w.show_error(e)
        st.stop()
    for text in r.formulas().values():
        st.markdown(f"`{text}`")
    m = deconv.connectivity(**vals)
    fig = go.Figure(go.Heatmap(z=m.astype(int), colorscale=[[0, "#f5f5f5"], [1, "#1565c0"]], showscale=False,
                               x=[f"in {n}" for n in range(m.shape[1])], y=[f"out {o}" for o in range(m.shape[0])]))
    fig.update_layout(title=f"transposed: which input cell each of the {m.shape[0]} output cells touches (one axis)",
                      height=min(600, 60 + 22 * m.shape[0]), yaxis=dict(autorange="reversed"),
                      margin=dict(l=0, r=0, t=30, b=0))
    st.plotly_chart(fig, key=f"{KEY}_deconv_fig")


st.title("Regions and pixels")
view = st.segmented_control("View", list(VIEWS), format_func=VIEWS.__getitem__, default="rcnn", key=f"{KEY}_view")
if view == "deconv":
    _deconv_view()
else:
    image, name = w.image_input(KEY)
    {"rcnn": _rcnn_view, "roi": _roi_view, "rpn": _rpn_view, "segment": _segment_view}.get(view or "rcnn")(image, name)
