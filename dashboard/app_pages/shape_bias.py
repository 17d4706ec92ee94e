"""Texture vs shape: the cue-conflict test of Geirhos et al. (ICLR 2019) for several models.

UI only: scoring is one :class:`vizcore.cueconflict.ShapeBiasJob` per model, run in turn as one
:class:`vizcore.jobs.ChainJob` by the job widget (:func:`dashboard.widgets.jobs.run_job`; results
cached on disk per model, weights and stimuli), so the page shows the time left, the running
shape-bias estimate with its 95 % interval, and can be stopped and resumed; the published reference points
come from :data:`vizcore.cueconflict.REFERENCES` and are drawn apart from measured values.
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path

import streamlit as st

from dashboard import widgets as w
from vizcore import cueconflict as cc
from vizcore.models import DEFAULT_MODEL, get_spec, list_models

KEY = "shape_bias"
SHARED = Path(os.environ.get("VIZCORE_SHARED_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data"))
STEP_BATCHES = 4  # work per step of the progress widget (64 images at batch 16: a few seconds on a CPU)


def _default_stimuli() -> str:
    env = os.environ.get("VIZCORE_STIMULI", "").strip()
    if env:
        return env
    return str(SHARED / "cue-conflict") if (SHARED / "cue-conflict").is_dir() else ""


st.title("Texture vs shape")
st.caption(
    "Cue-conflict images keep the **shape** of one object and take the **texture** of another "
    "(Geirhos et al., [ICLR 2019](https://openreview.net/forum?id=Bygh9j09KX)). Each network's "
    "1000-way decision is mapped to 16 categories by averaging its softmax over each category's "
    "ImageNet classes; **shape bias** = shape decisions / (shape + texture decisions), over the 1,200 "
    "images whose shape and texture differ. Humans decide by shape almost always; ImageNet CNNs mostly by texture.")

with st.sidebar:
    st.subheader("Networks")
    names = list_models()
    models = st.multiselect("Models", names, default=[DEFAULT_MODEL] if DEFAULT_MODEL in names else names[:1],
                            key=f"{KEY}_models", format_func=w.model_label,
                            help="Any ImageNet classifier; several at once are compared. ✓ trained weights "
                                 "available now; ○ random initialisation only (its decisions are noise).")
    extra = st.text_input("…and timm models (timm/<name>, comma-separated)", key=f"{KEY}_timm",
                          placeholder="timm/resnet50")
    models = models + [m.strip() if m.strip().startswith("timm/") else f"timm/{m.strip()}"
                       for m in extra.split(",") if m.strip()]
    weights = w.weights_picker(KEY)
    st.subheader("Stimuli")
    stimuli = st.text_input("Stimuli folder", value=_default_stimuli(), key=f"{KEY}_stimuli",
                            help="The stimuli/ folder of rgeirhos/texture-vs-shape (with "
                                 "style-transfer-preprocessed-512/, filled-silhouettes/, edges/), or the "
                                 "cue-conflict folder alone. Empty: $VIZCORE_STIMULI, the download cache, "
                                 "or a download from GitHub on first use.")
    batch = st.select_slider("Batch size", [4, 8, 16, 32, 64], value=16, key=f"{KEY}_batch")

if not models:
    st.info("Choose one or more models in the sidebar.")
    st.stop()


@st.cache_resource(show_spinner="Finding the stimuli (downloaded on first use)…", max_entries=4, ttl=600)
def _root(path: str) -> str:
    return str(cc.locate_stimuli(path or None, progress=False))


if stimuli.strip():  # a typed folder is read (or downloaded into) only under the allowed roots
    w.allowed_path_or_stop(stimuli, "Stimuli folder")
try:
    root = _root(stimuli.strip())
except Exception as e:  # noqa: BLE001 - offline without stimuli, wrong folder, ...
    st.error(f"No stimuli: {e}")
    st.stop()

# ------------------------------------------------------------------------------- the jobs
from dashboard.widgets.jobs import job_run, run_job  # noqa: E402
from vizcore.jobs import ChainJob, RunOptions, cached  # noqa: E402

parts: dict[str, cc.ShapeBiasJob] = {}
loaded = {}
for name in models:
    try:
        cc.check_imagenet_head(get_spec(name))  # before building it
    except cc.NoImageNetHeadError as e:
        st.error(str(e))
        continue
    except Exception as e:  # noqa: BLE001 - unknown timm name
        st.error(f"Cannot load model {name!r}: {e}")
        continue
    try:
        lm = w.get_model(name, weights)
    except Exception as e:  # noqa: BLE001 - unknown timm name, unreadable weights, ...
        st.error(f"Cannot load model {name!r}: {e}")
        continue
    try:
        parts[name] = cc.ShapeBiasJob.of(lm, root)
    except cc.NoImageNetHeadError as e:
        st.error(str(e))
        continue
    except Exception as e:  # noqa: BLE001 - stimuli vanished, ...
        st.error(f"{name}: {e}")
        continue
    loaded[name] = lm

if not parts:
    st.stop()

cols = st.columns(min(len(loaded), 4))
for i, (name, lm) in enumerate(loaded.items()):
    with cols[i % len(cols)]:
        st.markdown(f"**{name}**")
        w.weights_badge(lm)


def running_estimate(shape_hits: int, texture_hits: int) -> tuple[float, float, float] | None:
    """Shape bias with its 95 % Wilson score interval, from the decisions counted so far.

    Each shape-or-texture decision is one Bernoulli trial (shape = success), so the Wilson interval
    on shape / (shape + texture) says how far the final value can still move.
    """
    from vizcore.probes import wilson_interval

    n = shape_hits + texture_hits
    if not n:
        return None
    lo, hi = wilson_interval(shape_hits, n)
    return shape_hits / n, lo, hi


def _partial(so_far: dict) -> None:
    for name, r in so_far.items():
        if cached(parts[name]) is not None:  # finished (and cached): in the table below
            continue
        est = running_estimate(r.shape_hits, r.texture_hits)
        if est is None:
            continue
        bias, lo, hi = est
        st.markdown(f"**{name}** so far: shape bias **{bias:.3f}** (95 % interval {lo:.3f} to {hi:.3f}) from "
                    f"{r.shape_hits + r.texture_hits} shape-or-texture decisions among {r.n} of "
                    f"{parts[name].pass_.subsets['cue-conflict']} cue-conflict images.")


# One job for every model in turn (the job layer): progress, time left, Stop, Resume; each model's
# result is cached as soon as it is complete, so the finished ones are shown below at once.
chain = ChainJob(parts)
options = RunOptions(batch_size=batch, workers=0)
run = job_run(KEY, chain, options)
pending = [n for n, j in parts.items() if cached(j) is None]
left = sum(parts[n].total for n in pending) - (run.done if run.done < run.total else 0)
results = run_job(KEY, chain, options, what=f"Scoring {len(parts)} model(s) on the stimuli", partial=_partial,
                  units_per_step=STEP_BATCHES * batch,
                  idle_note=f"{len(pending)} model(s) to score: {max(0, left):,} images left "
                            f"({'partly done, ' if run.done else ''}results are cached on disk when finished).")
if results is None:
    results = {n: r for n, j in parts.items() if (r := cached(j)) is not None}
if not results:
    st.stop()


# ----------------------------------------------------------------------------- numbers
def _fmt(x) -> str:
    return "–" if x is None else f"{x:.3f}"


rows = []
for name, r in results.items():
    rows.append({"model": name, "weights": r.weights.get("source"), "shape bias": r.shape_bias,
                 "shape hits": r.shape_hits, "texture hits": r.texture_hits, "images": r.n,
                 "shape accuracy": r.shape_accuracy, "texture accuracy": r.texture_accuracy,
                 "silhouettes accuracy": r.silhouettes.accuracy if r.silhouettes else None,
                 "edges accuracy": r.edges.accuracy if r.edges else None,
                 "seconds": round(r.seconds, 1), "cached": r.cached})
st.subheader("Measured")
st.dataframe(rows, hide_index=True, width="stretch",
             column_config={k: st.column_config.NumberColumn(format="%.3f") for k in
                            ("shape bias", "shape accuracy", "texture accuracy", "silhouettes accuracy",
                             "edges accuracy")})
for name, r in results.items():
    if r.skipped:
        st.warning(f"{name}: {len(r.skipped)} unreadable stimuli skipped.")


# --------------------------------------------------------------------------- the plot
def geirhos_figure(results: dict[str, cc.ShapeBiasResult], refs=cc.REFERENCES):
    """Per category, the fraction of shape decisions (0 = texture, 1 = shape); one colour per model,
    its overall shape bias as a vertical line; published values in their own rows, in grey."""
    import plotly.graph_objects as go
    from plotly.colors import qualitative

    cats = list(cc.CATEGORIES)
    ref_rows = [f"{ref.name} †" for ref in refs]
    order = ref_rows[::-1] + ["—"] + cats[::-1]  # bottom to top
    fig = go.Figure()
    # every row exists even where no model has a value (keeps the line positions right)
    fig.add_trace(go.Scatter(x=[-1] * len(order), y=order, mode="markers", marker=dict(opacity=0),
                             showlegend=False, hoverinfo="skip"))
    palette = qualitative.Plotly
    for k, (name, r) in enumerate(results.items()):
        colour = palette[k % len(palette)]
        pc, counts = r.per_category, r.per_category_counts
        ys = [c for c in cats if pc[c] is not None]
        fig.add_trace(go.Scatter(
            x=[pc[c] for c in ys], y=ys, mode="markers", name=f"{name} ({_fmt(r.shape_bias)})",
            legendgroup=name, marker=dict(color=colour, size=11, symbol="circle", line=dict(width=1, color="white")),
            customdata=[[counts[c]["shape"], counts[c]["texture"], counts[c]["n"]] for c in ys],
            hovertemplate=(f"<b>{name}</b> · %{{y}}<br>shape decisions: %{{x:.2f}}"
                           "<br>%{customdata[0]} shape, %{customdata[1]} texture of %{customdata[2]}<extra></extra>")))
        if r.shape_bias is not None:
            fig.add_shape(type="line", x0=r.shape_bias, x1=r.shape_bias, y0=len(refs) + 0.5, y1=len(order) - 0.5,
                          line=dict(color=colour, width=2, dash="dash"))
    fig.add_trace(go.Scatter(
        x=[ref.shape_bias for ref in refs], y=ref_rows, mode="markers+text", name="published († not measured here)",
        marker=dict(color="#555", size=13, symbol="diamond-open", line=dict(color="#555", width=2)),
        text=[f"{ref.source}   " if ref.shape_bias > 0.6 else f"   {ref.source}" for ref in refs],
        textfont=dict(size=10, color="#555"),
        textposition=["middle left" if ref.shape_bias > 0.6 else "middle right" for ref in refs],
        error_x=dict(type="data", symmetric=False, color="#999",
                     array=[(ref.high - ref.shape_bias) if ref.high is not None else 0 for ref in refs],
                     arrayminus=[(ref.shape_bias - ref.low) if ref.low is not None else 0 for ref in refs]),
        customdata=[[ref.source, ref.url] for ref in refs],
        hovertemplate="<b>%{y}</b><br>shape bias %{x:.2f}<br>%{customdata[0]}<br>%{customdata[1]}<extra></extra>"))
    # the upper axis reads the same positions as fractions of texture decisions
    fig.add_trace(go.Scatter(x=[0, 1], y=[cats[0], cats[0]], xaxis="x2", mode="markers",
                             marker=dict(opacity=0), showlegend=False, hoverinfo="skip"))
    fig.update_layout(
        height=40 * len(order) + 140, margin=dict(l=10, r=10, t=60, b=40),
        xaxis=dict(range=[-0.02, 1.02], title="fraction of 'shape' decisions", dtick=0.1, zeroline=False),
        xaxis2=dict(range=[1.02, -0.02], overlaying="x", side="top", title="fraction of 'texture' decisions",
                    dtick=0.1, showgrid=False),
        yaxis=dict(categoryorder="array", categoryarray=order, type="category", automargin=True),
        legend=dict(orientation="h", y=-0.08), hovermode="closest")
    return fig


st.subheader("Shape decisions per category")
fig = geirhos_figure(results)
st.plotly_chart(fig, width="stretch", key=f"{KEY}_plot")
st.caption("Dots: fraction of shape decisions among the shape-or-texture decisions for the images of each "
           "shape category; dashed lines: each model's overall shape bias. † Published values, not "
           "measured here: " + "; ".join(f"[{ref.name}]({ref.url}) {ref.shape_bias:.2f}" for ref in cc.REFERENCES)
           + ".")

# ------------------------------------------------------------------------ example stimuli
st.subheader("Example stimuli and each model's decision")
first = next(iter(results.values()))
c1, c2, c3, c4 = st.columns(4)
cat = c1.selectbox("Shape category", ["any"] + list(cc.CATEGORIES), key=f"{KEY}_ex_cat")
first_name = next(iter(results))
outcome = c2.selectbox(f"Decision of {first_name}", ["any", "shape", "texture", "other"], key=f"{KEY}_ex_outcome")
count = c3.slider("Images", 4, 24, 8, step=4, key=f"{KEY}_ex_n")
seed = c4.number_input("Sample", 0, 10_000, 0, key=f"{KEY}_ex_seed", help="Another number, another sample.")

by_file = {name: {d.file: d for d in r.decisions} for name, r in results.items()}
pool = [d for d in first.decisions if (cat == "any" or d.shape == cat) and (outcome == "any" or d.outcome == outcome)]
picked = sorted(random.Random(int(seed)).sample(pool, min(count, len(pool))), key=lambda d: d.file)
if not picked:
    st.info("No stimuli match this filter.")
else:
    grid = st.columns(4)
    for i, d in enumerate(picked):
        says = " · ".join(
            f"{name} says {by_file[name][d.file].decision}" + ("" if by_file[name][d.file].outcome == "other"
                                                              else f" ({by_file[name][d.file].outcome})")
            for name in results if d.file in by_file[name])
        with grid[i % 4]:
            st.image(d.file, caption=f"shape: {d.shape} / texture: {d.texture} → {says}", width="stretch")

st.download_button("Download results (JSON)", key=f"{KEY}_download", mime="application/json",
                   file_name="shape_bias.json",
                   data=json.dumps({"measured": [r.to_json(decisions=True) for r in results.values()],
                                    "published_references": [ref.to_json() for ref in cc.REFERENCES]},
                                   indent=1, default=str))
