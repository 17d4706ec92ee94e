"""The geometry one tensor carries through a traced forward pass, and the rules that change it.

Receptive fields are computed for arbitrary graphs (ResNet additions, Inception
and DenseNet concatenations, timm's dynamic 'same' padding through ``F.pad``,
ConvNeXt's channels-last permutes). No library computes them for general
graphs, so this one is hand-written, after Araujo et al., Distill 2019
(https://distill.pub/2019/computing-receptive-fields/). Each tensor carries a
:class:`RFGeometry` (receptive field, jump, start, and which axes are spatial), and
:mod:`vizcore.summary.tracer` applies these rules to every torch function:
convolutions and pools grow the field by ``(k - 1) * dilation * jump`` and
multiply the jump by their stride; ``F.pad`` and slicing shift ``start``;
merges (add, multiply, concatenate) take the union of their inputs' fields;
shape-preserving functions pass the geometry through; anything that mixes
spatial positions (adaptive pooling, ``flatten``, a linear layer or matrix
product over a spatial axis, attention) makes every unit see the union of the
fields of the whole map. Squeeze-and-excitation gates therefore make the field
of later units cover the whole input, as their input gradients confirm.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Sequence

import torch


@dataclass(frozen=True)
class RFGeometry:
    """Geometry carried by one tensor, per spatial dimension (height, width).

    ``axes`` are the negative indices of the height and width axes, or ``None``
    once spatial positions have been mixed (every unit then sees the box
    ``start +- (rf - 1) / 2``, the union of the fields of the whole map).
    """

    rf: tuple[float, float]
    jump: tuple[float, float]
    start: tuple[float, float]
    axes: tuple[int, int] | None
    size: tuple[int, int] = (0, 0)


_ATTR = "_vizcore_geom"


def geom_of(t: Any) -> RFGeometry | None:
    return getattr(t, _ATTR, None) if isinstance(t, torch.Tensor) else None


def set_geom(t: Any, g: RFGeometry | None) -> None:
    if g is not None and isinstance(t, torch.Tensor):
        try:
            setattr(t, _ATTR, g)
        except (AttributeError, RuntimeError):  # e.g. tensors of C++-only subclasses
            pass


def globalise(g: RFGeometry) -> RFGeometry:
    """Every unit sees the union of the fields of all positions of the map."""
    if g.axes is None:
        return g
    rf, jump, start = [], [], []
    for i in range(2):
        n = max(int(g.size[i]), 1)
        rf.append(g.rf[i] + (n - 1) * g.jump[i])
        start.append(g.start[i] + (n - 1) / 2 * g.jump[i])
        jump.append(n * g.jump[i])
    return RFGeometry(tuple(rf), tuple(jump), tuple(start), None)


def union_geom(gs: Sequence[RFGeometry], axes: tuple[int, int] | None, size: tuple[int, int]) -> RFGeometry:
    """The smallest box holding every input's field (merges: add, multiply, concatenate)."""
    if len(gs) == 1 and gs[0].axes == axes and gs[0].size == size:
        return gs[0]
    rf, jump, start = [], [], []
    for i in range(2):
        lo = min(g.start[i] - (g.rf[i] - 1) / 2 for g in gs)
        hi = max(g.start[i] + (g.rf[i] - 1) / 2 for g in gs)
        rf.append(hi - lo + 1)
        start.append((lo + hi) / 2)
        spatial = [g.jump[i] for g in gs if g.axes is not None] or [g.jump[i] for g in gs]
        jump.append(max(spatial))
    return RFGeometry(tuple(rf), tuple(jump), tuple(start), axes, size)


def _spatial_size(t: torch.Tensor, axes: tuple[int, int]) -> tuple[int, int] | None:
    if t.dim() < -min(axes):
        return None
    return int(t.shape[axes[0]]), int(t.shape[axes[1]])


def generic_geom(inputs: Sequence[RFGeometry], out: torch.Tensor) -> RFGeometry:
    """Pass-through and merges: keep the spatial layout where the output still has it."""
    for g in inputs:
        if g.axes is not None and _spatial_size(out, g.axes) == g.size:
            keep = [x for x in inputs if x.axes == g.axes and x.size == g.size]
            mixed = [globalise(x) for x in inputs if not (x.axes == g.axes and x.size == g.size)]
            return union_geom(keep + mixed, g.axes, g.size)
    return union_geom([globalise(g) for g in inputs], None, (0, 0))


def _pair(v: Any, default: int | None = None) -> tuple[int, int]:
    if v is None or (isinstance(v, (list, tuple)) and len(v) == 0):
        v = default
    if isinstance(v, (list, tuple)):
        return (int(v[0]), int(v[-1])) if len(v) >= 2 else (int(v[0]), int(v[0]))
    return int(v), int(v)


def window_geom(g: RFGeometry, out: torch.Tensor, k, s, p, d) -> RFGeometry:
    """A sliding window (convolution or pooling) over the last two axes."""
    rf, jump, start = [], [], []
    for i in range(2):
        rf.append(g.rf[i] + (k[i] - 1) * d[i] * g.jump[i])
        start.append(g.start[i] + ((k[i] - 1) * d[i] / 2 - p[i]) * g.jump[i])
        jump.append(g.jump[i] * s[i])
    return RFGeometry(tuple(rf), tuple(jump), tuple(start), (-2, -1), (int(out.shape[-2]), int(out.shape[-1])))


def geom_arg(args: tuple, kwargs: dict, i: int, name: str, default: Any = None) -> Any:
    if len(args) > i:
        return args[i]
    return kwargs.get(name, default)


def conv_geom(g: RFGeometry, args, kwargs, out) -> RFGeometry:
    w = geom_arg(args, kwargs, 1, "weight")
    k = (int(w.shape[-2]), int(w.shape[-1]))
    s = _pair(geom_arg(args, kwargs, 3, "stride", 1), 1)
    d = _pair(geom_arg(args, kwargs, 5, "dilation", 1), 1)
    pad = geom_arg(args, kwargs, 4, "padding", 0)
    if isinstance(pad, str):
        # 'same' pads (k - 1) * d in total, the smaller half on the left/top (stride 1 only).
        p = tuple((d[i] * (k[i] - 1)) // 2 for i in range(2)) if pad == "same" else (0, 0)
    else:
        p = _pair(pad, 0)
    return window_geom(g, out, k, s, p, d)


def pool_geom(name: str, g: RFGeometry, args, kwargs, out) -> RFGeometry:
    if name == "lp_pool2d":  # (input, norm_type, kernel_size, stride, ceil_mode)
        k = _pair(geom_arg(args, kwargs, 2, "kernel_size"))
        s = _pair(geom_arg(args, kwargs, 3, "stride"), k[0])
        return window_geom(g, out, k, s if s != (None, None) else k, (0, 0), (1, 1))
    k = _pair(geom_arg(args, kwargs, 1, "kernel_size"))
    stride = geom_arg(args, kwargs, 2, "stride")
    s = k if stride is None or (isinstance(stride, (list, tuple)) and not stride) else _pair(stride)
    p = _pair(geom_arg(args, kwargs, 3, "padding", 0), 0)
    d = _pair(geom_arg(args, kwargs, 4, "dilation", 1), 1) if "max" in name else (1, 1)
    return window_geom(g, out, k, s, p, d)


def adaptive_geom(g: RFGeometry, out) -> RFGeometry:
    """Adaptive pooling: bin ``i`` covers ``[floor(i * n / m), ceil((i + 1) * n / m))``."""
    rf, jump, start = [], [], []
    for i, ax in enumerate((-2, -1)):
        n, m = int(g.size[i]), int(out.shape[ax])
        if m <= 0 or n <= 0:
            return globalise(g)
        bins = [(math.floor(j * n / m), math.ceil((j + 1) * n / m)) for j in range(m)]
        k = max(b - a for a, b in bins)
        c0 = (bins[0][0] + bins[0][1] - 1) / 2
        rf.append(g.rf[i] + (k - 1) * g.jump[i])
        start.append(g.start[i] + c0 * g.jump[i])
        jump.append(g.jump[i] * n / m)
    return RFGeometry(tuple(rf), tuple(jump), tuple(start), (-2, -1), (int(out.shape[-2]), int(out.shape[-1])))


def pad_geom(g: RFGeometry, args, kwargs, out) -> RFGeometry:
    pad = list(geom_arg(args, kwargs, 1, "pad"))
    pad += [0] * (4 - len(pad))
    left, top = int(pad[0]), int(pad[2])
    start = (g.start[0] - top * g.jump[0], g.start[1] - left * g.jump[1])
    return RFGeometry(g.rf, g.jump, start, g.axes, (int(out.shape[-2]), int(out.shape[-1])))


def getitem_geom(g: RFGeometry, src: torch.Tensor, index: Any, out: torch.Tensor) -> RFGeometry | None:
    """Basic indexing: slices shift ``start`` and scale ``jump``; ints and ``None`` move axes."""
    idx = index if isinstance(index, tuple) else (index,)
    if any(isinstance(i, (torch.Tensor, list, bool)) for i in idx):
        return None  # advanced indexing: let the generic rule decide
    nd = src.dim()
    consumed = sum(1 for i in idx if i is not None and i is not Ellipsis)
    expanded: list = []
    for i in idx:
        if i is Ellipsis:
            expanded += [slice(None)] * (nd - consumed)
        else:
            expanded.append(i)
    expanded += [slice(None)] * (nd - sum(1 for i in expanded if i is not None))
    pos_axes = [nd + a for a in g.axes]
    in_dim, out_dim = 0, 0
    new_axes, starts, jumps, rfs = [None, None], list(g.start), list(g.jump), list(g.rf)
    for i in expanded:
        if i is None:
            out_dim += 1
            continue
        if in_dim in pos_axes:
            k = pos_axes.index(in_dim)
            if isinstance(i, int):
                return None  # a single row or column: the generic rule globalises nothing useful
            a, _, step = i.indices(int(src.shape[in_dim]))
            starts[k] = g.start[k] + a * g.jump[k]
            jumps[k] = g.jump[k] * step
            new_axes[k] = out_dim
        if not isinstance(i, int):
            out_dim += 1
        in_dim += 1
    if None in new_axes:
        return None
    axes = (new_axes[0] - out.dim(), new_axes[1] - out.dim())
    return RFGeometry(tuple(rfs), tuple(jumps), tuple(starts), axes,
              (int(out.shape[axes[0]]), int(out.shape[axes[1]])))


def permute_geom(g: RFGeometry, src: torch.Tensor, dims: Sequence[int], out: torch.Tensor) -> RFGeometry:
    nd = src.dim()
    dims = [d % nd for d in dims]
    axes = tuple(dims.index(nd + a) - nd for a in g.axes)
    return replace(g, axes=axes)
