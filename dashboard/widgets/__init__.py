"""Widgets shared by every page, one module per concern.

- :mod:`.models`: model, weights and layer pickers; the shared model cache.
- :mod:`.images`: the session's one image (upload or built-in, shared by every page), digests, payloads.
- :mod:`.activations`: cached engine calls of the Activations and Compare pages.
- :mod:`.figures`: plotly figures shared by pages.
- :mod:`.datasets`: the dataset widgets of the dataset-driven pages.
- :mod:`.links`: cross-page links (the channel a page opens on, the unit page's address).
- :mod:`.errors`: one error line per failure, tracebacks only with ``VIZCORE_DEBUG=1``.
- :mod:`.text`: :func:`plain`, a visitor's text (address, file name, path, text box) shown as text.
- :mod:`.progress`: the one progress widget of long jobs (time left, Run/Stop, partial results).

Pages import this package as ``w`` and use the names re-exported here.
Session-state keys are prefixed with the calling page's ``key``.
"""
from dashboard.widgets.activations import (
    GRID_ORDERS, activation_overview, cached_extract, cached_gradcam, cached_grids,
)
from dashboard.widgets.datasets import (
    DATASET_SOURCES, ENGINES, SESSION_DATASET, SHARED_DATA, allowed_path_or_stop, data_roots, dataset_input,
    dataset_ref, dataset_spec, engine_input, offered_imagenet, open_dataset_or_stop, ray_or_stop, run_options,
    session_dataset, set_session_dataset,
)
from dashboard.widgets.errors import errors_shown, one_line, show_error
from dashboard.widgets.figures import colorscale, nearest_tap, predictions_figure, shape_bias_figure, vector_figure
from dashboard.widgets.images import (
    SESSION_IMAGE, current_image, from_raw, image_digest, image_input, image_payload, png_bytes, session_image,
    set_session_image, short_name, thumbnail,
)
from dashboard.widgets.links import (
    PAGE_DATASET_EXAMPLES, PAGE_FEATURE_VIZ, PAGE_UNIT, channel_links, receive_channel_target, set_channel_target,
    set_unit_address, unit_address, unit_link, unit_params, unit_url,
)
from dashboard.widgets.models import (
    backbone_models, get_model, layer_picker, load_model_or_stop, model_label, model_picker, trained_models,
    trained_now, weights_badge, weights_note, weights_now, weights_picker,
)
from dashboard.widgets.progress import duration, eta_text, progress_bar, stepped_job
from dashboard.widgets.text import plain

__all__ = [
    "DATASET_SOURCES", "ENGINES", "GRID_ORDERS", "PAGE_DATASET_EXAMPLES", "PAGE_FEATURE_VIZ", "SHARED_DATA",
    "activation_overview", "cached_extract", "cached_gradcam", "cached_grids", "channel_links", "current_image",
    "dataset_input", "duration", "engine_input", "eta_text", "from_raw", "get_model", "image_digest", "image_input",
    "image_payload", "layer_picker", "load_model_or_stop", "model_label", "model_picker", "nearest_tap",
    "open_dataset_or_stop", "png_bytes", "predictions_figure", "progress_bar", "ray_or_stop", "receive_channel_target",
    "SESSION_IMAGE", "session_image", "set_channel_target", "set_session_image", "stepped_job", "thumbnail", "trained_models",
    "trained_now", "PAGE_UNIT", "unit_link", "unit_params", "unit_url", "vector_figure", "weights_badge",
    "weights_now", "weights_picker",
]
__all__ += ["allowed_path_or_stop", "data_roots", "errors_shown", "one_line", "plain", "show_error"]
__all__ += ["set_unit_address", "shape_bias_figure", "unit_address"]
__all__ += ["short_name", "weights_note"]
__all__ += ["SESSION_DATASET", "dataset_ref", "dataset_spec", "offered_imagenet", "session_dataset",
            "set_session_dataset"]
__all__ += ["colorscale"]
__all__ += ["backbone_models"]
