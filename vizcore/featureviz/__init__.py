"""Feature visualisation by gradient ascent on the input (Olah et al. 2017).

Three small parts joined by one function, after Lucent's ``optvis``:
:mod:`.param` (what is optimised), :mod:`.transforms` (robustness),
:mod:`.objectives` (what is maximised), and :func:`render` in :mod:`.render`.
:class:`FeatVizJob` and :func:`featviz_jobs` (:mod:`.cached`) are the job-layer form (one cached
batch of channels per job), :func:`render_cached` the cached call; :func:`parse_channels`
(:mod:`.channels`) reads channel lists such as ``"0-15"`` for the CLI and the dashboard.
"""
from vizcore.featureviz import objectives, param, transforms
from vizcore.featureviz.cached import FeatVizJob, featviz_jobs, render_cached, render_key
from vizcore.featureviz.channels import ChannelSpecError, parse_channels
from vizcore.featureviz.objectives import Objective, channel, diversity, direction, layer, neuron, parse
from vizcore.featureviz.render import FeatureVizResult, best_dataset_value, render, render_batch, to_pil, unit_objective

__all__ = [
    "ChannelSpecError", "FeatVizJob", "FeatureVizResult", "Objective", "best_dataset_value", "channel", "direction",
    "diversity", "layer", "neuron", "objectives", "param", "parse", "parse_channels", "render", "render_batch", "render_cached", "featviz_jobs",
    "render_key", "to_pil", "transforms", "unit_objective",
]
