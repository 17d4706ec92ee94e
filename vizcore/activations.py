"""What every layer does with one image: activations, predictions, Grad-CAM.

Drawing them (channel grids, heat-map overlays, colour maps) is :mod:`vizcore.render`'s.

All forward passes through a shared :class:`~vizcore.models.LoadedModel` hold
its ``lock``; hooks are attached only through :func:`vizcore.tap.tap` (or, for
Grad-CAM, by captum while the lock is held), so concurrent dashboard sessions
never see each other's captures.
"""
from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from vizcore.data.images import to_rgb
from vizcore.models import LoadedModel, WeightsInfo
from vizcore.render import ORDERS
from vizcore.tap import forward_until, tap


# ------------------------------------------------------------------ result types
@dataclass(frozen=True)
class Prediction:
    """One class of a top-k prediction: ImageNet ``index``, class ``label``, softmax ``prob``."""

    index: int
    label: str
    prob: float

    def to_json(self) -> dict:
        return {"index": self.index, "label": self.label, "prob": round(self.prob, 6)}


@dataclass(frozen=True, eq=False)
class ChannelStats:
    """Per-channel statistics of one layer output, each a float32 array of shape ``(C,)``.

    ``frac_active`` is the fraction of positions whose value is above zero.
    """

    mean: np.ndarray
    max: np.ndarray
    std: np.ndarray
    frac_active: np.ndarray

    @property
    def channels(self) -> int:
        return int(self.mean.shape[0])

    def order(self, by: str = "mean") -> np.ndarray:
        """Channel indices sorted by ``by`` (``mean``/``max`` descending, or ``index``)."""
        if by == "index":
            return np.arange(self.channels)
        if by not in ("mean", "max"):
            raise ValueError(f"order must be one of {', '.join(ORDERS)}, not {by!r}")
        key = self.mean if by == "mean" else self.max
        return np.argsort(-key, kind="stable")

    def to_json(self, digits: int = 5) -> dict:
        def r(a: np.ndarray) -> list[float]:
            return [round(float(v), digits) for v in a]

        return {"mean": r(self.mean), "max": r(self.max), "std": r(self.std),
                "frac_active": r(self.frac_active)}

    def summary(self) -> dict:
        """Layer-level figures: mean of channel means, overall max, mean fraction active."""
        if self.channels == 0:
            return {"mean": 0.0, "max": 0.0, "frac_active": 0.0}
        return {"mean": float(self.mean.mean()), "max": float(self.max.max()),
                "frac_active": float(self.frac_active.mean())}


@dataclass(frozen=True, eq=False)
class LayerActivation:
    """The output of one layer for one image.

    Attributes:
        name: the tap name (or module path) it was asked for by.
        module: the dotted module path.
        kind: the tap kind (``conv``, ``block``, ``fc``, ``logits``...) or ``module``.
        output: ``(C, H, W)`` for spatial layers, ``(C,)`` for vectors.
        stats: per-channel statistics.
    """

    name: str
    module: str
    kind: str
    output: torch.Tensor
    stats: ChannelStats

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.output.shape)

    @property
    def spatial(self) -> bool:
        return self.output.dim() == 3 and self.output.shape[1] * self.output.shape[2] > 1

    def to_json(self, *, stats: bool = True) -> dict:
        out = {"name": self.name, "module": self.module, "kind": self.kind,
               "output_shape": list(self.shape), "summary": self.stats.summary()}
        if stats:
            out["stats"] = self.stats.to_json()
        return out


@dataclass(frozen=True, eq=False)
class ActivationResult:
    """Everything :func:`extract` computed for one image.

    Attributes:
        model: registry name.
        weights: where the weights came from.
        input: the normalised network input, ``(3, H, W)``.
        image: the preprocessed crop as an RGB image (what the network saw).
        layers: name -> activation, in the order the layers fired (network order).
        predictions: top-k classes (empty for models without a classification head).
    """

    model: str
    weights: WeightsInfo
    input: torch.Tensor
    image: Image.Image
    layers: dict[str, LayerActivation] = field(default_factory=dict)
    predictions: list[Prediction] = field(default_factory=list)

    def to_json(self, *, stats: bool = True) -> dict:
        return {"model": self.model, "weights": self.weights.to_json(),
                "input_size": list(self.input.shape[1:]),
                "layers": [a.to_json(stats=stats) for a in self.layers.values()],
                "predictions": [p.to_json() for p in self.predictions]}


# --------------------------------------------------------------- preprocessing
def preprocess(lm: LoadedModel, image: Image.Image) -> torch.Tensor:
    """The model's resize / crop / normalisation: ``(1, 3, H, W)`` on ``lm.device``."""
    return lm.transform()(to_rgb(image)).unsqueeze(0).to(lm.device)


def denormalize(lm: LoadedModel, x: torch.Tensor) -> Image.Image:
    """Undo the model's normalisation of ``x`` ``(3, H, W)`` and return an RGB image."""
    pp = lm.spec.preprocess
    x = x.detach().float().cpu()
    if x.dim() == 4:
        x = x[0]
    a = x.permute(1, 2, 0).numpy() * np.asarray(pp.std, np.float32) + np.asarray(pp.mean, np.float32)
    arr = np.clip(a * 255 + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(arr), "RGB")


# ------------------------------------------------------------------ predictions
def class_logits(out) -> torch.Tensor | None:
    """The ``(B, classes)`` logits in a model's output (a tensor, ``.logits``, or the first of a tuple), or ``None``."""
    if out is None:
        return None
    if not torch.is_tensor(out):
        out = getattr(out, "logits", out[0] if isinstance(out, (tuple, list)) and out else None)
    if not torch.is_tensor(out) or out.dim() != 2:
        return None
    return out


def has_class_head(lm: LoadedModel) -> bool:
    """Whether the model's output holds image-level class scores: not for torchvision's detectors and
    segmenters, whose taps are their backbone's (their boxes and masks are :mod:`vizcore.regions`'s)."""
    return lm.spec.task == "classification"


def _top(lm: LoadedModel, logits: torch.Tensor | None, topk: int) -> list[list[Prediction]]:
    cats = lm.categories
    if logits is None or topk <= 0 or cats is None or logits.shape[1] != len(cats):
        n = 0 if logits is None else logits.shape[0]
        return [[] for _ in range(n)]
    probs = torch.softmax(logits.float(), dim=1)
    p, idx = probs.topk(min(topk, probs.shape[1]), dim=1)
    return [[Prediction(int(i), str(cats[int(i)]), float(v)) for v, i in zip(pr.tolist(), ix.tolist())]
            for pr, ix in zip(p, idx)]


def predict(lm: LoadedModel, images: Sequence[Image.Image], topk: int = 5,
            batch_size: int = 16) -> list[list[Prediction]]:
    """Top-``topk`` classes for each image (empty lists for models without a class head)."""
    out: list[list[Prediction]] = []
    if not has_class_head(lm):  # a detector's or segmenter's full forward gives no class scores
        return [[] for _ in images]
    tf = lm.transform()
    for i in range(0, len(images), batch_size):
        x = torch.stack([tf(to_rgb(im)) for im in images[i:i + batch_size]]).to(lm.device)
        with lm.lock, torch.no_grad():
            logits = class_logits(lm.model(x))
        preds = _top(lm, logits, topk)
        out += preds if preds else [[] for _ in range(x.shape[0])]
    return out


# ------------------------------------------------------------------- extraction
def _stat_arrays(act: torch.Tensor) -> tuple[np.ndarray, ...]:
    """(mean, max, std, frac_active) per channel of ``(C, ...)`` as float32 arrays.

    Called inside the forward hook, while the output is still hot in the CPU cache.
    On the CPU this uses NumPy: its single-threaded reductions over a few hundred
    thousand values take well under a millisecond, where each multi-threaded torch
    reduction pays a thread synchronisation (costly on a busy machine).
    """
    a = act.detach()
    if a.dim() == 0:
        a = a.reshape(1)
    if a.device.type != "cpu" or a.dtype not in (torch.float32, torch.float64):
        flat_t = a.reshape(a.shape[0], -1).float()
        if flat_t.shape[1] == 0:
            z = flat_t.new_zeros(flat_t.shape[0])
            parts_t = (z, z, z, z)
        else:
            var, mean = torch.var_mean(flat_t, dim=1, correction=0)
            parts_t = (mean, flat_t.amax(dim=1), var.sqrt(), (flat_t > 0).float().mean(dim=1))
        return tuple(p.cpu().numpy().astype(np.float32, copy=False) for p in parts_t)
    flat = a.numpy().reshape(a.shape[0], -1)
    c, n = flat.shape
    if n == 0:
        z = np.zeros(c, np.float32)
        return z, z, z, z
    mean = np.einsum("ij->i", flat) / n
    if n > 1:
        # One pass for the sum of squares (no temporary array); where the variance is tiny
        # next to the squared mean, E[x^2] - E[x]^2 loses precision: redo those exactly.
        var = np.einsum("ij,ij->i", flat, flat) / n - mean * mean
        risky = (var <= 1e-3 * mean * mean) & (mean != 0)
        if risky.any():
            var[risky] = flat[risky].var(axis=1, dtype=np.float64)
        std = np.sqrt(np.maximum(var, 0))
    else:
        std = np.zeros(c, np.float32)
    active = np.add.reduce((flat > 0).view(np.uint8), axis=1, dtype=np.uint32) / n
    parts = (mean, flat.max(axis=1), std, active)
    return tuple(np.asarray(p, dtype=np.float32) for p in parts)


def _to_stats(parts: tuple[np.ndarray, ...]) -> ChannelStats:
    return ChannelStats(*parts)


def channel_stats(act: torch.Tensor) -> ChannelStats:
    """Per-channel mean, max, std and fraction above zero of ``(C, ...)``."""
    if act.dim() == 0:
        act = act.reshape(1)
    return _to_stats(_stat_arrays(act))


_TAPS: "weakref.WeakKeyDictionary[torch.nn.Module, list]" = weakref.WeakKeyDictionary()
_TAPS_LOCK = threading.Lock()


def _taps(lm: LoadedModel) -> list:
    """``lm.taps()``, remembered per model (listing them walks every module)."""
    with _TAPS_LOCK:
        taps = _TAPS.get(lm.model)
        if taps is None:
            taps = _TAPS[lm.model] = lm.taps()
        return taps


def _requested(lm: LoadedModel, layers: Sequence[str] | None) -> list[tuple[str, str, str]]:
    """(name, module path, kind) for each requested layer; all taps when ``layers`` is None."""
    taps = _taps(lm)
    if layers is None:
        return [(t.name, t.module, t.kind) for t in taps]
    kinds = {t.module: t.kind for t in taps}
    out, seen = [], set()
    for n in layers:
        if n in seen:
            continue
        seen.add(n)
        path = lm.resolve(n)
        out.append((n, path, kinds.get(path, "module")))
    return out


def extract(lm: LoadedModel, image: Image.Image, layers: Sequence[str] | None = None,
            topk: int = 5) -> ActivationResult:
    """Run ``image`` through the model once (no gradients) and keep the requested layers.

    Args:
        lm: a loaded model (shared; not modified).
        image: any PIL image; it is preprocessed as the model expects.
        layers: tap names or module paths; ``None`` means every curated tap.
            Only these outputs are kept, so memory grows with what is asked for.
        topk: number of predictions; with ``0`` the pass stops at the last layer (always for a
            detector or segmenter: its taps are the backbone's, and it has no class head).

    Returns:
        An :class:`ActivationResult` whose ``layers`` follow network order.
    """
    req = _requested(lm, layers)
    x = preprocess(lm, image)
    paths = [p for _, p, _ in req]
    need_logits = topk > 0 and has_class_head(lm)

    def keep(path: str, t: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        t = t[0]
        if t.dim() == 0:
            t = t.reshape(1)
        # Copied: a later in-place operation would change what is kept (``out += identity`` after an
        # arbitrary module; torchvision DenseNet's ``F.relu(features, inplace=True)`` after the
        # curated ``norm5`` tap). One image's maps: the copy costs little next to the forward.
        t = t.clone()
        return t, _stat_arrays(t)

    with torch.no_grad(), tap(lm.model, paths, reduce=keep, stop=not need_logits, lock=lm.lock) as store:
        out = forward_until(lm.model, x)
        captured = dict(store)
    missing = [n for n, p, _ in req if p not in captured]
    if missing:
        raise RuntimeError(f"layers did not fire during the forward pass: {', '.join(missing)}")
    order = {p: i for i, p in enumerate(captured)}
    result_layers: dict[str, LayerActivation] = {}
    for name, path, kind in sorted(req, key=lambda r: order[r[1]]):
        act, parts = captured[path]
        result_layers[name] = LayerActivation(name, path, kind, act, _to_stats(parts))
    preds = _top(lm, class_logits(out), topk)[0] if need_logits and class_logits(out) is not None else []
    return ActivationResult(model=lm.name, weights=lm.weights, input=x[0].detach(),
                            image=denormalize(lm, x[0]), layers=result_layers, predictions=preds)


# --------------------------------------------------------------------- Grad-CAM
def gradcam(lm: LoadedModel, image: Image.Image, layers: Sequence[str],
            target: int | None = None) -> dict[str, np.ndarray]:
    """Grad-CAM heat maps of ``layers`` for class ``target`` (default: the top prediction).

    Uses captum's :class:`~captum.attr.LayerGradCam` once per layer: the layer's
    output channels are weighted by their spatially averaged gradient of the
    class score, summed and passed through a ReLU (Selvaraju et al., 2017,
    https://arxiv.org/abs/1610.02391). Each map is upsampled bilinearly to the
    network input and scaled to ``[0, 1]`` by its own maximum (all zeros where
    the layer holds no positive evidence). Layers without spatial extent
    (fully connected, pooled to 1x1) are skipped.

    Returns:
        name -> ``(H, W)`` float32 array in ``[0, 1]`` at the input size.
    """
    from vizcore.evidence.attribution import gradcam_raw
    from vizcore.evidence.registry import MethodNotApplicable

    req = _requested(lm, list(layers))
    x = preprocess(lm, image)
    size = tuple(x.shape[-2:])
    out: dict[str, np.ndarray] = {}
    if target is None:
        with lm.lock, torch.no_grad():
            logits = class_logits(lm.model(x))
        if logits is None or not has_class_head(lm):
            raise ValueError(f"{lm.name} has no classification head; give a target index")
        target = int(logits[0].argmax())
    for name, path, _kind in req:
        # The one Grad-CAM of the engine lives in vizcore.evidence (captum, under the model's lock).
        try:
            raw = gradcam_raw(lm, x, int(target), path)
        except MethodNotApplicable:  # fully connected layers have no map
            continue
        if raw.numel() <= 1:
            continue
        heat = torch.nn.functional.interpolate(raw.clamp_min(0)[None, None], size=size, mode="bilinear",
                                               align_corners=False)[0, 0].clamp_min(0)
        m = float(heat.max())
        heat = heat / m if m > 0 else torch.zeros_like(heat)
        out[name] = heat.cpu().numpy().astype(np.float32)
    return out


# ----------------------------------------------------------------------- shapes
def tap_shapes(model, input_size: int | None = None) -> list[tuple]:
    """``(tap, output shape without batch)`` for every tap, in network order.

    Builds the architecture on PyTorch's ``meta`` device where it can (no memory,
    no weights, no arithmetic) and runs one zero image at ``input_size`` (default:
    the model's own). Taps that do not fire get shape ``None`` and come last.

    Args:
        model: a registry name, a :class:`~vizcore.models.ModelSpec` or a
            :class:`~vizcore.models.LoadedModel`.
    """
    from vizcore.models import ModelSpec, build, get_spec, taps_for

    spec = model if isinstance(model, ModelSpec) else (
        model.spec if isinstance(model, LoadedModel) else get_spec(str(model)))
    size = int(input_size or spec.input_size)

    def run(net: torch.nn.Module, device: torch.device) -> tuple[list, dict]:
        taps = taps_for(spec, net)
        x = torch.zeros(1, 3, size, size, device=device)
        with torch.no_grad(), tap(net, [t.module for t in taps], reduce=lambda p, t: tuple(t.shape[1:]),
                                  stop=True) as store:
            forward_until(net, x)
            return taps, dict(store)

    try:
        with torch.device("meta"):
            net = build(spec)
        taps, shapes = run(net, torch.device("meta"))
    except Exception:  # noqa: BLE001 - some ops have no meta kernel: compute for real
        net = build(spec)
        taps, shapes = run(net, torch.device("cpu"))
    order = {p: i for i, p in enumerate(shapes)}
    taps = sorted(taps, key=lambda t: order.get(t.module, len(order)))
    return [(t, shapes.get(t.module)) for t in taps]
