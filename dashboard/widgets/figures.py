"""Plotly figures shared by pages, and small layout helpers."""
from __future__ import annotations

from typing import Sequence


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


