"""Feature visualisation: images optimised by gradient ascent to excite chosen channels.

UI only: the engine's :class:`vizcore.featureviz.FeatVizJob` (all chosen channels in one batch, the
forward pass stopping at the layer; results kept on disk keyed by the weights and every setting, so
asking again is instant) run by the job widget (:func:`dashboard.widgets.jobs.run_job`: progress,
time left, Stop, Resume, the images so far).
"""
from __future__ import annotations

import json

import streamlit as st

from dashboard import widgets as w
from vizcore.featureviz import parse_channels

KEY = "feature_viz"
SIZES = [64, 96, 128, 160, 192, 224]

st.title("Feature visualisation")
st.caption("Start from noise and follow the gradient until the image excites one channel as much as it "
           "can (Olah et al. 2017, [Distill](https://distill.pub/2017/feature-visualization/)). All chosen "
           "channels are optimised together, one image each, in a single batch.")


def _apply_channel_target() -> None:
    """Preselect the model/layer/channel sent by the Activations page (once per new target)."""
    target = w.receive_channel_target(KEY)
    if target:
        st.session_state[f"{KEY}_pick"] = "list"
        st.session_state[f"{KEY}_channels"] = [int(target["channel"])]


@st.cache_data(max_entries=64, show_spinner=False)
def _n_channels(model: str, weights: str, layer: str) -> int:
    import torch

    from vizcore.tap import forward_until, tap

    lm = w.get_model(model, weights)
    path = lm.resolve(layer)
    with torch.no_grad(), tap(lm.model, [path], stop=True, lock=lm.lock) as store:
        forward_until(lm.model, torch.zeros(1, 3, 64, 64, device=lm.device))
        return int(store[path].shape[1]) if store[path].dim() > 1 else 1


@st.cache_data(max_entries=64, show_spinner=False)
def _best_on_photos(model: str, weights: str, layer: str, channels: tuple[int, ...], size: int,
                    objective: str) -> list[float]:
    from vizcore.featureviz import best_dataset_value

    return best_dataset_value(w.get_model(model, weights), layer, list(channels), size=size, objective=objective)


@st.cache_data(max_entries=64, show_spinner="Timing a few optimisation steps on this machine…")
def _step_seconds(model: str, weights: str, layer: str, channels: tuple[int, ...], size: int, param: str,
                  objective: str, transforms: str, copies: int, diversity: float) -> float:
    """Seconds per optimisation step with these settings, measured here (3 steps; the first left out)."""
    from vizcore.featureviz import step_seconds

    return step_seconds(w.get_model(model, weights), layer, list(channels), size=size, param=param,
                        objective=objective, transforms=transforms, n_per_channel=copies, diversity=diversity)


_apply_channel_target()

with st.sidebar:
    st.subheader("Network")
    model = w.model_picker(KEY, backbones=True)  # a detector's or segmenter's backbone taps too
    weights = w.weights_picker(KEY)

lm = w.load_model_or_stop(model, weights, task=None)

taps = [t.name for t in lm.taps() if t.kind not in ("logits", "pool", "fc")]
if st.session_state.get(f"{KEY}_layer") not in taps:
    st.session_state.pop(f"{KEY}_layer", None)
top = st.columns([2, 3])
with top[0]:
    w.weights_badge(lm)
    preset = {} if f"{KEY}_layer" in st.session_state else {"index": min(len(taps) - 1, len(taps) // 2)}
    layer = st.selectbox("Layer", taps, **preset, key=f"{KEY}_layer",
                         help="Taps of the network; the forward pass stops here, so later layers cost nothing.")
    n_ch = _n_channels(model, weights, layer)
with top[1]:
    pick = st.radio("Choose channels by", ["list", "range"], key=f"{KEY}_pick", horizontal=True,
                    format_func={"list": "picking them", "range": "a range like 0-15"}.get)
    if pick == "list":
        chosen = st.session_state.get(f"{KEY}_channels")
        if chosen is not None and any(c >= n_ch for c in chosen):
            st.session_state[f"{KEY}_channels"] = [c for c in chosen if c < n_ch]
        preset = {} if f"{KEY}_channels" in st.session_state else {"default": list(range(min(4, n_ch)))}
        channels = st.multiselect(f"Channels (0-{n_ch - 1})", list(range(n_ch)), **preset, key=f"{KEY}_channels")
    else:
        text = st.text_input("Channel range", value=f"0-{min(7, n_ch - 1)}", key=f"{KEY}_range")
        try:
            channels = [c for c in parse_channels(text) if c < n_ch]
        except ValueError:  # ChannelSpecError: not a channel list
            st.error(w.plain(f"Cannot read {text!r}: use e.g. 0-15 or 3,7,12"))
            channels = []

with st.expander("Settings", expanded=False):
    c1, c2, c3 = st.columns(3)
    steps = c1.number_input("Steps", 1, 2048, 256, step=32, key=f"{KEY}_steps")
    size = c1.select_slider("Image size (px)", SIZES, value=128, key=f"{KEY}_size",
                            help="Smaller is much faster on a CPU; 224 px is the network's own size.")
    lr = c1.number_input("Learning rate (Adam)", 0.001, 1.0, 0.05, step=0.01, format="%.3f", key=f"{KEY}_lr")
    param = c2.radio("Parameterisation", ["fft", "pixel"], key=f"{KEY}_param", horizontal=True,
                     help="fft: Fourier coefficients scaled by 1/frequency, decorrelated colour "
                          "(structure appears much sooner); pixel: free pixel values.")
    objective = c2.selectbox("Objective", ["channel", "neuron", "-channel", "-neuron"], key=f"{KEY}_objective",
                             help="channel: mean over all positions; neuron: the centre position only; "
                                  "-: the negative (what the channel dislikes).")
    transforms = c2.selectbox("Robustness transforms", ["standard", "light", "lucent", "none"],
                              key=f"{KEY}_transforms",
                              help="Random shifts, scaling and rotation applied at each step.")
    seed = c3.number_input("Seed", 0, 2**31 - 1, 0, key=f"{KEY}_seed")
    copies = c3.number_input("Images per channel", 1, 8, 1, key=f"{KEY}_copies")
    diversity = c3.number_input("Diversity weight", 0.0, 1000.0, 0.0, step=10.0, key=f"{KEY}_diversity",
                                help="With several images per channel: push their textures apart "
                                     "(Gram-matrix similarity, Olah et al. 2017).")
    compare = c3.toggle("Compare with the built-in photos", value=True, key=f"{KEY}_compare",
                        help="Best value of the same objective over the sample photographs at this size.")

settings = {"model": model, "weights": weights, "layer": layer, "channels": [int(c) for c in channels],
            "steps": int(steps), "size": int(size), "lr": float(lr), "param": param, "objective": objective,
            "transforms": transforms, "seed": int(seed), "n_per_channel": int(copies),
            "diversity": float(diversity)}

if not channels:
    st.info("Choose at least one channel.")
    st.stop()
from dashboard.widgets.jobs import run_job  # noqa: E402
from vizcore.featureviz import FeatVizJob  # noqa: E402
from vizcore.jobs import RunOptions  # noqa: E402

# One FeatVizJob: every chosen channel in one batch, cached on disk by the weights' content and every
# setting (asking again is instant, without pressing anything); progress, Stop and Resume between steps.
job = FeatVizJob(lm, layer, channels, objective=objective, param=param, steps=int(steps), lr=float(lr),
                 size=int(size), seed=int(seed), transforms=transforms, diversity=float(diversity),
                 n_per_channel=int(copies))


def _so_far(results) -> None:
    cols = st.columns(8)
    for i, r in enumerate(results):
        cols[i % 8].image(w.png_bytes(r.image), caption=f"channel {r.channel} · step {r.steps_run}", width="stretch")


per_step = _step_seconds(model, weights, layer, tuple(int(c) for c in channels), int(size), param, objective,
                         transforms, int(copies), float(diversity))
estimate = (f"About {w.duration(int(steps) * per_step)} on this machine: {int(steps)} steps × "
            f"{per_step:.2f} s per step, measured just now for these settings.")
results = run_job(KEY, job, RunOptions(), what=f"Optimising {len(channels)} channel(s)", partial=_so_far,
                  units_per_step=8, idle_note=estimate)
if results is not None:
    if (st.session_state.get(f"{KEY}_shown") or {}).get("settings") != settings:
        st.session_state[f"{KEY}_shown"] = {"settings": settings, "results": [r.to_json() for r in results],
                                            "png": [w.png_bytes(r.image) for r in results]}


def explain_numbers(used: dict, res: list[dict], best: dict) -> str:
    """One line that says what the numbers under the images are, with the first image's own numbers."""
    r = res[0]
    what = {"channel": "the channel's mean activation", "neuron": "the activation at the centre of the map",
            "-channel": "minus the channel's mean activation", "-neuron": "minus the centre activation"}
    line = (f"**How to read the numbers** (e.g. channel {r['channel']}: objective {r['objective_start']:.3g} → "
            f"{r['objective_final']:.3g}" + (f"; best photo {best[r['channel']]:.3g}" if r["channel"] in best else "")
            + f"): the objective, {what.get(used['objective'], used['objective'])}, on the starting noise → "
            f"after {used['steps']} steps of gradient ascent")
    if best:
        line += ("; *photos best*: the largest value of the same objective over the built-in photos, for scale "
                 "(an image made for the channel usually beats every real photo)")
    return line + "."


shown = st.session_state.get(f"{KEY}_shown")
if shown:
    res, pngs, used = shown["results"], shown["png"], shown["settings"]
    best = {}
    if compare:
        with st.spinner("Scoring the built-in photos…"):
            vals = _best_on_photos(used["model"], used["weights"], used["layer"], tuple(used["channels"]),
                                   used["size"], used["objective"])
        best = dict(zip(used["channels"], vals))
    st.subheader(w.plain(f"{used['model']} · {used['layer']}"))
    st.caption(f"{used['steps']} steps at {used['size']} px, {used['param']} parameterisation, "
               f"{used['transforms']} transforms, seed {used['seed']}.")
    st.markdown(explain_numbers(used, res, best))
    st.download_button("Settings (JSON)", json.dumps({"settings": used, "results": res}, indent=2),
                       file_name=f"featviz_{used['model']}_{used['layer']}.json", mime="application/json",
                       key=f"{KEY}_dl_json")
    cols = st.columns(4)
    for i, (r, png) in enumerate(zip(res, pngs)):
        with cols[i % 4]:
            extra = f" · photos best {best[r['channel']]:.3g}" if r["channel"] in best else ""
            copy = f" #{r['copy'] + 1}" if used["n_per_channel"] > 1 else ""
            st.image(png, caption=f"channel {r['channel']}{copy}: {r['objective_start']:.3g} → "
                                  f"{r['objective_final']:.3g}{extra}", width="stretch")
            st.download_button("PNG", png, file_name=f"{used['layer']}_ch{r['channel']}_{r['copy']}.png",
                               mime="image/png", key=f"{KEY}_dl_{i}")
            if r["channel"] is not None:
                w.unit_link(used["model"], used["weights"], used["layer"], r["channel"], label="Unit page")
elif results is None:
    st.caption("Press Run to optimise the chosen channels; the estimate above is measured on this machine.")
