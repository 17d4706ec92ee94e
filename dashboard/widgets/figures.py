"""Plotly figures shared by pages, colour scales, and small layout helpers."""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from vizcore.cueconflict import Reference, ShapeBiasResult

# Streamlit's plotly theme writes its colours as placeholders #000001-#000040 and the browser swaps
# every such string in the figure for a theme colour. A colour scale that happens to contain one
# (Magma and Inferno begin with #000004, the placeholder of the 4th category colour, a light pink)
# is drawn with that colour at its dark end. Nothing in plotly or streamlit avoids it, hence this.
_THEME_PLACEHOLDER = re.compile(r"#0000[0-9a-f]{2}", re.IGNORECASE)


def colorscale(name: str) -> list[list]:
    """plotly's continuous colour scale ``name`` (e.g. ``"Magma"``, ``"Viridis"``) as
    ``[[position, "#rrggbb"], ...]``, safe under Streamlit's plotly theme: a stop that would collide
    with one of the theme's placeholder colours moves to the indistinguishable ``#0100xx``."""
    import plotly.colors as pc

    out = []
    for pos, colour in pc.get_colorscale(name):
        rgb = pc.unlabel_rgb(colour) if colour.startswith("rgb") else pc.hex_to_rgb(colour)
        hexa = "#%02x%02x%02x" % tuple(int(round(float(v))) for v in rgb)
        if _THEME_PLACEHOLDER.fullmatch(hexa):
            hexa = "#01" + hexa[3:]
        out.append([float(pos), hexa])
    return out


def predictions_figure(preds: Sequence[tuple[int, str, float]], *, height: int = 220):
    """A horizontal plotly bar chart of top-k ``(index, label, prob)``, best on top."""
    import plotly.graph_objects as go

    preds = list(preds)[::-1]
    fig = go.Figure(go.Bar(
        x=[p[2] for p in preds], y=[f"{p[1]} ({p[0]})" for p in preds], orientation="h",
        text=[f"{p[2]:.1%}" for p in preds], textposition="auto",
        hovertemplate="%{y}: %{x:.2%}<extra></extra>"))
    fig.update_layout(height=height, margin=dict(l=0, r=0, t=10, b=0),
                      xaxis=dict(title="probability", range=[0, max([p[2] for p in preds] + [0.05]) * 1.05],
                                 tickformat=".0%"),
                      yaxis=dict(automargin=True))
    return fig


def vector_figure(channels: Sequence[int], values: Sequence[float], *, height: int = 200):
    """Top units of a non-spatial layer (pooled features, fc, logits) as a bar chart."""
    import plotly.graph_objects as go

    fig = go.Figure(go.Bar(x=[str(c) for c in channels], y=list(values),
                           hovertemplate="unit %{x}: %{y:.3f}<extra></extra>"))
    fig.update_layout(height=height, margin=dict(l=0, r=0, t=10, b=0),
                      xaxis=dict(title="unit", type="category"), yaxis=dict(title="activation"))
    return fig


def nearest_tap(names: Sequence[str], depth: float) -> tuple[int, float]:
    """Index of the tap whose relative depth (position / (n - 1), 0 = first, 1 = last) is
    nearest ``depth``, and that relative depth. Ties go to the shallower tap."""
    n = len(names)
    if n == 0:
        raise ValueError("no taps to choose from")
    if n == 1:
        return 0, 0.0
    rel = [i / (n - 1) for i in range(n)]
    i = min(range(n), key=lambda j: (abs(rel[j] - depth), j))
    return i, rel[i]


def shape_bias_figure(results: dict[str, "ShapeBiasResult"], refs: Sequence["Reference"] | None = None):
    """Per category, the fraction of shape decisions (0 = texture, 1 = shape); one colour per model,
    its overall shape bias as a vertical line; published values in their own rows, in grey
    (Geirhos et al. 2019, figure 4; the Texture vs shape page)."""
    import plotly.graph_objects as go
    from plotly.colors import qualitative

    from vizcore import cueconflict as cc

    refs = cc.REFERENCES if refs is None else refs
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
            x=[pc[c] for c in ys], y=ys, mode="markers", name=f"{name} ({'–' if r.shape_bias is None else f'{r.shape_bias:.3f}'})",
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
