"""Model, weights and layer pickers; models come from the engine's budgeted cache.

:func:`get_model` calls :func:`vizcore.models.load_model` directly, whose process-wide cache is
shared by all sessions and bounded by ``$VIZCORE_MODEL_MEMORY_MB`` (least recently used evicted
first). ``st.cache_resource`` would keep every model a visitor ever named for the life of the
server, so it is not used here. Models are never mutated (hooks are attached per call by
:func:`vizcore.tap.tap`).
"""
from __future__ import annotations

import threading
import warnings
from typing import Sequence

import streamlit as st

from dashboard.widgets.errors import show_error
from dashboard.widgets.text import plain
from vizcore.models import DEFAULT_MODEL, LoadedModel, get_spec, list_models, load_model, require_task, weights_available

# ------------------------------------------------------------------ weights available now
_AVAILABLE: dict[str, str] = {}
_AVAILABLE_LOCK = threading.Lock()
TRAINED_NOW = ("package", "hub-cache")
"""Sources that give trained weights without a network: what offline defaults may use."""


def weights_now(name: str) -> str:
    """The source ``weights="auto"`` would use for ``name`` now (as ``vizcore models`` says):
    ``package``, ``hub-cache``, ``download`` or ``random``.

    Cached per process: the answer can involve a network probe (a few seconds when offline
    without ``VIZCORE_OFFLINE``), and what is installed does not change while the app runs.
    """
    with _AVAILABLE_LOCK:
        if name not in _AVAILABLE:
            try:
                _AVAILABLE[name] = weights_available(get_spec(name))
            except Exception:  # noqa: BLE001 - an unknown timm name: the loader will say why
                _AVAILABLE[name] = "random"
        return _AVAILABLE[name]


def trained_now(name: str) -> bool:
    """Trained weights are on this machine (bundled package or the torch hub cache)."""
    return weights_now(name) in TRAINED_NOW


MARKS = {"package": "trained (bundled)", "hub-cache": "trained (cached)", "download": "trained (download)",
         "random": "random init only"}


def model_label(name: str, weights: str = "auto") -> str:
    """``✓ efficientnet_lite0`` (trained weights now), ``○ vgg_c`` (random init only),
    ``⚄ resnet18`` (the random-init twin, a die for chance): a picker's option text, short enough
    for the sidebar's boxes and chips (where a longer one is cut off); :func:`weights_note` says
    where the weights come from."""
    if weights != "auto" and str(weights).startswith("random"):
        return f"⚄ {name}"
    return f"{'✓' if weights_now(name) != 'random' else '○'} {name}"


def weights_note(name: str) -> str:
    """``✓ trained (bundled)``, ``○ random init only``: where a model's weights come from now."""
    now = weights_now(name)
    return f"{'✓' if now != 'random' else '○'} {MARKS.get(now, now)}"


def trained_models(exclude: Sequence[str] = ()) -> list[str]:
    """Registered models with trained weights on this machine now, default model first."""
    names = [n for n in list_models() if n not in exclude and trained_now(n)]
    return sorted(names, key=lambda n: n != DEFAULT_MODEL)


def get_model(name: str, weights: str = "auto") -> LoadedModel:
    """The engine's cached model. No Streamlit element here: it is also called inside
    ``st.cache_data`` functions, whose elements Streamlit would record and replay."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_model(name, weights, progress=False)


def load_model_or_stop(name: str, weights: str = "auto", task: str | None = "classification") -> LoadedModel:
    """The cached model, or an error message and ``st.stop()`` (unknown timm name, unreadable weights,
    a model of another ``task`` such as a detector on a classification page, ...). ``task=None``
    takes any model: the pages that work on taps alone (a detector's or segmenter's backbone taps)."""
    try:
        if task is not None:
            require_task(name, task)
        with st.spinner("Loading model…"):  # shown only if loading takes a moment (a hit is instant)
            return get_model(name, weights)
    except Exception as e:  # noqa: BLE001 - any failure to build or load is shown, never raised
        show_error(e, f"Cannot load model {name!r}")
        st.stop()


BACKBONE_TASKS = ("detection", "segmentation")
"""Models whose taps are their backbone's (no classification head): offered by the pages that need taps only."""


def backbone_models() -> list[str]:
    """The registered detectors and segmenters, whose backbone taps the tap-only pages show."""
    return [n for t in BACKBONE_TASKS for n in list_models(task=t)]


def model_picker(key: str, *, label: str = "Model", default: str = DEFAULT_MODEL,
                 allow_timm: bool = True, backbones: bool = False) -> str:
    """A select box of registered models, plus a free-text ``timm/<name>`` option; with ``backbones``
    the detectors and segmenters follow the classifiers (pages that need the backbone's taps only)."""
    names = list_models() + (backbone_models() if backbones else [])
    # A value already in session state (another page preselected it) wins; passing no default
    # then avoids Streamlit's "default value but also set via Session State" warning.
    preset = st.session_state.get(f"{key}_model") in names
    choice = st.selectbox(label, names, index=0 if preset or default not in names else names.index(default),
                          key=f"{key}_model", format_func=model_label,
                          help="✓ trained weights are available now (bundled package, local cache or a "
                               "download); ○ only random initialisation: no published weights, or none "
                               "on this machine and no network. `vizcore models` lists the same.")
    st.caption(f"{choice}: {weights_note(choice)}" + (
        f" · a {get_spec(choice).task} model: its backbone's taps, no classification head"
        if get_spec(choice).task in BACKBONE_TASKS else ""))
    if allow_timm:
        custom = st.text_input("…or any timm model (timm/<name>)", value="", key=f"{key}_timm",
                               placeholder="timm/convnext_tiny")
        if custom.strip():
            return custom.strip() if custom.strip().startswith("timm/") else f"timm/{custom.strip()}"
    return choice


def weights_badge(lm: LoadedModel) -> None:
    """Show where the weights came from; a warning when they are random."""
    if lm.weights.pretrained:
        st.badge(f"weights: {lm.weights.source}", icon=":material/verified:", color="green")
        st.caption(plain(lm.weights.detail))
    else:
        st.badge("weights: random init", icon=":material/warning:", color="orange")
        if lm.weights.warning:
            st.caption(plain(lm.weights.warning))


def layer_picker(lm: LoadedModel, key: str, *, label: str = "Layer", multi: bool = False,
                 default: Sequence[str] | str | None = None):
    """Pick tap names of ``lm`` (network order)."""
    taps = [t.name for t in lm.taps()]
    if multi:
        return st.multiselect(label, taps, default=list(default or []), key=f"{key}_layers")
    idx = taps.index(default) if isinstance(default, str) and default in taps else max(0, len(taps) // 2)
    if st.session_state.get(f"{key}_layer") in taps:
        idx = 0  # the preset value wins; no competing default (see model_picker)
    return st.selectbox(label, taps, index=idx, key=f"{key}_layer")


def weights_picker(key: str, *, default: str = "auto") -> str:
    """Weight source: ``auto`` (bundled, hub cache, download, else random) or ``random``."""
    opts = ["auto", "random"]
    labels = {"auto": "best available (auto)", "random": "random init"}
    return st.radio("Weights", opts, index=opts.index(default), key=f"{key}_weights",
                    format_func=labels.__getitem__, horizontal=True,
                    help="auto: bundled package, local hub cache, download, and random "
                         "initialisation as the last resort; the badge says which was used.")


