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
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vizcore.evidence.channels import ChannelShare, EvidenceChannels, evidence_channels, layer_tap
from vizcore.evidence.faithfulness import Faithfulness, faithfulness, faithfulness_steps, random_map
from vizcore.evidence.registry import (
    MethodNotApplicable,
    MethodSpec,
    Progress,
    RawEvidence,
    UnknownMethodError,
    get_method,
    list_methods,
    method,
)
from vizcore.jobs import StepJob, Tick
from vizcore.models import LoadedModel, ModelSpec
from vizcore.summary import Geometry

__all__ = [
    "ChannelShare", "EvidenceChannels", "EvidenceJob", "EvidenceMap", "EvidenceReport", "ExplainJob", "Faithfulness",
    "FaithfulnessJob",
    "MethodNotApplicable", "MethodSpec", "RawEvidence", "Target", "UnknownClassError", "UnknownMethodError",
    "evidence", "evidence_channels", "explain", "faithfulness", "fcn_scene", "get_method", "layer_tap",
    "list_methods", "method", "random_map", "resolve_target", "to_input", "top_patches",
]


class UnknownClassError(ValueError):
    """A class name or index the model does not have."""


@dataclass(frozen=True)
class Target:
    """The class being explained: ImageNet ``index`` and ``label``."""

    index: int
    label: str

    def to_json(self) -> dict:
        return {"index": self.index, "label": self.label}


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
        display: ``"minmax"`` or ``"positive"`` (see :meth:`heat`).
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
        """The map in ``[0, 1]`` for display: a score map stretched over its range, or the
        positive part scaled by its maximum (all zero when nothing is positive)."""
        m = self.map.astype(np.float32)
        if self.display == "minmax":
            lo, hi = float(m.min()), float(m.max())
            return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)
        m = np.clip(m, 0, None)
        hi = float(m.max())
        return m / hi if hi > 0 else np.zeros_like(m)

    def overlay(self, alpha: float = 0.5, cmap: str = "jet") -> Image.Image:
        from vizcore.activations import overlay

        return overlay(self.image, self.heat(), alpha=alpha, cmap=cmap)

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


def resolve_target(lm: LoadedModel | ModelSpec, target: int | str | None,
                   logits: torch.Tensor | None = None) -> Target:
    """The class meant by ``target``: an index, a label (case-insensitive) or ``"top1"``/``None``.

    ``lm`` may be a loaded model or just its spec (to check a label before loading).
    ``logits`` ``(1, K)`` are needed for ``top1``. Unknown labels raise
    :class:`UnknownClassError` naming the closest labels.
    """
    import difflib

    if isinstance(lm, ModelSpec):
        cats = list(lm.categories() if lm.categories else [])
    else:
        cats = list(lm.categories or [])
    if not cats:
        raise UnknownClassError(f"{lm.name} has no class names; it cannot be explained by class")
    if target is None or (isinstance(target, str) and target.strip().lower() == "top1"):
        if logits is None:
            raise ValueError("top1 needs the logits of the image")
        i = int(logits[0].argmax())
        return Target(i, cats[i])
    if isinstance(target, str) and target.strip().lstrip("-").isdigit():
        target = int(target.strip())
    if isinstance(target, (int, np.integer)):
        if not 0 <= int(target) < len(cats):
            raise UnknownClassError(f"class index {target} is out of range 0-{len(cats) - 1}")
        return Target(int(target), cats[int(target)])
    name = str(target).strip().lower()
    hits = [i for i, c in enumerate(cats) if c.lower() == name]
    if len(hits) == 1:
        return Target(hits[0], cats[hits[0]])
    if len(hits) > 1:
        raise UnknownClassError(f"class {target!r} is ambiguous (indices {', '.join(map(str, hits))}); "
                                "give the index")
    lower = {c.lower(): c for c in cats}
    close = [lower[c] for c in difflib.get_close_matches(name, list(lower), n=5, cutoff=0.6)]
    close += [c for c in cats if name in c.lower() and c not in close][: max(0, 5 - len(close))]
    hint = f" Closest: {', '.join(close)}." if close else ""
    raise UnknownClassError(f"unknown class {target!r} for {lm.name}.{hint} Give a label, an index 0-"
                            f"{len(cats) - 1} or top1.")


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


# ---------------------------------------------------------------------- evidence
def _prepare(lm: LoadedModel, image: Image.Image | torch.Tensor) -> tuple[torch.Tensor, Image.Image]:
    from vizcore.activations import denormalize, preprocess

    if torch.is_tensor(image):
        x = image if image.dim() == 4 else image[None]
        x = x.to(lm.device)
    else:
        x = preprocess(lm, image)
    return x, denormalize(lm, x[0])


def evidence(lm: LoadedModel, image: Image.Image | torch.Tensor, target: int | str | None, method: str,
             *, progress: Progress | None = None, should_stop: Callable[[], bool] | None = None,
             cache: bool = True, **settings) -> EvidenceMap:
    """Where ``method`` finds the evidence for class ``target`` in ``image``.

    Args:
        lm: a loaded model (shared; never modified: hooks only while holding ``lm.lock``,
            gradients with respect to the input only).
        image: a PIL image (preprocessed as the model expects: resize, centre crop,
            normalise) or an already preprocessed ``(1, 3, H, W)`` tensor.
        target: class index, label, or ``"top1"``/``None`` for the top prediction.
        method: a registered method name (:func:`list_methods`).
        progress: ``progress(done, total)`` for the slow methods (occlusion, ig).
        should_stop: polled between the slow methods' batches; ``True`` raises
            :class:`vizcore.jobs.Stopped` (nothing cached).
        cache: read and write the on-disk cache (:class:`EvidenceJob`: by image content, model,
            target and settings).
        **settings: the method's settings (see ``get_method(name).defaults``).

    Returns:
        an :class:`EvidenceMap` whose ``map`` is ``(H, W)`` at input resolution.
    """
    from vizcore import jobs

    job = EvidenceJob(lm, image, target, method, settings)
    return jobs.run(job, jobs.RunOptions(cache=cache), progress=progress or False, should_stop=should_stop)


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
    cached: bool = False  # every part came from the disk cache

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
            should_stop: Callable[[], bool] | None = None, cache: bool = True) -> EvidenceReport:
    """Every method's map for one class, each with deletion/insertion scores, and a random
    map's scores in the same run (same image, class, steps): :class:`ExplainJob` to the end.

    Args:
        methods: registered names, in the order wanted.
        settings: per-method settings, e.g. ``{"occlusion": {"window": 32}}``.
        steps: steps of the deletion and insertion curves.
        seed: seed of the random baseline map.
        random_grid: side of the random map's lattice (see :func:`random_map`).
        progress: ``progress(stage, done, total)``; ``stage`` is a method name,
            ``"<method> faithfulness"`` or ``"random"``.
        should_stop: polled between batches; ``True`` raises :class:`vizcore.jobs.Stopped`
            (the parts finished so far stay cached).
        cache: read and write every part's cache entry (a second run returns from the cache).
    """
    from vizcore import jobs

    job = ExplainJob(lm, image, target, methods, settings=settings, steps=steps, seed=seed,
                     random_grid=random_grid, reuse=cache)
    report = None if progress is None else (lambda d, t: progress(job.stage, *job.stage_counts))
    return jobs.run(job, jobs.RunOptions(cache=cache), progress=report or False, should_stop=should_stop)


# ---------------------------------------------------------------------- jobs (cached, stopped, resumed)
EVIDENCE_VERSION = 1


def _digest(x: torch.Tensor) -> str:
    """The content of a preprocessed input (what a cached map depends on, not the file's name)."""
    import hashlib

    t = x.detach().to("cpu", torch.float32).contiguous()
    return hashlib.sha256(str(tuple(t.shape)).encode() + t.numpy().tobytes()).hexdigest()[:24]


def _timed(work, clock: list[float]):
    """``yield from`` a generator, adding the seconds spent inside it (not in the pauses) to ``clock``."""
    while True:
        t0 = time.perf_counter()
        try:
            tick = next(work)
        except StopIteration as e:
            clock[0] += time.perf_counter() - t0
            return e.value
        clock[0] += time.perf_counter() - t0
        yield tick


class EvidenceJob(StepJob[EvidenceMap]):
    """One method's map for one class of one image, as a job (:mod:`vizcore.jobs`).

    Cached on disk (``evidence/``, through :mod:`vizcore.cache`) by the image's content (the
    preprocessed input), the model's identity (weights' content and preprocessing), the target
    and every setting; a second request for the same map returns from the cache. The slow
    methods (occlusion, integrated gradients) tick after each forward batch, so a page shows
    their progress, stops them between batches and resumes them.
    """

    kind = "evidence"
    unit = "passes"

    def __init__(self, lm: LoadedModel, image: Image.Image | torch.Tensor, target: int | str | None, method: str,
                 settings: dict | None = None):
        self.spec = get_method(method)
        self.settings = dict(settings or {})
        unknown = [k for k in self.settings if k not in self.spec.defaults]
        if unknown:
            raise ValueError(f"unknown setting(s) for {method}: {', '.join(unknown)}; "
                             f"known: {', '.join(self.spec.defaults) or 'none'}")
        self.lm, self.method = lm, method
        self.x, self.crop = _prepare(lm, image)
        self._target_arg = target
        self._target: Target | None = None

    @property
    def target(self) -> Target:
        if self._target is None:
            t = self._target_arg
            self._target = (resolve_target(self.lm, t, _logits(self.lm, self.x))
                            if t is None or str(t).lower() == "top1" else resolve_target(self.lm, t))
        return self._target

    def key(self) -> str:
        from vizcore.identity import result_key

        return result_key(self.kind, EVIDENCE_VERSION, self.lm, None, image=_digest(self.x),
                          target=self.target.index, method=self.method,
                          settings={**self.spec.defaults, **self.settings})

    def describe(self) -> str:
        return self.method

    def work(self):
        clock = [0.0]
        if self.spec.stepped:
            r = yield from _timed(self.spec.fn(self.lm, self.x, self.target.index, **self.settings), clock)
        else:
            yield Tick(0, 1)
            t0 = time.perf_counter()
            r = self.spec.fn(self.lm, self.x, self.target.index, **self.settings)
            clock[0] += time.perf_counter() - t0
        size = (int(self.x.shape[-2]), int(self.x.shape[-1]))
        return EvidenceMap(self.method, self.target, to_input(r.raw, r.geometry, size),
                           r.raw.numpy().astype(np.float32), r.geometry, {**self.spec.defaults, **r.settings},
                           r.caveats, r.display, self.crop, clock[0], dict(r.extra))

    def encode(self, ev: EvidenceMap) -> dict:
        return {"method": ev.method, "target": ev.target.to_json(), "map": torch.from_numpy(ev.map),
                "raw": torch.from_numpy(ev.raw), "geometry": ev.geometry.to_json() if ev.geometry else None,
                "settings": ev.settings, "caveats": list(ev.caveats), "display": ev.display,
                "image": torch.from_numpy(np.asarray(ev.image.convert("RGB")).copy()), "seconds": ev.seconds,
                "extra": ev.extra}

    def decode(self, d: dict) -> EvidenceMap:
        g = d["geometry"]
        return EvidenceMap(d["method"], Target(**d["target"]), d["map"].numpy(), d["raw"].numpy(),
                           Geometry(**g) if g else None, dict(d["settings"]), tuple(d["caveats"]), d["display"],
                           Image.fromarray(d["image"].numpy()), float(d["seconds"]), dict(d["extra"]))


class FaithfulnessJob(StepJob[Faithfulness]):
    """Deletion and insertion curves of one map as a job, cached beside the map (``of``: what
    the map is, e.g. the :class:`EvidenceJob` key or the random baseline's seed and lattice)."""

    kind = "faithfulness"
    unit = "images"

    def __init__(self, lm: LoadedModel, x: torch.Tensor, heat: np.ndarray, target: int, *, steps: int, of: Any):
        self.lm, self.x, self.heat, self.target, self.steps, self.of = lm, x, heat, int(target), int(steps), of

    def key(self) -> str:
        from vizcore.identity import result_key

        return result_key(self.kind, EVIDENCE_VERSION, self.lm, None, image=_digest(self.x), target=self.target,
                          steps=self.steps, of=self.of)

    def work(self):
        return (yield from faithfulness_steps(self.lm, self.x, self.heat, self.target, steps=self.steps))

    def encode(self, f: Faithfulness) -> dict:
        return {"fractions": torch.from_numpy(f.fractions), "deletion": torch.from_numpy(f.deletion),
                "insertion": torch.from_numpy(f.insertion), "deletion_auc": f.deletion_auc,
                "insertion_auc": f.insertion_auc}

    def decode(self, d: dict) -> Faithfulness:
        return Faithfulness(d["fractions"].numpy(), d["deletion"].numpy(), d["insertion"].numpy(),
                            float(d["deletion_auc"]), float(d["insertion_auc"]))


class ExplainJob(StepJob[EvidenceReport]):
    """:func:`explain` as a job: every method's map (an :class:`EvidenceJob`) and its scores (a
    :class:`FaithfulnessJob`), then the random baseline's, each part cached as it completes (with
    ``reuse``), so a second run of the same image, class and settings reads every part from the
    cache. It counts *stages* (a map, its scores, the random baseline: ``2 * methods + 1``);
    :attr:`stage` and :attr:`stage_counts` say where it is within one.
    """

    kind = "explain"
    unit = "stages"

    def __init__(self, lm: LoadedModel, image: Image.Image | torch.Tensor, target: int | str | None,
                 methods: Sequence[str], *, settings: dict[str, dict] | None = None, steps: int = 32, seed: int = 0,
                 random_grid: int = 7, reuse: bool = True):
        settings = settings or {}
        names = list(dict.fromkeys(methods))
        for n in names:
            get_method(n)  # unknown names fail before any work
        self.lm, self.steps, self.seed, self.random_grid, self.reuse = lm, int(steps), int(seed), int(random_grid), reuse
        self.x, _crop = _prepare(lm, image)
        logits = _logits(lm, self.x)
        self.target = resolve_target(lm, target, logits)
        self.target_logit = float(logits[0, self.target.index])
        self.parts = {n: EvidenceJob(lm, self.x, self.target.index, n, settings.get(n, {})) for n in names}
        self.total = 2 * len(names) + 1
        self.stage, self.stage_counts = "", (0, 1)

    def key(self) -> str:
        from vizcore.cache import cache_key

        return cache_key(parts=[j.key() for j in self.parts.values()], steps=self.steps, seed=self.seed,
                         grid=self.random_grid)

    def save(self, result: EvidenceReport) -> None:
        pass  # each part is written as it completes (see work)

    def load(self) -> EvidenceReport | None:
        if not self.reuse:
            return None
        maps, scores = {}, {}
        for n, job in self.parts.items():
            if (m := job.load()) is None or (f := self._faith(n, m).load()) is None:
                return None
            maps[n], scores[n] = m, f
        if (rnd := self._random().load()) is None:
            return None
        return replace(self._report(maps, scores, rnd), cached=True)

    def _faith(self, name: str, ev: EvidenceMap) -> FaithfulnessJob:
        return FaithfulnessJob(self.lm, self.x, ev.map, self.target.index, steps=self.steps, of=self.parts[name].key())

    def _random(self) -> FaithfulnessJob:
        heat = random_map(tuple(self.x.shape[-2:]), self.seed, self.random_grid)
        return FaithfulnessJob(self.lm, self.x, heat, self.target.index, steps=self.steps,
                               of={"random": self.seed, "grid": self.random_grid})

    def _report(self, maps, scores, rnd) -> EvidenceReport:
        return EvidenceReport(self.lm.name, self.lm.weights.to_json(), self.target, self.target_logit, maps, scores,
                              rnd, {"steps": self.steps, "seed": self.seed, "random_grid": self.random_grid})

    def _part(self, k: int, stage: str, job: StepJob):
        self.stage, self.stage_counts = stage, (0, 1)
        if self.reuse and (hit := job.load()) is not None:
            return hit
        work = job.work()
        while True:
            try:
                t = next(work)
            except StopIteration as e:
                result = e.value
                break
            self.stage_counts = (int(t.done), int(t.total))
            yield Tick(k, self.total)
        if self.reuse:
            job.save(result)
        return result

    def work(self):
        """Ticks with the partial result: an :class:`EvidenceReport` of the maps (and scores) so far,
        its ``random`` ``None`` until the baseline is scored."""
        yield Tick(0, self.total)
        maps: dict[str, EvidenceMap] = {}
        scores: dict[str, Faithfulness] = {}
        k = 0
        for n, job in self.parts.items():
            maps[n] = yield from self._part(k, n, job)
            k += 1
            yield Tick(k, self.total, self._report(dict(maps), dict(scores), None))
            scores[n] = yield from self._part(k, f"{n} faithfulness", self._faith(n, maps[n]))
            k += 1
            yield Tick(k, self.total, self._report(dict(maps), dict(scores), None))
        rnd = yield from self._part(k, "random", self._random())
        return self._report(maps, scores, rnd)


