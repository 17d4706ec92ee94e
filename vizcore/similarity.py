"""How similar are the representations of two layers? Linear CKA at dataset scale, and nearest
neighbours at every depth.

Centred kernel alignment (Kornblith et al., ICML 2019, https://arxiv.org/abs/1905.00414)
compares two layers through the similarity structure they impose on the same images: with
linear kernels ``K = X X^T`` and ``L = Y Y^T`` over ``n`` images,
``CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))``. It is invariant to orthogonal
transforms and isotropic scaling of either representation, so it compares layers of any width,
of different networks, of a network and its random-init twin.

This module computes it between every tap of model A and every tap of model B in **one pass**
over a dataset with the minibatch estimator of Nguyen, Raghu & Kornblith (ICLR 2021,
"Do Wide and Deep Networks Learn the Same Things?", https://arxiv.org/abs/2010.15327, eq. 3):
per batch of ``n`` images, the *unbiased* HSIC of Song et al. (JMLR 2012,
https://jmlr.org/papers/v13/song12a.html)

    HSIC_1(K, L) = 1/(n(n-3)) [ tr(K~ L~) + (1^T K~ 1)(1^T L~ 1) / ((n-1)(n-2)) - 2/(n-2) 1^T K~ L~ 1 ]

(``K~``, ``L~``: the Gram matrices with their diagonals set to zero) for every pair of taps and
for every tap with itself, summed in float64 over batches; CKA is formed only at the end from the
averaged HSICs. The biased estimator (``tr(HKHL)``) gives independent random features of high
dimension a CKA near 1 on small batches; the unbiased one gives them about 0, which is why it is
used (``tests/test_similarity.py`` shows both).

The Gram matrices (``n x n``) are built inside the tap's forward hook
(:func:`vizcore.tap.tap` with ``reduce=``), so no activation map outlives its layer. Features are
centred per batch before the Gram matrix: the unbiased HSIC is invariant to adding a constant to a
representation anyway, but centring keeps large means from cancelling in floating point. Maps are either average-pooled first to a bounded number of
features per tap (``mode="pool"``, the default: :class:`vizcore.features.Pooling`, about 9,600
features, so the early layers of big networks stay cheap) or flattened whole (``mode="flatten"``,
Kornblith et al.'s protocol); the choice is part of the result and of its cache key.

Written as a :class:`vizcore.passes.DatasetPass`: the partial state of a batch is the HSIC sums
plus counts, and merging is addition, so the local and Ray backends give the same numbers. All
batches have the same size (at least 4, the smallest ``n`` of the unbiased HSIC); a shorter batch
(a ragged last batch, or one with unreadable images) is dropped and counted in the result.

Why by hand: the CKA packages (torch-cka, anatome and others) keep activations of whole
datasets, use the biased estimator or leave hooks attached; none computes all-pairs minibatch
CKA from Gram matrices inside the hooks.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from vizcore.features import DEFAULT_TARGET, Features, Pooling
from vizcore import jobs
from vizcore.jobs import PassJob, RunOptions
from vizcore.passes import DatasetPass, PassInfo, Progress

if TYPE_CHECKING:
    from PIL import Image

    from vizcore.data.datasets import ImageDataset
    from vizcore.models import LoadedModel

__all__ = [
    "MIN_BATCH", "MODES", "CKAJob", "CKAPass", "CKAResult", "CKAState", "Neighbour", "Neighbours", "cka",
    "cka_from_hsic", "cka_key", "gram", "hsic_biased", "hsic_matrix", "hsic_unbiased",
    "minibatch_cka", "nearest_neighbours", "order_layers", "prepare",
]

VERSION = 1
MIN_BATCH = 4
"""The unbiased HSIC divides by ``n (n - 3)``: a batch needs at least 4 images."""
MODES = ("pool", "flatten")
_CHUNK = 1 << 16  # feature columns per float64 product: bounds memory for flattened early maps


# ------------------------------------------------------------------------------ the estimator
def gram(x: torch.Tensor) -> torch.Tensor:
    """Linear-kernel Gram matrix of centred features, in float64.

    Args:
        x: features ``(n, F)`` (any float dtype, any device).

    Returns:
        ``(n, n)`` float64 ``Xc Xc^T`` with ``Xc = x - mean over the n rows``; computed over
        chunks of columns so a flattened early map never exists in float64 at once.
    """
    x = x.flatten(1)
    n, f = x.shape
    k = torch.zeros(n, n, dtype=torch.float64, device=x.device)
    for s in range(0, f, _CHUNK):
        c = x[:, s:s + _CHUNK].to(torch.float64)
        c = c - c.mean(dim=0, keepdim=True)  # column means: chunking over columns is exact
        k += c @ c.T
    return k


def _offdiag(k: torch.Tensor) -> torch.Tensor:
    """Gram matrices ``(..., n, n)`` with their diagonals set to zero."""
    n = k.shape[-1]
    return k * (1 - torch.eye(n, dtype=k.dtype, device=k.device))


def hsic_matrix(ka: torch.Tensor, kb: torch.Tensor) -> torch.Tensor:
    """Unbiased HSIC (Song et al. 2012) of every Gram matrix in ``ka`` with every one in ``kb``.

    All pairs at once through three matrix products: ``tr(K~ L~) = <K~, L~>`` (both symmetric),
    ``1^T K~ 1`` the sum of entries and ``1^T K~ L~ 1 = (K~ 1) . (L~ 1)``.

    Args:
        ka: ``(TA, n, n)`` Gram matrices. kb: ``(TB, n, n)``; ``n >= 4``.

    Returns:
        ``(TA, TB)`` float64.
    """
    n = ka.shape[-1]
    if n < MIN_BATCH:
        raise ValueError(f"the unbiased HSIC needs at least {MIN_BATCH} samples, got {n}")
    a, b = _offdiag(ka.to(torch.float64)), _offdiag(kb.to(torch.float64))
    trace = a.flatten(1) @ b.flatten(1).T
    ra, rb = a.sum(dim=2), b.sum(dim=2)  # row sums (TA, n), (TB, n)
    sa, sb = ra.sum(dim=1), rb.sum(dim=1)
    return (trace + torch.outer(sa, sb) / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (ra @ rb.T)) / (n * (n - 3))


def _hsic_self(k: torch.Tensor) -> torch.Tensor:
    """Unbiased HSIC of each Gram matrix ``(T, n, n)`` with itself: ``(T,)``."""
    n = k.shape[-1]
    a = _offdiag(k.to(torch.float64))
    trace = (a * a).sum(dim=(1, 2))
    r = a.sum(dim=2)
    s = r.sum(dim=1)
    return (trace + s * s / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (r * r).sum(dim=1)) / (n * (n - 3))


def hsic_unbiased(k: torch.Tensor | np.ndarray, l: torch.Tensor | np.ndarray) -> float:  # noqa: E741
    """Unbiased HSIC of two ``(n, n)`` Gram matrices (Song et al. 2012; eq. 3 of Nguyen et al. 2021)."""
    k, l = torch.as_tensor(k, dtype=torch.float64), torch.as_tensor(l, dtype=torch.float64)  # noqa: E741
    return float(hsic_matrix(k[None], l[None])[0, 0])


def hsic_biased(k: torch.Tensor | np.ndarray, l: torch.Tensor | np.ndarray) -> float:  # noqa: E741
    """The biased HSIC ``tr(K H L H) / (n - 1)^2`` (Gretton et al. 2005), for comparison only."""
    k, l = torch.as_tensor(k, dtype=torch.float64), torch.as_tensor(l, dtype=torch.float64)  # noqa: E741
    n = k.shape[0]
    h = torch.eye(n, dtype=torch.float64) - 1.0 / n
    return float(torch.trace(k @ h @ l @ h)) / (n - 1) ** 2


def cka_from_hsic(hab: np.ndarray, haa: np.ndarray, hbb: np.ndarray) -> np.ndarray:
    """``CKA[i, j] = hab[i, j] / sqrt(haa[i] hbb[j])``; NaN where a tap's self-HSIC is not
    positive (a constant representation, e.g. a dead layer: CKA is undefined there)."""
    hab, haa, hbb = (np.asarray(v, dtype=np.float64) for v in (hab, haa, hbb))
    den = np.sqrt(np.clip(np.outer(haa, hbb), 0.0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(den > 0, hab / np.where(den > 0, den, 1.0), np.nan)
    return out


def minibatch_cka(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, batch_size: int = 32) -> float:
    """Minibatch linear CKA of two feature arrays ``(N, Fx)``, ``(N, Fy)`` over consecutive
    batches (a ragged end is dropped): the estimator the dataset pass uses, on arrays."""
    x, y = torch.as_tensor(np.asarray(x)), torch.as_tensor(np.asarray(y))
    if batch_size < MIN_BATCH:
        raise ValueError(f"batch size must be at least {MIN_BATCH}, got {batch_size}")
    hab = haa = hbb = 0.0
    nb = 0
    for s in range(0, x.shape[0] - batch_size + 1, batch_size):
        ka, kb = gram(x[s:s + batch_size])[None], gram(y[s:s + batch_size])[None]
        hab += float(hsic_matrix(ka, kb)[0, 0])
        haa += float(_hsic_self(ka)[0])
        hbb += float(_hsic_self(kb)[0])
        nb += 1
    if nb == 0:
        raise ValueError(f"need at least one batch of {batch_size} rows, got {x.shape[0]}")
    return float(cka_from_hsic(np.array([[hab]]), np.array([haa]), np.array([hbb]))[0, 0])


# ------------------------------------------------------------------------------ the pass
@dataclass
class CKAState:
    """HSIC sums over the batches seen (float64) and counts; merging is addition.

    Attributes:
        hab: ``(TA, TB)`` sum of HSIC(A tap, B tap). haa: ``(TA,)``, hbb: ``(TB,)`` self terms.
        batches: full batches summed. images: images in them. dropped: images of short batches.
    """

    hab: np.ndarray
    haa: np.ndarray
    hbb: np.ndarray
    batches: int = 0
    images: int = 0
    dropped: int = 0

    def __add__(self, other: "CKAState") -> "CKAState":
        return CKAState(self.hab + other.hab, self.haa + other.haa, self.hbb + other.hbb,
                        self.batches + other.batches, self.images + other.images, self.dropped + other.dropped)


@dataclass(frozen=True)
class CKAResult:
    """Linear CKA between taps of two models on one dataset.

    Attributes:
        models, weights: of A and B (``weights``: where they came from).
        layers_a, layers_b: tap names in network order (rows and columns of ``matrix``).
        matrix: ``(len(layers_a), len(layers_b))`` CKA; NaN where a tap is constant.
        n_images: images in full batches. batches: how many. dropped: images of short batches
            (not used). skipped: unreadable files ``{"file", "error"}``.
        settings: batch size, mode, pooling target, estimator.
        complete: false for a partial result of a stopped run.
    """

    models: tuple[str, str]
    weights: tuple[str, str]
    layers_a: list[str]
    layers_b: list[str]
    matrix: np.ndarray
    n_images: int
    batches: int
    dropped: int
    skipped: list[dict]
    settings: dict
    dataset: str = ""
    complete: bool = True
    from_cache: bool = False

    def value(self, layer_a: str, layer_b: str) -> float:
        return float(self.matrix[self.layers_a.index(layer_a), self.layers_b.index(layer_b)])

    def diagonal(self) -> dict[str, float]:
        """CKA of taps with the same name in A and B (matched depth), in A's order."""
        return {t: self.value(t, t) for t in self.layers_a if t in self.layers_b}

    def to_json(self) -> dict:
        return {
            "model": {"a": self.models[0], "b": self.models[1]},
            "weights": {"a": self.weights[0], "b": self.weights[1]},
            "layers": {"a": list(self.layers_a), "b": list(self.layers_b)},
            "dataset": self.dataset, "n_images": self.n_images, "batches": self.batches,
            "dropped": self.dropped, "skipped": list(self.skipped), "settings": dict(self.settings),
            "complete": self.complete,
            "cka": [[None if math.isnan(v) else float(v) for v in row] for row in self.matrix.tolist()],
        }

    @classmethod
    def from_json(cls, d: dict, *, from_cache: bool = False) -> "CKAResult":
        m = np.array([[np.nan if v is None else v for v in row] for row in d["cka"]], dtype=np.float64)
        return cls((d["model"]["a"], d["model"]["b"]), (d["weights"]["a"], d["weights"]["b"]),
                   list(d["layers"]["a"]), list(d["layers"]["b"]), m.reshape(len(d["layers"]["a"]), -1),
                   int(d["n_images"]), int(d["batches"]), int(d["dropped"]), list(d["skipped"]),
                   dict(d["settings"]), d.get("dataset", ""), bool(d.get("complete", True)), from_cache)

    def csv_text(self) -> str:
        """First column the taps of A; header ``layer`` then the taps of B; 6 decimals."""
        buf = io.StringIO()
        wr = csv.writer(buf, lineterminator="\n")
        wr.writerow(["layer", *self.layers_b])
        for name, row in zip(self.layers_a, self.matrix):
            wr.writerow([name, *("nan" if math.isnan(v) else f"{v:.6f}" for v in row)])
        return buf.getvalue()


class _Both:
    """Each model's own preprocessing of the same image: ``PIL -> (x_a, x_b)`` (picklable)."""

    def __init__(self, ta: Callable, tb: Callable):
        self.ta, self.tb = ta, tb

    def __call__(self, img):
        return self.ta(img), self.tb(img)


def _features(t: torch.Tensor, mode: str, pooling: Pooling) -> torch.Tensor:
    """A tap's output ``(n, ...)`` as ``(n, F)``: pooled (bounded ``F``) or flattened whole."""
    if mode == "pool":
        if t.ndim == 4:
            t = F.adaptive_avg_pool2d(t.float(), pooling.grid_for(t.shape[1], t.shape[2], t.shape[3]))
        elif t.ndim == 3:  # tokens (n, L, D): average over tokens, as vizcore.features does
            t = t.float().mean(dim=1)
    return t.flatten(1)


class CKAPass(DatasetPass[CKAState, CKAResult]):
    """Linear CKA between ``layers_a`` of ``a`` and ``layers_b`` of ``b`` (see the module doc).

    Args:
        a, b: loaded models; ``b`` may be ``a`` itself (its activations are then computed once).
        layers_a, layers_b: module paths, network order; their display names are ``names_a``/``names_b``.
        batch_size: images per batch (every batch used has exactly this many; at least 4).
        mode: ``"pool"`` or ``"flatten"``. pool_target: features per tap aimed at in ``pool`` mode.
    """

    kind = "cka"

    def __init__(self, a: "LoadedModel", b: "LoadedModel", layers_a: Sequence[str], layers_b: Sequence[str], *,
                 names_a: Sequence[str] | None = None, names_b: Sequence[str] | None = None,
                 batch_size: int = 32, mode: str = "pool", pool_target: int = DEFAULT_TARGET):
        from vizcore.identity import preprocess_identity, weights_identity

        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
        if batch_size < MIN_BATCH:
            raise ValueError(f"batch size must be at least {MIN_BATCH} (the unbiased HSIC needs n >= 4), "
                             f"got {batch_size}")
        self.same_model = a is b or (weights_identity(a) == weights_identity(b)
                                     and preprocess_identity(a) == preprocess_identity(b))
        self.same_input = preprocess_identity(a) == preprocess_identity(b)
        super().__init__({"a": a} if self.same_model else {"a": a, "b": b})
        self.layers_a, self.layers_b = list(layers_a), list(layers_b)
        self.names_a = list(names_a or layers_a)
        self.names_b = list(names_b or layers_b)
        self.batch_size, self.mode, self.pool_target = int(batch_size), mode, int(pool_target)
        self.labels = ((a.spec.name, a.weights.label()), (b.spec.name, b.weights.label()))

    @property
    def settings(self) -> dict:
        return {"batch_size": self.batch_size, "mode": self.mode,
                "pool_target": self.pool_target if self.mode == "pool" else None,
                "estimator": "minibatch unbiased HSIC (Song et al. 2012; Nguyen et al. 2021 eq. 3)",
                "kernel": "linear", "centred": True}

    # -- protocol
    def transform(self) -> Callable[[Any], Any]:
        ta = self.model("a").transform()
        if self.same_input:
            return ta
        return _Both(ta, self.model("b").transform())

    def empty(self) -> CKAState:
        ta, tb = len(self.layers_a), len(self.layers_b)
        return CKAState(np.zeros((ta, tb)), np.zeros(ta), np.zeros(tb))

    def _grams(self, key: str, x: torch.Tensor, paths: Sequence[str]) -> dict[str, torch.Tensor]:
        from vizcore.tap import forward_until, tap

        lm = self.model(key)
        pooling = Pooling(target=self.pool_target)

        def reduce(_path: str, t: torch.Tensor) -> torch.Tensor:
            return gram(_features(t, self.mode, pooling))  # (n, n): the map itself is dropped here

        paths = list(dict.fromkeys(paths))
        with tap(lm.model, paths, reduce=reduce, stop=True, lock=lm.lock) as store, torch.no_grad():
            forward_until(lm.model, x.to(lm.device))
            return {p: store[p] for p in paths}

    def step(self, x, indices: Sequence[int]) -> CKAState:
        state = self.empty()
        if len(indices) != self.batch_size:  # a short batch would weigh its HSIC differently: drop it
            state.dropped = len(indices)
            return state
        xa, xb = x if isinstance(x, (tuple, list)) else (x, x)
        if self.same_model:
            g = self._grams("a", xa, self.layers_a + self.layers_b)
            ga = gb = g
        else:
            ga = self._grams("a", xa, self.layers_a)
            gb = self._grams("b", xb, self.layers_b)
        ka = torch.stack([ga[p] for p in self.layers_a])
        kb = torch.stack([gb[p].to(ka.device) for p in self.layers_b])
        state.hab = hsic_matrix(ka, kb).cpu().numpy()
        state.haa = _hsic_self(ka).cpu().numpy()
        state.hbb = _hsic_self(kb).cpu().numpy()
        state.batches, state.images = 1, len(indices)
        return state

    def merge(self, a: CKAState, b: CKAState) -> CKAState:
        return a + b

    def finish(self, state: CKAState, info: PassInfo) -> CKAResult:
        if state.batches == 0:
            readable = state.dropped
            raise ValueError(f"no full batch of {self.batch_size} images in {info.dataset.name} "
                             f"({readable} readable image{'s' if readable != 1 else ''}); CKA needs at least "
                             f"{MIN_BATCH} images and a batch size no larger than their number")
        nb = state.batches
        m = cka_from_hsic(state.hab / nb, state.haa / nb, state.hbb / nb)
        return CKAResult(models=(self.labels[0][0], self.labels[1][0]),
                         weights=(self.labels[0][1], self.labels[1][1]),
                         layers_a=list(self.names_a), layers_b=list(self.names_b), matrix=m,
                         n_images=state.images, batches=nb, dropped=state.dropped, skipped=list(info.skipped),
                         settings=self.settings, dataset=info.dataset.name, complete=info.complete)


# ------------------------------------------------------------------------------ entry points
def order_layers(lm: "LoadedModel", layers: Sequence[str] | None) -> list[str]:
    """Tap names (or module paths) in network order; every tap but the input when ``None``.

    Raises :class:`vizcore.models.UnknownLayerError` (with close matches) for a bad name.
    """
    taps = lm.taps()
    names = [t.name for t in taps if t.kind != "input"] if layers is None else list(dict.fromkeys(layers))
    for n in names:
        lm.resolve(n)
    order = {t.name: i for i, t in enumerate(taps)}
    return sorted(names, key=lambda n: order.get(n, len(order)))


def prepare(a: "LoadedModel", b: "LoadedModel | None", dataset: "ImageDataset", *,
            layers: Sequence[str] | None = None, layers_b: Sequence[str] | None = None, batch_size: int = 32,
            mode: str = "pool", pool_target: int = DEFAULT_TARGET) -> tuple[CKAPass, str]:
    """The pass and its cache key, after checking the input (one clear error for each problem).

    ``b=None`` compares ``a`` with itself. ``layers_b`` defaults to ``layers`` when B has the same
    architecture, else to every tap of B.
    """
    from vizcore.identity import preprocess_identity, result_key, weights_identity

    b = a if b is None else b
    if batch_size < MIN_BATCH:
        raise ValueError(f"batch size must be at least {MIN_BATCH} (the unbiased HSIC needs n >= 4), "
                         f"got {batch_size}")
    la = order_layers(a, layers)
    if layers_b is None:
        layers_b = layers if (layers is not None and b.spec.name == a.spec.name) else None
    lb = order_layers(b, layers_b)
    if len(dataset) < MIN_BATCH:
        raise ValueError(f"CKA needs at least {MIN_BATCH} images; {dataset.name} has {len(dataset)}")
    if len(dataset) < batch_size:
        raise ValueError(f"{dataset.name} has {len(dataset)} images, fewer than one batch of {batch_size}; "
                         f"use a batch size of at most {len(dataset)}")
    p = CKAPass(a, b, [a.resolve(n) for n in la], [b.resolve(n) for n in lb], names_a=la, names_b=lb,
                batch_size=batch_size, mode=mode, pool_target=pool_target)
    key = result_key("cka", VERSION, a, dataset, b_weights=weights_identity(b), b_preprocess=preprocess_identity(b),
                     layers_a=list(zip(la, p.layers_a)), layers_b=list(zip(lb, p.layers_b)), batch_size=batch_size,
                     mode=mode, pool_target=pool_target if mode == "pool" else None)
    return p, key


def cka_key(*args, **kwargs) -> str:
    """The cache key :func:`prepare` would give (same arguments)."""
    return prepare(*args, **kwargs)[1]


class CKAJob(PassJob[CKAResult]):
    """CKA between taps of two models over a dataset, as a job (:mod:`vizcore.jobs`).

    The result is cached as JSON under ``similarity/`` through :mod:`vizcore.cache`, so the
    disk budget and least-recently-used order hold for CKA as for every result. Build it with
    :meth:`of` (the arguments of :func:`prepare`, checked there).
    """

    kind = "similarity"
    codec = "json"

    def __init__(self, p: CKAPass, key: str, dataset: "ImageDataset"):
        super().__init__(dataset)
        self._p, self._key = p, key

    @classmethod
    def of(cls, a: "LoadedModel", b: "LoadedModel | None", dataset: "ImageDataset", **kwargs: Any) -> "CKAJob":
        p, key = prepare(a, b, dataset, **kwargs)
        return cls(p, key, dataset)

    def make_pass(self) -> CKAPass:
        return self._p

    def key(self) -> str:
        return self._key

    def describe(self) -> str:
        return "CKA"

    def encode(self, result: CKAResult) -> dict:
        return result.to_json()

    def decode(self, data: dict) -> CKAResult:
        return CKAResult.from_json(data, from_cache=True)


def cka(a: "LoadedModel", b: "LoadedModel | None", dataset: "ImageDataset", *, layers: Sequence[str] | None = None,
        layers_b: Sequence[str] | None = None, mode: str = "pool", pool_target: int = DEFAULT_TARGET,
        options: RunOptions | None = None, progress: bool | Progress = False,
        should_stop: Callable[[], bool] | None = None, **run: Any) -> CKAResult:
    """Linear CKA between every chosen tap of ``a`` and of ``b`` over ``dataset``, in one pass.

    Args:
        a: model A. b: model B (another model, A's random twin, other weights) or ``None`` for A itself.
        dataset: the images; each model gets its own preprocessing of the same image.
        layers: taps of A (default: every tap); layers_b: taps of B (see :func:`prepare`).
        mode: ``"pool"`` (adaptive average pooling to about ``pool_target`` features per tap) or
            ``"flatten"`` (whole maps).
        options: batch size (at least 4; a short last batch is dropped and counted; part of the
            result), engine (``local`` or ``ray``, with ``ray_address``: CKA reaches a cluster like
            every pass), loader workers and cache (:class:`vizcore.jobs.RunOptions`).
        run: the same options as keywords (``batch_size=4, workers=0, cache=False``), over ``options``.
        progress: ``True`` for a tqdm bar, or ``f(done, total)``.
        should_stop: polled between batches; raises :class:`vizcore.jobs.Stopped` with the partial
            result (``complete=False``); nothing is cached.

    Returns:
        :class:`CKAResult` with the ``(TA, TB)`` CKA matrix, taps in network order.
    """
    options = RunOptions.of(options, **run)
    job = CKAJob.of(a, b, dataset, layers=layers, layers_b=layers_b, batch_size=options.batch_size, mode=mode,
                    pool_target=pool_target)
    return jobs.run(job, options, progress=progress, should_stop=should_stop)


# ------------------------------------------------------------------------------ neighbours
@dataclass(frozen=True)
class Neighbour:
    """One dataset image near the query: its file, dataset index and cosine similarity."""

    file: str
    index: int
    similarity: float

    def to_json(self) -> dict:
        return {"file": self.file, "similarity": self.similarity}


@dataclass(frozen=True)
class Neighbours:
    """The ``k`` most similar dataset images at each tap, most similar first."""

    model: str
    weights: str
    query: str
    layers: dict[str, list[Neighbour]]
    n_images: int
    pooling: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"model": self.model, "weights": self.weights, "query": self.query,
                "layers": {k: [n.to_json() for n in v] for k, v in self.layers.items()},
                "n_images": self.n_images, "pooling": dict(self.pooling)}


def nearest_neighbours(lm: "LoadedModel", query: "Image.Image", dataset: "ImageDataset",
                       layers: Sequence[str] | None = None, *, k: int = 8, query_name: str = "query",
                       pool: Pooling | int | None = None, batch_size: int = 32, workers: int | None = None,
                       progress: bool | Progress = False, should_stop: Callable[[], bool] | None = None,
                       cache: bool = True, features: Features | None = None) -> Neighbours:
    """The ``k`` dataset images most similar to ``query`` at each tap (cosine on pooled features).

    Dataset features come from :func:`vizcore.features.extract_features` (cached on disk, shared
    with probes and embeddings), or ``features`` when given (e.g. a finished
    :class:`vizcore.features.FeaturesJob` of the same layers and pooling); the query is pooled the
    same way (same grid per tap).

    Args:
        lm: the model. query: an RGB image. dataset: the images to search.
        layers: tap names (default: every tap). k: neighbours per tap (at most the dataset size).
    """
    from vizcore.features import _reduce, as_pooling, extract_features
    from vizcore.tap import forward_until, tap

    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    names = order_layers(lm, layers)
    pooling = as_pooling(pool)
    if features is None:
        feats = extract_features(lm, dataset, names, pool=pooling, batch_size=batch_size, workers=workers,
                                 progress=progress, should_stop=should_stop, cache=cache)
    else:
        feats = features
        if missing := [n for n in names if n not in feats.layers]:
            raise ValueError(f"the features given have no rows for {', '.join(missing)}")
    paths = [lm.resolve(n) for n in names]
    grids: dict[str, int] = {}
    x = lm.transform()(query.convert("RGB"))[None].to(lm.device)
    with tap(lm.model, paths, reduce=_reduce(pooling, grids), stop=True, lock=lm.lock) as store, torch.no_grad():
        forward_until(lm.model, x)
        q = {n: store[p][0].numpy().astype(np.float64) for n, p in zip(names, paths)}
    out: dict[str, list[Neighbour]] = {}
    kk = min(k, len(feats))
    for n in names:
        f = feats.layers[n].astype(np.float64)
        fn = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
        qn = q[n] / max(np.linalg.norm(q[n]), 1e-12)
        sims = fn @ qn
        top = np.argsort(-sims, kind="stable")[:kk]
        out[n] = [Neighbour(feats.files[i], int(feats.indices[i]), float(sims[i])) for i in top]
    return Neighbours(lm.spec.name, lm.weights.label(), query_name, out, len(feats),
                      {**pooling.to_json(), "grids": {n: feats.grids.get(n, 0) for n in names}})


def write_outputs(res: CKAResult, out: str | os.PathLike) -> dict[str, Path]:
    """``cka.csv`` and ``cka.json`` under ``out`` (atomic writes); returns their paths."""
    from vizcore.cache import atomic_write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "cka.csv", res.csv_text())
    atomic_write_text(out / "cka.json", json.dumps(res.to_json(), indent=2) + "\n")
    return {"csv": out / "cka.csv", "json": out / "cka.json"}
