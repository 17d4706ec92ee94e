"""Where the evidence is: class-evidence maps for one image, one interface for every method.

:func:`evidence` runs one registered method (``cam``, ``bagnet``, ``occlusion``,
``guided``, ``deconv``, ``ig``, ``gradcam``; see :func:`list_methods`) and returns an
:class:`EvidenceMap`: the map at input resolution, the raw map at its native
resolution with its geometry (receptive field, jump), every setting used and the
caveats that apply. :func:`faithfulness` scores any map by its deletion and
insertion curves; :func:`explain` does both for several methods plus a random
baseline in the same run (what the CLI writes and the dashboard shows).
:func:`evidence_channels` splits a Grad-CAM map into its channels' shares, each a unit
of a tap (what the dashboard links to the unit page).

Adding a method is one decorated function (:func:`vizcore.evidence.registry.method`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vizcore.evidence import attribution, cam, lrp  # noqa: F401 - the methods register themselves on import
from vizcore.evidence.channels import ChannelShare, EvidenceChannels, evidence_channels, layer_tap
from vizcore.evidence.faithfulness import Faithfulness, faithfulness, random_map
from vizcore.evidence.registry import (
    EvidenceStopped,
    MethodNotApplicable,
    MethodSpec,
    Progress,
    RawEvidence,
    UnknownMethodError,
    get_method,
    list_methods,
    method,
)
from vizcore.evidence.targets import Target, prepare, resolve_target
from vizcore.models import LoadedModel
from vizcore.summary import Geometry

__all__ = [
    "ChannelShare", "EvidenceChannels", "EvidenceMap", "EvidenceReport", "EvidenceStopped", "Faithfulness",
    "MethodNotApplicable", "MethodSpec", "RawEvidence", "UnknownMethodError",
    "evidence", "evidence_channels", "explain", "faithfulness", "fcn_scene", "get_method", "layer_tap",
    "list_methods", "method", "random_map", "same_up_to_scale", "to_input", "top_patches",
]


@dataclass(frozen=True, eq=False)
class EvidenceMap:
    """One method's evidence for one class of one image.

    Attributes:
        method: registry name.
        target: the class explained.
        map: ``(H, W)`` float32 at input resolution; larger means more evidence.
        raw: the map at its native resolution, ``(h, w)`` float32 (e.g. 7x7 for a CAM).
        geometry: receptive field, jump and start of one raw cell in input pixels (or ``None``).
        settings: every setting used.
        caveats: what to know before believing it.
        display: ``"minmax"``, ``"positive"`` or ``"positive99"`` (see :meth:`heat`).
        image: the RGB image the map lies over (the network's crop, or the whole scene for FCN).
        seconds: wall time of the method.
        extra: method-specific figures.
    """

    method: str
    target: Target
    map: np.ndarray
    raw: np.ndarray
    geometry: Geometry | None
    settings: dict
    caveats: tuple[str, ...]
    display: str
    image: Image.Image
    seconds: float
    extra: dict = field(default_factory=dict)

    def heat(self) -> np.ndarray:
        """The map in ``[0, 1]`` for display: a score map stretched over its range (``minmax``),
        the positive part scaled by its maximum (``positive``), or by its 99th percentile and
        clipped (``positive99``: pixel-gradient maps, where a few pixels would otherwise take the
        whole range and leave the rest dark). All zero when nothing is positive."""
        m = self.map.astype(np.float32)
        if self.display == "minmax":
            lo, hi = float(m.min()), float(m.max())
            return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)
        m = np.clip(m, 0, None)
        hi = float(np.percentile(m, 99)) if self.display == "positive99" else 0.0
        if hi <= 0:
            hi = float(m.max())
        return np.clip(m / hi, 0, 1) if hi > 0 else np.zeros_like(m)

    def overlay(self, alpha: float = 0.5, cmap: str | None = None) -> Image.Image:
        """:meth:`heat` blended over :attr:`image` (colour map :data:`vizcore.render.HEAT_CMAP` by default)."""
        from vizcore.render import HEAT_CMAP, overlay

        return overlay(self.image, self.heat(), alpha=alpha, cmap=cmap or HEAT_CMAP)

    def to_json(self) -> dict:
        return {"method": self.method, "target": self.target.to_json(), "raw_shape": list(self.raw.shape),
                "geometry": self.geometry.to_json() if self.geometry else None, "settings": self.settings,
                "caveats": list(self.caveats), "seconds": round(self.seconds, 4),
                "extra": {k: (round(v, 6) if isinstance(v, float) else v) for k, v in self.extra.items()}}


# ---------------------------------------------------------------------- targets
def _logits(lm: LoadedModel, x: torch.Tensor) -> torch.Tensor:
    with lm.lock, torch.no_grad():
        out = lm.model(x)
    if not torch.is_tensor(out):
        out = getattr(out, "logits", out[0])
    return out


# ---------------------------------------------------------------------- resizing
def to_input(raw: torch.Tensor, geometry: Geometry | None, size: tuple[int, int]) -> np.ndarray:
    """Resize a raw ``(h, w)`` map to the input ``size`` ``(H, W)``, cells at their true centres.

    Cell ``(i, j)`` is centred on input pixel ``(start + jump*i, start + jump*j)``; values are
    interpolated bilinearly between centres and held constant beyond the outermost ones.
    Without geometry, cells are spread evenly over the input.
    """
    r = raw.detach().float().cpu()
    h, w = r.shape
    H, W = size
    if (h, w) == (H, W) and (geometry is None or (geometry.jump == 1 and geometry.start == 0)):
        return r.numpy().astype(np.float32)
    if geometry is None:
        out = F.interpolate(r[None, None], size=(H, W), mode="bilinear", align_corners=False)[0, 0]
        return out.numpy().astype(np.float32)

    def coords(n_out: int, n_in: int) -> torch.Tensor:
        u = (torch.arange(n_out, dtype=torch.float32) - geometry.start) / geometry.jump
        return u / (n_in - 1) * 2 - 1 if n_in > 1 else torch.zeros(n_out)

    gy, gx = torch.meshgrid(coords(H, h), coords(W, w), indexing="ij")
    grid = torch.stack([gx, gy], dim=-1)[None]
    out = F.grid_sample(r[None, None], grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out[0, 0].numpy().astype(np.float32)


def same_up_to_scale(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor, tol: float = 1e-3) -> bool:
    """Whether two maps of one shape are the same map up to a positive scale and an offset
    (e.g. CAM and Grad-CAM at the last feature map): their standardised values differ by at most
    ``tol`` everywhere. Two constant maps are the same; a constant and a varying one are not."""
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape:
        return False
    sx, sy = x.std(), y.std()
    flat_x = sx <= 1e-12 * max(1.0, float(np.abs(x).max(initial=0)))
    flat_y = sy <= 1e-12 * max(1.0, float(np.abs(y).max(initial=0)))
    if flat_x or flat_y:
        return flat_x and flat_y
    return bool(np.abs((x - x.mean()) / sx - (y - y.mean()) / sy).max() <= tol)


# ---------------------------------------------------------------------- evidence
def evidence(lm: LoadedModel, image: Image.Image | torch.Tensor, target: int | str | None, method: str,
             *, progress: Progress | None = None, should_stop: Callable[[], bool] | None = None,
             **settings) -> EvidenceMap:
    """Where ``method`` finds the evidence for class ``target`` in ``image``.

    Args:
        lm: a loaded model (shared; never modified: hooks only while holding ``lm.lock``,
            gradients with respect to the input only).
        image: a PIL image (preprocessed as the model expects: resize, centre crop,
            normalise) or an already preprocessed ``(1, 3, H, W)`` tensor.
        target: class index, label, or ``"top1"``/``None`` for the top prediction.
        method: a registered method name (:func:`list_methods`).
        progress: ``progress(done, total)`` for the slow methods (occlusion, ig).
        should_stop: polled by the slow methods; ``True`` raises :class:`EvidenceStopped`.
        **settings: the method's settings (see ``get_method(name).defaults``).

    Returns:
        an :class:`EvidenceMap` whose ``map`` is ``(H, W)`` at input resolution.
    """
    spec = get_method(method)
    unknown = [k for k in settings if k not in spec.defaults]
    if unknown:
        raise ValueError(f"unknown setting(s) for {method}: {', '.join(unknown)}; "
                         f"known: {', '.join(spec.defaults) or 'none'}")
    x, crop = prepare(lm, image)
    tgt = (resolve_target(lm, target, _logits(lm, x)) if target is None or str(target).lower() == "top1"
           else resolve_target(lm, target))
    t0 = time.perf_counter()
    r = spec.fn(lm, x, tgt.index, progress=progress, should_stop=should_stop, **settings)
    seconds = time.perf_counter() - t0
    size = (int(x.shape[-2]), int(x.shape[-1]))
    full = to_input(r.raw, r.geometry, size)
    return EvidenceMap(method, tgt, full, r.raw.numpy().astype(np.float32), r.geometry,
                       {**spec.defaults, **r.settings}, r.caveats, r.display, crop, seconds, dict(r.extra))


def fcn_scene(lm: LoadedModel, image: Image.Image, target: int | str | None, *, short_side: int = 448,
              max_side: int = 1344) -> EvidenceMap:
    """The convolutionalised AlexNet/VGG on the whole image (no centre crop): a heatmap over the scene.

    The image is resized so its short side is ``short_side`` (long side at most ``max_side``);
    ``target=None`` explains the class with the highest score summed over the map.
    """
    from vizcore.activations import denormalize
    from vizcore.evidence.cam import conv_kernel, fcn_map, fcn_scene_input

    x = fcn_scene_input(lm, image, short_side, max_side)
    t0 = time.perf_counter()
    if target is None or str(target).lower() == "top1":
        from vizcore.evidence.cam import convolutionalize

        with torch.no_grad():
            scores = convolutionalize(lm)(x).mean(dim=(2, 3))
        tgt = resolve_target(lm, None, scores)
    else:
        tgt = resolve_target(lm, target)
    raw, geom = fcn_map(lm, x, tgt.index)
    seconds = time.perf_counter() - t0
    k = conv_kernel(lm)
    caveats = [f"{lm.name}'s fully connected head read as convolutions (fc6 {k}x{k}, fc7 and fc8 1x1) over "
               f"the whole image at {x.shape[-1]}x{x.shape[-2]} px; each cell scores a {geom.rf} px window, "
               f"{geom.jump} px apart"]
    if not lm.weights.pretrained:
        caveats.append("random weights: the map shows the architecture's geometry, not ImageNet evidence")
    full = to_input(raw, geom, (int(x.shape[-2]), int(x.shape[-1])))
    return EvidenceMap("fcn", tgt, full, raw.numpy().astype(np.float32), geom,
                       {"short_side": short_side, "max_side": max_side}, tuple(caveats), "minmax",
                       denormalize(lm, x[0]), seconds, {"input_size": [int(x.shape[-2]), int(x.shape[-1])]})


def top_patches(ev: EvidenceMap, k: int = 6, largest: bool = True) -> list[tuple[float, tuple[int, int, int, int]]]:
    """The ``k`` raw cells with the most (or least) evidence, as ``(value, (x0, y0, x1, y1))``
    boxes of their receptive fields in pixels of ``ev.image`` (needs ``ev.geometry``)."""
    from vizcore.summary import rf_box

    if ev.geometry is None:
        raise ValueError(f"{ev.method} maps have no cell geometry")
    flat = ev.raw.reshape(-1)
    idx = np.argsort(-flat if largest else flat, kind="stable")[:k]
    w = ev.raw.shape[1]
    g = ev.geometry
    out = []
    for i in idx:
        y, x = divmod(int(i), w)
        x0, y0, x1, y1 = rf_box(g, y, x, max(ev.image.size))
        out.append((float(flat[i]), (min(x0, ev.image.width), min(y0, ev.image.height),
                                     min(x1, ev.image.width), min(y1, ev.image.height))))
    return out


# ---------------------------------------------------------------------- reports
@dataclass(frozen=True, eq=False)
class EvidenceReport:
    """Several methods' maps for one image and class, each scored, plus the random baseline."""

    model: str
    weights: dict
    target: Target
    target_logit: float
    maps: dict[str, EvidenceMap]
    scores: dict[str, Faithfulness]
    random: Faithfulness
    faithfulness_settings: dict

    def to_json(self, curves: bool = False) -> dict:
        """The CLI's ``index.json`` (without the file names, which the CLI adds)."""
        return {"model": self.model, "weights": self.weights, "target": self.target.to_json(),
                "target_logit": round(self.target_logit, 6),
                "methods": {n: {"settings": m.settings, **self.scores[n].to_json(curves),
                                "caveats": list(m.caveats), "raw_shape": list(m.raw.shape),
                                "geometry": m.geometry.to_json() if m.geometry else None,
                                "seconds": round(m.seconds, 4)}
                            for n, m in self.maps.items()},
                "random": {**self.random.to_json(curves), **self.faithfulness_settings}}


def explain(lm: LoadedModel, image: Image.Image, target: int | str | None, methods: Sequence[str], *,
            settings: dict[str, dict] | None = None, steps: int = 32, seed: int = 0, random_grid: int = 7,
            progress: Callable[[str, int, int], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> EvidenceReport:
    """Every method's map for one class, each with deletion/insertion scores, and a random
    map's scores in the same run (same image, class, steps).

    Args:
        methods: registered names, in the order wanted.
        settings: per-method settings, e.g. ``{"occlusion": {"window": 32}}``.
        steps: steps of the deletion and insertion curves.
        seed: seed of the random baseline map.
        random_grid: side of the random map's lattice (see :func:`random_map`).
        progress: ``progress(stage, done, total)``; ``stage`` is a method name,
            ``"<method> faithfulness"`` or ``"random"``.
    """
    settings = settings or {}
    names = list(dict.fromkeys(methods))
    for n in names:
        get_method(n)  # unknown names fail before any work
    x, crop = prepare(lm, image)
    logits = _logits(lm, x)
    tgt = resolve_target(lm, target, logits)

    def stage(name: str):
        return None if progress is None else (lambda d, t: progress(name, d, t))

    maps: dict[str, EvidenceMap] = {}
    scores: dict[str, Faithfulness] = {}
    for n in names:
        maps[n] = evidence(lm, x, tgt.index, n, progress=stage(n), should_stop=should_stop,
                           **settings.get(n, {}))
        scores[n] = faithfulness(lm, x, maps[n].map, tgt.index, steps=steps,
                                 progress=stage(f"{n} faithfulness"), should_stop=should_stop)
    rnd = faithfulness(lm, x, random_map(tuple(x.shape[-2:]), seed, random_grid), tgt.index, steps=steps,
                       progress=stage("random"), should_stop=should_stop)
    return EvidenceReport(lm.name, lm.weights.to_json(), tgt, float(logits[0, tgt.index]), maps, scores, rnd,
                          {"steps": steps, "seed": seed, "random_grid": random_grid})
