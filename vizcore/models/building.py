"""Building models: the architecture with seeded random weights, its layers, and the loaded-model record.

:func:`build` draws random weights from a seed (``random:SEED``, see :func:`parse_random`), so the
same architecture gets the same weights in every process; :class:`LoadedModel` carries a built
model with its spec, where its weights came from and the lock hooks are attached under.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn as nn

from vizcore.models.registry import ModelSpec, Tap, UnknownLayerError, close_names


@dataclass(frozen=True)
class WeightsInfo:
    """Where the weights of a loaded model came from.

    ``source`` is one of ``package``, ``file``, ``hub-cache``, ``download``,
    ``random``; ``detail`` names the package, path or URL.
    """

    source: str
    detail: str = ""
    warning: str | None = None

    @property
    def pretrained(self) -> bool:
        return self.source != "random"

    def label(self) -> str:
        return self.source if not self.detail else f"{self.source}: {self.detail}"

    def to_json(self) -> dict:
        return {"source": self.source, "detail": self.detail, "warning": self.warning}


@dataclass
class LoadedModel:
    """A built model in eval mode with its spec, weight provenance and a lock.

    The module is shared by every caller in the process: never mutate it. Code
    that attaches hooks holds ``lock`` (see :func:`vizcore.tap.tap`).
    """

    spec: ModelSpec
    model: nn.Module
    weights: WeightsInfo
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    weights_arg: str = "auto"
    """The ``weights`` argument that loads these weights again in any process (see
    :class:`vizcore.passes.ModelRef`): ``auto``, ``random:SEED`` or a checkpoint path."""

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def device(self) -> torch.device:
        p = next(self.model.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    @property
    def categories(self) -> Sequence[str] | None:
        return self.spec.categories() if self.spec.categories else None

    def taps(self) -> list[Tap]:
        return taps_for(self.spec, self.model)

    def resolve(self, name: str) -> str:
        return resolve_layer(self.spec, self.model, name)

    def transform(self):
        return self.spec.preprocess.transform()


# ----------------------------------------------------------------------- layers
def taps_for(spec: ModelSpec, model: nn.Module) -> list[Tap]:
    modules = dict(model.named_modules())
    return [t for t in spec.taps(model) if t.module in modules]


def resolve_layer(spec: ModelSpec, model: nn.Module, name: str) -> str:
    """The dotted module path for a tap name or a module path; clear error otherwise."""
    taps = {t.name: t.module for t in taps_for(spec, model)}
    if name in taps:
        return taps[name]
    modules = dict(model.named_modules())
    if name in modules and name:
        return name
    close = close_names(name, list(taps) + [m for m in modules if m])
    hint = f" Closest valid names: {', '.join(close)}." if close else ""
    raise UnknownLayerError(
        f"unknown layer {name!r} for model {spec.name!r}.{hint} "
        f"Run `python -m vizcore layers --model {spec.name}` for its taps."
    )


def tap_label(spec: ModelSpec, model: nn.Module, module_path: str) -> str:
    for t in taps_for(spec, model):
        if t.module == module_path:
            return t.name
    return module_path


# --------------------------------------------------------------------- building
RANDOM_SEED = int(os.environ.get("VIZCORE_SEED", "0"))
"""Seed of random initialisation (``$VIZCORE_SEED``, default 0): "random" weights are the same in
every process, so results of random-init models can be reproduced and cached by content."""


def parse_random(weights: str | os.PathLike | None) -> int | None:
    """The seed of a random-init request (``random`` or ``random:SEED``), or ``None`` for other weights."""
    if weights is None or weights == "random":
        return RANDOM_SEED
    w = str(weights)
    if w.startswith("random:"):
        try:
            return int(w.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"bad random seed in {w!r}: use random:<integer>") from None
    return None


def build(spec: ModelSpec, device: str | torch.device | None = None, *, seed: int | None = None) -> nn.Module:
    """The architecture with random weights, eval mode, in-place ops turned off.

    Initialisation is seeded (``seed``, default :data:`RANDOM_SEED`) with a forked RNG, so the
    same architecture gets the same random weights in every process and the caller's random
    state is untouched. In-place activations would overwrite tensors captured by hooks and
    break gradients through taps, so every module with an ``inplace`` flag gets it cleared.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED if seed is None else seed)
        model = spec.builder()
    for m in model.modules():
        if getattr(m, "inplace", None) is True:
            m.inplace = False
    model.eval()
    if device is not None:
        model.to(device)
    return model
