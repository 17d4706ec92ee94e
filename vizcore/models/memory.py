"""The model memory budget: ``$VIZCORE_MODEL_MEMORY_MB`` and the bytes a model holds.

:func:`vizcore.models.loading.load_model` keeps the process's models within it, evicting the
least recently used first, and refuses a model that alone exceeds it before reading any weights.
"""
from __future__ import annotations

import logging
import os
import warnings

import torch
import torch.nn as nn

from vizcore.models.registry import ModelSpec

log = logging.getLogger(__name__)


DEFAULT_MODEL_MEMORY_MB = 4096


class ModelTooLargeError(ValueError):
    """A model whose parameters and buffers alone exceed the model memory budget."""


def model_memory_budget_mb() -> float:
    """The budget of the process-wide model cache in MB (``$VIZCORE_MODEL_MEMORY_MB``, default 4096).

    Read at every load, so a server (or a test) can change it without a restart.
    """
    raw = os.environ.get("VIZCORE_MODEL_MEMORY_MB", "").strip()
    if not raw:
        return float(DEFAULT_MODEL_MEMORY_MB)
    try:
        mb = float(raw)
    except ValueError:
        raise ValueError(f"VIZCORE_MODEL_MEMORY_MB must be a number of MB, not {raw!r}") from None
    if mb <= 0:
        raise ValueError(f"VIZCORE_MODEL_MEMORY_MB must be positive, not {raw!r}")
    return mb


def module_bytes(model: nn.Module) -> int:
    """Bytes held by the parameters and buffers of ``model`` (shared tensors counted once)."""
    seen: set[int] = set()
    total = 0
    for t in [*model.parameters(), *model.buffers()]:
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


def estimate_bytes(spec: ModelSpec) -> int | None:
    """Bytes of parameters and buffers of ``spec``'s architecture, from a build on the meta
    device (shapes only: no memory is allocated, no weights are read). ``None`` when the
    builder cannot run on the meta device."""
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = spec.builder()
    except Exception as e:  # noqa: BLE001 - some builders touch real data while building
        log.info("cannot size %s on the meta device (%s); sizing after the build", spec.name, e)
        return None
    return module_bytes(model)


def too_large_error(spec: ModelSpec, nbytes: int, budget_mb: float) -> ModelTooLargeError:
    """The error for ``spec`` needing ``nbytes``, over ``budget_mb``."""
    return ModelTooLargeError(
        f"{spec.name} needs {nbytes / 2**20:,.0f} MB for its parameters and buffers, more than the "
        f"model memory budget of {budget_mb:,.0f} MB (VIZCORE_MODEL_MEMORY_MB); "
        f"choose a smaller model or raise the budget.")
