"""Model zoo: registry, builders, weight resolution (see :mod:`.registry`, :mod:`.loading`, :mod:`.building`,
:mod:`.checkpoints`, :mod:`.downloads`, :mod:`.memory`)."""
from vizcore.models.building import LoadedModel, WeightsInfo, build, resolve_layer, tap_label, taps_for
from vizcore.models.checkpoints import WeightsError, read_checkpoint
from vizcore.models.loading import clear_cache, load_model, loaded_models, resolve_weights, weights_available
from vizcore.models.memory import ModelTooLargeError, model_memory_budget_mb
from vizcore.models.registry import (
    ModelSpec,
    Preprocess,
    Tap,
    UnknownLayerError,
    UnknownModelError,
    WeightSource,
    get_spec,
    list_models,
    register,
)

from vizcore.models import zoo  # noqa: E402,F401 - the built-in architectures register themselves on import

DEFAULT_MODEL = "efficientnet_lite0"

__all__ = [
    "DEFAULT_MODEL", "LoadedModel", "ModelSpec", "ModelTooLargeError", "Preprocess", "Tap", "UnknownLayerError",
    "UnknownModelError", "WeightSource", "WeightsError", "WeightsInfo", "build", "clear_cache",
    "get_spec", "list_models", "load_model", "loaded_models", "model_memory_budget_mb", "read_checkpoint", "register", "resolve_layer",
    "resolve_weights", "tap_label", "taps_for", "weights_available",
]
