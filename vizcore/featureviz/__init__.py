"""Feature visualisation by gradient ascent on the input (Olah et al. 2017).

Three small parts joined by one function, after Lucent's ``optvis``:
:mod:`.param` (what is optimised), :mod:`.transforms` (robustness),
:mod:`.objectives` (what is maximised), and :func:`render` in :mod:`.render`.
"""
from vizcore.featureviz import objectives, param, transforms
from vizcore.featureviz.objectives import Objective, channel, diversity, direction, layer, neuron, parse
from vizcore.featureviz.render import FeatureVizResult, best_dataset_value, render, to_pil, unit_objective

__all__ = [
    "FeatureVizResult", "Objective", "best_dataset_value", "channel", "direction", "diversity", "layer",
    "neuron", "objectives", "param", "parse", "render", "to_pil", "transforms", "unit_objective",
]
