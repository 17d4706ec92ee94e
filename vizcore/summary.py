"""Architecture explorer: per-layer output shape, parameters, MACs, receptive field and jump.

:func:`summarize` traces one forward pass of a registered architecture (or any
``timm/<name>``) at any input size and reports, per curated tap (or per leaf
module), what the layer computes and which part of the input it sees:

* ``params``: parameters first used in that stretch of the network;
* ``macs``: multiply-accumulates of convolutions, linear layers, matrix products
  and attention (BatchNorm, activations, pooling and additions are not counted,
  the usual convention of the papers these numbers are compared with);
* ``rf``: the theoretical receptive field (Araujo et al., "Computing receptive
  fields of convolutional neural networks", Distill 2019,
  https://distill.pub/2019/computing-receptive-fields/), in input pixels;
* ``jump``: the distance in input pixels between neighbouring units (effective stride);
* ``start``: the input coordinate (pixel centres, 0-based) of the centre of the
  receptive field of output unit (0, 0); padding makes it negative or fractional.

Receptive fields are computed for arbitrary graphs (ResNet additions, Inception
and DenseNet concatenations, timm's dynamic 'same' padding through ``F.pad``,
ConvNeXt's channels-last permutes). No library computes them for general
graphs, so this one is hand-written: a :class:`torch.overrides.TorchFunctionMode`
sees every torch function of the forward pass and propagates a per-tensor
geometry (receptive field, jump, start, and which axes are spatial), while
forward hooks on the (private, freshly built) model record each module's output.
Rules: convolutions and pools grow the field by ``(k - 1) * dilation * jump``
and multiply the jump by their stride; ``F.pad`` and slicing shift ``start``;
merges (add, multiply, concatenate) take the union of their inputs' fields;
shape-preserving functions pass the geometry through; anything that mixes
spatial positions (adaptive pooling, ``flatten``, a linear layer or matrix
product over a spatial axis, attention) makes every unit see the union of the
fields of the whole map. Squeeze-and-excitation gates therefore make the field
of later units cover the whole input, as their input gradients confirm.

Models are built by :func:`vizcore.models.build` on PyTorch's ``meta`` device
(no memory, no weights, milliseconds); architectures that cannot run there are
built with random weights on the CPU instead. Pretrained weights are never loaded.

GoogLeNet: :func:`inception_table` compares each inception block with Table 1 of
Szegedy et al. 2015 (https://arxiv.org/abs/1409.4842). torchvision's GoogLeNet
deviates from the paper: the "5x5" branch uses a 3x3 convolution (a known
torchvision bug, pytorch/vision#906), every convolution is followed by
BatchNorm and has no bias, there is no local response normalisation, the max
pools use ``ceil_mode`` and ``maxpool4`` is 2x2 rather than 3x3, and the
auxiliary classifiers are not built here. ``variant="paper"`` swaps the 5x5
convolutions back in so the operation counts match the paper's. The paper's
own parameter column is not consistent with its layer widths for some blocks
(e.g. 4c: 463K listed, 509K from the widths) while its ops column is (within
2%, except 5a: 54M listed, 51M computed).
"""
from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Sequence

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode

from vizcore.models.registry import ModelSpec, Tap, UnknownLayerError, close_names, get_spec

log = logging.getLogger(__name__)

__all__ = [
    "GOOGLENET_TABLE1", "Geometry", "InceptionRow", "LayerRow", "Summary", "inception_table",
    "layer_geometry", "rf_box", "summarize", "summarize_module",
]


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


# ------------------------------------------------------------ tensor geometry
@dataclass(frozen=True)
class _G:
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


def _geom(t: Any) -> _G | None:
    return getattr(t, _ATTR, None) if isinstance(t, torch.Tensor) else None


def _set(t: Any, g: _G | None) -> None:
    if g is not None and isinstance(t, torch.Tensor):
        try:
            setattr(t, _ATTR, g)
        except (AttributeError, RuntimeError):  # e.g. tensors of C++-only subclasses
            pass


def _globalise(g: _G) -> _G:
    """Every unit sees the union of the fields of all positions of the map."""
    if g.axes is None:
        return g
    rf, jump, start = [], [], []
    for i in range(2):
        n = max(int(g.size[i]), 1)
        rf.append(g.rf[i] + (n - 1) * g.jump[i])
        start.append(g.start[i] + (n - 1) / 2 * g.jump[i])
        jump.append(n * g.jump[i])
    return _G(tuple(rf), tuple(jump), tuple(start), None)


def _union(gs: Sequence[_G], axes: tuple[int, int] | None, size: tuple[int, int]) -> _G:
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
    return _G(tuple(rf), tuple(jump), tuple(start), axes, size)


def _spatial_size(t: torch.Tensor, axes: tuple[int, int]) -> tuple[int, int] | None:
    if t.dim() < -min(axes):
        return None
    return int(t.shape[axes[0]]), int(t.shape[axes[1]])


def _generic(inputs: Sequence[_G], out: torch.Tensor) -> _G:
    """Pass-through and merges: keep the spatial layout where the output still has it."""
    for g in inputs:
        if g.axes is not None and _spatial_size(out, g.axes) == g.size:
            keep = [x for x in inputs if x.axes == g.axes and x.size == g.size]
            mixed = [_globalise(x) for x in inputs if not (x.axes == g.axes and x.size == g.size)]
            return _union(keep + mixed, g.axes, g.size)
    return _union([_globalise(g) for g in inputs], None, (0, 0))


def _pair(v: Any, default: int | None = None) -> tuple[int, int]:
    if v is None or (isinstance(v, (list, tuple)) and len(v) == 0):
        v = default
    if isinstance(v, (list, tuple)):
        return (int(v[0]), int(v[-1])) if len(v) >= 2 else (int(v[0]), int(v[0]))
    return int(v), int(v)


def _window(g: _G, out: torch.Tensor, k, s, p, d) -> _G:
    """A sliding window (convolution or pooling) over the last two axes."""
    rf, jump, start = [], [], []
    for i in range(2):
        rf.append(g.rf[i] + (k[i] - 1) * d[i] * g.jump[i])
        start.append(g.start[i] + ((k[i] - 1) * d[i] / 2 - p[i]) * g.jump[i])
        jump.append(g.jump[i] * s[i])
    return _G(tuple(rf), tuple(jump), tuple(start), (-2, -1), (int(out.shape[-2]), int(out.shape[-1])))


def _arg(args: tuple, kwargs: dict, i: int, name: str, default: Any = None) -> Any:
    if len(args) > i:
        return args[i]
    return kwargs.get(name, default)


def _conv_geom(g: _G, args, kwargs, out) -> _G:
    w = _arg(args, kwargs, 1, "weight")
    k = (int(w.shape[-2]), int(w.shape[-1]))
    s = _pair(_arg(args, kwargs, 3, "stride", 1), 1)
    d = _pair(_arg(args, kwargs, 5, "dilation", 1), 1)
    pad = _arg(args, kwargs, 4, "padding", 0)
    if isinstance(pad, str):
        # 'same' pads (k - 1) * d in total, the smaller half on the left/top (stride 1 only).
        p = tuple((d[i] * (k[i] - 1)) // 2 for i in range(2)) if pad == "same" else (0, 0)
    else:
        p = _pair(pad, 0)
    return _window(g, out, k, s, p, d)


def _pool_geom(name: str, g: _G, args, kwargs, out) -> _G:
    if name == "lp_pool2d":  # (input, norm_type, kernel_size, stride, ceil_mode)
        k = _pair(_arg(args, kwargs, 2, "kernel_size"))
        s = _pair(_arg(args, kwargs, 3, "stride"), k[0])
        return _window(g, out, k, s if s != (None, None) else k, (0, 0), (1, 1))
    k = _pair(_arg(args, kwargs, 1, "kernel_size"))
    stride = _arg(args, kwargs, 2, "stride")
    s = k if stride is None or (isinstance(stride, (list, tuple)) and not stride) else _pair(stride)
    p = _pair(_arg(args, kwargs, 3, "padding", 0), 0)
    d = _pair(_arg(args, kwargs, 4, "dilation", 1), 1) if "max" in name else (1, 1)
    return _window(g, out, k, s, p, d)


def _adaptive_geom(g: _G, out) -> _G:
    """Adaptive pooling: bin ``i`` covers ``[floor(i * n / m), ceil((i + 1) * n / m))``."""
    rf, jump, start = [], [], []
    for i, ax in enumerate((-2, -1)):
        n, m = int(g.size[i]), int(out.shape[ax])
        if m <= 0 or n <= 0:
            return _globalise(g)
        bins = [(math.floor(j * n / m), math.ceil((j + 1) * n / m)) for j in range(m)]
        k = max(b - a for a, b in bins)
        c0 = (bins[0][0] + bins[0][1] - 1) / 2
        rf.append(g.rf[i] + (k - 1) * g.jump[i])
        start.append(g.start[i] + c0 * g.jump[i])
        jump.append(g.jump[i] * n / m)
    return _G(tuple(rf), tuple(jump), tuple(start), (-2, -1), (int(out.shape[-2]), int(out.shape[-1])))


def _pad_geom(g: _G, args, kwargs, out) -> _G:
    pad = list(_arg(args, kwargs, 1, "pad"))
    pad += [0] * (4 - len(pad))
    left, top = int(pad[0]), int(pad[2])
    start = (g.start[0] - top * g.jump[0], g.start[1] - left * g.jump[1])
    return _G(g.rf, g.jump, start, g.axes, (int(out.shape[-2]), int(out.shape[-1])))


def _getitem_geom(g: _G, src: torch.Tensor, index: Any, out: torch.Tensor) -> _G | None:
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
    return _G(tuple(rfs), tuple(jumps), tuple(starts), axes,
              (int(out.shape[axes[0]]), int(out.shape[axes[1]])))


def _permute_geom(g: _G, src: torch.Tensor, dims: Sequence[int], out: torch.Tensor) -> _G:
    nd = src.dim()
    dims = [d % nd for d in dims]
    axes = tuple(dims.index(nd + a) - nd for a in g.axes)
    return replace(g, axes=axes)


# ------------------------------------------------------------------ the tracer
_SHAPE_ONLY = frozenset({"__get__", "size", "dim", "numel", "stride", "is_contiguous", "data_ptr",
                         "__len__", "__bool__", "__format__", "__repr__", "is_floating_point",
                         "element_size", "nelement", "ndimension", "get_device", "__hash__"})
_CONVS = frozenset({"conv2d"})
_POOLS = frozenset({"max_pool2d", "_max_pool2d", "max_pool2d_with_indices", "avg_pool2d", "lp_pool2d"})
_ADAPTIVE = frozenset({"adaptive_avg_pool2d", "adaptive_max_pool2d", "_adaptive_max_pool2d",
                       "adaptive_max_pool2d_with_indices"})
_MATMUL = frozenset({"matmul", "__matmul__", "mm", "bmm", "addmm", "baddbmm", "addbmm", "__rmatmul__"})
_GLOBAL = frozenset({"scaled_dot_product_attention", "einsum", "multi_head_attention_forward",
                     "interpolate", "upsample", "grid_sample", "fft_fft2", "fft_rfft2"})


def _tensors(obj: Any) -> Iterable[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            if isinstance(o, torch.Tensor):
                yield o
            elif isinstance(o, (list, tuple)):
                yield from (x for x in o if isinstance(x, torch.Tensor))
    elif isinstance(obj, dict):
        yield from (v for v in obj.values() if isinstance(v, torch.Tensor))


@dataclass
class _Record:
    """What one module did: summed over its calls; output and counters from the last call."""

    calls: int = 0
    macs: int = 0
    output_shape: tuple = ()
    geom: _G | None = None
    order: int = -1
    first: int = -1
    cum_macs: int = 0
    cum_params: int = 0


class _Tracer(TorchFunctionMode):
    """Propagates geometry through every torch function and counts MACs and first-used parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.records: dict[str, _Record] = {}
        self.macs = 0
        self.params = 0
        self.seen: set[int] = set()
        self.done = 0

    # ---- module hooks (attached to a private model only; see _run)
    def pre_hook(self, name: str):
        def hook(_mod, _inp):
            self.stack.append(name)

        return hook

    def post_hook(self, name: str):
        def hook(_mod, _inp, out):
            while self.stack and self.stack.pop() != name:
                pass
            rec = self.records.setdefault(name, _Record())
            t = out if isinstance(out, torch.Tensor) else next(iter(_tensors(out)), None)
            if t is None and hasattr(out, "logits"):
                t = out.logits
            rec.calls += 1
            if rec.first < 0:
                rec.first = self.done
            rec.order = self.done
            self.done += 1
            rec.cum_macs, rec.cum_params = self.macs, self.params
            if isinstance(t, torch.Tensor):
                rec.output_shape = tuple(int(s) for s in t.shape[1:])
                rec.geom = _geom(t)

        return hook

    def add_macs(self, n: int) -> None:
        n = int(n)
        if n <= 0:
            return
        self.macs += n
        for name in self.stack:
            self.records.setdefault(name, _Record()).macs += n

    # ---- torch functions
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        if name in _SHAPE_ONLY:
            return out
        self._params(args, kwargs)
        outs = list(_tensors(out))
        if not outs:
            return out
        self._count(name, args, kwargs, outs[0])
        ins = [g for g in (_geom(t) for t in _tensors(args)) if g is not None]
        ins += [g for g in (_geom(v) for v in kwargs.values()) if g is not None]
        if not ins:
            return out
        for t in outs:
            try:
                _set(t, self._propagate(name, args, kwargs, ins, t))
            except Exception as e:  # noqa: BLE001 - a geometry rule must never break the forward pass
                log.debug("geometry rule for %s failed: %s", name, e)
                _set(t, _generic(ins, t))
        return out

    def _params(self, args, kwargs) -> None:
        for t in list(_tensors(args)) + list(_tensors(kwargs)):
            if isinstance(t, nn.Parameter) and id(t) not in self.seen:
                self.seen.add(id(t))
                self.params += t.numel()

    def _count(self, name: str, args, kwargs, out: torch.Tensor) -> None:
        if name in ("conv1d", "conv2d", "conv3d"):
            w = _arg(args, kwargs, 1, "weight")
            self.add_macs(out.numel() * math.prod(w.shape[1:]))
        elif name.startswith("conv_transpose"):
            x, w = args[0], _arg(args, kwargs, 1, "weight")
            self.add_macs(x.numel() * math.prod(w.shape[1:]))
        elif name == "linear":
            w = _arg(args, kwargs, 1, "weight")
            self.add_macs(out.numel() * int(w.shape[-1]))
        elif name in _MATMUL:
            a = args[1] if name in ("addmm", "baddbmm", "addbmm") else (args[1] if name == "__rmatmul__" else args[0])
            if isinstance(a, torch.Tensor) and a.dim() >= 1:
                self.add_macs(out.numel() * int(a.shape[-1]))
        elif name == "scaled_dot_product_attention":
            q, k, v = args[:3]
            rows = q.numel() // int(q.shape[-1])
            self.add_macs(rows * int(k.shape[-2]) * (int(q.shape[-1]) + int(v.shape[-1])))

    def _propagate(self, name: str, args, kwargs, ins: list[_G], out: torch.Tensor) -> _G:
        src = args[0] if args else None
        g0 = _geom(src)
        spatial = g0 is not None and g0.axes == (-2, -1)
        if name in _CONVS and spatial and len(ins) == 1:
            return _conv_geom(g0, args, kwargs, out)
        if name in _POOLS and spatial:
            return _pool_geom(name, g0, args, kwargs, out)
        if name in _ADAPTIVE and spatial:
            return _adaptive_geom(g0, out)
        if name == "pad" and spatial:
            return _pad_geom(g0, args, kwargs, out)
        if name == "__getitem__" and g0 is not None and g0.axes is not None:
            g = _getitem_geom(g0, src, args[1], out)
            if g is not None:
                return g
        if name == "permute" and g0 is not None and g0.axes is not None:
            dims = args[1:] if len(args) > 2 or isinstance(args[1], int) else args[1]
            dims = kwargs.get("dims", dims)
            return _permute_geom(g0, src, dims, out)
        if name in ("transpose", "swapaxes", "swapdims") and g0 is not None and g0.axes is not None:
            a, b = int(_arg(args, kwargs, 1, "dim0")), int(_arg(args, kwargs, 2, "dim1"))
            dims = list(range(src.dim()))
            dims[a], dims[b] = dims[b], dims[a]
            return _permute_geom(g0, src, dims, out)
        if name == "linear" and g0 is not None and g0.axes is not None and -1 in g0.axes:
            return _globalise(g0)
        if name in _MATMUL:
            a, b = (args[1], args[0]) if name == "__rmatmul__" else (
                (args[1], args[2]) if name in ("addmm", "baddbmm", "addbmm") else (args[0], args[1]))
            ga, gb = _geom(a), _geom(b)
            if (ga is not None and ga.axes is not None and -1 in ga.axes) or (gb is not None and gb.axes is not None):
                return _union([_globalise(g) for g in ins], None, (0, 0))
        if name in _GLOBAL:
            return _union([_globalise(g) for g in ins], None, (0, 0))
        return _generic(ins, out)


def _run(model: nn.Module, size: int, device: str, channels: int = 3) -> tuple[_Tracer, dict[str, nn.Module]]:
    """One traced forward pass of a private model on a ``(1, channels, size, size)`` input."""
    tracer = _Tracer()
    modules = dict(model.named_modules())
    handles = []
    # Hooks go straight onto this model (not through vizcore.tap): it was built for this
    # trace alone, is never shared, and the tracer needs pre-hooks for its module stack.
    try:
        for name, m in modules.items():
            handles.append(m.register_forward_pre_hook(tracer.pre_hook(name)))
            handles.append(m.register_forward_hook(tracer.post_hook(name)))
        x = torch.zeros(1, channels, size, size, device=device)
        _set(x, _G((1.0, 1.0), (1.0, 1.0), (0.0, 0.0), (-2, -1), (size, size)))
        with torch.no_grad(), tracer:
            model(x)
    finally:
        for h in handles:
            h.remove()
    return tracer, modules


@dataclass(frozen=True)
class _Trace:
    name: str
    input_size: int
    device: str
    taps: tuple[Tap, ...]
    modules: tuple[str, ...]
    leaves: frozenset[str]
    kinds: dict[str, str] = field(hash=False, compare=False)
    own_params: dict[str, int] = field(hash=False, compare=False)
    records: dict[str, _Record] = field(hash=False, compare=False)
    total_params: int = 0
    total_macs: int = 0


def _trace_model(name: str, model: nn.Module, size: int, device: str, taps: Sequence[Tap],
                 channels: int = 3) -> _Trace:
    tracer, modules = _run(model, size, device, channels)
    # a model without children (a single conv) is its own leaf, listed under the path ""
    leaves = frozenset(n for n, m in modules.items() if next(m.children(), None) is None)
    return _Trace(
        name=name, input_size=size, device=device, taps=tuple(taps), modules=tuple(n for n in modules if n),
        leaves=leaves, kinds={n: type(m).__name__ for n, m in modules.items()},
        own_params={n: sum(p.numel() for p in m.parameters()) for n, m in modules.items() if n in leaves},
        records=tracer.records, total_params=sum(p.numel() for p in model.parameters()),
        total_macs=tracer.macs,
    )


@functools.lru_cache(maxsize=64)
def _trace(spec: ModelSpec, size: int) -> _Trace:
    """Trace ``spec`` on the meta device, falling back to a random-init CPU model."""
    from vizcore.models.loading import build, taps_for

    try:
        with torch.device("meta"):
            model = build(spec)
        return _trace_model(spec.name, model, size, "meta", taps_for(spec, model))
    except Exception as e:  # noqa: BLE001 - some builders or forwards need real tensors
        log.info("%s cannot be traced on the meta device (%s); using the CPU", spec.name, e)
    model = build(spec)
    try:
        return _trace_model(spec.name, model, size, "cpu", taps_for(spec, model))
    except Exception as e:  # noqa: BLE001
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{spec.name} cannot run at input size {size}: {first}") from None


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


def _report(g: _G | None) -> tuple[int, int, float]:
    if g is None:
        return 0, 0, 0.0
    rf = int(round(max(g.rf)))
    jump = int(round(max(g.jump)))
    return rf, jump, float(g.start[0])


def _rows(tr: _Trace, layers: str) -> list[LayerRow]:
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
    tr = _trace(spec, size)
    return Summary(spec.name, size, _rows(tr, layers), tr.total_params, tr.total_macs, layers, tr.device)


def summarize_module(model: nn.Module, input_size: int, *, name: str = "module", in_channels: int = 3,
                     taps: Sequence[Tap] | None = None, layers: str = "all") -> Summary:
    """:func:`summarize` for any ``nn.Module`` taking ``(1, in_channels, H, W)`` inputs, on its own device.

    The model gets hooks for the duration of the call: pass a model nobody else is running.
    """
    p = next(model.parameters(), None)
    device = str(p.device) if p is not None else "cpu"
    tr = _trace_model(name, model, int(input_size), device, list(taps or []), int(in_channels))
    return Summary(name, int(input_size), _rows(tr, layers), tr.total_params, tr.total_macs, layers, device)


def _resolve(tr: _Trace, spec: ModelSpec, layer: str) -> str:
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
    tr = _trace(spec, size)
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


# -------------------------------------------------------------- GoogLeNet table
# Szegedy et al. 2015, Table 1: (block, params in K, ops in M) as printed.
GOOGLENET_TABLE1: dict[str, tuple[int, int]] = {
    "inception3a": (159, 128), "inception3b": (380, 304),
    "inception4a": (364, 73), "inception4b": (437, 88), "inception4c": (463, 100),
    "inception4d": (580, 119), "inception4e": (840, 170),
    "inception5a": (1072, 54), "inception5b": (1388, 71),
}


@dataclass(frozen=True)
class InceptionRow:
    """One inception block: what torchvision (or the paper's layout) computes, beside Table 1."""

    block: str
    output_shape: tuple
    params: int          # every parameter of the block (BatchNorm included)
    conv_weights: int    # convolution weights only, what the paper's table counts
    macs: int
    paper_params: int    # Table 1, in parameters (the paper prints thousands)
    paper_ops: int       # Table 1, in multiply-accumulates (the paper prints millions)

    def to_json(self) -> dict:
        return {"block": self.block, "output_shape": list(self.output_shape), "params": self.params,
                "conv_weights": self.conv_weights, "macs": self.macs,
                "paper_params": self.paper_params, "paper_ops": self.paper_ops}


def _paper_googlenet() -> nn.Module:
    """torchvision's GoogLeNet with the paper's 5x5 convolutions in the "5x5" branch."""
    from vizcore.models.loading import build

    model = build(get_spec("googlenet"))
    for m in model.modules():
        if type(m).__name__ == "Inception":
            conv = m.branch3[1].conv
            m.branch3[1].conv = nn.Conv2d(conv.in_channels, conv.out_channels, 5, padding=2, bias=False,
                                          device=conv.weight.device)
    return model


@functools.lru_cache(maxsize=8)
def _inception_rows(size: int, variant: str) -> tuple[InceptionRow, ...]:
    if variant == "torchvision":
        with torch.device("meta"):
            from vizcore.models.loading import build

            model = build(get_spec("googlenet"))
    elif variant == "paper":
        with torch.device("meta"):
            model = _paper_googlenet()
    else:
        raise ValueError(f"variant must be 'torchvision' or 'paper', not {variant!r}")
    tr = _trace_model(f"googlenet ({variant})", model, size, "meta", [])
    modules = dict(model.named_modules())
    rows = []
    for block, (pk, pm) in GOOGLENET_TABLE1.items():
        m, rec = modules[block], tr.records[block]
        conv_w = sum(c.weight.numel() for c in m.modules() if isinstance(c, nn.Conv2d))
        rows.append(InceptionRow(block, rec.output_shape, sum(p.numel() for p in m.parameters()),
                                 conv_w, rec.macs, pk * 1000, pm * 1_000_000))
    return tuple(rows)


def inception_table(input_size: int = 224, *, variant: str = "torchvision") -> list[InceptionRow]:
    """Parameters and MACs of GoogLeNet's nine inception blocks beside the paper's Table 1.

    ``variant="torchvision"`` is the registered model (3x3 in the "5x5" branch, BatchNorm);
    ``"paper"`` puts the 5x5 convolutions back, so ``macs`` matches the paper's ops column.
    """
    return list(_inception_rows(int(input_size), variant))
