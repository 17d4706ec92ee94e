"""Texture vs shape: the cue-conflict test of Geirhos et al. (ICLR 2019) for several models.

UI only: every model is scored by one engine job, :class:`vizcore.cueconflict.ShapeBiasManyJob`
(results cached on disk per model, weights and stimuli), run a few batches per step of the job widget
(:func:`dashboard.widgets.jobs.run_job`), so the page shows the time left, the running shape-bias
estimate with its 95 % interval (:func:`vizcore.cueconflict.shape_bias_interval`), and can be stopped
and resumed; the figure is :func:`dashboard.widgets.figures.shape_bias_figure`; the published reference points
come from :data:`vizcore.cueconflict.REFERENCES` and are drawn apart from measured values.
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path

import streamlit as st

from dashboard import widgets as w
from dashboard.widgets.jobs import job_run, run_job
from vizcore import cueconflict as cc
from vizcore.data.stimuli import locate_stimuli
from vizcore.jobs import RunOptions
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
    return str(locate_stimuli(path or None, progress=False))


if stimuli.strip():  # a typed folder is read (or downloaded into) only under the allowed roots
    w.allowed_path_or_stop(stimuli, "Stimuli folder")
try:
    root = _root(stimuli.strip())
except Exception as e:  # noqa: BLE001 - offline without stimuli, wrong folder, ...
    st.error(w.plain(f"No stimuli: {e}"))
    st.stop()

# ------------------------------------------------------------------------------- the job
valid = []
for name in models:  # names and heads are checked on the spec: nothing is built for that
    try:
        cc.check_imagenet_head(get_spec(name))
    except cc.NoImageNetHeadError as e:
        st.error(w.plain(e))
        continue
    except Exception as e:  # noqa: BLE001 - unknown timm name
        w.show_error(e, f"Cannot load model {name!r}")
        continue
    valid.append(name)
if not valid:
    st.stop()

# Nothing is loaded until Run: a model typed in the sidebar costs no memory (a timm giant is GBs)
# until its result is asked for. A session that already has this job has its models loaded.
request = (tuple(valid), weights, root, batch)
asked = st.session_state.get(f"{KEY}_asked") == request
held = st.session_state.get(f"{KEY}_job")
if not asked and not (held is not None and held[0][0] == tuple(valid) and held[0][1:] == request[1:]):
    def _ask() -> None:
        st.session_state[f"{KEY}_asked"] = request
        st.session_state.pop(f"{KEY}_job_ctl", None)  # the job starts at once (autostart below)

    c1, c2 = st.columns([1, 5], vertical_alignment="center")
    c1.button("Run", key=f"{KEY}_start", type="primary", icon=":material/play_arrow:", on_click=_ask)
    c2.info(f"{len(valid)} model(s) to score. Nothing is loaded until you press Run; results already "
            "cached on disk then show at once.")
    st.stop()

loaded = {}
for name in valid:
    try:
        loaded[name] = w.get_model(name, weights)
    except Exception as e:  # noqa: BLE001 - unreadable weights, the memory budget, ...
        w.show_error(e, f"Cannot load model {name!r}")
if not loaded:
    st.stop()

cols = st.columns(min(len(loaded), 4))
for i, (name, lm) in enumerate(loaded.items()):
    with cols[i % len(cols)]:
        st.markdown(f"**{w.plain(name)}**")
        w.weights_badge(lm)

# One engine job scores every model in turn (each model's result is cached on disk once complete);
# it is built once per choice of models and kept with the session's run.
job_id = (tuple(loaded), weights, root, batch)
held = st.session_state.get(f"{KEY}_job")
if held is None or held[0] != job_id:
    try:
        held = st.session_state[f"{KEY}_job"] = (job_id, cc.ShapeBiasManyJob(list(loaded.values()), root,
                                                                              batch_size=batch))
    except Exception as e:  # noqa: BLE001 - stimuli vanished, ...
        st.error(w.plain(f"Cannot score on {root}: {e}"))
        st.stop()
job = held[1]


def _partial(p) -> None:
    """The running estimate of the model being scored (``p``: a ShapeBiasProgress; the complete result,
    a dict, once the last model is done)."""
    if not isinstance(p, cc.ShapeBiasProgress) or p.current is None or p.partial is None:
        return
    r = p.partial
    est = cc.shape_bias_interval(r.shape_hits, r.texture_hits)
    if est is None:
        return
    bias, lo, hi = est
    st.markdown(f"**{w.plain(p.current)}** so far: shape bias **{bias:.3f}** (95 % interval {lo:.3f} to {hi:.3f}) from "
                f"{r.shape_hits + r.texture_hits} shape-or-texture decisions among {r.n} of "
                f"{job.passes[p.current].subsets['cue-conflict']} cue-conflict images.")


options = RunOptions(batch_size=batch, workers=0)
pending = [n for n, p in job.passes.items() if p.cached is None]
so_far = job_run(KEY, job, options, job_id=job_id)
results = run_job(KEY, job, options, what=f"Scoring {len(loaded)} model(s) on the stimuli", partial=_partial, autostart=asked,
                  units_per_step=STEP_BATCHES * batch, job_id=job_id,
                  idle_note=f"{len(pending)} model(s) to score: {so_far.total - so_far.done:,} images left "
                            f"({'partly done, ' if so_far.done else ''}results are cached on disk per model "
                            "when finished).")
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
        st.warning(f"{w.plain(name)}: {len(r.skipped)} unreadable stimuli skipped.")


st.subheader("Shape decisions per category")
fig = w.shape_bias_figure(results)
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
