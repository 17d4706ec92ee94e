"""Checks of colour scales: every continuous scale a page or the engine draws must rise (or fall)
monotonically in lightness, so lighter always means more (or always less)."""
from __future__ import annotations

import json

import numpy as np


def lightness(rgb) -> np.ndarray:
    """CIELAB L* (0 black - 100 white, D65) of sRGB colours ``(..., 3)`` in 0-255."""
    c = np.asarray(rgb, dtype=float) / 255
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    y = lin @ np.array([0.2126, 0.7152, 0.0722])
    f = np.where(y > (6 / 29) ** 3, np.cbrt(y), y / (3 * (6 / 29) ** 2) + 4 / 29)
    return 116 * f - 16


def is_monotone(values, tol: float = 0.5) -> bool:
    """Non-decreasing or non-increasing, up to ``tol``."""
    d = np.diff(np.asarray(values, dtype=float))
    return bool((d >= -tol).all() or (d <= tol).all())


def _rgb(colour: str) -> tuple[int, int, int]:
    import plotly.colors as pc

    if colour.startswith("rgb"):
        return tuple(int(round(float(v))) for v in pc.unlabel_rgb(colour))
    return pc.hex_to_rgb(colour)


def theme_placeholders() -> set[str]:
    """The colours Streamlit's plotly theme sends as placeholders, which the browser replaces by theme
    colours (read from Streamlit itself, so a new placeholder is caught too)."""
    from streamlit.elements.lib import streamlit_plotly_theme as theme

    return {v.lower() for k, v in vars(theme).items() if k.isupper() and isinstance(v, str) and v.startswith("#")}


def figure_colorscales(spec: dict) -> list[list]:
    """Every continuous colour scale set on a trace (or its marker, or a colour axis) of a figure's JSON."""
    import plotly.colors as pc

    found = []

    def take(d: dict) -> None:
        cs = d.get("colorscale") if isinstance(d, dict) else None
        if cs is not None:
            found.append(pc.get_colorscale(cs) if isinstance(cs, str) else cs)

    for trace in spec.get("data", []):
        take(trace)
        take(trace.get("marker", {}))
    for k, v in spec.get("layout", {}).items():
        if k.startswith("coloraxis"):
            take(v)
    return found


def assert_page_colorscales_monotone(at) -> int:
    """Check every continuous colour scale of every plotly chart an AppTest shows: monotone in L*, and
    under Streamlit's theme free of the placeholders the browser would swap for theme colours.
    Returns how many scales were checked."""
    placeholders = theme_placeholders()
    n = 0
    for el in at.get("plotly_chart"):
        spec = json.loads(el.proto.spec)
        for cs in figure_colorscales(spec):
            colours = [str(c).lower() for _, c in cs]
            if el.proto.theme == "streamlit":
                clash = [c for c in colours if c in placeholders]
                assert not clash, f"{clash} would be drawn as Streamlit theme colours: {cs}"
            light = lightness([_rgb(c) for c in colours])
            assert is_monotone(light), f"colour scale not monotone in lightness (L* {np.round(light, 1)}): {cs}"
            n += 1
    return n
