"""Model zoo: registry, builders, weight resolution (see :mod:`.registry`, :mod:`.loading`)."""
from vizcore.models.loading import (
    LoadedModel,
    ModelMemoryBusyError,
    ModelTooLargeError,
    WeightsError,
    WeightsInfo,
    build,
    clear_cache,
    load_model,
    loaded_models,
    model_memory_budget_mb,
    read_checkpoint,
    release_memory,
    resolve_layer,
    resolve_weights,
    tap_label,
    taps_for,
    weights_available,
)
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

DEFAULT_MODEL = "efficientnet_lite0"

__all__ = [
    "DEFAULT_MODEL", "LoadedModel", "ModelSpec", "ModelTooLargeError", "Preprocess", "Tap", "UnknownLayerError",
    "UnknownModelError", "WeightSource", "WeightsError", "WeightsInfo", "build", "clear_cache",
    "get_spec", "list_models", "load_model", "loaded_models", "model_memory_budget_mb", "read_checkpoint", "register", "resolve_layer",
    "resolve_weights", "tap_label", "taps_for", "weights_available",
]
__all__ += ["ModelMemoryBusyError", "release_memory"]
