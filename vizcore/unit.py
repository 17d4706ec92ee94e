"""Everything about one unit (model, layer, channel): what it supports, what drives it, what it sees.

Four questions about a channel, each answered by gradients or weights of the shared
model (never mutated: hooks come from :func:`vizcore.tap.tap` under ``lm.lock``, and
gradients are taken with respect to inputs and activations only, parameters keep
``requires_grad=False``):

- :func:`class_support`: which classes the channel votes for. For a layer below a
  pooled linear head, the derivative of each class logit with respect to the
  channel's spatial mean activation (a uniform shift of the whole map), averaged over
  the given images. One Jacobian-vector product gives it for all classes at once (the
  double-backward trick: ``d/dv <J^T v, u> = J u``), so 1,000 classes cost three
  backward passes, not 1,000.
- :func:`drivers`: which units of the previous tap drive it. Where a single
  convolution connects the previous tap to this one (found by walking the autograd
  graph between the two: one convolution node, only channel-wise operations around it,
  no path around it), by the magnitude of that convolution's weights; otherwise by
  gradient x activation of the previous tap (as Captum's ``LayerGradientXActivation``,
  written out here because hooks must go through :func:`vizcore.tap.tap`), averaged
  over images.
- :func:`effective_rf`: the gradient of one unit's activation with respect to the
  input pixels (Luo et al., "Understanding the Effective Receptive Field in Deep
  Convolutional Neural Networks", NeurIPS 2016, https://arxiv.org/abs/1701.04128),
  |grad| summed over colour, and the smallest box holding 90 % of it, beside the
  theoretical field of :func:`vizcore.summary.layer_geometry`.
- :func:`unit_crop` / :func:`hit_crop`: crops that show something. Small fields get
  at least 64 px of context with the field outlined; fields covering most of the input
  (deep layers, squeeze-excitation gates) are cropped to the effective receptive field
  of that image instead. Each crop says which was used.

Each analysis is also a job (:mod:`vizcore.jobs`: progress, stop with the partial result,
resume, cached on disk through :mod:`vizcore.cache`, keyed by the model's weights, the
layer, the channel, the images' content and the settings): :class:`ClassSupportJob`,
:class:`DriversJob`, :class:`EffectiveRFJob` and :class:`CropsJob`, so a unit page
reopened in a new session reads them from the cache. The functions above are the same
computations run straight through, without the cache.
"""
from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from vizcore.identity import image_identity, result_key
from vizcore.jobs import StepJob, Tick, Work
from vizcore.models import LoadedModel
from vizcore.tap import forward_until, tap

if TYPE_CHECKING:
    from vizcore.patches import MiningResult
    from vizcore.summary import Geometry

__all__ = [
    "CONTEXT_PX", "COVER", "ERF_MASS", "ClassScore", "ClassSupport", "ClassSupportJob", "CropsJob", "Driver",
    "Drivers", "DriversJob", "EffectiveRF", "EffectiveRFJob", "UnitCrop", "class_support", "direct_conv", "drivers",
    "effective_rf", "hit_crop", "previous_tap", "smallest_box", "unit_crop",
]

CONTEXT_PX = 64
"""Context added around small receptive fields (pixels, shared between both sides)."""
COVER = 0.8
"""A theoretical field at least this share of the input side is 'most of the input': use the ERF."""
ERF_MASS = 0.9
"""Share of the input gradient the effective-receptive-field box holds."""
RGB = ("red", "green", "blue")

ImageLike = Image.Image | str | os.PathLike


# ------------------------------------------------------------------------ results
@dataclass(frozen=True)
class ClassScore:
    index: int
    label: str
    value: float

    def to_json(self) -> dict:
        return {"index": self.index, "label": self.label, "value": self.value}


@dataclass(frozen=True)
class ClassSupport:
    """Classes a channel supports (largest ``value`` first) and opposes (most negative first)."""

    model: str
    layer: str
    channel: int
    method: str
    n_images: int
    top: list[ClassScore]
    bottom: list[ClassScore]

    def to_json(self) -> dict:
        return {"model": self.model, "layer": self.layer, "channel": self.channel, "method": self.method,
                "n_images": self.n_images, "top": [c.to_json() for c in self.top],
                "bottom": [c.to_json() for c in self.bottom]}

    @classmethod
    def from_json(cls, d: dict) -> "ClassSupport":
        mk = lambda c: ClassScore(int(c["index"]), str(c["label"]), float(c["value"]))  # noqa: E731
        return cls(d["model"], d["layer"], int(d["channel"]), d["method"], int(d["n_images"]),
                   [mk(c) for c in d["top"]], [mk(c) for c in d["bottom"]])


@dataclass(frozen=True)
class Driver:
    """One unit of the previous tap: ``layer`` is ``None`` when it is a colour channel of the input."""

    layer: str | None
    channel: int
    value: float
    label: str

    def to_json(self) -> dict:
        return {"layer": self.layer, "channel": self.channel, "value": self.value, "label": self.label}


@dataclass(frozen=True)
class Drivers:
    """The units of ``source`` (the previous tap, or ``"input"``) that drive one channel most.

    Attributes:
        kind: ``"weights"`` (one convolution connects them; ``conv`` is its module path)
            or ``"gradient x activation"``.
        method: one sentence naming the method, for display.
        drivers: strongest first (largest value).
    """

    model: str
    layer: str
    channel: int
    source: str
    kind: str
    method: str
    conv: str | None
    n_images: int
    drivers: list[Driver]

    def to_json(self) -> dict:
        return {"model": self.model, "layer": self.layer, "channel": self.channel, "source": self.source,
                "kind": self.kind, "method": self.method, "conv": self.conv, "n_images": self.n_images,
                "drivers": [d.to_json() for d in self.drivers]}

    @classmethod
    def from_json(cls, d: dict) -> "Drivers":
        ds = [Driver(x["layer"], int(x["channel"]), float(x["value"]), x["label"]) for x in d["drivers"]]
        return cls(d["model"], d["layer"], int(d["channel"]), d["source"], d["kind"], d["method"], d["conv"],
                   int(d["n_images"]), ds)


@dataclass(frozen=True)
class EffectiveRF:
    """Input gradient of one unit and the boxes around it (``(x0, y0, x1, y1)``, half-open, input pixels).

    Attributes:
        grad: ``(S, S)`` |d unit / d input| summed over colour.
        box: the smallest box holding ``mass`` of ``grad``, ``None`` when the gradient is zero
            (a unit clipped by its activation function: ReLU below zero, ReLU6 at six).
        theoretical: the theoretical receptive field of the unit, clipped to the input.
        geometry: the layer's :class:`vizcore.summary.Geometry`.
        input: the preprocessed input (what the boxes refer to).
        value: the unit's activation.
        target: the module differentiated (see below).
    """

    layer: str
    channel: int
    y: int
    x: int
    value: float
    mass: float
    box: tuple[int, int, int, int] | None
    theoretical: tuple[int, int, int, int]
    geometry: "Geometry"
    grad: np.ndarray = field(repr=False, compare=False)
    input: Image.Image = field(repr=False, compare=False)
    target: str = ""
    """Module whose output was differentiated: the tap's, or (for a unit clipped by its activation
    function) the pre-activation inside it."""

    def to_json(self) -> dict:
        return {"layer": self.layer, "channel": self.channel, "y": self.y, "x": self.x, "value": self.value,
                "target": self.target, "mass": self.mass, "box": list(self.box) if self.box else None,
                "theoretical": list(self.theoretical), "geometry": self.geometry.to_json()}


@dataclass(frozen=True)
class UnitCrop:
    """A crop of the input around one unit's field, the field outlined when there is context.

    ``method`` is ``"receptive field + context"`` or ``"effective receptive field (90 % of gradient)"``
    (or says the theoretical field was kept because the gradient was zero).
    """

    image: Image.Image
    crop_box: tuple[int, int, int, int]
    field_box: tuple[int, int, int, int]
    method: str


# ---------------------------------------------------------------------- helpers
def _load(image: ImageLike) -> Image.Image:
    from vizcore.data.images import load_image, to_rgb

    return to_rgb(load_image(image) if isinstance(image, (str, os.PathLike)) else image)


def _batch(lm: LoadedModel, images: ImageLike | Sequence[ImageLike]) -> torch.Tensor:
    """Preprocessed ``(B, 3, S, S)`` on the model's device."""
    if isinstance(images, (Image.Image, str, os.PathLike)):
        images = [images]
    if not images:
        raise ValueError("no images given")
    tf = lm.transform()
    return torch.stack([tf(_load(im)) for im in images]).to(lm.device)


def _n_channels(t: torch.Tensor) -> int:
    return int(t.shape[1]) if t.dim() >= 2 else 1


def _check_channel(t: torch.Tensor, layer: str, channel: int) -> None:
    n = _n_channels(t)
    if not 0 <= int(channel) < n:
        raise ValueError(f"layer {layer!r} has {n} channels (0-{n - 1}); channel {channel} does not exist")


def _channel_mean(act: torch.Tensor, channel: int) -> torch.Tensor:
    """Per image, the channel's spatial mean ``(B,)`` (the value itself for vectors ``(B, C)``)."""
    a = act[:, channel]
    return a.reshape(a.shape[0], -1).mean(dim=1)


def _tap_list(lm: LoadedModel) -> list[tuple[str, str]]:
    return [(t.name, t.module) for t in lm.taps()]


def _tap_name(lm: LoadedModel, layer: str) -> str:
    """The tap name of ``layer`` (a tap name or the module path of a tap)."""
    path = lm.resolve(layer)
    for name, module in _tap_list(lm):
        if name == layer or module == path:
            return name
    raise ValueError(f"{layer!r} is not one of the taps of {lm.name}; drivers are defined between taps")


def previous_tap(lm: LoadedModel, layer: str) -> tuple[str, str] | None:
    """``(name, module path)`` of the tap before ``layer`` in network order, ``None`` for the first tap."""
    name = _tap_name(lm, layer)
    taps = _tap_list(lm)
    i = [n for n, _ in taps].index(name)
    path = taps[i][1]
    for n, p in reversed(taps[:i]):
        if p != path:
            return n, p
    return None


# --------------------------------------------------------------- class support
def _logits_of(lm: LoadedModel, out) -> torch.Tensor:
    from vizcore.activations import class_logits

    logits = class_logits(out)
    cats = lm.categories
    if logits is None or cats is None or logits.shape[1] != len(cats):
        raise ValueError(f"{lm.name} has no ImageNet classification head: no class support")
    return logits


def _support_scores(lm: LoadedModel, layer: str, channel: int, x: torch.Tensor) -> torch.Tensor:
    """Per image, every logit's response to a uniform shift of the channel's map: ``(B, classes)``."""
    path = lm.resolve(layer)
    with torch.enable_grad(), tap(lm.model, [path], detach=False, clone=True, lock=lm.lock) as store:
        x = x.detach().requires_grad_(True)  # so every activation below the head is in the graph
        logits = _logits_of(lm, lm.model(x))
        act = store[path]
        _check_channel(act, layer, channel)
        if act.shape == logits.shape and torch.equal(act.detach(), logits.detach()):  # the output itself (a copy)
            raise ValueError(f"{layer!r} is the classification head itself; pick a layer below it")
        u = torch.zeros_like(act)
        u[:, int(channel)] = 1.0
        v = torch.zeros_like(logits, requires_grad=True)
        (g,) = torch.autograd.grad(logits, act, grad_outputs=v, create_graph=True)  # J^T v, linear in v
        (ju,) = torch.autograd.grad(g, v, grad_outputs=u)  # J u: every logit's response to the shift
    return ju.detach().float().cpu()


def _support(lm: LoadedModel, layer: str, channel: int, scores: torch.Tensor, n: int, top: int) -> ClassSupport:
    """The :class:`ClassSupport` of mean ``scores`` ``(classes,)`` over ``n`` images."""
    cats = lm.categories
    order = torch.argsort(scores, descending=True, stable=True).tolist()
    mk = lambda i: ClassScore(int(i), str(cats[i]), float(scores[i]))  # noqa: E731
    k = min(int(top), len(order))
    method = (f"d logit / d mean activation of the channel (a uniform shift of its map), "
              f"averaged over {n} image{'s' if n != 1 else ''}")
    return ClassSupport(lm.name, layer, int(channel), method, n, [mk(i) for i in order[:k]],
                        [mk(i) for i in order[::-1][:k]])


def class_support(lm: LoadedModel, layer: str, channel: int, images: ImageLike | Sequence[ImageLike], *,
                  top: int = 10) -> ClassSupport:
    """The classes a channel supports: d logit / d (spatial mean of the channel), averaged over images.

    A uniform shift of the channel's whole map by ``e`` moves its spatial mean by ``e``;
    the logits then move by ``e * J u`` where ``J = d logits / d activation`` and ``u`` is
    one on the channel and zero elsewhere. For the layer right below global pooling and a
    linear head that is exactly the head's weight column; deeper down it is the same
    derivative through every later layer, at these images.

    Args:
        lm: a loaded classifier (shared; not modified).
        layer: tap name or module path below the head.
        channel: the channel.
        images: PIL images or files (e.g. the channel's top dataset images).
        top: classes returned in ``top`` and ``bottom``.

    Returns:
        A :class:`ClassSupport`; ``method`` names the method and the number of images.
        (:class:`ClassSupportJob` is the same, one image at a time, cached.)
    """
    x = _batch(lm, images)
    return _support(lm, layer, channel, _support_scores(lm, layer, channel, x).mean(dim=0), int(x.shape[0]), top)


# --------------------------------------------------------------------- drivers
# Autograd nodes that act on each channel separately (no mixing across channels):
# between the previous tap and the one convolution, or after it, only these may occur
# for the convolution's weights to say which input channels matter.
_CHANNELWISE = (
    "NativeBatchNormBackward", "CudnnBatchNormBackward", "MiopenBatchNormBackward",
    "ReluBackward", "HardtanhBackward", "ThresholdBackward", "LeakyReluBackward", "EluBackward",
    "GeluBackward", "SiluBackward", "HardswishBackward", "SigmoidBackward", "TanhBackward",
    "MaxPool2DWithIndicesBackward", "AvgPool2DBackward", "ConstantPadNdBackward", "ReflectionPad2DBackward",
    "ReplicationPad2DBackward", "CloneBackward", "AddBackward1", "SubBackward1", "MulBackward1",
    "DivBackward1", "AliasBackward", "NativeDropoutBackward", "ToCopyBackward",
)

_DIRECT: "weakref.WeakKeyDictionary[torch.nn.Module, dict]" = weakref.WeakKeyDictionary()
_DIRECT_LOCK = threading.Lock()


def _node_kind(node) -> str:
    return type(node).__name__.rstrip("0123456789")


def _inputs(node) -> list:
    return [n for n, _ in getattr(node, "next_functions", ()) if n is not None]


def _graph_between(top_node, stop_node) -> tuple[list, bool]:
    """Nodes reachable from ``top_node`` before ``stop_node``, and whether ``stop_node`` was reached."""
    seen, stack, found = {}, [top_node], False
    while stack:
        n = stack.pop()
        if n is stop_node:
            found = True
            continue
        if id(n) in seen:
            continue
        seen[id(n)] = n
        stack.extend(_inputs(n))
    return list(seen.values()), found


def _reaches(start, target, blocked) -> bool:
    stack, seen = [start], set()
    while stack:
        n = stack.pop()
        if n is target:
            return True
        if n is blocked or id(n) in seen:
            continue
        seen.add(id(n))
        stack.extend(_inputs(n))
    return False


def _find_direct_conv(lm: LoadedModel, prev_path: str | None, path: str) -> str | None:
    size = lm.spec.input_size
    x = torch.zeros(1, 3, size, size, device=lm.device, requires_grad=True)
    paths = [path] + ([prev_path] if prev_path else [])
    with torch.enable_grad(), tap(lm.model, paths, detach=False, stop=True, clone=True, lock=lm.lock) as store:
        forward_until(lm.model, x)
        out = store[path]
        # Where the walk back from this tap must end: the previous tap's output, or the input itself.
        stop_node = (out.grad_fn and _leaf_node(out.grad_fn, x)) if prev_path is None else store[prev_path].grad_fn
        if out.grad_fn is None or stop_node is None:
            return None
        nodes, found = _graph_between(out.grad_fn, stop_node)
        if not found:
            return None
        convs = [n for n in nodes if _node_kind(n) == "ConvolutionBackward"]
        if len(convs) != 1:
            return None
        conv = convs[0]
        for n in nodes:
            k = _node_kind(n)
            if n is conv or k in _CHANNELWISE:
                continue
            # x + constant / x * constant with one side outside the graph (e.g. a bias) is channel-wise too
            if k in ("AddBackward", "MulBackward", "SubBackward") and len(_inputs(n)) == 1:
                continue
            return None
        if _reaches(out.grad_fn, stop_node, blocked=conv):
            return None  # a path around the convolution (e.g. a residual connection)
        w = getattr(conv, "_saved_weight", None)
        if w is None:
            return None
        for name, m in lm.model.named_modules():
            weight = getattr(m, "weight", None)
            if isinstance(m, torch.nn.modules.conv._ConvNd) and weight is not None \
                    and weight.data_ptr() == w.data_ptr() and weight.shape == w.shape:
                return name
    return None


def _leaf_node(top, leaf: torch.Tensor):
    """The AccumulateGrad node of ``leaf`` in the graph above ``top``."""
    stack, seen = [top], set()
    while stack:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        if getattr(n, "variable", None) is leaf:
            return n
        stack.extend(_inputs(n))
    return None


def direct_conv(lm: LoadedModel, layer: str) -> str | None:
    """The module path of the one convolution connecting the previous tap (or the input) to
    ``layer`` directly, or ``None`` when there is none (several convolutions, a residual path,
    squeeze-excitation, a concatenation...). Found once per model and layer from the autograd
    graph of a forward pass of a blank image."""
    name = _tap_name(lm, layer)
    with _DIRECT_LOCK:
        memo = _DIRECT.setdefault(lm.model, {})
        if name in memo:
            return memo[name]
    prev = previous_tap(lm, name)
    found = _find_direct_conv(lm, prev[1] if prev else None, lm.resolve(name))
    with _DIRECT_LOCK:
        _DIRECT.setdefault(lm.model, {})[name] = found
    return found


def _weight_drivers(lm: LoadedModel, layer: str, channel: int, top: int) -> Drivers | None:
    """:func:`drivers` by weight magnitude, or ``None`` when no single convolution connects the taps."""
    name = _tap_name(lm, layer)
    conv = direct_conv(lm, name)
    if conv is None:
        return None
    prev = previous_tap(lm, name)
    source = prev[0] if prev else "input"
    m = dict(lm.model.named_modules())[conv]
    w = m.weight.detach().float()
    c_out, c_in_g = int(w.shape[0]), int(w.shape[1])
    if not 0 <= int(channel) < c_out:
        raise ValueError(f"layer {layer!r} has {c_out} channels (0-{c_out - 1}); channel {channel} does not exist")
    group = int(channel) // (c_out // int(m.groups))
    mags = w[int(channel)].abs().reshape(c_in_g, -1).sum(dim=1).cpu()
    order = torch.argsort(mags, descending=True, stable=True).tolist()[:top]
    kernel = "x".join(map(str, w.shape[2:]))
    method = (f"weight magnitude: sum of |w| over the {kernel} kernel of {conv}, the one convolution "
              f"connecting {source} to {name}")
    ds = [Driver(prev[0] if prev else None, group * c_in_g + i, float(mags[i]), _driver_label(prev, group * c_in_g + i))
          for i in order]
    return Drivers(lm.name, name, int(channel), source, "weights", method, conv, 0, ds)


def _driver_label(prev: tuple[str, str] | None, c: int) -> str:
    return RGB[c] if prev is None and c < 3 else f"{prev[0] if prev else 'input'}:{c}"


def _gxa_scores(lm: LoadedModel, layer: str, channel: int, x: torch.Tensor) -> torch.Tensor:
    """Per image, gradient x activation of the previous tap for the channel's mean, summed over
    positions: ``(B, C_prev)``."""
    name = _tap_name(lm, layer)
    path = lm.resolve(name)
    prev = previous_tap(lm, name)
    paths = [path] + ([prev[1]] if prev else [])
    with torch.enable_grad(), tap(lm.model, paths, detach=False, stop=True, clone=True, lock=lm.lock) as store:
        x = x.detach().requires_grad_(True)
        forward_until(lm.model, x)
        act = store[path]
        _check_channel(act, name, channel)
        src = store[prev[1]] if prev else x
        (g,) = torch.autograd.grad(_channel_mean(act, int(channel)).sum(), src)
    gxa = (g * src).detach().float()
    return gxa.reshape(gxa.shape[0], gxa.shape[1], -1).sum(dim=2).cpu()


def _gxa_drivers(lm: LoadedModel, layer: str, channel: int, scores: torch.Tensor, n: int, top: int) -> Drivers:
    """The :class:`Drivers` of mean gradient x activation ``scores`` ``(C_prev,)`` over ``n`` images."""
    name = _tap_name(lm, layer)
    prev = previous_tap(lm, name)
    source = prev[0] if prev else "input"
    order = torch.argsort(scores, descending=True, stable=True).tolist()[:top]
    method = (f"gradient x activation of {source} for the channel's mean activation, summed over positions, "
              f"averaged over {n} image{'s' if n != 1 else ''} (no single convolution connects {source} to {name})")
    ds = [Driver(prev[0] if prev else None, i, float(scores[i]), _driver_label(prev, i)) for i in order]
    return Drivers(lm.name, name, int(channel), source, "gradient x activation", method, None, n, ds)


def _no_conv_error(lm: LoadedModel, layer: str) -> ValueError:
    name = _tap_name(lm, layer)
    prev = previous_tap(lm, name)
    source = prev[0] if prev else "input"
    return ValueError(f"no single convolution connects {source} to {name}: give images for gradient x activation")


def drivers(lm: LoadedModel, layer: str, channel: int, images: ImageLike | Sequence[ImageLike] | None = None, *,
            top: int = 8) -> Drivers:
    """The units of the previous tap that drive ``channel`` of ``layer`` most.

    By weight magnitude (sum of |w| over the kernel, per input channel) where one
    convolution connects the previous tap (or, for the first tap, the input's colour
    channels) to this tap with only channel-wise operations around it; otherwise by
    gradient x activation of the previous tap for the channel's spatial mean, summed over
    positions and averaged over ``images`` (required then).

    Returns:
        :class:`Drivers`, strongest first. (:class:`DriversJob` is the same, one image at a
        time, cached.)
    """
    by_weights = _weight_drivers(lm, layer, channel, top)
    if by_weights is not None:
        return by_weights
    if images is None:
        raise _no_conv_error(lm, layer)
    x = _batch(lm, images)
    return _gxa_drivers(lm, layer, channel, _gxa_scores(lm, layer, channel, x).mean(dim=0), int(x.shape[0]), top)


# ---------------------------------------------------------- receptive fields
def smallest_box(weights: np.ndarray, mass: float = ERF_MASS) -> tuple[int, int, int, int] | None:
    """The smallest-area box ``(x0, y0, x1, y1)`` (half-open) holding ``mass`` of non-negative ``weights``.

    Exhaustive over every box, in ``O(H^2 W log W)``: for each band of rows, prefix sums
    along x and a binary search give the narrowest run of columns holding the target from
    every left edge. (No library offers this; the usual "threshold the map" boxes are
    not the smallest.) Ties go to the box holding more. ``None`` if the total is zero.
    """
    w = np.clip(np.asarray(weights, dtype=np.float64), 0, None)
    total = float(w.sum())
    if not total > 0:
        return None
    target = mass * total * (1 - 1e-9)
    h_max, w_max = w.shape
    rows = np.vstack([np.zeros((1, w_max)), np.cumsum(w, axis=0)])  # (H+1, W)
    big = 2 * (total + target) + 1.0

    def narrowest(h: int):
        band = rows[h:] - rows[:-h]  # (n, W): column sums of every band of h rows
        n = band.shape[0]
        cs = np.concatenate([np.zeros((n, 1)), np.cumsum(band, axis=1)], axis=1)  # (n, W+1)
        if cs[:, -1].max() < target:
            return None
        offs = (np.arange(n, dtype=np.float64) * big)[:, None]
        flat = (cs + offs).ravel()  # non-decreasing: each row is, and rows are offset apart
        q = cs[:, :-1] + target + offs
        idx = np.searchsorted(flat, q.ravel(), side="left").reshape(n, w_max)
        x1 = idx - (np.arange(n) * (w_max + 1))[:, None]
        valid = x1 <= w_max
        width = np.where(valid, x1 - np.arange(w_max)[None, :], np.iinfo(np.int64).max)
        wd = int(width.min())
        held = np.where(width == wd, np.take_along_axis(cs, np.minimum(x1, w_max), 1) - cs[:, :-1], -1.0)
        r, x0 = np.unravel_index(np.argmax(held), held.shape)  # of the narrowest, the one holding most
        return wd, (int(x0), int(r), int(x0 + wd), int(r + h)), float(held[r, x0])

    full = narrowest(h_max)
    if full is None:
        return None
    best_area, best_box, best_held = full[0] * h_max, full[1], full[2]
    for h in range(1, h_max):
        if h * full[0] > best_area:  # the narrowest width only shrinks as bands grow taller
            break
        got = narrowest(h)
        if got is None:
            continue
        area = got[0] * h
        if area < best_area or (area == best_area and got[2] > best_held):
            best_area, best_box, best_held = area, got[1], got[2]
    return best_box


def _geometry(lm: LoadedModel, layer: str, size: int) -> "Geometry":
    from vizcore.summary import layer_geometry

    return layer_geometry(lm, lm.resolve(layer), size)


def effective_rf(lm: LoadedModel, layer: str, channel: int, image: ImageLike, y: int | None = None,
                 x: int | None = None, *, mass: float = ERF_MASS) -> EffectiveRF:
    """The effective receptive field of unit ``(channel, y, x)`` of ``layer`` for one image.

    Args:
        image: the original image (PIL or file); it is preprocessed as the model expects.
        y, x: the unit's position in the layer's map; ``None`` for the channel's maximum.
        mass: share of the gradient the box holds.

    Returns:
        :class:`EffectiveRF`: the ``(S, S)`` map of |d unit / d input| summed over colour,
        its smallest box holding ``mass``, and the theoretical field of that unit.
    """
    from vizcore.activations import denormalize
    from vizcore.summary import rf_box

    path = lm.resolve(layer)
    inp = _batch(lm, [image])
    # The tap's submodules too: a unit clipped by its activation (ReLU6 at six, as the top images
    # of MobileNet/EfficientNet-Lite units often are) has no input gradient; its pre-activation has.
    subs = [n for n, _ in lm.model.named_modules() if n.startswith(path + ".")]
    with torch.enable_grad(), \
            tap(lm.model, [path] + subs, detach=False, stop=True, clone=True, lock=lm.lock) as store:
        inp = inp.detach().requires_grad_(True)
        forward_until(lm.model, inp)
        act = store[path]
        _check_channel(act, layer, channel)
        m = act[0, int(channel)]
        if m.dim() == 2:
            if y is None or x is None:
                flat = int(m.detach().reshape(-1).argmax())
                y, x = divmod(flat, int(m.shape[1]))
            if not (0 <= y < m.shape[0] and 0 <= x < m.shape[1]):
                raise ValueError(f"position ({y}, {x}) is outside the {m.shape[0]}x{m.shape[1]} map of {layer!r}")
            idx = (0, int(channel), int(y), int(x))
        else:
            y, x, idx = 0, 0, (0, int(channel))
        value = float(act[idx].detach())
        target = path
        (g,) = torch.autograd.grad(act[idx], inp, retain_graph=True)
        if not g.abs().sum() > 0:
            same = [p for p in store if p in subs and torch.is_tensor(store[p]) and store[p].shape == act.shape
                    and store[p].grad_fn is not None and store[p] is not act]
            for p in reversed(same):  # the latest same-shaped output inside the tap: its pre-activation
                (g2,) = torch.autograd.grad(store[p][idx], inp, retain_graph=True)
                if g2.abs().sum() > 0:
                    g, target = g2, p
                    break
    heat = g[0].detach().abs().sum(dim=0).float().cpu().numpy()
    size = int(inp.shape[-1])
    geom = _geometry(lm, layer, size)
    return EffectiveRF(layer, int(channel), int(y), int(x), value, mass, smallest_box(heat, mass),
                       rf_box(geom, int(y), int(x), size), geom, heat, denormalize(lm, inp[0]), target)


def _with_context(box: tuple[int, int, int, int], size: int, context: int) -> tuple[int, int, int, int]:
    """``box`` grown by ``context`` pixels per axis (half each side), shifted to stay inside the input."""
    out = []
    for lo, hi in ((box[0], box[2]), (box[1], box[3])):
        side = min(size, (hi - lo) + context)
        start = int(round((lo + hi) / 2 - side / 2))
        start = min(max(start, 0), size - side)
        out.append((start, start + side))
    (x0, x1), (y0, y1) = out
    return x0, y0, x1, y1


def unit_crop(lm: LoadedModel, layer: str, channel: int, image: ImageLike, y: int, x: int, *,
              context: int = CONTEXT_PX, cover: float = COVER, mass: float = ERF_MASS) -> UnitCrop:
    """A crop of the preprocessed input that shows what unit ``(channel, y, x)`` of ``layer`` sees.

    Where the theoretical receptive field is smaller than ``cover`` of the input side, the
    field plus ``context`` pixels (half each side), the field outlined. Otherwise (deep
    layers, squeeze-excitation gates: the field is the whole picture) the effective
    receptive field of that unit for this image: the smallest box holding ``mass`` of the
    input gradient, with context too if that box is small. A unit whose gradient is zero
    (clipped by its activation function) keeps the theoretical field, and says so.
    """
    from vizcore.activations import preprocess, denormalize
    from vizcore.summary import rf_box

    img = _load(image)
    size = int(lm.spec.input_size)
    geom = _geometry(lm, layer, size)
    if geom.rf < cover * size:
        inp = denormalize(lm, preprocess(lm, img)[0])
        fld = rf_box(geom, int(y), int(x), size)
        method = "receptive field + context"
    else:
        erf = effective_rf(lm, layer, channel, img, y, x, mass=mass)
        inp = erf.input
        if erf.box is None:
            fld = erf.theoretical
            method = "receptive field (input gradient is zero here) + context"
        else:
            fld = erf.box
            method = f"effective receptive field ({mass:.0%} of gradient)".replace("%", " %")
            if erf.target != lm.resolve(layer):
                method = method[:-1] + ", before its clipping activation)"
    small = min(fld[2] - fld[0], fld[3] - fld[1]) < context
    crop = _with_context(fld, size, context) if method.startswith("receptive") or small else fld
    out = inp.crop(crop)
    if crop != fld:
        fx0, fy0 = fld[0] - crop[0], fld[1] - crop[1]
        fx1, fy1 = fld[2] - crop[0], fld[3] - crop[1]
        ImageDraw.Draw(out).rectangle([fx0, fy0, max(fx0, fx1 - 1), max(fy0, fy1 - 1)], outline=(0, 255, 255),
                                      width=1 if max(fx1 - fx0, fy1 - fy0) < 16 else 2)
    return UnitCrop(out, crop, fld, method)


_CROPS: "weakref.WeakKeyDictionary[torch.nn.Module, OrderedDict]" = weakref.WeakKeyDictionary()
_CROPS_MAX = 512


def hit_crop(lm: LoadedModel, result: "MiningResult", layer: str, channel: int, rank: int = 0, **kw) -> UnitCrop:
    """:func:`unit_crop` for hit ``rank`` of ``channel`` in a mining result (same model and weights).

    Remembered per model (the last 512 crops, keyed by file, its modification time, the unit
    and the settings): pages redraw often, and an effective receptive field costs a backward pass.
    """
    hit = result.hits(layer, channel)[rank]
    try:
        mtime = os.stat(hit.file).st_mtime_ns
    except OSError:
        mtime = 0
    key = (layer, int(channel), hit.file, mtime, hit.y, hit.x, tuple(sorted(kw.items())))
    with _DIRECT_LOCK:
        memo = _CROPS.setdefault(lm.model, OrderedDict())
        if key in memo:
            memo.move_to_end(key)
            return memo[key]
    crop = unit_crop(lm, layer, channel, hit.file, hit.y, hit.x, **kw)
    with _DIRECT_LOCK:
        memo[key] = crop
        while len(memo) > _CROPS_MAX:
            memo.popitem(last=False)
    return crop



# ------------------------------------------------------------------------ jobs
CACHE_VERSION = 1
"""Version of the unit analyses' cache entries (bump when a result's meaning changes)."""


def _images(images: ImageLike | Sequence[ImageLike] | None) -> list[ImageLike]:
    if images is None:
        return []
    if isinstance(images, (Image.Image, str, os.PathLike)):
        return [images]
    return list(images)


def _u8(img: Image.Image) -> torch.Tensor:
    from vizcore.data.images import to_rgb

    return torch.from_numpy(np.array(to_rgb(img), dtype=np.uint8))


def _pil(t: torch.Tensor) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(t.numpy().astype(np.uint8)), "RGB")


class _UnitJob(StepJob):
    """One analysis of one channel over a list of images, one image per tick."""

    unit = "images"
    title = "unit"

    def __init__(self, lm: LoadedModel, layer: str, channel: int, images: ImageLike | Sequence[ImageLike] | None,
                 **settings):
        self.lm, self.layer, self.channel = lm, str(layer), int(channel)
        self.images = _images(images)
        self.settings = settings

    @property
    def total(self) -> int:
        return max(1, len(self.images))

    def key(self) -> str:
        k = self.__dict__.get("_key")
        if k is None:
            k = self.__dict__["_key"] = result_key(
                self.kind, CACHE_VERSION, self.lm, layer=self.layer, module=self.lm.resolve(self.layer),
                channel=self.channel, images=[image_identity(im) for im in self.images], **self.settings)
        return k

    def describe(self) -> str:
        return f"{self.title} of {self.lm.name} {self.layer}:{self.channel}"


class ClassSupportJob(_UnitJob):
    """:func:`class_support` as a job: one image per tick, the mean so far as the partial result."""

    kind = "unit-class-support"
    codec = "json"
    title = "class support"

    def __init__(self, lm: LoadedModel, layer: str, channel: int, images: ImageLike | Sequence[ImageLike], *,
                 top: int = 10):
        super().__init__(lm, layer, channel, images, top=int(top))
        if not self.images:
            raise ValueError("no images given")

    def work(self) -> Work:
        n, top = len(self.images), self.settings["top"]
        yield Tick(0, n)
        total = None
        for i, im in enumerate(self.images):
            s = _support_scores(self.lm, self.layer, self.channel, _batch(self.lm, [im])).sum(dim=0)
            total = s if total is None else total + s
            if i + 1 < n:
                yield Tick(i + 1, n, _support(self.lm, self.layer, self.channel, total / (i + 1), i + 1, top))
        return _support(self.lm, self.layer, self.channel, total / n, n, top)

    def encode(self, result: ClassSupport) -> dict:
        return result.to_json()

    def decode(self, data: dict) -> ClassSupport:
        return ClassSupport.from_json(data)


class DriversJob(_UnitJob):
    """:func:`drivers` as a job: by weights in one tick, or gradient x activation one image per tick."""

    kind = "unit-drivers"
    codec = "json"
    title = "drivers"

    def __init__(self, lm: LoadedModel, layer: str, channel: int,
                 images: ImageLike | Sequence[ImageLike] | None = None, *, top: int = 8):
        super().__init__(lm, layer, channel, images, top=int(top))

    def work(self) -> Work:
        top = self.settings["top"]
        by_weights = _weight_drivers(self.lm, self.layer, self.channel, top)
        if by_weights is not None:
            return by_weights
        if not self.images:
            raise _no_conv_error(self.lm, self.layer)
        n = len(self.images)
        yield Tick(0, n)
        total = None
        for i, im in enumerate(self.images):
            s = _gxa_scores(self.lm, self.layer, self.channel, _batch(self.lm, [im])).sum(dim=0)
            total = s if total is None else total + s
            if i + 1 < n:
                yield Tick(i + 1, n, _gxa_drivers(self.lm, self.layer, self.channel, total / (i + 1), i + 1, top))
        return _gxa_drivers(self.lm, self.layer, self.channel, total / n, n, top)

    def encode(self, result: Drivers) -> dict:
        return result.to_json()

    def decode(self, data: dict) -> Drivers:
        return Drivers.from_json(data)


class EffectiveRFJob(_UnitJob):
    """:func:`effective_rf` of one unit for one image, as a job of one tick (one backward pass)."""

    kind = "unit-erf"
    unit = "units"
    title = "effective receptive field"

    def __init__(self, lm: LoadedModel, layer: str, channel: int, image: ImageLike, y: int | None = None,
                 x: int | None = None, *, mass: float = ERF_MASS):
        super().__init__(lm, layer, channel, [image], y=None if y is None else int(y),
                         x=None if x is None else int(x), mass=float(mass))

    def work(self) -> Work:
        yield Tick(0, 1)
        st = self.settings
        return effective_rf(self.lm, self.layer, self.channel, self.images[0], st["y"], st["x"], mass=st["mass"])

    def encode(self, r: EffectiveRF) -> dict:
        return {"json": r.to_json(), "grad": torch.from_numpy(np.ascontiguousarray(r.grad)), "input": _u8(r.input)}

    def decode(self, d: dict) -> EffectiveRF:
        from vizcore.summary import Geometry

        j = d["json"]
        return EffectiveRF(j["layer"], int(j["channel"]), int(j["y"]), int(j["x"]), float(j["value"]),
                           float(j["mass"]), tuple(j["box"]) if j["box"] else None, tuple(j["theoretical"]),
                           Geometry(**j["geometry"]), d["grad"].numpy(), _pil(d["input"]), j["target"])


class CropsJob(_UnitJob):
    """:func:`unit_crop` of a channel's top hits in a mining result, one hit per tick; the partial
    result is the crops so far."""

    kind = "unit-crops"
    title = "crops"

    def __init__(self, lm: LoadedModel, result: "MiningResult", layer: str, channel: int, *,
                 context: int = CONTEXT_PX, cover: float = COVER, mass: float = ERF_MASS):
        self.hits = result.hits(layer, channel)
        super().__init__(lm, layer, channel, [h.file for h in self.hits], at=[[h.y, h.x] for h in self.hits],
                         context=int(context), cover=float(cover), mass=float(mass))

    def work(self) -> Work:
        n = len(self.hits)
        yield Tick(0, n)
        st = self.settings
        out: list[UnitCrop] = []
        for i, h in enumerate(self.hits):
            out.append(unit_crop(self.lm, self.layer, self.channel, h.file, h.y, h.x, context=st["context"],
                                 cover=st["cover"], mass=st["mass"]))
            if i + 1 < n:
                yield Tick(i + 1, n, list(out))
        return out

    def encode(self, crops: list[UnitCrop]) -> list[dict]:
        return [{"image": _u8(c.image), "crop_box": list(c.crop_box), "field_box": list(c.field_box),
                 "method": c.method} for c in crops]

    def decode(self, data: list[dict]) -> list[UnitCrop]:
        return [UnitCrop(_pil(d["image"]), tuple(d["crop_box"]), tuple(d["field_box"]), d["method"]) for d in data]
