"""The evidence-method registry, after timm's ``@register_model``.

Each method module registers its methods beside their code with :func:`method`;
the registry never imports them back except lazily in :func:`_ensure_loaded`.
A method is a function ``fn(lm, x, target, *, progress, should_stop, **settings)``
that returns a :class:`RawEvidence` for one preprocessed input ``x`` ``(1, 3, H, W)``.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch

from vizcore.summary import Geometry

Progress = Callable[[int, int], None]


class EvidenceStopped(RuntimeError):
    """Raised when ``should_stop`` asked a long method to end; nothing partial is returned."""


class UnknownMethodError(KeyError):
    """Raised for a method name that is not registered."""

    def __str__(self) -> str:
        return str(self.args[0])


class MethodNotApplicable(ValueError):
    """Raised when a method cannot explain this model (e.g. BagNet evidence on a ResNet)."""


@dataclass(frozen=True, eq=False)
class RawEvidence:
    """What a method computes, before the engine resizes and scores it.

    Attributes:
        raw: the map at its native resolution, ``(h, w)`` float32 on the CPU;
            larger means more evidence for the target.
        geometry: receptive field, jump and start of one raw cell in input pixels
            (``None``: cells spread evenly over the input).
        settings: every setting used, defaults filled in (enough to reproduce it).
        caveats: what the user should know before believing the map.
        display: ``"minmax"`` (a score map: stretch its range) or ``"positive"``
            (only positive values are evidence; negatives show as zero).
        extra: method-specific figures (e.g. IG's completeness gap).
    """

    raw: torch.Tensor
    geometry: Geometry | None
    settings: dict
    caveats: tuple[str, ...] = ()
    display: str = "positive"
    extra: dict = field(default_factory=dict)


class MethodFn(Protocol):
    def __call__(self, lm, x: torch.Tensor, target: int, *, progress: Progress | None = None,
                 should_stop: Callable[[], bool] | None = None, **settings) -> RawEvidence: ...


@dataclass(frozen=True)
class MethodSpec:
    """One registered method: its function and what the user interface needs to know."""

    name: str
    title: str
    fn: MethodFn
    paper: str
    description: str
    slow: bool = False
    defaults: dict = field(default_factory=dict, hash=False, compare=False)


_REGISTRY: dict[str, MethodSpec] = {}


def method(name: str, *, title: str, paper: str, description: str, slow: bool = False,
           defaults: dict | None = None) -> Callable[[MethodFn], MethodFn]:
    """Decorator: register ``fn`` as evidence method ``name`` (a duplicate name is an error)."""

    def deco(fn: MethodFn) -> MethodFn:
        if name in _REGISTRY:
            raise ValueError(f"evidence method {name!r} is registered twice")
        _REGISTRY[name] = MethodSpec(name, title, fn, paper, description, slow, dict(defaults or {}))
        return fn

    return deco


def _ensure_loaded() -> None:
    # The method modules register themselves on import.
    from vizcore.evidence import attribution, cam, lrp  # noqa: F401


def list_methods() -> list[str]:
    """Registered method names in registration order."""
    _ensure_loaded()
    return list(_REGISTRY)


def get_method(name: str) -> MethodSpec:
    """The spec of a method, or an error naming the closest valid ones."""
    _ensure_loaded()
    if name in _REGISTRY:
        return _REGISTRY[name]
    close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.4)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise UnknownMethodError(f"unknown evidence method {name!r}.{hint} Known: {', '.join(_REGISTRY)}.")
