"""Activation atlas: a tap's activation vectors over a dataset, laid out in 2-D and drawn cell by cell.

UI only: :class:`vizcore.atlas.AtlasJob` through ``run_job`` (progress, Stop, Resume, cached on disk),
the picture from :func:`vizcore.atlas.atlas_image`, the session image's positions from
:func:`vizcore.atlas.place`, a cell's positions from :func:`vizcore.atlas.position_crop`.
"""
from __future__ import annotations

import collections

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from dashboard import widgets as w
from dashboard.widgets.jobs import run_job

KEY = "atlas"
CELL = 64

st.title("Activation atlas")
st.caption("Many spatial activation vectors of one tap, laid out in 2-D so that similar vectors sit together "
           "(UMAP), binned into a grid; each cell shows a feature visualisation of its mean vector. After "
           "Carter et al., *Activation Atlas* (Distill 2019). A class atlas keeps only the vectors that push "
           "one class hardest (gradient x activation).")

with st.sidebar:
    st.header("Atlas")
    model = w.model_picker(KEY)
    weights = w.weights_picker(KEY)
    spec, _ = w.dataset_input(f"{KEY}_ds", sources=("imagenet-samples", "samples", "folder"))
    n_max = st.number_input("Images (the first N; 0: all)", 0, 100_000, 0, step=50, key=f"{KEY}_n")
    engine = w.engine_input(KEY)

lm = w.load_model_or_stop(model, weights)
taps = [t.name for t in lm.taps() if t.kind not in ("pool", "logits", "input")]
image, caption = w.image_input(KEY)
c1, c2, c3, c4 = st.columns([2, 1, 1, 1])
layer = c1.selectbox("Tap", taps, index=min(len(taps) - 1, (2 * len(taps)) // 3), key=f"{KEY}_layer")
grid = int(c2.number_input("Grid", 2, 60, 20, key=f"{KEY}_grid"))
per_image = int(c3.number_input("Positions per image", 1, 4096, 16, key=f"{KEY}_per_image"))
min_count = int(c4.number_input("Fewest per cell", 1, 100, 3, key=f"{KEY}_min_count"))
d1, d2, d3, d4 = st.columns([2, 1, 1, 1])
target = d1.text_input("Class atlas for (index or label; empty: all vectors)", "", key=f"{KEY}_target").strip()
keep = d2.number_input("Share kept", 0.01, 1.0, 0.1, key=f"{KEY}_keep", disabled=not target)
steps = int(d3.number_input("Icon steps", 0, 512, 64, key=f"{KEY}_steps", help="0: no icons (layout only)"))
method = d4.radio("Layout", ("umap", "tsne"), key=f"{KEY}_method", horizontal=True)
if not spec:
    st.info("Choose the images in the sidebar.")
    st.stop()
ds = w.open_dataset_or_stop(spec).first(n_max)
opts = w.run_options(engine)

from vizcore.atlas import AtlasJob, atlas_image, place, position_crop  # noqa: E402

try:
    job = AtlasJob(lm, ds, layer, grid, per_image=per_image, min_count=min_count, method=method,
                   target=(int(target) if target.isdigit() else target) or None, keep=float(keep),
                   icon_steps=steps, icon_size=CELL, options=opts)
except Exception as e:  # noqa: BLE001 - too few vectors for the grid, a tap without spatial map, unknown class
    w.show_error(e, "Cannot make this atlas")
    st.stop()
atlas = run_job(KEY, job, opts, what=f"Atlas of {layer} over {ds.name}", start_label="Make the atlas",
                idle_note=f"Press **Make the atlas**: {per_image} positions of each of {len(ds):,} images, a UMAP "
                          f"layout, then up to {grid * grid} icons of {steps} steps (cached on disk).")
if atlas is None:
    st.stop()

st.success(f"{len(atlas.cells)} of {atlas.grid * atlas.grid} cells drawn from {len(atlas.kept):,} vectors"
           + (f" (the {len(atlas.kept):,} of {atlas.n_sample:,} pushing “{atlas.target_label}” hardest)"
              if atlas.target is not None else "") + ".")
pic = atlas_image(atlas, cell=CELL)
fig = go.Figure(go.Image(z=np.asarray(pic), hoverinfo="skip"))
hover = []
for c in atlas.cells:
    files = [atlas.files[int(atlas.image[m])].rsplit("/", 1)[-1] for m in c["top"][:3]]
    hover.append(f"row {c['row']}, col {c['col']}<br>{c['count']} vectors<br>closest: " + "<br>".join(files))
fig.add_trace(go.Scatter(x=[(c["col"] + 0.5) * CELL for c in atlas.cells],
                         y=[(c["row"] + 0.5) * CELL for c in atlas.cells], mode="markers",
                         marker=dict(size=CELL / 2, opacity=0.01, color="black"), hovertext=hover,
                         hoverinfo="text", name="cells"))
here = collections.Counter((p["row"], p["col"]) for p in place(lm, atlas, image))
fig.add_trace(go.Scatter(x=[(q + 0.5) * CELL for (_r, q) in here], y=[(r + 0.5) * CELL for (r, _q) in here],
                         mode="markers", marker=dict(size=[6 + 2 * n ** 0.5 for n in here.values()], color="red",
                                                     line=dict(color="white", width=1)),
                         hovertext=[f"{n} positions of {caption}" for n in here.values()], hoverinfo="text",
                         name=f"positions of {caption}"))
fig.update_layout(height=720, margin=dict(l=0, r=0, t=10, b=0), showlegend=True,
                  legend=dict(orientation="h", y=-0.02), xaxis=dict(visible=False), yaxis=dict(visible=False))
event = st.plotly_chart(fig, key=f"{KEY}_chart", on_select="rerun", selection_mode="points")
st.caption(f"Red: where the positions of **{caption}** fall (the cell whose mean is closest in cosine). "
           "Zoom with the mouse; click a cell to see the positions it came from.")
points = [p for p in (event.selection.points if event and event.selection else []) if p.get("curve_number") == 1]
if points:
    c = atlas.cells[int(points[0]["point_index"])]
    st.subheader(f"Cell row {c['row']}, col {c['col']}: {c['count']} vectors, the closest to its mean")
    st.image([position_crop(lm, atlas.files[int(atlas.image[m])], atlas.module, int(atlas.position[m]), atlas.hw)
              for m in c["top"]], width=96)
