"""Cross-page links: the channel a page should open on.

:func:`channel_links` sets ``st.session_state["channel_target"] = {"model", "layer", "channel"}``
and switches page; :func:`receive_channel_target` applies it once on the receiving page.
"""
from __future__ import annotations

import streamlit as st

from vizcore.models import list_models

PAGE_DATASET_EXAMPLES = "app_pages/dataset_examples.py"
PAGE_FEATURE_VIZ = "app_pages/feature_viz.py"


def set_channel_target(model: str, layer: str, channel: int) -> dict:
    """Record the channel the other pages should open on (the cross-page contract)."""
    target = {"model": model, "layer": layer, "channel": int(channel)}
    st.session_state["channel_target"] = target
    return target


def receive_channel_target(key: str) -> dict | None:
    """The receiving half: preselect a page's model and layer pickers once per new ``channel_target``.

    Returns the new target (the page sets its own channel widgets from it), or ``None``
    when there is none or it was already applied.
    """
    target = st.session_state.get("channel_target")
    if not target or st.session_state.get(f"{key}_applied_target") == target:
        return None
    st.session_state[f"{key}_applied_target"] = dict(target)
    if target["model"] in list_models():
        st.session_state[f"{key}_model"] = target["model"]
        st.session_state[f"{key}_timm"] = ""
    else:
        st.session_state[f"{key}_timm"] = target["model"]
    st.session_state[f"{key}_layer"] = target["layer"]
    return target


def channel_links(model: str, layer: str, channel: int, key: str) -> None:
    """Two buttons that open the Dataset examples / Feature visualisation pages on a channel."""
    c1, c2 = st.columns(2)
    if c1.button("Dataset examples", key=f"{key}_dsx", icon=":material/grid_view:",
                 help="Image patches that excite this channel most"):
        set_channel_target(model, layer, channel)
        st.switch_page(PAGE_DATASET_EXAMPLES)
    if c2.button("Feature visualisation", key=f"{key}_fv", icon=":material/palette:",
                 help="An image optimised to excite this channel"):
        set_channel_target(model, layer, channel)
        st.switch_page(PAGE_FEATURE_VIZ)


