"""Compare: one image through 2 to 4 architectures side by side, aligned by relative depth.

Relative depth of a tap is its position among the model's taps scaled to 0..1 (first tap 0,
last tap 1). The slider picks, in each model, the tap nearest that depth. Each model's full
extraction is cached, so moving the slider only re-draws.

Each entry of the model list is a network *with its weights*: ``name`` (the best weights
available, as everywhere) or ``name@random`` (its seeded random-init twin), so the same
architecture can be compared trained and untrained. The defaults use only weights on this
machine: the bundled model, its random twin and another installed trained model, if any.
"""
from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from dashboard import widgets as w
from vizcore.models import list_models

KEY = "compare"
RANDOM = "@random"


def _split(entry: str) -> tuple[str, str]:
    """``"resnet18@random"`` -> ``("resnet18", "random")``; ``"resnet18"`` -> ``("resnet18", "auto")``."""
    return (entry[: -len(RANDOM)], "random") if entry.endswith(RANDOM) else (entry, "auto")


def _label(entry: str) -> str:
    name, weights = _split(entry)
    return w.model_label(name, weights)


def default_entries(names: list[str]) -> list[str]:
    """The bundled model, its random-init twin, and one more model with trained weights on this machine."""
    first = next(iter(w.trained_models()), names[0])
    return [first, first + RANDOM] + w.trained_models(exclude=[first])[:1]

st.title("Compare architectures")
st.caption("The same image through several networks. Slide through relative depth to see what "
           "each network has made of the image at the same fraction of its depth.")

names = list_models()
with st.sidebar:
    st.subheader("Networks")
    entries = st.multiselect(
        "Models (2 to 4)", names + [n + RANDOM for n in names], default=default_entries(names),
        max_selections=4, key=f"{KEY}_models", format_func=_label,
        help="✓ trained weights available now; ○ random initialisation only. Every model is also "
             "listed as its random-init twin (seeded; ⚄), to compare the same network trained and untrained.")
    st.subheader("Channel grids")
    top = st.slider("Channels per grid", 4, 36, 16, step=4, key=f"{KEY}_top")
    order = st.radio("Rank channels by", w.GRID_ORDERS, key=f"{KEY}_order", horizontal=True)
    shared = st.toggle("Shared colour scale", key=f"{KEY}_shared")
    maps_only = st.toggle("Feature maps only", value=True, key=f"{KEY}_maps_only",
                          help="Align over layers with spatial maps only (skip pooled, fc and logits).")

image, caption = w.image_input(KEY)
if len(entries) < 2:
    st.warning("Choose at least two models in the sidebar to compare them.")
    st.stop()

depth = st.slider("Relative depth (0 = first layer, 1 = last)", 0.0, 1.0, 0.5, step=0.05,
                  key=f"{KEY}_depth")
digest, raw, size = w.image_payload(image)

curves = []
cols = st.columns(len(entries))
for col, entry in zip(cols, entries):
    model, weights = _split(entry)
    title = model if weights == "auto" else f"{model} (random init)"
    with col:
        st.subheader(w.plain(title))
        try:
            lm = w.get_model(model, weights)
        except Exception as e:  # noqa: BLE001 - show, keep the other columns alive
            w.show_error(e, f"Cannot load {model}")
            continue
        w.weights_badge(lm)
        try:
            with st.spinner(f"Running {w.plain(model)}…"):
                ov = w.activation_overview(model, weights, digest, raw, size)
                grids = w.cached_grids(model, weights, digest, raw, size, top=top, order=order,
                                       shared_scale=shared, cell=48)
        except Exception as e:  # noqa: BLE001 - show, keep the other columns alive
            w.show_error(e, f"{model} could not process {caption}")
            continue
        layers = [la for la in ov["layers"] if la["spatial"] or not maps_only]
        if not layers:
            st.info("This model has no taps with spatial maps.")
            continue
        idx, rel = w.nearest_tap([la["name"] for la in layers], depth)
        la = layers[idx]
        g = grids[la["name"]]
        shape = "×".join(map(str, la["shape"]))
        st.markdown(f"**{la['name']}** · {shape}  \ndepth {rel:.2f} (tap {idx + 1} of {len(layers)})")
        if g["png"] is not None:
            st.image(g["png"], output_format="PNG", caption=f"top {len(g['channels'])} channels by {order}: "
                     + ", ".join(map(str, g["channels"])))
        else:
            st.plotly_chart(w.vector_figure(g["channels"], g["values"], height=160),
                            key=f"{KEY}_vec_{entry}")
        st.caption(f"active units {la['frac_active'].mean():.1%} · mean {la['mean'].mean():.3g}")
        pick = st.selectbox("Channel of this grid", g["channels"], key=f"{KEY}_unit_{entry}_{la['name']}",
                            format_func=lambda c: f"channel {c}", label_visibility="collapsed")
        w.unit_link(model, weights, la["name"], pick, label=f"Unit page: {la['name']} · {pick}",
                    help="The chosen channel of the grid on its own page, at an address you can share.")
        if ov["predictions"]:
            st.plotly_chart(w.predictions_figure(ov["predictions"], height=180), key=f"{KEY}_pred_{entry}")
        else:
            st.caption("no ImageNet classification head: no predictions")
        n = len(layers)
        curves.append((title, [i / (n - 1) if n > 1 else 0.0 for i in range(n)],
                       [float(x["frac_active"].mean()) for x in layers], [x["name"] for x in layers]))

if curves:
    fig = go.Figure()
    for model, xs, ys, labels in curves:
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=model, text=labels,
                                 hovertemplate="%{text}: %{y:.1%}<extra>" + model + "</extra>"))
    fig.add_vline(x=depth, line_dash="dot")
    fig.update_layout(height=280, margin=dict(l=0, r=0, t=30, b=0),
                      title="Fraction of active units against relative depth",
                      xaxis=dict(title="relative depth", range=[-0.02, 1.02]),
                      yaxis=dict(title="active units", tickformat=".0%"))
    st.plotly_chart(fig, key=f"{KEY}_depth_chart")
