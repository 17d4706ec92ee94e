"""The Evidence page's "Sanity checks" view (UI only).

The work is :class:`vizcore.evidence.sanity.SanityJob` (model-parameter randomisation on a copy of
the model, the random-class test and the Sobel edge control), run with
:func:`dashboard.widgets.jobs.run_job`: progress, Stop, Resume and the disk cache.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import streamlit as st
from PIL import Image

from dashboard.widgets.images import png_bytes
from dashboard.widgets.jobs import run_job
from vizcore.evidence.sanity import (
    CONTROL, DEFAULT_METHODS, GRANULARITIES, MEASURE_TITLES, MEASURES, MODES, OUT_OF_SCOPE, SanityJob, SanityResult,
)
from vizcore.jobs import RunOptions

INTRO = ("Does the map depend on the model at all? After Adebayo et al. (NeurIPS 2018), the layers of a "
         "**copy** of the network are re-initialised from the logits down (cascading: one more at each step; "
         "independent: one at a time) and each method's map is compared with the trained model's map by "
         "Spearman rank correlation of |map|, SSIM and HOG similarity. A map that explains the model falls "
         "towards 0 as its weights are destroyed; one that stays high mostly shows the image. The "
         "random-class test (★) compares the map of the explained class with a random other class's; the "
         "control (dashed) is a Sobel edge map, which needs no weights.")


def curves_figure(r: SanityResult):
    """The similarity curves of ``r`` (plotly): one panel per measure, one line per method."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    labels = r.step_labels()
    fig = make_subplots(rows=1, cols=len(MEASURES), subplot_titles=[MEASURE_TITLES[m] for m in MEASURES])
    x = list(range(len(r.steps)))
    for i, m in enumerate(r.methods):
        colour = f"hsl({(i * 67) % 360}, 65%, 45%)"
        for col, key in enumerate(MEASURES, start=1):
            y = [None if v != v else v for v in r.scores[m][key]]
            fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=m, legendgroup=m, showlegend=col == 1,
                                     line=dict(color=colour), text=labels[: len(y)],
                                     hovertemplate=f"{m}: %{{y:.3f}} after %{{text}}<extra></extra>"),
                          row=1, col=col)
            rc = r.random_class.get("scores", {}).get(m)
            if rc is not None:
                fig.add_trace(go.Scatter(x=[len(x)], y=[rc[key]], mode="markers", name=f"{m} random class",
                                         legendgroup=m, showlegend=False,
                                         marker=dict(symbol="star", size=12, color=colour),
                                         hovertemplate=f"{m}, random class: %{{y:.3f}}<extra></extra>"),
                              row=1, col=col)
    for col, key in enumerate(MEASURES, start=1):
        fig.add_trace(go.Scatter(x=x, y=r.control[key], mode="lines", name=f"{CONTROL} (control)",
                                 legendgroup=CONTROL, showlegend=col == 1, line=dict(dash="dash", color="grey")),
                      row=1, col=col)
    ticks = x + ([len(x)] if r.random_class else [])
    fig.update_xaxes(tickvals=ticks, ticktext=labels + (["random class"] if r.random_class else []), tickangle=-60,
                     tickfont=dict(size=9))
    fig.update_yaxes(range=[-1.05, 1.05])
    fig.update_layout(height=380, margin=dict(l=0, r=0, t=30, b=0))
    return fig


def _heat(m: np.ndarray) -> bytes:
    from vizcore.render import colorize

    a = np.abs(m)
    hi = float(a.max())
    return png_bytes(Image.fromarray(colorize(a / hi if hi > 0 else a, "inferno")))


def draw_result(key: str, r: SanityResult) -> None:
    """The curves, the random-class and edge tables, and the maps at the kept steps."""
    st.plotly_chart(curves_figure(r), key=f"{key}_sanity_curves_{r.mode}_{len(r.steps)}")
    for m, e in r.errors.items():
        st.caption(f":material/info: {m} not run: {e}")
    if r.random_class:
        c = r.random_class["class"]
        rows = [{"method": m, **{MEASURE_TITLES[k]: round(v, 3) for k, v in s.items()}}
                for m, s in r.random_class["scores"].items()]
        st.markdown(f"**Random-class test**: each method's map for **{r.target['label']}** against its map for "
                    f"**{c['label']}** ({c['index']}); 1 means the map ignores the class.")
        st.dataframe(rows, hide_index=True, key=f"{key}_sanity_rc_{r.mode}")
    st.markdown("**Similarity to the edge map** (trained model, and after the last step): how close each "
                "method stays to “just edges”.")
    st.dataframe([{"method": m, **{f"{MEASURE_TITLES[k]}: trained": round(v[k][0], 3) for k in MEASURES},
                   **{f"{MEASURE_TITLES[k]}: randomised": (None if v[k][-1] != v[k][-1] else round(v[k][-1], 3))
                      for k in MEASURES}}
                  for m, v in r.edges.items()], hide_index=True, key=f"{key}_sanity_edges_{r.mode}")
    labels = r.step_labels()
    for m in r.methods:
        steps = sorted(r.maps.get(m, {}))
        if not steps:
            continue
        st.image([_heat(r.edge)] + [_heat(r.maps[m][k]) for k in steps], width=110,
                 caption=[f"{m}: edges (control)"] + [f"{m} · {k}: {labels[k]}" for k in steps])


def sanity_view(key: str, lm, image: Image.Image, target: int, methods_offered: Sequence[str]) -> None:
    """Settings, the run (progress, Stop, Resume, cache) and the results for the session image."""
    st.caption(INTRO)
    st.caption(f":material/info: {OUT_OF_SCOPE}")
    c1, c2, c3, c4 = st.columns([3, 1.2, 1.2, 1])
    methods = c1.pills("Methods", list(methods_offered), selection_mode="multi",
                       default=[m for m in DEFAULT_METHODS if m in methods_offered], key=f"{key}_sanity_methods")
    mode = c2.radio("Randomisation", MODES, key=f"{key}_sanity_mode")
    granularity = c3.selectbox("One step re-initialises", GRANULARITIES, key=f"{key}_sanity_granularity",
                               format_func={"blocks": "a block (tap)", "layers": "a conv/linear layer",
                                            "modules": "a module"}.get)
    seed = int(c4.number_input("Seed", 0, 10_000, 0, key=f"{key}_sanity_seed"))
    if not methods:
        st.info("Pick at least one method.")
        return
    try:
        job = SanityJob(lm, image, int(target), methods, mode=mode, granularity=granularity, seed=seed)
    except Exception as e:  # noqa: BLE001 - one line, the page stays
        st.error(f"Sanity checks: {e}")
        return
    res = run_job(f"{key}_sanity", job, RunOptions(workers=0), what="Sanity check", unit="steps",
                  rate_unit="step", start_label="Run sanity check",
                  idle_note=f"{len(methods)} maps at each step, from the logits down to the input",
                  partial=lambda p: draw_result(f"{key}_partial", p))
    if res is not None:
        draw_result(key, res)
