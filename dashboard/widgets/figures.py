"""Plotly figures shared by pages, colour scales, and small layout helpers."""
from __future__ import annotations

import re
from typing import Sequence

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


