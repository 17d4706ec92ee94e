"""The one context manager that attaches forward hooks and always removes them.

Models are shared between dashboard sessions (threads). Each :func:`tap` holds
the model's lock while its hooks are attached, and its hooks ignore forward
passes run by other threads, so one request's captures never leak into another.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import torch
import torch.nn as nn


class StopForward(Exception):
    """Raised inside a hook to end the forward pass once every tap has fired."""


Reducer = Callable[[str, torch.Tensor], object]


def _first_tensor(out) -> torch.Tensor:
    if torch.is_tensor(out):
        return out
    if isinstance(out, (tuple, list)) and out and torch.is_tensor(out[0]):
        return out[0]
    if hasattr(out, "logits") and torch.is_tensor(out.logits):
        return out.logits
    raise TypeError(f"cannot tap a module whose output is {type(out).__name__}")


@contextmanager
def tap(model: nn.Module, layers: Sequence[str], *, reduce: Reducer | None = None,
        stop: bool = False, detach: bool = True, clone: bool = False,
        lock: threading.RLock | None = None) -> Iterator[dict[str, object]]:
    """Capture the outputs of ``layers`` (dotted module paths) during forward passes.

    Args:
        model: the network; hooks are attached to its submodules.
        layers: module paths; the returned dict fills with one entry per path.
        reduce: optional ``f(path, output) -> value`` applied inside the hook, so
            only what is needed is kept (e.g. a pooled vector instead of a map).
        stop: raise :class:`StopForward` once all layers have fired; run the
            forward with :func:`forward_until` to end it there.
        detach: store detached tensors (no graph) unless gradients are wanted.
        clone: hand the layers after a tap a copy of its (tensor) output, so an in-place
            operation after it (torchvision DenseNet's ``F.relu(features, inplace=True)``)
            leaves the captured tensor as the module returned it, graph included
            (captum's layer methods do the same).
        lock: held while the hooks are attached (pass ``LoadedModel.lock``).

    Yields:
        dict mapping each path to its (reduced) output from the latest forward
        pass of ``model`` (it is emptied when a new pass starts).
    """
    modules = dict(model.named_modules())
    missing = [p for p in layers if p not in modules]
    if missing:
        raise KeyError(f"no module named {', '.join(missing)}")
    owner = threading.get_ident()
    store: dict[str, object] = {}
    wanted = set(layers)
    handles = []

    def make_hook(path: str):
        def hook(_mod, _inp, out):
            if threading.get_ident() != owner:
                return  # another session's forward pass through the shared model
            t = _first_tensor(out)
            kept = t.detach() if detach else t
            store[path] = reduce(path, kept) if reduce is not None else kept
            if stop and wanted.issubset(store):
                raise StopForward
            if clone and torch.is_tensor(out):
                return out.clone()
            return None

        return hook

    def reset(_mod, _inp):
        if threading.get_ident() == owner:
            store.clear()  # each forward pass starts afresh

    lock = lock if lock is not None else _NULL_LOCK
    with lock:
        try:
            handles.append(model.register_forward_pre_hook(reset))
            for p in dict.fromkeys(layers):
                handles.append(modules[p].register_forward_hook(make_hook(p)))
            yield store
        finally:
            for h in handles:
                h.remove()


class _NullLock:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


_NULL_LOCK = _NullLock()


def forward_until(model: nn.Module, x: torch.Tensor):
    """Run ``model(x)``; return its output, or ``None`` if a tap stopped it early."""
    try:
        return model(x)
    except StopForward:
        return None
