"""Feature visualisation by gradient ascent on the input (Olah et al. 2017).

Three small parts joined by one function, after Lucent's ``optvis``:
:mod:`.param` (what is optimised), :mod:`.transforms` (robustness),
:mod:`.objectives` (what is maximised), and :func:`render` in :mod:`.render`.
:func:`render_cached` (:mod:`.cached`) keeps results on disk; :func:`parse_channels`
(:mod:`.channels`) reads channel lists such as ``"0-15"`` for the CLI and the dashboard.
"""
from vizcore.featureviz import objectives, param, transforms
from vizcore.featureviz.cached import render_cached, render_key
from vizcore.featureviz.channels import ChannelSpecError, parse_channels
from vizcore.featureviz.objectives import Objective, channel, diversity, direction, layer, neuron, parse
from vizcore.featureviz.render import (
    FeatureVizResult, best_dataset_value, render, step_seconds, to_pil, unit_objective,
)

__all__ = [
    "ChannelSpecError", "FeatureVizResult", "Objective", "best_dataset_value", "channel", "direction",
    "diversity", "layer", "neuron", "objectives", "param", "parse", "parse_channels", "render", "render_cached",
    "render_key", "step_seconds", "to_pil", "transforms", "unit_objective",
]
