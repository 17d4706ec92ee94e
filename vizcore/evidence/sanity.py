"""Can you trust the map? Model-parameter randomisation, the random-class test and an edge control.

After Adebayo et al., "Sanity checks for saliency maps" (NeurIPS 2018,
https://arxiv.org/abs/1810.03292): a map that explains the model must change when the
model's weights are destroyed. :func:`sanity_check` re-initialises the parameterised
layers of a **copy** of the model (the shared, cached model is never touched) and
recomputes every method's map after each step:

- ``cascading``: from the logits down, one more layer at each step (step 0: none);
- ``independent``: one layer at a time, every other layer as trained.

Each map is compared with the map of the trained model by the paper's three measures
(:func:`similarity`): the Spearman rank correlation of absolute values, SSIM, and the
Pearson correlation of histograms of oriented gradients (HOG). Two more tests come in
the same run: the **random-class test** (the map for the top class against the map for a
random other class, same measures) and an **edge control**: a Sobel edge map of the image
alone, which depends on no weights (its similarity is 1 at every step), and each method's
similarity to it at every step (how close a method stays to "just edges").

The paper's data randomisation test (retraining on permuted labels) is out of scope: it
needs a retrained network.

Re-initialisation: convolution and linear weights are drawn as PyTorch's default
initialisation does (uniform in +-1/sqrt(fan_in)) from a generator seeded by the seed and
the module's name, so one seed gives the same random layer in both modes and in every run;
normalisation layers get their default initialisation (weight 1, bias 0, running mean 0,
variance 1). The paper re-draws from a truncated normal; the curves' shape is what matters.

The measures come from scipy and scikit-image; the randomisation loop is written here
because no maintained library runs it over an arbitrary registered model and evidence
registry (Quantus and xplique have it for their own explainer interfaces only).
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from vizcore.jobs import PassJob, StepJob, Tick, Work
from vizcore.models import LoadedModel
from vizcore.passes import DatasetPass, PassInfo

MODES = ("cascading", "independent")
GRANULARITIES = ("blocks", "layers", "modules")
MEASURES = ("spearman", "ssim", "hog")
MEASURE_TITLES = {"spearman": "Spearman rank correlation of |map|", "ssim": "SSIM",
                  "hog": "HOG similarity (Pearson of descriptors)"}
CONTROL = "edges"
DEFAULT_METHODS = ("cam", "gradcam", "guided", "deconv")
OUT_OF_SCOPE = ("The data randomisation test (retraining on permuted labels, Adebayo et al. section 5) is "
                "not run: it needs a retrained network.")
_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


# ------------------------------------------------------------------ similarity
def _unit(m: np.ndarray) -> np.ndarray:
    """``|m|`` scaled into [0, 1] by its maximum (all zero when the map is zero)."""
    a = np.abs(np.asarray(m, dtype=np.float64))
    hi = float(a.max()) if a.size else 0.0
    return a / hi if hi > 0 else np.zeros_like(a)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def _hog(m: np.ndarray) -> np.ndarray:
    from skimage.feature import hog

    cell = max(4, min(m.shape) // 14)  # 16 px cells at 224 px, as the paper's setting
    return hog(m, orientations=9, pixels_per_cell=(cell, cell), cells_per_block=(2, 2), feature_vector=True)


class Prepared:
    """A map with what the measures need computed once: ranks of ``|map|``, the scaled map and its HOG."""

    def __init__(self, m: np.ndarray):
        from scipy.stats import rankdata

        self.raw = np.asarray(m, dtype=np.float64)
        a = np.abs(self.raw).ravel()
        self.constant = bool(a.std() == 0)
        self.ranks = rankdata(a)
        self.unit = _unit(self.raw)
        self.hog = _hog(self.unit)


def similarity(a: "np.ndarray | Prepared", b: "np.ndarray | Prepared") -> dict[str, float]:
    """The paper's three similarity measures between two ``(H, W)`` maps.

    - ``spearman``: Spearman rank correlation of ``|a|`` and ``|b|`` (scipy's ranks, ties averaged);
    - ``ssim``: structural similarity of ``|a|`` and ``|b|``, each scaled into [0, 1]
      (``skimage.metrics.structural_similarity``, data range 1);
    - ``hog``: Pearson correlation of the HOG descriptors of the scaled maps (``skimage.feature.hog``).

    Identical maps score exactly 1 on every measure (no rounding noise); a measure that is
    undefined (a constant map has no rank order) is ``nan``. Pass :class:`Prepared` maps to
    compare one map with several without recomputing its ranks and HOG.
    """
    from skimage.metrics import structural_similarity

    pa = a if isinstance(a, Prepared) else None
    pb = b if isinstance(b, Prepared) else None
    ra = pa.raw if pa else np.asarray(a, dtype=np.float64)
    rb = pb.raw if pb else np.asarray(b, dtype=np.float64)
    if ra.shape != rb.shape:
        raise ValueError(f"maps of different shapes {ra.shape} and {rb.shape}")
    if np.array_equal(ra, rb):
        return {m: 1.0 for m in MEASURES}
    pa, pb = pa or Prepared(ra), pb or Prepared(rb)
    rho = float("nan") if pa.constant or pb.constant else _pearson(pa.ranks, pb.ranks)
    win = min(7, *(s if s % 2 else s - 1 for s in ra.shape))
    ssim = float(structural_similarity(pa.unit, pb.unit, data_range=1.0, win_size=win)) if win >= 3 else float("nan")
    return {"spearman": rho, "ssim": ssim, "hog": _pearson(pa.hog, pb.hog)}


def edge_map(image: Image.Image) -> np.ndarray:
    """The control: Sobel gradient magnitude of the image's grey levels, ``(H, W)`` float32
    (``skimage.filters.sobel``); it depends on the image alone."""
    from skimage.filters import sobel

    grey = np.asarray(image.convert("L"), dtype=np.float64) / 255.0
    return sobel(grey).astype(np.float32)


# ------------------------------------------------------------------ layers and randomisation
@dataclass(frozen=True)
class Unit:
    """What one randomisation step re-initialises: a name and its parameterised modules."""

    name: str
    modules: tuple[str, ...]

    def to_json(self) -> dict:
        return {"name": self.name, "modules": list(self.modules)}


def _has_params(m: nn.Module) -> bool:
    return any(True for _ in m.parameters(recurse=False))


def _execution_order(lm: LoadedModel, size: int = 224) -> list[str]:
    """Module paths in the order their forward passes finish (first call), on a blank input."""
    model = lm.model
    order: list[str] = []
    seen: set[str] = set()
    handles = []

    def hook(name):
        def fn(mod, inp, out):
            if name not in seen:
                seen.add(name)
                order.append(name)
        return fn

    with lm.lock:
        try:
            for name, mod in model.named_modules():
                if name:
                    handles.append(mod.register_forward_hook(hook(name)))
            with torch.no_grad():
                model(torch.zeros(1, 3, size, size, device=lm.device))
        finally:
            for h in handles:
                h.remove()
    return order


def units(lm: LoadedModel, granularity: str = "blocks", size: int = 224) -> list[Unit]:
    """The model's randomisation units in forward order (the logits' last).

    Args:
        granularity: ``modules``: every module that holds parameters; ``layers``: each
            convolution or linear layer with the normalisation layers that follow it;
            ``blocks``: the layers up to each of the model's taps (the layer names used
            everywhere in the app; ``vizcore layers``), the classifier last.
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"unknown granularity {granularity!r}; choose from {', '.join(GRANULARITIES)}")
    order = _execution_order(lm, size)
    modules = dict(lm.model.named_modules())
    params = [n for n in order if _has_params(modules[n])]
    missing = [n for n, m in modules.items() if n and _has_params(m) and n not in set(params)]
    params += missing  # modules the forward pass never called: randomised last (they change nothing)
    if granularity == "modules":
        return [Unit(n, (n,)) for n in params]
    layers: list[list[str]] = []
    for n in params:
        if isinstance(modules[n], _NORMS) and layers and not all(isinstance(modules[p], _NORMS) for p in layers[-1]):
            layers[-1].append(n)
        else:
            layers.append([n])
    if granularity == "layers":
        return [Unit(ls[0], tuple(ls)) for ls in layers]
    pos = {n: i for i, n in enumerate(order)}
    taps = sorted(((pos[t.module], t.name) for t in lm.taps() if t.module in pos), key=lambda t: t[0])
    blocks: list[tuple[str, list[str]]] = []
    for ls in layers:
        end = max(pos.get(n, len(order)) for n in ls)
        name = next((tn for tp, tn in taps if tp >= end), ls[0])
        if blocks and blocks[-1][0] == name:
            blocks[-1][1].extend(ls)
        else:
            blocks.append((name, list(ls)))
    return [Unit(n, tuple(ms)) for n, ms in blocks]


def _unit_seed(seed: int, module: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{int(seed)}:{module}".encode()).digest()[:8], "little") >> 1


def reinitialise_(module: nn.Module, name: str, seed: int) -> None:
    """Re-initialise ``module``'s own parameters in place, from a generator seeded by ``seed``
    and ``name``: weights and biases uniform in +-1/sqrt(fan_in) (PyTorch's default for
    convolutions and linear layers), normalisation layers to weight 1, bias 0 and fresh
    running statistics."""
    g = torch.Generator().manual_seed(_unit_seed(seed, name))
    with torch.no_grad():
        if isinstance(module, _NORMS):
            for pn, p in module.named_parameters(recurse=False):
                p.fill_(1.0 if pn == "weight" else 0.0)
            if hasattr(module, "reset_running_stats") and getattr(module, "track_running_stats", False):
                module.reset_running_stats()
            return
        w = getattr(module, "weight", None)
        fan_in = int(w[0].numel()) if isinstance(w, torch.Tensor) and w.dim() >= 2 else None
        for pn, p in module.named_parameters(recurse=False):
            fi = fan_in or (int(p[0].numel()) if p.dim() >= 2 else int(p.numel()))
            bound = 1.0 / math.sqrt(max(fi, 1))
            draw = (torch.rand(p.shape, generator=g, dtype=torch.float64) * 2 - 1) * bound
            p.copy_(draw.to(dtype=p.dtype, device=p.device))


def weights_changed(model: nn.Module) -> None:
    """Tell the methods that keep derived copies of a model (LRP's canonized copy, the FCN head) that
    ``model``'s weights changed in place."""
    from vizcore.evidence import cam, lrp

    cam.forget_model(model)
    lrp.forget_model(model)


def model_copy(lm: LoadedModel) -> LoadedModel:
    """A private copy of ``lm`` (own module, own lock) that may be modified freely."""
    with lm.lock:
        model = copy.deepcopy(lm.model)
    return dataclasses.replace(lm, model=model.eval(), lock=threading.RLock())


def randomised(lm: LoadedModel, randomise: Sequence[Unit], seed: int = 0) -> LoadedModel:
    """A copy of ``lm`` with the modules of ``randomise`` re-initialised (``lm`` untouched)."""
    c = model_copy(lm)
    mods = dict(c.model.named_modules())
    for u in randomise:
        for n in u.modules:
            reinitialise_(mods[n], n, seed)
    weights_changed(c.model)
    return c


# ------------------------------------------------------------------ the check
@dataclass(frozen=True, eq=False)
class SanityResult:
    """Similarity of each method's map to the trained model's map after each randomisation step.

    Attributes:
        steps: the randomised units after each step; step 0 randomises nothing. Cascading:
            step k has randomised the top k units; independent: step k only the k-th from the top.
        scores: ``{method: {measure: [similarity at step 0, 1, ...]}}`` (``nan``: undefined).
        edges: ``{method: {measure: [similarity to the edge map at each step]}}``.
        control: ``{measure: [...]}``: the edge map's own similarity at each step (1: it needs no weights).
        random_class: the other class and ``{method: {measure: similarity}}`` of its map to the top class's.
        maps: ``{method: {step: (H, W) float32}}`` at the steps in ``kept``; ``edge`` the control map.
        errors: methods that could not run on this model, with the reason.
        seconds: ``{method: seconds per map}`` (mean over the steps).
        complete: every step done (a stopped run's partial result is not).
    """

    model: str
    target: dict
    mode: str
    granularity: str
    seed: int
    methods: tuple[str, ...]
    steps: list[list[str]]
    scores: dict[str, dict[str, list[float]]]
    edges: dict[str, dict[str, list[float]]]
    control: dict[str, list[float]]
    random_class: dict
    names: list[str] = field(default_factory=list)
    maps: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)
    edge: np.ndarray | None = None
    image: Image.Image | None = None
    errors: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    complete: bool = True

    def step_labels(self) -> list[str]:
        """``none`` for step 0, then the name of the unit randomised at each step."""
        if len(self.names) == len(self.steps):
            return list(self.names)
        return ["none"] + [u[0] if len(u) == 1 else f"{u[0]}…" for u in self.steps[1:]]

    def to_json(self) -> dict:
        return json_safe({"model": self.model, "target": self.target, "mode": self.mode,
                      "granularity": self.granularity, "seed": self.seed, "methods": list(self.methods),
                      "steps": [{"step": i, "unit": n, "randomised": s}
                                for i, (n, s) in enumerate(zip(self.step_labels(), self.steps))],
                      "scores": self.scores, "edges": self.edges, "control": self.control,
                      "random_class": self.random_class, "errors": self.errors,
                      "seconds_per_map": self.seconds, "complete": self.complete,
                      "kept_steps": sorted({k for m in self.maps.values() for k in m}),
                      "out_of_scope": OUT_OF_SCOPE}, digits=6)


def _kept(n_steps: int, keep: int) -> list[int]:
    if n_steps <= 0:
        return [0]
    return sorted({int(round(i)) for i in np.linspace(0, n_steps, max(2, keep))})


class SanityJob(StepJob[SanityResult]):
    """The sanity check of one image as a job: one tick per randomisation step (and one for the
    random-class test), cached by model weights, image, class, methods and every setting."""

    kind = "sanity"
    unit = "steps"
    version = 1

    def __init__(self, lm: LoadedModel, image: Image.Image | torch.Tensor, target: int | str | None = None,
                 methods: Sequence[str] = DEFAULT_METHODS, *, mode: str = "cascading",
                 granularity: str = "blocks", seed: int = 0, settings: dict[str, dict] | None = None,
                 keep: int = 5, max_steps: int | None = None):
        from vizcore.evidence import get_method

        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
        if granularity not in GRANULARITIES:
            raise ValueError(f"unknown granularity {granularity!r}; choose from {', '.join(GRANULARITIES)}")
        self.methods = tuple(dict.fromkeys(methods))
        if not self.methods:
            raise ValueError("give at least one evidence method")
        for m in self.methods:
            get_method(m)  # unknown names fail here, with the closest ones
        self.lm, self.image, self.target = lm, image, target
        self.mode, self.granularity, self.seed = mode, granularity, int(seed)
        self.settings = {m: dict((settings or {}).get(m, {})) for m in self.methods}
        self.keep, self.max_steps = int(keep), max_steps

    def key(self) -> str | None:
        from vizcore.identity import result_key

        if torch.is_tensor(self.image):
            img = hashlib.sha256(self.image.detach().cpu().float().numpy().tobytes()).hexdigest()[:24]
        else:
            rgb = self.image.convert("RGB")
            img = hashlib.sha256(rgb.tobytes() + str(rgb.size).encode()).hexdigest()[:24]
        return result_key(self.kind, self.version, self.lm, image=img, target=str(self.target),
                          methods=list(self.methods), mode=self.mode, granularity=self.granularity,
                          seed=self.seed, settings=self.settings, keep=self.keep, max_steps=self.max_steps)

    def describe(self) -> str:
        return f"sanity check ({self.mode}) {self.lm.name}"

    def encode(self, r: SanityResult) -> Any:
        d = {f.name: getattr(r, f.name) for f in dataclasses.fields(r)}
        d["maps"] = {m: {int(k): torch.from_numpy(v) for k, v in s.items()} for m, s in r.maps.items()}
        d["edge"] = None if r.edge is None else torch.from_numpy(r.edge)
        d["image"] = None if r.image is None else torch.from_numpy(np.asarray(r.image.convert("RGB")).copy())
        d["methods"] = list(r.methods)
        return d

    def decode(self, d: Any) -> SanityResult:
        d = dict(d)
        d["maps"] = {m: {int(k): v.numpy() for k, v in s.items()} for m, s in d["maps"].items()}
        d["edge"] = None if d["edge"] is None else d["edge"].numpy()
        d["image"] = None if d["image"] is None else Image.fromarray(d["image"].numpy())
        d["methods"] = tuple(d["methods"])
        return SanityResult(**d)

    def work(self) -> Work:
        return _work(self)


def _maps(lm: LoadedModel, x: torch.Tensor, target: int, methods: Sequence[str], settings: dict,
          errors: dict[str, str], seconds: dict[str, list[float]]) -> dict[str, np.ndarray]:
    from vizcore.evidence import MethodNotApplicable, evidence

    out = {}
    for m in methods:
        if m in errors:
            continue
        t0 = time.perf_counter()
        try:
            out[m] = evidence(lm, x, target, m, cache=False, **settings.get(m, {})).map  # a changing copy: never cached
        except MethodNotApplicable as e:
            errors[m] = str(e)
            continue
        seconds.setdefault(m, []).append(time.perf_counter() - t0)
    return out


def _work(job: SanityJob) -> Work:
    from vizcore.activations import denormalize, preprocess
    from vizcore.evidence import resolve_target

    lm = job.lm
    x = job.image if torch.is_tensor(job.image) else preprocess(lm, job.image)
    x = (x if x.dim() == 4 else x[None]).to(lm.device)
    crop = denormalize(lm, x[0])
    with lm.lock, torch.no_grad():
        logits = lm.model(x)
    if not torch.is_tensor(logits):
        logits = getattr(logits, "logits", logits[0])
    tgt = resolve_target(lm, job.target, logits)
    us = units(lm, job.granularity, int(x.shape[-1]))[::-1]  # from the logits down
    if job.max_steps is not None:
        us = us[: max(0, int(job.max_steps))]
    n = len(us)
    kept = set(_kept(n, job.keep))
    edge = edge_map(crop)
    edge_p = Prepared(edge)
    errors: dict[str, str] = {}
    seconds: dict[str, list[float]] = {}
    work = model_copy(lm)  # the shared model is never touched
    mods = dict(work.model.named_modules())
    ref = _maps(lm, x, tgt.index, job.methods, job.settings, errors, seconds)  # methods only read lm
    methods = [m for m in job.methods if m in ref]
    ref_p = {m: Prepared(ref[m]) for m in methods}
    scores = {m: {k: [] for k in MEASURES} for m in methods}
    edges = {m: {k: [] for k in MEASURES} for m in methods}
    control = {k: [] for k in MEASURES}
    maps: dict[str, dict[int, np.ndarray]] = {m: {} for m in methods}
    steps: list[list[str]] = []
    original = {n_: {pn: p.detach().clone() for pn, p in mods[n_].named_parameters(recurse=False)}
                for u in us for n_ in u.modules} if job.mode == "independent" else {}
    original_buf = {n_: {bn: b.detach().clone() for bn, b in mods[n_].named_buffers(recurse=False)}
                    for u in us for n_ in u.modules} if job.mode == "independent" else {}
    total = n + 2  # the steps, step 0 and the random-class test

    def result(complete: bool) -> SanityResult:
        return SanityResult(lm.name, tgt.to_json(), job.mode, job.granularity, job.seed, tuple(methods),
                            [list(s) for s in steps], copy.deepcopy(scores), copy.deepcopy(edges),
                            copy.deepcopy(control), dict(rc), ["none"] + [u.name for u in us[:len(steps) - 1]],
                            {m: dict(v) for m, v in maps.items()}, edge, crop,
                            dict(errors), {m: float(np.mean(v)) for m, v in seconds.items()}, complete)

    rc: dict = {}
    yield Tick(0, total)
    for k in range(n + 1):
        if k > 0:
            u = us[k - 1]
            if job.mode == "independent" and k > 1:
                prev = us[k - 2]
                with torch.no_grad():
                    for n_ in prev.modules:
                        for pn, p in mods[n_].named_parameters(recurse=False):
                            p.copy_(original[n_][pn])
                        for bn, b in mods[n_].named_buffers(recurse=False):
                            b.copy_(original_buf[n_][bn])
            for n_ in u.modules:
                reinitialise_(mods[n_], n_, job.seed)
            weights_changed(work.model)
            cur = _maps(work, x, tgt.index, methods, job.settings, errors, seconds)
        else:
            cur = ref
        steps.append([] if k == 0 else [n_ for n_ in us[k - 1].modules])
        ctl = edge_map(crop)
        for key, v in similarity(edge_p, ctl).items():
            control[key].append(v)
        for m in methods:
            cp = ref_p[m] if k == 0 else Prepared(cur[m])
            s = similarity(ref_p[m], cp)
            e = similarity(edge_p, cp)
            for key in MEASURES:
                scores[m][key].append(s[key])
                edges[m][key].append(e[key])
            if k in kept:
                maps[m][k] = cur[m].astype(np.float32)
        yield Tick(k + 1, total, result(False))
    # random-class test on the trained model
    cats = list(lm.categories or [])
    rng = np.random.default_rng(job.seed)
    other = int(rng.choice([i for i in range(len(cats)) if i != tgt.index]))
    alt = _maps(lm, x, other, methods, job.settings, errors, {})
    rc.update({"class": {"index": other, "label": cats[other]},
               "scores": {m: similarity(ref_p[m], alt[m]) for m in methods if m in alt}})
    yield Tick(total, total, result(False))
    return result(True)


def sanity_check(lm: LoadedModel, image: Image.Image | torch.Tensor, target: int | str | None = None,
                 methods: Sequence[str] = DEFAULT_METHODS, *, mode: str = "cascading", granularity: str = "blocks",
                 seed: int = 0, settings: dict[str, dict] | None = None, keep: int = 5,
                 max_steps: int | None = None, options=None, progress=False, should_stop=None) -> SanityResult:
    """Model-parameter randomisation test of every method in ``methods`` on one image.

    Args:
        lm: a loaded model (shared; never modified: the work is done on a copy).
        image: a PIL image or a preprocessed ``(1, 3, H, W)`` tensor.
        target: the class explained (index, label, ``top1``/``None``).
        methods: evidence methods (:func:`vizcore.evidence.list_methods`).
        mode: ``cascading`` or ``independent``.
        granularity: what one step re-initialises (:func:`units`).
        seed: seeds the new weights and the random class.
        settings: per-method settings as for :func:`vizcore.evidence.explain`.
        keep: about how many steps keep their maps (evenly spaced, first and last included).
        max_steps: stop after the top ``max_steps`` units (``None``: all the way to the input).
        options, progress, should_stop: as :func:`vizcore.jobs.run` (cached unless ``options.cache`` is off).
    """
    from vizcore.jobs import run

    job = SanityJob(lm, image, target, methods, mode=mode, granularity=granularity, seed=seed,
                    settings=settings, keep=keep, max_steps=max_steps)
    return run(job, options, progress=progress, should_stop=should_stop)


# ------------------------------------------------------------------ figures (built, never shown or saved)
def sanity_figure(results: Sequence[SanityResult]):
    """The similarity curves: one column per measure, one row per result (mode), one line per
    method, the edge control dashed; the random-class test as a marker right of the last step.

    Returns a :class:`matplotlib.figure.Figure` (the caller saves or shows it)."""
    from matplotlib.figure import Figure

    results = list(results)
    fig = Figure(figsize=(4.2 * len(MEASURES), 3.2 * len(results)), layout="constrained")
    axes = fig.subplots(len(results), len(MEASURES), squeeze=False)
    colours = {}
    for row, r in zip(axes, results):
        x = np.arange(len(r.steps))
        for ax, key in zip(row, MEASURES):
            for i, m in enumerate(r.methods):
                line = ax.plot(x, r.scores[m][key], marker="o", ms=3, label=m,
                               color=colours.get(m, f"C{i}"))[0]
                colours[m] = line.get_color()
                rc = r.random_class.get("scores", {}).get(m)
                if rc is not None:
                    ax.plot([x[-1] + 1], [rc[key]], marker="*", ms=9, color=colours[m], ls="none")
            ax.plot(x, r.control[key], ls="--", color="0.4", label="edges (control)")
            ax.set_ylim(-1.05 if key != "ssim" else -0.3, 1.05)
            ax.axhline(0, color="0.85", lw=0.8)
            ticks = list(x) + ([x[-1] + 1] if r.random_class else [])
            labels = r.step_labels() + (["rand. class"] if r.random_class else [])
            every = max(1, len(ticks) // 10)
            ax.set_xticks(ticks[::every], labels[::every], rotation=60, ha="right", fontsize=7)
            ax.set_title(f"{r.mode}: {MEASURE_TITLES[key]}", fontsize=9)
            ax.set_xlabel(f"randomised from the logits down ({r.granularity})", fontsize=8)
        row[0].set_ylabel("similarity to the trained model's map")
    axes[0][-1].legend(fontsize=7, loc="lower left")
    return fig


def sanity_maps_figure(r: SanityResult):
    """The kept maps: one row per method, one column per kept step, the edge map first."""
    from matplotlib.figure import Figure

    steps = sorted({k for m in r.maps.values() for k in m})
    labels = r.step_labels()
    fig = Figure(figsize=(1.6 * (len(steps) + 2), 1.7 * max(1, len(r.methods))), layout="constrained")
    axes = fig.subplots(max(1, len(r.methods)), len(steps) + 2, squeeze=False)
    for i, m in enumerate(r.methods):
        axes[i][0].imshow(r.image)
        axes[i][1].imshow(_unit(r.edge), cmap="gray")
        for j, k in enumerate(steps):
            axes[i][j + 2].imshow(_unit(r.maps[m][k]), cmap="inferno", vmin=0, vmax=1)
            if i == 0:
                axes[i][j + 2].set_title(f"{k}: {labels[k]}", fontsize=7)
        axes[i][0].set_ylabel(m, fontsize=8)
    axes[0][0].set_title("image", fontsize=7)
    axes[0][1].set_title("edges (control)", fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([]), ax.set_yticks([])
    return fig


# ------------------------------------------------------------------ over a dataset
def _finish_inline(job: SanityJob) -> SanityResult:
    gen = job.work()
    while True:
        try:
            next(gen)
        except StopIteration as e:
            return e.value


@dataclass(frozen=True, eq=False)
class DatasetSanity:
    """The sanity check averaged over the images of a dataset.

    Attributes:
        mean, low, high: ``{method: {measure: [per step]}}``: the mean over images and its 95%
            t-interval (``nan`` where fewer than two images define the measure).
        random_class: ``{method: {measure: (mean, low, high)}}``.
        n: ``{method: {measure: [images defining it, per step]}}``; n_images: images used.
    """

    model: str
    mode: str
    granularity: str
    seed: int
    methods: tuple[str, ...]
    names: list[str]
    mean: dict
    low: dict
    high: dict
    random_class: dict
    n: dict
    n_images: int
    complete: bool = True

    def to_json(self) -> dict:
        return json_safe({"model": self.model, "mode": self.mode, "granularity": self.granularity, "seed": self.seed,
                      "methods": list(self.methods), "steps": self.names, "mean": self.mean, "low": self.low,
                      "high": self.high, "random_class": self.random_class, "n": self.n,
                      "n_images": self.n_images, "complete": self.complete, "interval": "95% t-interval of the mean",
                      "out_of_scope": OUT_OF_SCOPE}, digits=6)


def _interval(values: np.ndarray) -> tuple[float, float, float, int]:
    from scipy.stats import t

    v = values[~np.isnan(values)]
    if v.size == 0:
        return float("nan"), float("nan"), float("nan"), 0
    m = float(v.mean())
    if v.size < 2:
        return m, float("nan"), float("nan"), int(v.size)
    h = float(t.ppf(0.975, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return m, m - h, m + h, int(v.size)


class SanityPass(DatasetPass):
    """The sanity check of each image of a dataset (its top-1 class); state: each image's curves by
    dataset index (merge: union, exact); finish: mean and 95% interval per step."""

    kind = "sanity-dataset"

    def __init__(self, lm: LoadedModel, methods: Sequence[str] = DEFAULT_METHODS, *, mode: str = "cascading",
                 granularity: str = "blocks", seed: int = 0, max_steps: int | None = None):
        super().__init__({"model": lm})
        self.methods, self.mode, self.granularity = tuple(methods), mode, granularity
        self.seed, self.max_steps = int(seed), max_steps

    def transform(self):
        return self.model("model").transform()

    def empty(self):
        return {}

    def step(self, x, indices: Sequence[int]):
        lm = self.model("model")
        out = {}
        for row, i in zip(x, indices):
            r = _finish_inline(SanityJob(lm, row[None].to(lm.device), None, self.methods, mode=self.mode,
                                         granularity=self.granularity, seed=self.seed + int(i), keep=0,
                                         max_steps=self.max_steps))
            out[int(i)] = {"scores": r.scores, "names": r.step_labels(), "random": r.random_class["scores"],
                           "errors": r.errors}
        return out

    def merge(self, a, b):
        return {**a, **b}

    def finish(self, state, info: PassInfo) -> DatasetSanity:
        lm = self.model("model")
        idx = sorted(state)
        methods = tuple(m for m in self.methods if any(m in state[i]["scores"] for i in idx))
        names = state[idx[0]]["names"] if idx else []
        mean, low, high, n, rc = ({m: {} for m in methods} for _ in range(5))
        for m in methods:
            for key in MEASURES:
                rows = np.array([state[i]["scores"][m][key] for i in idx if m in state[i]["scores"]], dtype=float)
                stats = [_interval(rows[:, s]) for s in range(rows.shape[1])] if rows.size else []
                mean[m][key] = [s[0] for s in stats]
                low[m][key] = [s[1] for s in stats]
                high[m][key] = [s[2] for s in stats]
                n[m][key] = [s[3] for s in stats]
                r = _interval(np.array([state[i]["random"][m][key] for i in idx if m in state[i]["random"]],
                                       dtype=float))
                rc[m][key] = list(r[:3])
        return DatasetSanity(lm.name, self.mode, self.granularity, self.seed, methods, list(names), mean, low, high,
                             rc, n, len(idx), info.complete)


class DatasetSanityJob(PassJob[DatasetSanity]):
    """:class:`SanityPass` over ``n`` images of a dataset (evenly spread) as a job; image ``i``'s new
    weights are seeded by ``seed + i``."""

    kind = "sanity-dataset"
    codec = "json"
    version = 1

    def __init__(self, lm: LoadedModel, dataset, n: int = 16, methods: Sequence[str] = DEFAULT_METHODS, *,
                 mode: str = "cascading", granularity: str = "blocks", seed: int = 0, max_steps: int | None = None):
        from vizcore.evidence import get_method

        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
        for m in methods:
            get_method(m)
        if int(n) < 1:
            raise ValueError("the dataset check needs at least 1 image")
        total = len(dataset)
        idx = sorted({int(round(v)) for v in np.linspace(0, total - 1, min(int(n), total))}) if total else []
        super().__init__(dataset, idx)
        self.lm, self.methods, self.mode, self.granularity = lm, tuple(methods), mode, granularity
        self.seed, self.max_steps = int(seed), max_steps

    def make_pass(self) -> DatasetPass:
        return SanityPass(self.lm, self.methods, mode=self.mode, granularity=self.granularity, seed=self.seed,
                          max_steps=self.max_steps)

    def key(self) -> str | None:
        from vizcore.identity import result_key

        return result_key(self.kind, self.version, self.lm, self.dataset, indices=self.indices,
                          methods=list(self.methods), mode=self.mode, granularity=self.granularity, seed=self.seed,
                          max_steps=self.max_steps)

    def encode(self, r: DatasetSanity) -> Any:
        d = {f.name: getattr(r, f.name) for f in dataclasses.fields(r)}
        d["methods"] = list(r.methods)
        return json_safe(d)

    def decode(self, d: Any) -> DatasetSanity:
        d = dict(d)
        d["methods"] = tuple(d["methods"])
        return DatasetSanity(**unjson(d))


def json_safe(v, digits: int | None = None):
    """NaN as ``None`` (JSON has no NaN) and tuples as lists, recursively; floats rounded to
    ``digits`` places when given (the results' ``to_json``)."""
    if isinstance(v, float):
        return None if math.isnan(v) else (v if digits is None else round(v, digits))
    if isinstance(v, dict):
        return {k: json_safe(x, digits) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x, digits) for x in v]
    return v


def unjson(v):
    """``None`` inside lists of numbers back to NaN."""
    if isinstance(v, dict):
        return {k: unjson(x) for k, x in v.items()}
    if isinstance(v, list):
        return [float("nan") if x is None else unjson(x) for x in v]
    return v


def dataset_sanity_figure(r: DatasetSanity):
    """Mean similarity per step with its 95% interval (shaded), one panel per measure (matplotlib)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * len(MEASURES), 3.4), layout="constrained")
    axes = fig.subplots(1, len(MEASURES), squeeze=False)[0]
    x = np.arange(len(r.names))
    for ax, key in zip(axes, MEASURES):
        for i, m in enumerate(r.methods):
            mu = np.array(r.mean[m][key], dtype=float)
            ax.plot(x, mu, marker="o", ms=3, label=m, color=f"C{i}")
            ax.fill_between(x, np.array(r.low[m][key], dtype=float), np.array(r.high[m][key], dtype=float),
                            color=f"C{i}", alpha=0.2)
        ax.set_ylim(-1.05, 1.05)
        every = max(1, len(x) // 10)
        ax.set_xticks(x[::every], r.names[::every], rotation=60, ha="right", fontsize=7)
        ax.set_title(f"{r.mode}: {MEASURE_TITLES[key]} (n={r.n_images})", fontsize=9)
    axes[0].set_ylabel("similarity (mean, 95% interval)")
    axes[-1].legend(fontsize=7)
    return fig
