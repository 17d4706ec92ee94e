"""What a layer encodes as a whole: concepts found by matrix factorisation of its activations.

A tap's spatial activation vectors over a dataset (every position of every image, or a seeded
sample of them) form a matrix ``A`` (``(N, C)``). It is factored into ``k`` concepts,
``A ≈ U W`` with ``U >= 0`` (``(N, k)``: how much of each concept at each position) and ``W``
(``(k, C)``: the concepts as directions): non-negative matrix factorisation (scikit-learn's
``NMF``) where the tap is non-negative (after a ReLU), semi-NMF where it is not. After CRAFT
(Fel et al., CVPR 2023, https://arxiv.org/abs/2211.10154) and Olah et al., "The Building Blocks
of Interpretability" (Distill 2018, https://distill.pub/2018/building-blocks/).

Pieces, each usable alone:

- :class:`VectorPass` / :class:`VectorJob`: the sampled vectors, a dataset pass whose merge is
  exact (per image a fixed number of positions drawn from a generator seeded by the seed *and the
  image's dataset index*, so any split of the dataset draws the same positions; results ordered by
  dataset index). Optionally each vector's gradient x activation for one class (class atlases).
- :func:`factorise`: ``A -> (U, W)`` with the relative reconstruction error and the explained
  variance; :func:`project`: ``U`` of new vectors for fixed concepts ``W``.
- :class:`ConceptsJob`: vectors then factorisation (and the error for each ``k`` of a sweep), as one
  job with progress, stop, resume and a cached result.
- :func:`concept_maps` (heatmaps on one image), :func:`concept_importance` (each concept's part of a
  class logit: exact below a pooled linear head, gradient x concept elsewhere),
  :class:`ConceptCropsJob` (each concept's top-k dataset crops in one exactly merging pass, on Ray
  like every pass), :func:`neuron_groups` (one image's map factored into groups of channels).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
from PIL import Image

from vizcore.identity import result_key
from vizcore.jobs import PassJob, RunOptions, StepJob, Tick, sub_run
from vizcore.passes import DatasetPass, PassInfo
from vizcore.tap import forward_until, tap

if TYPE_CHECKING:
    from vizcore.data.datasets import ImageDataset
    from vizcore.models import LoadedModel
    from vizcore.patches import MiningResult

__all__ = ["ConceptCropsJob", "ConceptError", "ConceptImportance", "ConceptMaps", "Concepts", "ConceptsJob",
           "DirectionIcons", "DirectionIconsJob", "Factorisation", "NeuronGroups", "VectorJob", "VectorPass", "VectorSample", "concept_importance",
           "concept_maps", "concepts_of", "factorise", "icons_from_data", "icons_to_data", "neuron_groups", "project",
           "spatial_shape"]

CACHE_VERSION = 1
METHODS = ("auto", "nmf", "semi-nmf")


class ConceptError(ValueError):
    """Bad input for a concept analysis (k too large, a tap without spatial maps, ...): one clear line."""


# ------------------------------------------------------------------------------ the tap
def spatial_shape(lm: "LoadedModel", layer: str) -> tuple[str, int, int, int]:
    """``(module path, C, h, w)`` of ``layer``'s output at the model's input size.

    Raises:
        ConceptError: the tap has no spatial map (a pooled vector, the logits).
    """
    path = lm.resolve(layer)
    size = lm.spec.input_size
    x = torch.zeros(1, 3, size, size, device=lm.device)
    with torch.inference_mode(), tap(lm.model, [path], stop=True, lock=lm.lock) as store:
        forward_until(lm.model, x)
        out = store.get(path)
    if out is None or out.dim() != 4:
        shape = "nothing" if out is None else "×".join(map(str, out.shape[1:]))
        raise ConceptError(f"{layer} of {lm.name} outputs no spatial map (C, h, w) but {shape}: "
                           "concepts and atlases need a tap with spatial positions")
    return path, int(out.shape[1]), int(out.shape[2]), int(out.shape[3])


def _check_k(k: int, channels: int, layer: str) -> int:
    k = int(k)
    if k < 1:
        raise ConceptError(f"k must be at least 1, not {k}")
    if k > channels:
        raise ConceptError(f"k={k} is larger than the {channels} channels of {layer}: choose k <= {channels}")
    return k


def _logits(out: Any) -> torch.Tensor:
    """The logits of a classifier's output (a tensor, or an object with ``.logits``)."""
    return out if torch.is_tensor(out) else out.logits


# ------------------------------------------------------------------------------ sampling pass
@dataclass(frozen=True, eq=False)
class VectorSample:
    """Spatial activation vectors of one tap over a dataset.

    Attributes:
        vectors: ``(N, C)`` float32, ordered by dataset index, then position.
        image: ``(N,)`` dataset index of each vector; position: ``(N,)`` flat position ``y * w + x``.
        score: ``(N,)`` gradient x activation (summed over channels) for ``target``, or ``None``.
        hw: the map's ``(h, w)``; files: every dataset file (``files[image[i]]``).
    """

    model: str
    layer: str
    module: str
    hw: tuple[int, int]
    per_image: int | None
    seed: int
    target: int | None
    vectors: np.ndarray = field(repr=False)
    image: np.ndarray = field(repr=False)
    position: np.ndarray = field(repr=False)
    score: np.ndarray | None = field(repr=False)
    files: list[str] = field(repr=False)
    n_images: int = 0
    skipped: list[dict] = field(default_factory=list)
    complete: bool = True

    @property
    def channels(self) -> int:
        return int(self.vectors.shape[1])

    def to_json(self) -> dict:
        return {"model": self.model, "layer": self.layer, "module": self.module, "hw": list(self.hw),
                "per_image": self.per_image, "seed": self.seed, "target": self.target,
                "n_vectors": int(self.vectors.shape[0]), "channels": self.channels, "n_images": self.n_images,
                "skipped": list(self.skipped), "complete": self.complete}


def positions_of(seed: int, index: int, hw: int, per_image: int | None) -> np.ndarray:
    """The positions sampled from image ``index``: all, or ``per_image`` drawn without replacement by a
    generator seeded by ``(seed, index)`` (the same in any split of the dataset), sorted."""
    if per_image is None or per_image >= hw:
        return np.arange(hw, dtype=np.int64)
    rng = np.random.default_rng([int(seed), int(index)])
    return np.sort(rng.choice(hw, size=int(per_image), replace=False)).astype(np.int64)


class VectorPass(DatasetPass):
    """Per image, the activation vectors at a seeded sample of positions (optionally with each
    vector's gradient x activation for ``target``). The state maps dataset index to that image's
    vectors, so :meth:`merge` (a union) is exact and :meth:`finish` orders by index."""

    kind = "concept-vectors"

    def __init__(self, lm: "LoadedModel", layer: str, *, per_image: int | None = 16, seed: int = 0,
                 target: int | None = None):
        super().__init__({"net": lm})
        self.layer = layer
        self.module, self.c, self.h, self.w = spatial_shape(lm, layer)
        if per_image is not None and int(per_image) < 1:
            raise ConceptError(f"positions per image must be at least 1, not {per_image}")
        self.per_image = None if per_image is None else int(per_image)
        self.seed, self.target = int(seed), None if target is None else int(target)

    def transform(self):
        return self.model("net").transform()

    def empty(self) -> dict:
        return {}

    def step(self, x: torch.Tensor, indices: Sequence[int]) -> dict:
        lm = self.model("net")
        x = x.to(lm.device)
        if self.target is None:
            with torch.inference_mode(), tap(lm.model, [self.module], stop=True, lock=lm.lock) as store:
                forward_until(lm.model, x)
                a = store[self.module].float()
            score = None
        else:
            with torch.enable_grad(), tap(lm.model, [self.module], detach=False, clone=True, lock=lm.lock) as store:
                inp = x.detach().clone().requires_grad_(True)
                logits = _logits(lm.model(inp))
                act = store[self.module]
                (grad,) = torch.autograd.grad(logits[:, self.target].sum(), act)
            a = act.detach().float()
            score = (grad.detach().float() * a).sum(1).flatten(1)  # (B, hw)
        flat = a.flatten(2)  # (B, C, hw)
        out = {}
        for b, i in enumerate(indices):
            pos = positions_of(self.seed, int(i), flat.shape[2], self.per_image)
            p = torch.as_tensor(pos)
            out[int(i)] = (p, flat[b][:, p].T.contiguous().cpu(),
                           None if score is None else score[b][p].contiguous().cpu())
        return out

    def merge(self, a: dict, b: dict) -> dict:
        return {**a, **b}

    def finish(self, state: dict, info: PassInfo) -> VectorSample:
        lm = self.model("net")
        idx = sorted(state)
        if idx:
            vec = torch.cat([state[i][1] for i in idx]).numpy().astype(np.float32)
            pos = torch.cat([state[i][0] for i in idx]).numpy()
            img = np.concatenate([np.full(len(state[i][0]), i, dtype=np.int64) for i in idx])
            score = None if self.target is None else torch.cat([state[i][2] for i in idx]).numpy()
        else:
            vec = np.zeros((0, self.c), np.float32)
            pos = img = np.zeros(0, np.int64)
            score = None if self.target is None else np.zeros(0, np.float32)
        return VectorSample(lm.name, self.layer, self.module, (self.h, self.w), self.per_image, self.seed,
                            self.target, vec, img, pos, score, list(info.dataset.paths), info.n_images,
                            list(info.skipped), bool(info.complete))


def _indices_digest(indices: Sequence[int] | None) -> str | None:
    if indices is None:
        return None
    return hashlib.sha256(np.asarray(list(indices), dtype=np.int64).tobytes()).hexdigest()[:16]


class VectorJob(PassJob[VectorSample]):
    """:class:`VectorPass` over a dataset as a job (cached; local or Ray)."""

    kind = "concept-vectors"

    def __init__(self, lm: "LoadedModel", dataset: "ImageDataset", layer: str, *, per_image: int | None = 16,
                 seed: int = 0, target: int | None = None, indices: Sequence[int] | None = None):
        super().__init__(dataset, indices)
        self.lm, self.layer = lm, layer
        self.per_image, self.seed, self.target = per_image, int(seed), target
        self.__dict__["_pass"] = VectorPass(lm, layer, per_image=per_image, seed=seed, target=target)

    def make_pass(self) -> VectorPass:
        return VectorPass(self.lm, self.layer, per_image=self.per_image, seed=self.seed, target=self.target)

    def describe(self) -> str:
        return f"vectors of {self.layer}"

    def key(self) -> str:
        return result_key(self.kind, CACHE_VERSION, self.lm, self.dataset, module=self.pass_.module,
                          per_image=self.per_image, seed=self.seed, target=self.target,
                          indices=_indices_digest(self.indices))

    def encode(self, r: VectorSample) -> dict:
        return {"meta": {**r.to_json(), "files": r.files}, "vectors": torch.from_numpy(r.vectors),
                "image": torch.from_numpy(r.image), "position": torch.from_numpy(r.position),
                "score": None if r.score is None else torch.from_numpy(np.asarray(r.score))}

    def decode(self, d: dict) -> VectorSample:
        m = d["meta"]
        return VectorSample(m["model"], m["layer"], m["module"], tuple(m["hw"]), m["per_image"], m["seed"],
                            m["target"], d["vectors"].numpy(), d["image"].numpy(), d["position"].numpy(),
                            None if d["score"] is None else d["score"].numpy(), list(m["files"]), m["n_images"],
                            list(m["skipped"]), m["complete"])


# ------------------------------------------------------------------------------ factorisation
@dataclass(frozen=True, eq=False)
class Factorisation:
    """``A ≈ U W``: ``U`` ``(N, k)`` >= 0, ``W`` ``(k, C)``; errors of the fit."""

    U: np.ndarray = field(repr=False)
    W: np.ndarray = field(repr=False)
    method: str
    rel_error: float
    explained_variance: float
    iterations: int


def _pos(m: np.ndarray) -> np.ndarray:
    return (np.abs(m) + m) / 2


def _neg(m: np.ndarray) -> np.ndarray:
    return (np.abs(m) - m) / 2


def _errors(A: np.ndarray, U: np.ndarray, W: np.ndarray) -> tuple[float, float]:
    R = A - U @ W
    res = float(np.square(R).sum())
    tot = float(np.square(A).sum())
    var = float(np.square(A - A.mean(0, keepdims=True)).sum())
    return (float(np.sqrt(res / tot)) if tot > 0 else 0.0), (1.0 - res / var if var > 0 else 1.0)


def _semi_nmf(A: np.ndarray, k: int, seed: int, max_iter: int, tol: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Semi-NMF by the multiplicative updates of Ding, Li & Jordan, "Convex and Semi-Nonnegative
    Matrix Factorizations", IEEE TPAMI 2010 (Sec. 3): ``W`` by least squares, then
    ``U <- U * sqrt(((A Wᵀ)⁺ + U (W Wᵀ)⁻) / ((A Wᵀ)⁻ + U (W Wᵀ)⁺))``, from k-means indicators + 0.2.

    Written by hand because no maintained package works here: scikit-learn has NMF but no semi-NMF,
    and ``overcomplete`` (which has one) breaks on this matplotlib and clashes with OpenCV contrib.
    Seeded (the k-means start) and deterministic.
    """
    from sklearn.cluster import KMeans

    A = A.astype(np.float64)
    labels = KMeans(n_clusters=k, n_init=1, random_state=int(seed)).fit_predict(A)
    U = np.full((A.shape[0], k), 0.2)
    U[np.arange(A.shape[0]), labels] += 1.0
    eye = 1e-9 * np.eye(k)
    prev, it = np.inf, 0
    for it in range(1, max_iter + 1):
        W = np.linalg.solve(U.T @ U + eye, U.T @ A)
        AW, WW = A @ W.T, W @ W.T
        U = U * np.sqrt((_pos(AW) + U @ _neg(WW)) / (_neg(AW) + U @ _pos(WW) + 1e-12))
        if it % 10 == 0:
            err = float(np.square(A - U @ W).sum())
            if prev - err <= tol * prev:
                break
            prev = err
    W = np.linalg.solve(U.T @ U + eye, U.T @ A)
    return U, W, it


def factorise(A: np.ndarray, k: int, *, method: str = "auto", seed: int = 0, max_iter: int = 300,
              tol: float = 1e-4) -> Factorisation:
    """Factor ``A`` ``(N, C)`` into ``k`` concepts: ``A ≈ U W``, ``U >= 0``.

    ``method``: ``nmf`` (scikit-learn's NMF, NNDSVDa start; needs ``A >= 0``, gives ``W >= 0``),
    ``semi-nmf`` (``W`` of any sign; see :func:`_semi_nmf`) or ``auto`` (NMF when ``A >= 0``).
    """
    A = np.asarray(A, dtype=np.float64)
    if method not in METHODS:
        raise ConceptError(f"unknown factorisation {method!r}; choose from {', '.join(METHODS)}")
    if A.ndim != 2 or A.shape[0] < 1:
        raise ConceptError("no activation vectors to factorise")
    k = _check_k(k, A.shape[1], "the vectors")
    if k > A.shape[0]:
        raise ConceptError(f"k={k} is larger than the {A.shape[0]} vectors sampled: sample more positions or images")
    nonneg = bool(A.min() >= 0)
    if method == "auto":
        method = "nmf" if nonneg else "semi-nmf"
    if method == "nmf":
        if not nonneg:
            raise ConceptError("NMF needs non-negative activations; this tap has negative values: use semi-nmf")
        import warnings

        from sklearn.decomposition import NMF

        model = NMF(n_components=k, init="nndsvda", random_state=int(seed), max_iter=max_iter, tol=tol)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning: the error is reported instead
            U = model.fit_transform(A)
        W, its = model.components_, int(model.n_iter_)
    else:
        U, W, its = _semi_nmf(A, k, seed, max_iter, tol)
    rel, ev = _errors(A, U, W)
    return Factorisation(U.astype(np.float32), W.astype(np.float32), method, rel, ev, its)


def project(A: torch.Tensor | np.ndarray, W: torch.Tensor | np.ndarray, *, iters: int = 150) -> torch.Tensor:
    """``U >= 0`` ``(N, k)`` with ``A ≈ U W`` for fixed concepts ``W`` ``(k, C)``.

    The ``U`` update of semi-NMF (Ding et al. 2010) with ``W`` held fixed, from the clipped least
    squares solution; for non-negative ``A`` and ``W`` it is the multiplicative NNLS update of NMF.
    Each row is solved on its own (rows never mix), in float64.
    """
    A = torch.as_tensor(np.asarray(A) if not torch.is_tensor(A) else A).to(torch.float64)
    W = torch.as_tensor(np.asarray(W) if not torch.is_tensor(W) else W).to(torch.float64)
    WW = W @ W.T
    AW = A @ W.T
    eye = 1e-9 * torch.eye(W.shape[0], dtype=torch.float64)
    U = (AW @ torch.linalg.inv(WW + eye)).clamp_min(0) + 1e-3
    apos, aneg = (AW.abs() + AW) / 2, (AW.abs() - AW) / 2
    wpos, wneg = (WW.abs() + WW) / 2, (WW.abs() - WW) / 2
    for _ in range(int(iters)):
        U = U * torch.sqrt((apos + U @ wneg) / (aneg + U @ wpos + 1e-12))
    return U


# ------------------------------------------------------------------------------ concepts of a layer
@dataclass(frozen=True, eq=False)
class Concepts:
    """``k`` concepts of one tap over a dataset.

    Attributes:
        W: ``(k, C)`` the concepts as directions in channel space.
        presence: ``(k,)`` mean of ``U`` over the sampled positions (how common each concept is).
        rel_error, explained_variance: of the fit at this ``k``.
        sweep: ``[{"k", "rel_error", "explained_variance"}]``, one per ``k`` tried (this one included).
        top_channels: per concept the channels with the largest weights, largest first.
    """

    model: str
    layer: str
    module: str
    k: int
    method: str
    seed: int
    hw: tuple[int, int]
    n_vectors: int
    n_images: int
    rel_error: float
    explained_variance: float
    sweep: list[dict]
    W: np.ndarray = field(repr=False)
    presence: np.ndarray = field(repr=False)
    complete: bool = True

    @property
    def channels(self) -> int:
        return int(self.W.shape[1])

    def top_channels(self, n: int = 5) -> list[list[int]]:
        return [[int(c) for c in np.argsort(-w, kind="stable")[:n]] for w in self.W]

    def digest(self) -> str:
        """Identity of the concepts (for the cache keys of what is computed from them)."""
        return hashlib.sha256(np.ascontiguousarray(self.W, dtype=np.float32).tobytes()).hexdigest()[:24]

    def to_json(self) -> dict:
        return {"model": self.model, "layer": self.layer, "module": self.module, "k": self.k, "method": self.method,
                "seed": self.seed, "hw": list(self.hw), "n_vectors": self.n_vectors, "n_images": self.n_images,
                "rel_error": self.rel_error, "explained_variance": self.explained_variance, "sweep": self.sweep,
                "channels": self.channels, "presence": [float(p) for p in self.presence],
                "top_channels": self.top_channels(), "W": [[float(v) for v in row] for row in self.W],
                "complete": self.complete}


def default_sweep(k: int) -> list[int]:
    """The ``k`` s whose error is reported beside ``k``: 2, 4, 8, ... below it, and ``k``."""
    ks, j = [], 2
    while j < k:
        ks.append(j)
        j *= 2
    return ks + [int(k)]


class ConceptsJob(StepJob[Concepts]):
    """Vectors of ``layer`` over ``dataset`` (a :class:`VectorJob`, itself cached), then ``k`` concepts
    and the reconstruction error of every ``k`` in ``sweep``. Ticks count images, then fits."""

    kind = "concepts"
    unit = "steps"
    codec = "torch"

    def __init__(self, lm: "LoadedModel", dataset: "ImageDataset", layer: str, k: int = 8, *,
                 per_image: int | None = 16, seed: int = 0, method: str = "auto", sweep: Sequence[int] | None = None,
                 options: RunOptions | None = None, indices: Sequence[int] | None = None):
        if method not in METHODS:
            raise ConceptError(f"unknown factorisation {method!r}; choose from {', '.join(METHODS)}")
        self.vectors = VectorJob(lm, dataset, layer, per_image=per_image, seed=seed, indices=indices)
        c = self.vectors.pass_.c
        self.k = _check_k(k, c, layer)
        self.sweep = sorted({_check_k(j, c, layer) for j in (sweep or default_sweep(self.k))} | {self.k})
        self.lm, self.dataset, self.layer = lm, dataset, layer
        self.seed, self.method, self.options = int(seed), method, options or RunOptions(workers=0)
        self.total = self.vectors.total + len(self.sweep)

    def describe(self) -> str:
        return f"concepts of {self.layer}"

    def key(self) -> str:
        return result_key(self.kind, CACHE_VERSION, None, None, vectors=self.vectors.key(), k=self.k,
                          sweep=self.sweep, method=self.method, seed=self.seed)

    def work(self):
        n = self.vectors.total
        yield Tick(0, self.total)
        sample = yield from sub_run(self.vectors, self.options, total=self.total)
        if sample.vectors.shape[0] < self.k:
            raise ConceptError(f"{sample.vectors.shape[0]} vectors sampled, fewer than k={self.k}: use more "
                               "images or positions")
        yield Tick(n, self.total)
        rows, best = [], None
        for j, kk in enumerate(self.sweep):
            f = factorise(sample.vectors, kk, method=self.method, seed=self.seed)
            rows.append({"k": kk, "rel_error": f.rel_error, "explained_variance": f.explained_variance,
                         "method": f.method})
            if kk == self.k:
                best = f
            yield Tick(n + j + 1, self.total)
        assert best is not None
        return Concepts(self.lm.name, self.layer, self.vectors.pass_.module, self.k, best.method, self.seed,
                        (self.vectors.pass_.h, self.vectors.pass_.w), int(sample.vectors.shape[0]),
                        sample.n_images, best.rel_error, best.explained_variance, rows, best.W,
                        best.U.mean(0).astype(np.float32), sample.complete)

    def encode(self, r: Concepts) -> dict:
        meta = r.to_json()
        meta.pop("W")
        return {"meta": meta, "W": torch.from_numpy(r.W), "presence": torch.from_numpy(r.presence)}

    def decode(self, d: dict) -> Concepts:
        m = d["meta"]
        return Concepts(m["model"], m["layer"], m["module"], m["k"], m["method"], m["seed"], tuple(m["hw"]),
                        m["n_vectors"], m["n_images"], m["rel_error"], m["explained_variance"], m["sweep"],
                        d["W"].numpy(), d["presence"].numpy(), m["complete"])


def concepts_of(lm: "LoadedModel", dataset: "ImageDataset", layer: str, k: int = 8, *,
                options: RunOptions | None = None, progress: Any = False, **kw: Any) -> Concepts:
    """:class:`ConceptsJob` run to the end (cached): ``k`` concepts of ``layer`` over ``dataset``."""
    from vizcore.jobs import run

    options = options or RunOptions(workers=0)
    return run(ConceptsJob(lm, dataset, layer, k, options=options, **kw), options, progress=progress)


# ------------------------------------------------------------------------------ on one image
def _activation(lm: "LoadedModel", module: str, image: Image.Image) -> tuple[torch.Tensor, Image.Image]:
    from vizcore.activations import denormalize, preprocess

    x = preprocess(lm, image)
    with torch.inference_mode(), tap(lm.model, [module], stop=True, lock=lm.lock) as store:
        forward_until(lm.model, x)
        a = store[module]
    if a.dim() != 4:
        raise ConceptError(f"{module} of {lm.name} outputs no spatial map")
    return a[0].float().cpu(), denormalize(lm, x[0])


@dataclass(frozen=True, eq=False)
class ConceptMaps:
    """``U`` of one image: ``maps`` ``(k, h, w)``, with the activation ``(C, h, w)`` and the input crop."""

    layer: str
    maps: np.ndarray = field(repr=False)
    activation: np.ndarray = field(repr=False)
    image: Image.Image = field(repr=False)
    rel_error: float = 0.0


def concept_maps(lm: "LoadedModel", concepts: Concepts, image: Image.Image) -> ConceptMaps:
    """Each concept's heatmap on ``image``: ``U`` of its positions for the fixed concepts (:func:`project`)."""
    a, crop = _activation(lm, concepts.module, image)
    c, h, w = a.shape
    if c != concepts.channels:
        raise ConceptError(f"{concepts.layer} has {c} channels here but the concepts have {concepts.channels}")
    A = a.flatten(1).T
    U = project(A, concepts.W)
    rel, _ = _errors(A.double().numpy(), U.numpy(), concepts.W.astype(np.float64))
    return ConceptMaps(concepts.layer, U.T.reshape(-1, h, w).float().numpy(), a.numpy(), crop, rel)


@dataclass(frozen=True, eq=False)
class ConceptImportance:
    """Each concept's part of one class logit on one image.

    ``method`` names what was computed: ``logit share`` (the tap lies right below global average
    pooling and a linear head: ``shares.sum() + residual + bias == logit`` exactly) or
    ``gradient x concept`` (elsewhere: ``sum_hw U_c(hw) * (W_c · d logit / d A(hw))``, a first-order
    estimate; ``bias`` is ``None``).
    """

    layer: str
    target: int
    label: str
    method: str
    logit: float
    shares: np.ndarray
    residual: float
    bias: float | None

    def to_json(self) -> dict:
        return {"layer": self.layer, "target": self.target, "label": self.label, "method": self.method,
                "logit": self.logit, "shares": [float(s) for s in self.shares], "residual": self.residual,
                "bias": self.bias}


def _pooled_linear_head(lm: "LoadedModel", module: str):
    """The ``nn.Linear`` head when ``module`` feeds global average pooling and it directly, else ``None``."""
    from vizcore.evidence.cam import cam_head
    from vizcore.evidence.registry import MethodNotApplicable

    try:
        head = cam_head(lm)
    except MethodNotApplicable:
        return None
    if head.features is None or head.relu or lm.resolve(head.features) != module:
        return None
    return dict(lm.model.named_modules())[head.head]


def concept_importance(lm: "LoadedModel", concepts: Concepts, image: Image.Image,
                       target: int | str | None = None) -> ConceptImportance:
    """Each concept's importance for class ``target`` (index, label, or ``None`` for the top class) on ``image``.

    Below a pooled linear head (``logits = w · mean_hw(A) + b``), with ``A = U W + R``, concept ``c``'s
    share is ``(w · W_c) * mean_hw(U_c)``, the residual's is ``w · mean_hw(R)``: shares + residual + bias
    = logit. Elsewhere gradient x concept (see :class:`ConceptImportance`).
    """
    from vizcore.activations import preprocess
    from vizcore.evidence import resolve_target

    if not lm.categories:
        raise ConceptError(f"{lm.name} has no classification head: no class logit to explain")
    x = preprocess(lm, image)
    with torch.enable_grad(), tap(lm.model, [concepts.module], detach=False, clone=True, lock=lm.lock) as store:
        inp = x.detach().clone().requires_grad_(True)
        logits = _logits(lm.model(inp))
        tgt = resolve_target(lm, target, logits.detach())
        act = store[concepts.module]
        (grad,) = torch.autograd.grad(logits[0, tgt.index], act)
    a = act.detach()[0].double().cpu()
    g = grad.detach()[0].double().cpu()
    c, h, w = a.shape
    A = a.flatten(1).T  # (hw, C)
    W = torch.from_numpy(concepts.W.astype(np.float64))
    U = project(A, W)  # (hw, k)
    R = A - U @ W
    logit = float(logits.detach()[0, tgt.index])
    lin = _pooled_linear_head(lm, concepts.module)
    if lin is not None:
        wt = lin.weight.detach()[tgt.index].double().cpu()
        bias = float(lin.bias.detach()[tgt.index]) if lin.bias is not None else 0.0
        shares = (W @ wt) * U.mean(0)
        residual = float(wt @ R.mean(0))
        method = "logit share"
    else:
        G = g.flatten(1).T  # (hw, C)
        shares = (U * (G @ W.T)).sum(0)
        residual = float((G * R).sum())
        bias, method = None, "gradient x concept"
    return ConceptImportance(concepts.layer, tgt.index, tgt.label, method, logit, shares.numpy(), residual, bias)


# ------------------------------------------------------------------------------ top-k crops per concept
class ConceptTopPass(DatasetPass):
    """Per concept, the ``k`` images where it is strongest (max of ``U`` over the map) and where.

    State: ``(values, indices, positions)`` ``(n_concepts, <=k)`` numpy arrays; :meth:`merge` keeps the
    top ``k`` by (value desc, dataset index asc), so any split gives the whole dataset's top-k exactly.
    """

    kind = "concept-crops"

    def __init__(self, lm: "LoadedModel", concepts: Concepts, k: int = 8, iters: int = 150):
        super().__init__({"net": lm})
        self.module, self.layer = concepts.module, concepts.layer
        self.W = np.ascontiguousarray(concepts.W, dtype=np.float32)
        self.k, self.iters = int(k), int(iters)
        if self.k < 1:
            raise ConceptError("k (crops per concept) must be at least 1")

    def transform(self):
        return self.model("net").transform()

    def empty(self) -> tuple:
        n = self.W.shape[0]
        return (np.zeros((n, 0)), np.zeros((n, 0), np.int64), np.zeros((n, 0), np.int64), (0, 0))

    def step(self, x: torch.Tensor, indices: Sequence[int]) -> tuple:
        lm = self.model("net")
        with torch.inference_mode(), tap(lm.model, [self.module], stop=True, lock=lm.lock) as store:
            forward_until(lm.model, x.to(lm.device))
            a = store[self.module].float().cpu()
        b, c, h, w = a.shape
        U = project(a.flatten(2).transpose(1, 2).reshape(-1, c), self.W, iters=self.iters)
        U = U.reshape(b, h * w, -1).numpy()  # (B, hw, n)
        pos = U.argmax(1)  # (B, n): first maximum
        val = np.take_along_axis(U, pos[:, None, :], 1)[:, 0, :]
        idx = np.broadcast_to(np.asarray(indices, np.int64)[:, None], pos.shape)
        return self._top(val.T, idx.T, pos.T.astype(np.int64), (h, w))

    def _top(self, v: np.ndarray, i: np.ndarray, p: np.ndarray, hw: tuple) -> tuple:
        order = np.stack([np.lexsort((i[r], -v[r])) for r in range(v.shape[0])])[:, : self.k]
        return (np.take_along_axis(v, order, 1), np.take_along_axis(i, order, 1),
                np.take_along_axis(p, order, 1), hw)

    def merge(self, a: tuple, b: tuple) -> tuple:
        hw = a[3] if a[3] != (0, 0) else b[3]
        return self._top(np.concatenate([a[0], b[0]], 1), np.concatenate([a[1], b[1]], 1),
                         np.concatenate([a[2], b[2]], 1), hw)

    def finish(self, state: tuple, info: PassInfo) -> "MiningResult":
        from vizcore.patches import Hit, MiningResult
        from vizcore.summary import layer_geometry, rf_box

        lm = self.model("net")
        v, i, p, (h, w) = state
        size = lm.spec.input_size
        try:
            geom = layer_geometry(lm, self.module, size)

            def box(y: int, x: int) -> tuple:
                return tuple(int(t) for t in rf_box(geom, y, x, size))
        except Exception:  # noqa: BLE001 - a layer the summary cannot trace: the whole input
            def box(y: int, x: int) -> tuple:
                return (0, 0, size, size)
        ds = info.dataset
        chans = [[Hit(ds.items[int(ii)].path, float(vv), int(pp) // w, int(pp) % w, box(int(pp) // w, int(pp) % w),
                      int(ii)) for vv, ii, pp in zip(v[c], i[c], p[c])] for c in range(v.shape[0])]
        return MiningResult(lm.name, lm.weights.to_json(),
                            {"name": ds.name, "root": getattr(ds, "root", ""), "n_images": len(ds),
                             "fingerprint": ds.fingerprint()},
                            info.n_images, list(info.skipped), self.k, size, lm.spec.preprocess.to_json(),
                            {self.layer: chans}, {self.layer: self.module}, complete=bool(info.complete))


class ConceptCropsJob(PassJob["MiningResult"]):
    """:class:`ConceptTopPass` as a job: a :class:`~vizcore.patches.MiningResult` whose "channels" are the
    concepts, so :func:`vizcore.render.channel_montage` draws each concept's crops."""

    kind = "concept-crops"
    codec = "json"

    def __init__(self, lm: "LoadedModel", dataset: "ImageDataset", concepts: Concepts, k: int = 8, *,
                 indices: Sequence[int] | None = None):
        super().__init__(dataset, indices)
        self.lm, self.concepts, self.k = lm, concepts, int(k)

    def make_pass(self) -> ConceptTopPass:
        return ConceptTopPass(self.lm, self.concepts, self.k)

    def describe(self) -> str:
        return f"crops of {self.concepts.k} concepts"

    def key(self) -> str:
        return result_key(self.kind, CACHE_VERSION, self.lm, self.dataset, module=self.concepts.module,
                          concepts=self.concepts.digest(), k=self.k, indices=_indices_digest(self.indices))

    def encode(self, r: "MiningResult") -> dict:
        return {"meta": {f: getattr(r, f) for f in ("model", "weights", "dataset", "n_images", "skipped", "k",
                                                    "input_size", "preprocess", "modules", "complete")},
                "layers": {n: [[{**h.to_json(), "index": h.index} for h in hits] for hits in chans]
                           for n, chans in r.layers.items()}}

    def decode(self, d: dict) -> "MiningResult":
        from vizcore.patches import Hit, MiningResult

        layers = {n: [[Hit(h["file"], h["value"], h["y"], h["x"], tuple(h["box"]), h["index"]) for h in hits]
                      for hits in chans] for n, chans in d["layers"].items()}
        return MiningResult(layers=layers, cached=True, **d["meta"])


# ------------------------------------------------------------------------------ neuron groups
GROUP_COLOURS = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
                 (240, 50, 230), (210, 245, 60))


@dataclass(frozen=True, eq=False)
class NeuronGroups:
    """One image's map at one tap factored into ``k`` groups of channels (Building Blocks, Distill 2018).

    Attributes:
        maps: ``(k, h, w)`` each group's strength at each position (``U``).
        W: ``(k, C)`` each group's channel weights; top_channels: its channels, largest weight first.
        share: ``(k,)`` each group's part of the summed ``U`` (ordered largest first).
        colours: an RGB colour per group; image: the input crop.
    """

    model: str
    layer: str
    module: str
    k: int
    method: str
    rel_error: float
    explained_variance: float
    maps: np.ndarray = field(repr=False)
    W: np.ndarray = field(repr=False)
    share: np.ndarray = field(repr=False)
    top_channels: list[list[int]] = field(repr=False)
    image: Image.Image = field(repr=False)

    @property
    def colours(self) -> list[tuple[int, int, int]]:
        return [GROUP_COLOURS[g % len(GROUP_COLOURS)] for g in range(self.k)]

    def regions(self, alpha: float = 0.6) -> Image.Image:
        """Each position coloured by its strongest group (opacity by strength) over the image."""
        size = self.image.size[0]
        m = np.stack([np.asarray(Image.fromarray(g.astype(np.float32), "F").resize((size, size),
                                                                                    Image.Resampling.BILINEAR))
                      for g in self.maps])
        top = m.max(0)
        which = m.argmax(0)
        strength = (top / top.max()) if top.max() > 0 else top
        col = np.asarray(self.colours, np.float32)[which]
        base = np.asarray(self.image.convert("RGB"), np.float32)
        a = (alpha * strength)[..., None]
        return Image.fromarray((base * (1 - a) + col * a).clip(0, 255).round().astype(np.uint8), "RGB")

    def to_json(self) -> dict:
        return {"model": self.model, "layer": self.layer, "module": self.module, "k": self.k, "method": self.method,
                "rel_error": self.rel_error, "explained_variance": self.explained_variance,
                "share": [float(s) for s in self.share], "top_channels": self.top_channels,
                "colours": [list(c) for c in self.colours]}


def neuron_groups(lm: "LoadedModel", image: Image.Image, layer: str, k: int = 4, *, seed: int = 0,
                  method: str = "auto", n_channels: int = 5) -> NeuronGroups:
    """Factor ``image``'s map at ``layer`` (its ``h*w`` positions, ``C`` channels) into ``k`` groups (2..8)."""
    if not 2 <= int(k) <= 8:
        raise ConceptError(f"neuron groups: k must be between 2 and 8, not {k}")
    module, c, h, w = spatial_shape(lm, layer)
    _check_k(k, c, layer)
    if int(k) > h * w:
        raise ConceptError(f"k={k} is larger than the {h * w} positions of {layer}'s {h}×{w} map")
    a, crop = _activation(lm, module, image)
    f = factorise(a.flatten(1).T.numpy(), int(k), method=method, seed=seed)
    share = f.U.sum(0)
    order = np.argsort(-share, kind="stable")
    U, W = f.U[:, order], f.W[order]
    share = share[order] / max(float(share.sum()), 1e-12)
    tops = [[int(ch) for ch in np.argsort(-wr, kind="stable")[:n_channels]] for wr in W]
    return NeuronGroups(lm.name, layer, module, int(k), f.method, f.rel_error, f.explained_variance,
                        U.T.reshape(-1, h, w), W, share, tops, crop)


# ------------------------------------------------------------------------------ directions as pictures
@dataclass(frozen=True, eq=False)
class DirectionIcons:
    """Feature visualisations of directions (concepts, atlas cells), one image each.

    Attributes:
        images: one RGB image per direction; start, final: each one's objective (cosine-weighted
        direction, :func:`vizcore.featureviz.objectives.direction_cosine`) on its random start and
        on the result.
    """

    layer: str
    steps: int
    size: int
    seed: int
    images: list[Image.Image] = field(repr=False)
    start: list[float] = field(repr=False)
    final: list[float] = field(repr=False)
    complete: bool = True

    def to_json(self) -> dict:
        return {"layer": self.layer, "steps": self.steps, "size": self.size, "seed": self.seed,
                "n": len(self.images), "start": self.start, "final": self.final, "complete": self.complete}


class DirectionIconsJob(StepJob[DirectionIcons]):
    """Feature visualisations of ``directions`` ``(n, C)`` at ``layer``, ``batch_size`` per batch
    (each batch one :func:`vizcore.featureviz.render` call, one image per direction); a tick per batch.
    Cosine-weighted direction objective (Carter et al. 2019). Cached by the directions' content."""

    kind = "direction-icons"
    unit = "icons"
    codec = "torch"

    def __init__(self, lm: "LoadedModel", layer: str, directions: np.ndarray, *, steps: int = 64, size: int = 96,
                 seed: int = 0, batch_size: int = 16, power: float = 1.0, transforms: str = "standard"):
        self.lm, self.layer = lm, layer
        self.directions = np.ascontiguousarray(directions, dtype=np.float32)
        if self.directions.ndim != 2 or not len(self.directions):
            raise ConceptError("no directions to visualise")
        self.steps, self.size, self.seed = int(steps), int(size), int(seed)
        self.batch_size, self.power, self.transforms = max(1, int(batch_size)), float(power), transforms
        self.total = len(self.directions)

    def describe(self) -> str:
        return f"icons of {self.layer}"

    def key(self) -> str:
        digest = hashlib.sha256(self.directions.tobytes()).hexdigest()[:24]
        return result_key(self.kind, CACHE_VERSION, self.lm, None, module=self.lm.resolve(self.layer),
                          directions=digest, steps=self.steps, size=self.size, seed=self.seed,
                          batch=self.batch_size, power=self.power, transforms=self.transforms)

    def work(self):
        from vizcore.featureviz import render
        from vizcore.featureviz.objectives import direction_cosine

        n = self.total
        images, start, final = [], [], []
        yield Tick(0, n)
        for s in range(0, n, self.batch_size):
            d = torch.from_numpy(self.directions[s:s + self.batch_size])
            obj = direction_cosine(self.layer, d, power=self.power)
            res = render(self.lm, self.layer, None, objective=obj, steps=self.steps, size=self.size,
                         seed=self.seed, transforms=self.transforms, n_per_channel=len(d))
            images += [r.image for r in res]
            start += [r.objective_start for r in res]
            final += [r.objective_final for r in res]
            part = DirectionIcons(self.layer, self.steps, self.size, self.seed, list(images), list(start),
                                  list(final), complete=False)
            yield Tick(len(images), n, part)
        return DirectionIcons(self.layer, self.steps, self.size, self.seed, images, start, final)

    def encode(self, r: DirectionIcons) -> dict:
        return icons_to_data(r)

    def decode(self, d: dict) -> DirectionIcons:
        return icons_from_data(d)


def icons_to_data(r: DirectionIcons) -> dict:
    """:class:`DirectionIcons` as plain data for the cache (images as lossless PNG bytes)."""
    import io

    def png(im: Image.Image) -> bytes:
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        return buf.getvalue()

    return {"meta": r.to_json(), "png": [png(im) for im in r.images]}


def icons_from_data(d: dict) -> DirectionIcons:
    """The inverse of :func:`icons_to_data`."""
    import io

    m = d["meta"]
    ims = []
    for b in d["png"]:
        im = Image.open(io.BytesIO(b))
        im.load()
        ims.append(im.convert("RGB"))
    return DirectionIcons(m["layer"], m["steps"], m["size"], m["seed"], ims, m["start"], m["final"])
