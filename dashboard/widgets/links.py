"""Cross-page links: the channel a page should open on, and the unit page's address.

:func:`channel_links` sets ``st.session_state["channel_target"] = {"model", "layer", "channel"}``
and switches page; :func:`receive_channel_target` applies it once on the receiving page.
:func:`unit_url` / :func:`unit_link` point at the unit page, whose address names the unit
(``unit?model=...&weights=...&layer=...&channel=...[&dataset=...]``), so the link also works
pasted into a new browser. :func:`unit_address` reads that address on the unit page and
:func:`set_unit_address` writes it back: the one place the address is parsed and written. pasted into a new browser. ``dataset`` is a short name (:mod:`vizcore.data.refs`: ``imagenet-samples``,
``builtin``, ``<root>/<path>``), never a server path; links carry the session's dataset by default.
"""
from __future__ import annotations

from urllib.parse import urlencode

import streamlit as st

from dashboard import pages
from dashboard.widgets.datasets import session_dataset
from dashboard.widgets.text import plain
from vizcore.models import list_models

PAGE_DATASET_EXAMPLES = pages.DATASET_EXAMPLES.path
PAGE_FEATURE_VIZ = pages.FEATURE_VIZ.path
PAGE_UNIT = pages.UNIT.path
UNIT_URL_PATH = pages.UNIT.name
UNIT_PARAMS = ("model", "weights", "layer", "channel", "dataset")
"""The query parameters of a unit page's address, in order."""


def unit_params(model: str, weights: str, layer: str, channel: int, dataset: str | None = None) -> dict[str, str]:
    """The query parameters of a unit page (``dataset``, a short name, only when one is chosen)."""
    params = {"model": model, "weights": weights, "layer": layer, "channel": str(int(channel))}
    if dataset:
        params["dataset"] = dataset
    return params


def unit_url(model: str, weights: str, layer: str, channel: int, dataset: str | None = None) -> str:
    """The unit page's address relative to the app's root, e.g.
    ``unit?model=efficientnet_lite0&weights=auto&layer=blocks.4.0&channel=12``."""
    return f"{UNIT_URL_PATH}?{urlencode(unit_params(model, weights, layer, channel, dataset))}"


def unit_address(key: str) -> tuple[dict[str, str], bool]:
    """The unit the page should show, and whether it was just named by a new address.

    A new address (opened, pasted, a link followed) is remembered as wanted until the
    page writes its own (:func:`set_unit_address`); a bare ``/unit`` (from the navigation)
    comes back to the session's last unit. Returns ``(wanted parameters, fresh)``: the page
    applies the parameters to its sidebar only when ``fresh``.
    """
    url = {k: st.query_params[k] for k in UNIT_PARAMS if k in st.query_params}
    fresh = url != st.session_state.get(f"{key}_synced")
    if fresh:
        st.session_state[f"{key}_synced"] = url
        st.session_state[f"{key}_want"] = url or st.session_state.get(f"{key}_last") or {}
    return dict(st.session_state.get(f"{key}_want") or {}), fresh


def set_unit_address(key: str, model: str, weights: str, layer: str, channel: int,
                     dataset: str | None = None) -> dict[str, str]:
    """Write the unit shown into the page's address (so it can be shared) and remember it as the
    session's last unit; returns the parameters."""
    address = unit_params(model, weights, layer, channel, dataset)
    st.session_state[f"{key}_last"] = address
    if address != {k: st.query_params[k] for k in UNIT_PARAMS if k in st.query_params}:
        st.query_params.from_dict(address)
        st.session_state[f"{key}_synced"] = address
    return address


def unit_link(model: str, weights: str, layer: str, channel: int, dataset: str | None = None, *,
              label: str | None = None, help: str | None = None) -> None:
    """A link to the unit page of one channel (carries the session: its image stays, and its dataset
    unless ``dataset``, a short name, says another)."""
    st.page_link(PAGE_UNIT, label=label or f"Unit page: {plain(layer)} · {int(channel)}", icon=":material/my_location:",
                 query_params=unit_params(model, weights, layer, channel, dataset or session_dataset()),
                 help=help or "Everything about this channel on one page, at an address you can share.")


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
    if target["model"] in list_models(task=None):  # a detector's backbone tap too (pages that offer them)
        st.session_state[f"{key}_model"] = target["model"]
        st.session_state[f"{key}_timm"] = ""
    else:
        st.session_state[f"{key}_timm"] = target["model"]
    st.session_state[f"{key}_layer"] = target["layer"]
    return target


def channel_links(model: str, layer: str, channel: int, key: str, weights: str = "auto") -> None:
    """Buttons that open the Dataset examples / Feature visualisation pages on a channel, and a
    link to its unit page."""
    c1, c2, c3 = st.columns(3)
    if c1.button("Dataset examples", key=f"{key}_dsx", icon=":material/grid_view:",
                 help="Image patches that excite this channel most"):
        set_channel_target(model, layer, channel)
        st.switch_page(PAGE_DATASET_EXAMPLES)
    if c2.button("Feature visualisation", key=f"{key}_fv", icon=":material/palette:",
                 help="An image optimised to excite this channel"):
        set_channel_target(model, layer, channel)
        st.switch_page(PAGE_FEATURE_VIZ)
    with c3:
        unit_link(model, weights, layer, channel, label="Unit page")
