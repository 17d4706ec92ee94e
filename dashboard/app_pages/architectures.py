"""Architectures: per-layer parameters, MACs, receptive field and jump, several networks at once.

UI only: the engine call is :func:`vizcore.summary.summarize` (models traced on the meta
device, no weights), cached with ``st.cache_data``.

Readable at a glance: counts in SI units (1.85 G, 138.4 M), every row shown (no scroll box),
log axes with one tick per decade labelled 10, 100, 1k, and one strongly distinct colour (and
marker) per network.
"""
from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st
from plotly.colors import qualitative

from dashboard.widgets import current_image, from_raw, image_payload, show_error
from vizcore.models import list_models

KEY = "architectures"
DEFAULT = ["vgg16", "googlenet", "resnet50"]
# Strongly distinct hues first (ColorBrewer Set1 without its yellow, hard to see on white), then Dark2.
COLOURS = [c for c in qualitative.Set1 if c != "rgb(255,255,51)"] + list(qualitative.Dark2)
SYMBOLS = ["circle", "square", "diamond", "triangle-up", "x", "cross", "star", "triangle-down"]


def si(x: float) -> str:
    """``1.85 G``, ``138.4 M``, ``36.9 k``, ``512``: counts a person reads at a glance."""
    x = float(x)
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            v = x / scale
            return f"{v:.2f} {unit}" if abs(v) < 10 else f"{v:.1f} {unit}"
    return f"{x:.0f}"


def percent_diff(a: float, b: float) -> str:
    """``a`` relative to ``b``: ``-23.1 %``, ``+0.0 %``."""
    return "n/a" if not b else f"{100 * (a - b) / b:+.1f} %"


def readable_axes(fig, log_y: bool) -> None:
    """One tick per decade on log axes, SI labels (10, 100, 1k, 1M, 1G) on both kinds."""
    fig.update_yaxes(tickformat="~s", **({"dtick": 1} if log_y else {}))

st.title("Architectures")
st.caption("How big each layer is, what it costs and how much of the image its units see: output "
           "shape, parameters, multiply-accumulates (MACs), receptive field and jump (effective "
           "stride) per layer, computed from the architecture alone (no weights are loaded).")


@st.cache_data(show_spinner=False, max_entries=256)
def summary_json(name: str, size: int | None, layers: str) -> dict:
    from vizcore.summary import summarize

    return summarize(name, size, layers=layers).to_json()


@st.cache_data(show_spinner=False)
def inception_json(size: int) -> list[dict]:
    from vizcore.summary import inception_table

    tv = inception_table(size, variant="torchvision")
    paper = inception_table(size, variant="paper")
    return [{"block": t.block, "output": "x".join(map(str, t.output_shape)),
             "params (tv)": si(t.params), "params (paper layout)": si(p.conv_weights),
             "params (Table 1)": si(p.paper_params),
             "MACs (tv)": si(t.macs), "MACs (paper layout)": si(p.macs), "ops (Table 1)": si(p.paper_ops),
             "tv vs Table 1": percent_diff(t.macs, p.paper_ops),
             "paper layout vs Table 1": percent_diff(p.macs, p.paper_ops)}
            for t, p in zip(tv, paper)]


@st.cache_data(show_spinner=False, max_entries=64)
def rf_picture(digest: str, _raw: bytes, raw_size: tuple[int, int], size: int, rf: int, jump: int, start: float,
               h: int, w: int, y: int, x: int) -> bytes:
    """The session's image at the input size with unit (y, x)'s receptive field and the unit centres."""
    import io

    from PIL import ImageDraw, ImageOps

    from vizcore.summary import Geometry, rf_box

    img = ImageOps.fit(from_raw(_raw, raw_size), (size, size)).convert("RGB")
    draw = ImageDraw.Draw(img, "RGBA")
    if h * w <= 4096:
        for i in range(h):
            for j in range(w):
                cy, cx = start + jump * i, start + jump * j
                if 0 <= cy < size and 0 <= cx < size:
                    draw.ellipse((cx - 1, cy - 1, cx + 1, cy + 1), fill=(255, 255, 0, 160))
    x0, y0, x1, y1 = rf_box(Geometry(rf, jump, start), y, x, size)
    draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=(255, 0, 0, 255), width=2, fill=(255, 0, 0, 50))
    cy, cx = start + jump * y, start + jump * x
    draw.ellipse((cx - 3, cy - 3, cx + 3, cy + 3), fill=(255, 0, 0, 255))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def frame(js: dict) -> pd.DataFrame:
    df = pd.DataFrame(js["layers"])
    if df.empty:
        return df
    df["output_shape"] = df["output_shape"].map(lambda s: "x".join(map(str, s)))
    n = len(df)
    df.insert(0, "depth", [i / (n - 1) if n > 1 else 0.0 for i in range(n)])
    df.insert(0, "model", js["model"])
    return df


with st.sidebar:
    st.subheader("Architectures")
    names = list_models()
    chosen = st.multiselect("Networks", names, default=[n for n in DEFAULT if n in names],
                            key=f"{KEY}_models", help="Compare several at once in the charts below.")
    extra = st.text_input("…and timm models (comma separated)", value="", key=f"{KEY}_timm",
                          placeholder="timm/convnext_tiny, timm/resnet26")
    chosen += [e if e.startswith("timm/") else f"timm/{e}" for e in (x.strip() for x in extra.split(",")) if e]
    own = st.toggle("Each network's own input size", value=True, key=f"{KEY}_own_size",
                    help="Off: trace every network at the size below.")
    size = st.number_input("Input size (pixels)", min_value=32, max_value=1024, value=224, step=16,
                           key=f"{KEY}_size", disabled=own)
    rows_mode = st.radio("Rows", ["taps", "all"], key=f"{KEY}_rows", horizontal=True,
                         format_func={"taps": "curated taps", "all": "every leaf module"}.get,
                         help="Taps: params and MACs of the network since the previous tap, so rows add "
                              "up to the total. All: each leaf module's own.")

if not chosen:
    st.info("Choose one or more networks in the sidebar.")
    st.stop()

summaries: dict[str, dict] = {}
with st.spinner("Tracing architectures…"):
    for name in dict.fromkeys(chosen):
        try:
            summaries[name] = summary_json(name, None if own else int(size), rows_mode)
        except Exception as e:  # noqa: BLE001 - unknown timm name, input too small, ...
            show_error(e, name)
if not summaries:
    st.stop()

st.subheader("Totals")
totals = pd.DataFrame([{"model": n, "input size": js["input_size"], "layers": len(js["layers"]),
                        "parameters (M)": js["total_params"] / 1e6, "MACs (G)": js["total_macs"] / 1e9}
                       for n, js in summaries.items()])
st.dataframe(totals, hide_index=True,
             column_config={"parameters (M)": st.column_config.NumberColumn(format="%.2f"),
                            "MACs (G)": st.column_config.NumberColumn(format="%.3f")})

st.subheader("Per layer")
table_model = st.selectbox("Network", list(summaries), key=f"{KEY}_table_model")
js = summaries[table_model]
c1, c2, c3 = st.columns(3)
c1.metric("Parameters", si(js["total_params"]))
c2.metric("MACs per image", si(js["total_macs"]))
c3.metric("Input", f"{js['input_size']} x {js['input_size']}")
df = frame(js)
shown = df.drop(columns=["model"])
shown["params"] = shown["params"].map(si)
shown["macs"] = shown["macs"].map(si)
st.dataframe(
    shown, hide_index=True, width="stretch", height="content",  # every row, no 10-row scroll box
    column_config={
        "depth": st.column_config.NumberColumn("relative depth", format="%.2f"),
        "output_shape": "output (C x H x W)",
        "params": st.column_config.TextColumn("params", help="k = 10³, M = 10⁶, G = 10⁹"),
        "macs": st.column_config.TextColumn("MACs",
                                            help="multiply-accumulates per image; k = 10³, M = 10⁶, G = 10⁹"),
        "rf": st.column_config.NumberColumn("receptive field (px)", help="theoretical, in input pixels"),
        "jump": st.column_config.NumberColumn("jump (px)", help="input pixels between neighbouring units"),
        "start": st.column_config.NumberColumn("start", help="input coordinate of the centre of unit (0, 0)'s field",
                                               format="%.1f"),
    })
st.download_button("Download table (CSV, exact counts)", df.to_csv(index=False).encode(),
                   file_name=f"{table_model}_layers.csv", mime="text/csv", key=f"{KEY}_csv")
st.caption("Rows in network order; the CSV has the exact counts. Receptive fields can exceed the input: they "
           "include the padding. Layers after global pooling (or a squeeze-and-excitation gate) see the whole image.")

st.subheader("What one unit sees")
spatial = [r for r in js["layers"] if len(r["output_shape"]) == 3]
if spatial:
    c1, c2 = st.columns([1, 2])
    with c1:
        layer = st.selectbox("Layer", [r["name"] for r in spatial], index=len(spatial) // 2,
                             key=f"{KEY}_rf_layer_{table_model}")
        row = next(r for r in spatial if r["name"] == layer)
        h, wd = row["output_shape"][1:]
        uy = st.slider("Unit row", 0, max(h - 1, 0), h // 2, key=f"{KEY}_rf_y_{table_model}_{layer}",
                       disabled=h <= 1)
        ux = st.slider("Unit column", 0, max(wd - 1, 0), wd // 2, key=f"{KEY}_rf_x_{table_model}_{layer}",
                       disabled=wd <= 1)
        session_img, session_name = current_image()  # the session's image, as on every page
        st.caption(f"{layer}: receptive field {row['rf']} px, jump {row['jump']} px. Red: the field of "
                   f"unit ({uy}, {ux}), clipped to the image; dots: the centres of the layer's units. "
                   f"The image is the session's ({session_name}): change it on any page.")
    with c2:
        digest, raw, raw_size = image_payload(session_img)
        st.image(rf_picture(digest, raw, raw_size, js["input_size"], row["rf"], row["jump"], row["start"], h, wd,
                            uy, ux),
                 caption=f"{table_model} at {js['input_size']} px on {session_name}",
                 width=min(448, 2 * js["input_size"]))

st.subheader("Against depth")
all_df = pd.concat([frame(j) for j in summaries.values()], ignore_index=True)
log_y = st.toggle("Logarithmic y axes", value=True, key=f"{KEY}_log")
cumulative = st.toggle("Cumulative parameters and MACs", value=False, key=f"{KEY}_cum")
if cumulative:
    all_df["params"] = all_df.groupby("model")["params"].cumsum()
    all_df["macs"] = all_df.groupby("model")["macs"].cumsum()
hover = ["name", "kind", "output_shape", "jump"]
for col, title in (("params", "Parameters"), ("macs", "Multiply-accumulates"), ("rf", "Receptive field (pixels)")):
    # on a log axis, layers without parameters or MACs (pools, activations) are left out
    data = all_df[all_df[col] > 0] if log_y else all_df
    fig = px.line(data, x="depth", y=col, color="model", symbol="model", markers=True, hover_data=hover,
                  log_y=log_y, title=title, labels={"depth": "relative depth (first tap 0, last 1)", col: title},
                  color_discrete_sequence=COLOURS, symbol_sequence=SYMBOLS,
                  category_orders={"model": list(summaries)})
    fig.update_traces(line={"width": 2.5}, marker={"size": 7})
    readable_axes(fig, log_y)
    fig.update_layout(height=340, margin=dict(l=10, r=10, t=40, b=10), legend_title_text="")
    st.plotly_chart(fig, key=f"{KEY}_chart_{col}")

if "googlenet" in summaries:
    with st.expander("GoogLeNet's inception blocks beside the paper's Table 1", expanded=False):
        st.markdown(
            "Szegedy et al. 2015 ([arXiv:1409.4842](https://arxiv.org/abs/1409.4842)), Table 1. "
            "torchvision's GoogLeNet uses a **3x3** convolution in the \"5x5\" branch (pytorch/vision#906), "
            "BatchNorm after every convolution and no LRN, so it has fewer weights and MACs; the "
            "*paper layout* columns put the 5x5 convolutions back and match the paper's ops column. "
            "The last two columns: each layout's MACs against Table 1's ops (tv: torchvision).")
        st.dataframe(pd.DataFrame(inception_json(summaries["googlenet"]["input_size"])), hide_index=True,
                     width="stretch", height="content")
