"""Linear probes: how linearly decodable a label is at each depth, pretrained against random.

UI only: :func:`vizcore.features.extract_features` pools the chosen taps of a network in one
pass (cached on disk), then :func:`vizcore.probes.fit_probes` fits one logistic regression per
layer (each a cached result of its own). The run is one :class:`vizcore.jobs.ChainJob` of a
:class:`vizcore.features.FeaturesJob` and a :class:`vizcore.probes.ProbeFitsJob` per network, run by
the shared job widget (:func:`dashboard.widgets.jobs.run_job`): the accuracy curve grows layer by
layer, the bar says how long is left, Stop keeps what is done, and a cached run shows at once.

Defaults that finish in about a minute on a 2-core CPU: five curated taps, a few hundred images,
and the random-init twin as an opt-in second pass; every tap and every image are a choice away.
"""
from __future__ import annotations


import streamlit as st

from dashboard import widgets as w
from dashboard.widgets.jobs import run_job
from vizcore.features import FeaturesJob
from vizcore.jobs import ChainJob
from vizcore.models import DEFAULT_MODEL, list_models
from vizcore.probes import ProbeFitsJob, ProbeResult

KEY = "probes"

st.title("Linear probes")
st.caption("One linear classifier per layer on pooled features (about 9,600 per layer, as in the classic "
           "AlexNet probing protocol): accuracy climbs with depth in a trained network and stays flat in a "
           "randomly initialised one (Zhang, Isola & Efros 2017). Error bars: 95% Wilson intervals.")


with st.sidebar:
    st.subheader("Networks")
    names = list_models()
    models = st.multiselect("Models", names, default=[DEFAULT_MODEL] if DEFAULT_MODEL in names else names[:1],
                            key=f"{KEY}_models", format_func=w.model_label)
    compare_random = st.toggle("Also probe the random-init twin", value=False, key=f"{KEY}_random",
                               help="The same architecture with seeded random weights, on the same split: "
                                    "a second pass after the trained network's (about doubles the time).")
    st.subheader("Dataset")
    spec, default_label = w.dataset_input(KEY, sources=("cue-conflict", "folder", "samples"))
    engine = w.engine_input(KEY)
    kinds = ["class", "shape", "texture", "shape + texture"]
    label = st.selectbox("Label to decode", kinds, index=kinds.index(default_label), key=f"{KEY}_label",
                         help="shape / texture: the two labels of each cue-conflict stimulus; both to see at "
                              "which depth each becomes linearly decodable. Cue-conflict splits keep each "
                              "shape (texture) exemplar on one side, so test images show unseen exemplars.")
    labels = ["shape", "texture"] if label == "shape + texture" else [label]
    st.subheader("Probe")
    max_layers = st.number_input("Layers per model (0 = every tap)", 0, 64, 5, key=f"{KEY}_max_layers",
                                 help="Taps evenly spaced from first to last; every tap (0) takes several "
                                      "times longer to fit.")
    max_images = st.number_input("Images (0 = all)", 0, 100_000, 480, step=120, key=f"{KEY}_max_images",
                                 help="An evenly spaced subset of the dataset (every class kept); all 1,200 "
                                      "cue-conflict stimuli take about three times as long.")
    evaluation = st.radio("Evaluation", ["holdout", "k-fold"], horizontal=True, key=f"{KEY}_eval")
    folds = st.slider("Folds", 2, 10, 5, key=f"{KEY}_folds") if evaluation == "k-fold" else None
    test_size = 0.25 if folds else st.slider("Held-out fraction", 0.1, 0.5, 0.25, 0.05, key=f"{KEY}_test")
    seed = int(st.number_input("Seed", 0, 10_000, 0, key=f"{KEY}_seed"))

if not models:
    st.info("Pick at least one model in the sidebar.")
    st.stop()
ds = w.open_dataset_or_stop(spec)
if max_images and max_images < len(ds):
    ds = ds.evenly_spaced(int(max_images))
st.write(f"**{w.plain(ds.name)}**: {len(ds)} images; " + ", ".join(
    f"{sum(lab is not None for lab in ds.labels(k))} with a **{k}** label ({len(ds.classes(k))} classes)"
    for k in labels) + ".")


def _layers_for(lm) -> list[str]:
    taps = [t.name for t in lm.taps()]
    if not max_layers or max_layers >= len(taps):
        return taps
    step = (len(taps) - 1) / max(1, max_layers - 1)
    return list(dict.fromkeys(taps[round(i * step)] for i in range(max_layers)))


# ------------------------------------------------------------------------- the run, as one chain of jobs
# Per network: its feature pass (all its chosen layers, cached on disk per layer), then its probes (one
# fit per step, each cached; their features come from that cache). The trained networks come first,
# their random-init twins after them: a second pass. One bar, one Stop, one Resume for the chain.
opts = w.run_options(engine)
PER_STEP = 2 * opts.batch_size  # images per script run; a fit counts as PER_STEP, so one fit per step


def _net(name: str, twin: bool):
    # The seeded twin comes from the process's model cache like any model (within its memory budget).
    return w.get_model(name, f"random:{int(seed)}" if twin else "auto")


passes = [(name, False) for name in models] + ([(name, True) for name in models] if compare_random else [])
parts, fit_layers = {}, {}
for name, twin in passes:
    net = _net(name, twin)
    layers = _layers_for(net)
    tag = f"{name}{' (random init)' if twin else ''}"
    parts[f"{tag}: pooled features"] = FeaturesJob(net, ds, layers)
    parts[f"{tag}: probes"] = ProbeFitsJob(net, ds, layers, labels, folds=folds, test_size=test_size, seed=seed,
                                           units_per_fit=PER_STEP, options=opts)
    fit_layers[f"{tag}: probes"] = layers
job = ChainJob(parts)
n_fits = sum(len(labels) * len(v) for v in fit_layers.values())


def _results(res: dict | None) -> list[tuple[int, ProbeResult]]:
    """(depth, probe) of every fit done, network by network (from the chain's result or partial result)."""
    out = []
    for part, layers in fit_layers.items():
        for i, r in enumerate((res or {}).get(part) or []):  # labels outer, layers inner
            out.append((i % len(layers), r))
    return out


def _rows(results: list[tuple[int, ProbeResult]]) -> list[dict]:
    return [{**row, "depth": depth} for depth, r in results for row in r.to_rows()]


def _partial(res) -> None:
    results = _results(res)
    if results:
        st.plotly_chart(_figure(results), width="stretch", key=f"{KEY}_chart_partial")
        st.caption(f"So far: {len(_rows(results))} of {n_fits} probes.")


def _figure(results: list[tuple[int, ProbeResult]]):
    import pandas as pd
    import plotly.graph_objects as go

    df = pd.DataFrame(_rows(results))
    df["run"] = df["model"] + " · " + df["weights"].map(lambda s: "random init" if s == "random" else "pretrained")
    if len(labels) > 1:
        df["run"] += " · " + df["label"]
    df["relative depth"] = df.groupby("run")["depth"].transform(lambda s: s / max(1, s.max()))
    x_axis = "layer" if len(models) == 1 else "relative depth"
    fig = go.Figure()
    for run_name, g in df.groupby("run", sort=False):
        g = g.sort_values("depth")
        fig.add_trace(go.Scatter(
            x=g[x_axis], y=g["accuracy"], mode="lines+markers", name=run_name,
            line={"dash": "dot" if "random" in run_name else "solid"}, legendgroup=run_name,
            error_y={"type": "data", "symmetric": False, "array": g["ci_high"] - g["accuracy"],
                     "arrayminus": g["accuracy"] - g["ci_low"]},
            customdata=g[["layer", "n_features", "ci_low", "ci_high"]].to_numpy(),
            hovertemplate="%{customdata[0]}<br>accuracy %{y:.3f} [%{customdata[2]:.3f}, %{customdata[3]:.3f}]"
                          "<br>%{customdata[1]} features<extra></extra>"))
    first = results[0][1]
    if len(labels) == 1:
        fig.add_hline(y=1 / max(1, len(first.classes)), line_dash="dash", line_color="grey", annotation_text="chance")
    if x_axis == "layer":  # every chosen layer has its place on the axis from the start
        fig.update_xaxes(categoryorder="array", categoryarray=_layers_for(w.get_model(models[0], "auto")))
    fig.update_layout(xaxis_title="layer" if x_axis == "layer" else "relative depth (0 = first tap, 1 = last)",
                      yaxis_title=f"{label} accuracy (test)", yaxis_range=[0, 1.02], height=460,
                      legend={"orientation": "h", "y": -0.25})
    return fig


done = run_job(KEY, job, opts, what="Linear probes", partial=_partial, start_label="Run probes",
               units_per_step=PER_STEP,
               idle_note=f"Press **Run probes**: {len(passes)} feature pass(es) over {len(ds)} images, then "
                         f"{n_fits} probes (on the bar, a probe counts as {PER_STEP} images). Features and fits "
                         "are cached on disk, so a repeated run is instant.")
if done is None:
    st.stop()

# ----------------------------------------------------------------------------- results
import pandas as pd  # noqa: E402

results = _results(done)
df = pd.DataFrame(_rows(results))
first = results[0][1]
n_classes = len(first.classes)
st.success(f"Probed {df[['model', 'weights']].drop_duplicates().shape[0]} network(s) on **{label}** "
           f"({n_classes} classes, {first.split}, n_train={first.n_train}, n_test={first.n_test}).")
st.plotly_chart(_figure(results), width="stretch", key=f"{KEY}_chart")

table = df[["model", "weights", "label", "depth", "layer", "accuracy", "ci_low", "ci_high", "n_features",
            "n_train", "n_test"]]
st.dataframe(table, hide_index=True, width="stretch", key=f"{KEY}_table")
st.download_button("Download table (CSV)", table.to_csv(index=False).encode(), file_name=f"probes_{'_'.join(labels)}.csv",
                   mime="text/csv", key=f"{KEY}_download")
