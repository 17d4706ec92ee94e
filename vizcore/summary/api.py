"""The summary's result types and public functions.

:func:`summarize` gives one :class:`LayerRow` per curated tap (or leaf module);
:func:`layer_geometry` and :func:`rf_box` give the receptive field of one layer
and the input box one of its units sees. All trace the architecture once per
input size with :mod:`vizcore.summary.tracer` (cached).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch.nn as nn

from vizcore.models.registry import ModelSpec, Tap, UnknownLayerError, close_names, get_spec
from vizcore.summary.geometry import RFGeometry
from vizcore.summary.tracer import Trace, trace, trace_model


# --------------------------------------------------------------------- results
# --------------------------------------------------------------------- results
@dataclass(frozen=True)
class Geometry:
    """Where a layer's units look: receptive field and jump in input pixels.

    ``start`` is the input coordinate (0-based pixel centres) of the centre of
    output unit (0, 0)'s receptive field; unit ``(y, x)`` is centred on
    ``(start + jump * y, start + jump * x)``.
    """

    rf: int
    jump: int
    start: float

    def to_json(self) -> dict:
        return {"rf": self.rf, "jump": self.jump, "start": self.start}


@dataclass(frozen=True)
class LayerRow:
    """One row of a :class:`Summary` (``output_shape`` excludes the batch axis)."""

    name: str
    module: str
    kind: str
    output_shape: tuple
    params: int
    macs: int
    rf: int
    jump: int
    start: float

    def to_json(self) -> dict:
        return {"name": self.name, "module": self.module, "kind": self.kind,
                "output_shape": list(self.output_shape), "params": self.params, "macs": self.macs,
                "rf": self.rf, "jump": self.jump, "start": self.start}


@dataclass(frozen=True)
class Summary:
    """Per-layer table of one architecture at one input size; totals cover the whole network."""

    model: str
    input_size: int
    rows: list[LayerRow]
    total_params: int
    total_macs: int
    layers: str = "taps"
    device: str = "meta"

    def row(self, name: str) -> LayerRow:
        """The row called ``name`` (tap name or module path)."""
        for r in self.rows:
            if r.name == name or r.module == name:
                return r
        close = close_names(name, [r.name for r in self.rows])
        hint = f" Closest: {', '.join(close)}." if close else ""
        raise UnknownLayerError(f"no row {name!r} in the summary of {self.model}.{hint}")

    def to_json(self) -> dict:
        return {"model": self.model, "input_size": self.input_size,
                "layers": [r.to_json() for r in self.rows],
                "total_params": self.total_params, "total_macs": self.total_macs,
                "rows": self.layers, "traced_on": self.device}


# ---------------------------------------------------------------- public API
def _spec(model: Any) -> ModelSpec:
    if isinstance(model, ModelSpec):
        return model
    if isinstance(model, str):
        return get_spec(model)
    spec = getattr(model, "spec", None)  # a LoadedModel
    if isinstance(spec, ModelSpec):
        return spec
    raise TypeError(f"expected a model name, ModelSpec or LoadedModel, not {type(model).__name__}")


def _size(spec: ModelSpec, input_size: int | None) -> int:
    size = spec.input_size if input_size is None else int(input_size)
    if size < 1:
        raise ValueError(f"input size must be a positive number of pixels, not {input_size}")
    return size


def _report(g: RFGeometry | None) -> tuple[int, int, float]:
    if g is None:
        return 0, 0, 0.0
    rf = int(round(max(g.rf)))
    jump = int(round(max(g.jump)))
    return rf, jump, float(g.start[0])


def _rows(tr: Trace, layers: str) -> list[LayerRow]:
    recs = tr.records
    rows: list[LayerRow] = []
    if layers == "all":
        leaves = sorted((n for n in tr.leaves if n in recs and recs[n].calls), key=lambda n: recs[n].first)
        for n in leaves:
            r = recs[n]
            rf, jump, start = _report(r.geom)
            rows.append(LayerRow(n or tr.kinds.get(n, "model"), n, tr.kinds.get(n, ""), r.output_shape, tr.own_params.get(n, 0),
                                 r.macs, rf, jump, start))
        return rows
    if layers != "taps":
        raise ValueError(f"layers must be 'taps' or 'all', not {layers!r}")
    fired = [t for t in tr.taps if t.module in recs and recs[t.module].calls]
    # Each tap's params and MACs are those of the stretch of network since the previous tap.
    prev_macs, prev_params, seg = 0, 0, {}
    for t in sorted(fired, key=lambda t: recs[t.module].order):
        r = recs[t.module]
        seg[t.name] = (r.cum_params - prev_params, r.cum_macs - prev_macs)
        prev_macs, prev_params = r.cum_macs, r.cum_params
    for t in fired:
        r = recs[t.module]
        rf, jump, start = _report(r.geom)
        params, macs = seg[t.name]
        rows.append(LayerRow(t.name, t.module, t.kind, r.output_shape, params, macs, rf, jump, start))
    return rows


def summarize(model: str | ModelSpec, input_size: int | None = None, *, layers: str = "taps") -> Summary:
    """Per-layer shapes, parameters, MACs, receptive fields and jumps of one architecture.

    Args:
        model: a registered name, ``timm/<name>``, a :class:`ModelSpec` (or a ``LoadedModel``;
            only its architecture is used).
        input_size: square input side in pixels; default the model's crop size.
        layers: ``"taps"``: one row per curated tap, whose ``params``/``macs`` are those of the
            network since the previous tap (so the rows add up); ``"all"``: one row per leaf
            module that runs, with its own parameters and MACs.

    Returns:
        a :class:`Summary`; ``total_params`` and ``total_macs`` cover the whole network
        (for a batch of one image).
    """
    spec = _spec(model)
    size = _size(spec, input_size)
    tr = trace(spec, size)
    return Summary(spec.name, size, _rows(tr, layers), tr.total_params, tr.total_macs, layers, tr.device)


def summarize_module(model: nn.Module, input_size: int, *, name: str = "module", in_channels: int = 3,
                     taps: Sequence[Tap] | None = None, layers: str = "all") -> Summary:
    """:func:`summarize` for any ``nn.Module`` taking ``(1, in_channels, H, W)`` inputs, on its own device.

    The model gets hooks for the duration of the call: pass a model nobody else is running.
    """
    p = next(model.parameters(), None)
    device = str(p.device) if p is not None else "cpu"
    tr = trace_model(name, model, int(input_size), device, list(taps or []), int(in_channels))
    return Summary(name, int(input_size), _rows(tr, layers), tr.total_params, tr.total_macs, layers, device)


def _resolve(tr: Trace, spec: ModelSpec, layer: str) -> str:
    taps = {t.name: t.module for t in tr.taps}
    if layer in taps:
        return taps[layer]
    if layer in tr.modules:
        return layer
    close = close_names(layer, list(taps) + list(tr.modules))
    hint = f" Closest valid names: {', '.join(close)}." if close else ""
    raise UnknownLayerError(
        f"unknown layer {layer!r} for model {spec.name!r}.{hint} "
        f"Run `python -m vizcore layers --model {spec.name}` for its taps.")


def layer_geometry(model: Any, layer: str, input_size: int | None = None) -> Geometry:
    """Receptive field, jump and start of one layer (tap name or module path).

    ``model`` is a name, a :class:`ModelSpec` or a ``LoadedModel`` (its weights play no part).
    Raises :class:`UnknownLayerError` (with the closest names) for a layer the model lacks.
    """
    spec = _spec(model)
    size = _size(spec, input_size)
    tr = trace(spec, size)
    path = _resolve(tr, spec, layer)
    rec = tr.records.get(path)
    if rec is None or not rec.calls or rec.geom is None:
        raise ValueError(f"layer {layer!r} of {spec.name} does not run in an inference forward pass")
    rf, jump, start = _report(rec.geom)
    return Geometry(rf, jump, start)


def rf_box(geom: Geometry, y: int, x: int, size: int) -> tuple[int, int, int, int]:
    """The input box ``(x0, y0, x1, y1)`` (half-open, clipped to ``[0, size]``) seen by unit ``(y, x)``."""
    half = (geom.rf - 1) / 2

    def span(i: int) -> tuple[int, int]:
        lo = int(math.floor(geom.start + geom.jump * i - half + 0.5))
        return min(max(lo, 0), size), min(max(lo + geom.rf, 0), size)

    x0, x1 = span(x)
    y0, y1 = span(y)
    return x0, y0, x1, y1
