"""The tracer: one forward pass under a :class:`torch.overrides.TorchFunctionMode`.

The mode sees every torch function of the pass and propagates each tensor's
geometry with the rules of :mod:`vizcore.summary.geometry`; it counts the
multiply-accumulates of convolutions, linear layers, matrix products and
attention, and which parameters are used first where. Forward hooks on the
(private, freshly built) model record each module's output.

Models are built by :func:`vizcore.models.build` on PyTorch's ``meta`` device
(no memory, no weights, milliseconds); architectures that cannot run there are
built with random weights on the CPU instead. Pretrained weights are never loaded.
"""
from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode

from vizcore.models.registry import ModelSpec, Tap
from vizcore.summary.geometry import (
    RFGeometry,
    adaptive_geom,
    geom_arg,
    conv_geom,
    generic_geom,
    geom_of,
    getitem_geom,
    globalise,
    pad_geom,
    permute_geom,
    pool_geom,
    set_geom,
    union_geom,
)

log = logging.getLogger("vizcore.summary")


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
    geom: RFGeometry | None = None
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
                rec.geom = geom_of(t)

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
        ins = [g for g in (geom_of(t) for t in _tensors(args)) if g is not None]
        ins += [g for g in (geom_of(v) for v in kwargs.values()) if g is not None]
        if not ins:
            return out
        for t in outs:
            try:
                set_geom(t, self._propagate(name, args, kwargs, ins, t))
            except Exception as e:  # noqa: BLE001 - a geometry rule must never break the forward pass
                log.debug("geometry rule for %s failed: %s", name, e)
                set_geom(t, generic_geom(ins, t))
        return out

    def _params(self, args, kwargs) -> None:
        for t in list(_tensors(args)) + list(_tensors(kwargs)):
            if isinstance(t, nn.Parameter) and id(t) not in self.seen:
                self.seen.add(id(t))
                self.params += t.numel()

    def _count(self, name: str, args, kwargs, out: torch.Tensor) -> None:
        if name in ("conv1d", "conv2d", "conv3d"):
            w = geom_arg(args, kwargs, 1, "weight")
            self.add_macs(out.numel() * math.prod(w.shape[1:]))
        elif name.startswith("conv_transpose"):
            x, w = args[0], geom_arg(args, kwargs, 1, "weight")
            self.add_macs(x.numel() * math.prod(w.shape[1:]))
        elif name == "linear":
            w = geom_arg(args, kwargs, 1, "weight")
            self.add_macs(out.numel() * int(w.shape[-1]))
        elif name in _MATMUL:
            a = args[1] if name in ("addmm", "baddbmm", "addbmm") else (args[1] if name == "__rmatmul__" else args[0])
            if isinstance(a, torch.Tensor) and a.dim() >= 1:
                self.add_macs(out.numel() * int(a.shape[-1]))
        elif name == "scaled_dot_product_attention":
            q, k, v = args[:3]
            rows = q.numel() // int(q.shape[-1])
            self.add_macs(rows * int(k.shape[-2]) * (int(q.shape[-1]) + int(v.shape[-1])))

    def _propagate(self, name: str, args, kwargs, ins: list[RFGeometry], out: torch.Tensor) -> RFGeometry:
        src = args[0] if args else None
        g0 = geom_of(src)
        spatial = g0 is not None and g0.axes == (-2, -1)
        if name in _CONVS and spatial and len(ins) == 1:
            return conv_geom(g0, args, kwargs, out)
        if name in _POOLS and spatial:
            return pool_geom(name, g0, args, kwargs, out)
        if name in _ADAPTIVE and spatial:
            return adaptive_geom(g0, out)
        if name == "pad" and spatial:
            return pad_geom(g0, args, kwargs, out)
        if name == "__getitem__" and g0 is not None and g0.axes is not None:
            g = getitem_geom(g0, src, args[1], out)
            if g is not None:
                return g
        if name == "permute" and g0 is not None and g0.axes is not None:
            dims = args[1:] if len(args) > 2 or isinstance(args[1], int) else args[1]
            dims = kwargs.get("dims", dims)
            return permute_geom(g0, src, dims, out)
        if name in ("transpose", "swapaxes", "swapdims") and g0 is not None and g0.axes is not None:
            a, b = int(geom_arg(args, kwargs, 1, "dim0")), int(geom_arg(args, kwargs, 2, "dim1"))
            dims = list(range(src.dim()))
            dims[a], dims[b] = dims[b], dims[a]
            return permute_geom(g0, src, dims, out)
        if name == "linear" and g0 is not None and g0.axes is not None and -1 in g0.axes:
            return globalise(g0)
        if name in _MATMUL:
            a, b = (args[1], args[0]) if name == "__rmatmul__" else (
                (args[1], args[2]) if name in ("addmm", "baddbmm", "addbmm") else (args[0], args[1]))
            ga, gb = geom_of(a), geom_of(b)
            if (ga is not None and ga.axes is not None and -1 in ga.axes) or (gb is not None and gb.axes is not None):
                return union_geom([globalise(g) for g in ins], None, (0, 0))
        if name in ("interpolate", "upsample") and spatial and torch.is_tensor(src) \
                and tuple(out.shape[-2:]) == tuple(src.shape[-2:]):
            return g0  # a resize to the same size is the identity (a detector's transform at its own size)
        if name in _GLOBAL:
            return union_geom([globalise(g) for g in ins], None, (0, 0))
        return generic_geom(ins, out)


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
        set_geom(x, RFGeometry((1.0, 1.0), (1.0, 1.0), (0.0, 0.0), (-2, -1), (size, size)))
        with torch.no_grad(), tracer:
            model(x)
    finally:
        for h in handles:
            h.remove()
    return tracer, modules


@dataclass(frozen=True)
class Trace:
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


def trace_model(name: str, model: nn.Module, size: int, device: str, taps: Sequence[Tap],
                 channels: int = 3) -> Trace:
    tracer, modules = _run(model, size, device, channels)
    # a model without children (a single conv) is its own leaf, listed under the path ""
    leaves = frozenset(n for n, m in modules.items() if next(m.children(), None) is None)
    return Trace(
        name=name, input_size=size, device=device, taps=tuple(taps), modules=tuple(n for n in modules if n),
        leaves=leaves, kinds={n: type(m).__name__ for n, m in modules.items()},
        own_params={n: sum(p.numel() for p in m.parameters()) for n, m in modules.items() if n in leaves},
        records=tracer.records, total_params=sum(p.numel() for p in model.parameters()),
        total_macs=tracer.macs,
    )


@functools.lru_cache(maxsize=64)
def trace(spec: ModelSpec, size: int) -> Trace:
    """Trace ``spec`` on the meta device, falling back to a random-init CPU model."""
    from vizcore.models.building import build, taps_for

    try:
        with torch.device("meta"):
            model = build(spec)
        return trace_model(spec.name, model, size, "meta", taps_for(spec, model))
    except Exception as e:  # noqa: BLE001 - some builders or forwards need real tensors
        log.info("%s cannot be traced on the meta device (%s); using the CPU", spec.name, e)
    model = build(spec)
    try:
        return trace_model(spec.name, model, size, "cpu", taps_for(spec, model))
    except Exception as e:  # noqa: BLE001
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{spec.name} cannot run at input size {size}: {first}") from None
