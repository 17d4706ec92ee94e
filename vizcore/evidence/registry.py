"""The evidence-method registry, after timm's ``@register_model``.

Each method module registers its methods beside their code with :func:`method`;
the registry never imports them back except lazily in :func:`_ensure_loaded`.
A method is a function ``fn(lm, x, target, **settings)`` that returns a :class:`RawEvidence`
for one preprocessed input ``x`` ``(1, 3, H, W)``; a slow method is a *generator* function
that yields a :class:`vizcore.jobs.Tick` after each bounded piece of work (a batch of
occluded images, a batch of integration steps) and returns the :class:`RawEvidence`, so the
job layer can report progress, stop and resume it (:class:`vizcore.evidence.EvidenceJob`).
:func:`run_method` runs either kind to the end.
"""
from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Generator, Protocol

import torch

from vizcore.summary import Geometry

Progress = Callable[[int, int], None]


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
    def __call__(self, lm, x: torch.Tensor, target: int, **settings) -> "RawEvidence | Generator[Any, None, RawEvidence]": ...


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

    @property
    def stepped(self) -> bool:
        """The method is a generator of :class:`vizcore.jobs.Tick` s (progress, stop, resume)."""
        return inspect.isgeneratorfunction(self.fn)


def drive(work: Generator, progress: Progress | None = None, should_stop: Callable[[], bool] | None = None) -> Any:
    """Run a generator of :class:`vizcore.jobs.Tick` s to its return value: ``progress(done, total)``
    after each tick, ``should_stop`` before each; when it says stop, :class:`vizcore.jobs.Stopped`
    (the one stop rule) is raised and nothing is returned."""
    from vizcore.jobs import Stopped

    while True:
        if should_stop is not None and should_stop():
            work.close()
            raise Stopped("stopped")
        try:
            t = next(work)
        except StopIteration as e:
            return e.value
        if progress is not None and t.done:
            progress(t.done, t.total)


def run_method(spec: MethodSpec, lm, x: torch.Tensor, target: int, *, progress: Progress | None = None,
               should_stop: Callable[[], bool] | None = None, **settings) -> RawEvidence:
    """One method's :class:`RawEvidence`, to the end (a stepped method with progress and stop)."""
    if spec.stepped:
        return drive(spec.fn(lm, x, target, **settings), progress, should_stop)
    if should_stop is not None and should_stop():
        from vizcore.jobs import Stopped

        raise Stopped("stopped")
    return spec.fn(lm, x, target, **settings)


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
    from vizcore.evidence import attribution, cam  # noqa: F401


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
