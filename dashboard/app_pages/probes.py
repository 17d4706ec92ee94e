"""Linear probes: how linearly decodable a label is at each depth, pretrained against random.

UI only: :func:`vizcore.probes.fit_probes` pools every tap in one pass, fits one
logistic regression per layer and caches features and results on disk. A run
shows progress; the Stop button interrupts it (the rerun it triggers ends the
computation at its next progress update, and nothing half-done is cached).
"""
from __future__ import annotations


import streamlit as st

from dashboard import widgets as w
from vizcore.models import DEFAULT_MODEL, list_models

KEY = "probes"

st.title("Linear probes")
st.caption("One linear classifier per layer on pooled features (about 9,600 per layer, as in the classic "
           "AlexNet probing protocol): accuracy climbs with depth in a trained network and stays flat in a "
           "randomly initialised one (Zhang, Isola & Efros 2017). Error bars: 95% Wilson intervals.")


with st.sidebar:
    st.subheader("Networks")
    names = list_models()
    models = st.multiselect("Models", names, default=[DEFAULT_MODEL] if DEFAULT_MODEL in names else names[:1],
                            key=f"{KEY}_models")
    compare_random = st.toggle("Also probe the random-init twin", value=True, key=f"{KEY}_random",
                               help="The same architecture with seeded random weights, on the same split.")
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
    max_layers = st.number_input("Layers per model (0 = every tap)", 0, 64, 0, key=f"{KEY}_max_layers",
                                 help="Fewer layers, evenly spaced from first to last, make a quicker run.")
    evaluation = st.radio("Evaluation", ["holdout", "k-fold"], horizontal=True, key=f"{KEY}_eval")
    folds = st.slider("Folds", 2, 10, 5, key=f"{KEY}_folds") if evaluation == "k-fold" else None
    test_size = 0.25 if folds else st.slider("Held-out fraction", 0.1, 0.5, 0.25, 0.05, key=f"{KEY}_test")
    seed = int(st.number_input("Seed", 0, 10_000, 0, key=f"{KEY}_seed"))

if not models:
    st.info("Pick at least one model in the sidebar.")
    st.stop()
ds = w.open_dataset_or_stop(spec)
st.write(f"**{ds.name}**: {len(ds)} images; " + ", ".join(
    f"{sum(lab is not None for lab in ds.labels(k))} with a **{k}** label ({len(ds.classes(k))} classes)"
    for k in labels) + ".")


def _layers_for(lm) -> list[str]:
    taps = [t.name for t in lm.taps()]
    if not max_layers or max_layers >= len(taps):
        return taps
    step = (len(taps) - 1) / max(1, max_layers - 1)
    return list(dict.fromkeys(taps[round(i * step)] for i in range(max_layers)))


request = {"models": list(models), "random": compare_random, "spec": spec, "fingerprint": ds.fingerprint(),
           "label": label, "max_layers": int(max_layers), "folds": folds, "test_size": test_size, "seed": seed}
results: dict = st.session_state.setdefault(f"{KEY}_results", {})
rkey = repr(sorted(request.items()))

c1, c2 = st.columns([1, 5])
run = c1.button("Run probes", type="primary", key=f"{KEY}_run")
stop = c2.button("Stop", key=f"{KEY}_stop", help="Interrupt a running computation.")
if stop:
    st.session_state.pop(f"{KEY}_pending", None)
    st.warning("Stopped. Features finished before the stop are cached; nothing half-done is kept.")
if run:
    st.session_state[f"{KEY}_pending"] = rkey

if st.session_state.get(f"{KEY}_pending") == rkey and rkey not in results:
    from vizcore.features import random_twin
    from vizcore.probes import Stopped, fit_probes

    if engine == "ray":
        w.ray_or_stop()
    done: list = []
    bar = st.progress(0.0, text="Starting…")
    twins = [False, True] if compare_random else [False]
    jobs = [(name, lab, twin) for name in models for lab in labels for twin in twins]
    try:
        for ji, (name, lab, twin) in enumerate(jobs):
            lm = w.get_model(name, "auto")
            net = random_twin(lm, seed) if twin else lm
            what = f"{name}{' (random init)' if twin else ''}, {lab}"

            def progress(stage: str, d: int, t: int, ji=ji, what=what) -> None:
                frac = 0.6 * d / max(1, t) if stage.endswith("features") else 0.6 + 0.4 * d / max(1, t)
                bar.progress(min(1.0, (ji + frac) / len(jobs)), text=f"{what}: {stage} {d}/{t}")

            res = fit_probes(net, ds, layers=_layers_for(lm), label=lab, folds=folds, test_size=test_size,
                             seed=seed, workers=0, batch_size=16, progress=progress, engine=engine)
            done.append(res.to_json())
        results[rkey] = done
        bar.progress(1.0, text="Done")
    except (ValueError, Stopped) as e:
        st.error(str(e))
        st.session_state.pop(f"{KEY}_pending", None)
        st.stop()
    st.session_state.pop(f"{KEY}_pending", None)

if rkey not in results:
    st.info("Press **Run probes**. Features and fits are cached on disk, so a repeated run is instant.")
    st.stop()

# ----------------------------------------------------------------------------- results
import pandas as pd  # noqa: E402
import plotly.graph_objects as go  # noqa: E402

from vizcore.probes import ProbeResult  # noqa: E402

rows = []
for d in results[rkey]:
    rows += ProbeResult.from_json(d).to_rows()
df = pd.DataFrame(rows)
df["run"] = df["model"] + " · " + df["weights"].map(lambda s: "random init" if s == "random" else "pretrained")
if len(labels) > 1:
    df["run"] += " · " + df["label"]
df["relative depth"] = df.groupby("run")["depth"].transform(lambda s: s / max(1, s.max()))
first = ProbeResult.from_json(results[rkey][0])
n_classes = len(first.classes)
st.success(f"Probed {df[['model', 'weights']].drop_duplicates().shape[0]} network(s) on **{label}** "
           f"({n_classes} classes, {first.split}, n_train={first.n_train}, n_test={first.n_test}).")

x_axis = "layer" if len(models) == 1 else "relative depth"
fig = go.Figure()
for run_name, g in df.groupby("run", sort=False):
    fig.add_trace(go.Scatter(
        x=g[x_axis], y=g["accuracy"], mode="lines+markers", name=run_name,
        line={"dash": "dot" if "random" in run_name else "solid"}, legendgroup=run_name,
        error_y={"type": "data", "symmetric": False, "array": g["ci_high"] - g["accuracy"],
                 "arrayminus": g["accuracy"] - g["ci_low"]},
        customdata=g[["layer", "n_features", "ci_low", "ci_high"]].to_numpy(),
        hovertemplate="%{customdata[0]}<br>accuracy %{y:.3f} [%{customdata[2]:.3f}, %{customdata[3]:.3f}]"
                      "<br>%{customdata[1]} features<extra></extra>"))
if len(labels) == 1:
    fig.add_hline(y=1 / max(1, n_classes), line_dash="dash", line_color="grey", annotation_text="chance")
fig.update_layout(xaxis_title="layer" if x_axis == "layer" else "relative depth (0 = first tap, 1 = last)",
                  yaxis_title=f"{label} accuracy (test)", yaxis_range=[0, 1.02], height=460,
                  legend={"orientation": "h", "y": -0.25})
st.plotly_chart(fig, width="stretch", key=f"{KEY}_chart")

table = df[["model", "weights", "label", "depth", "layer", "accuracy", "ci_low", "ci_high", "n_features",
            "n_train", "n_test"]]
st.dataframe(table, hide_index=True, width="stretch", key=f"{KEY}_table")
st.download_button("Download table (CSV)", table.to_csv(index=False).encode(), file_name=f"probes_{'_'.join(labels)}.csv",
                   mime="text/csv", key=f"{KEY}_download")
