"""2-D maps of a dataset's embeddings at any layer, with numbers to compare layers.

The pooled features of one tap (:mod:`vizcore.features`) are reduced to 50
principal components (for t-SNE and UMAP, the usual first step) and projected
to 2-D with

- t-SNE: openTSNE (FFT-accelerated interpolation, Linderman et al. 2019,
  https://doi.org/10.1038/s41592-018-0308-4; Poličar et al., https://doi.org/10.1101/731877)
  on the CPU, cuML's t-SNE when CUDA is present and cuML is installed;
- PCA (scikit-learn), or UMAP (umap-learn, https://arxiv.org/abs/1802.03426).

Each map comes with its k-nearest-neighbour label accuracy in 2-D
(stratified cross-validation) and its trustworthiness (Venna & Kaski 2001,
``sklearn.manifold.trustworthiness``; on a seeded subsample for large N).
Results are deterministic under ``seed`` and cached on disk. There is no cap on
the number of points beyond memory.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from vizcore.data.datasets import ImageDataset
from vizcore.features import Pooling, as_pooling, extract_features
from vizcore.jobs import RunOptions, StepJob, Stopped, Tick
from vizcore.models import LoadedModel

__all__ = ["METHODS", "Embedding", "Quality", "embed", "embedding_quality", "project"]

METHODS = ("tsne", "pca", "umap")

FFT_SETTINGS = {"negative_gradient_method": "fft", "ints_in_interval": 3, "min_num_intervals": 30}
"""openTSNE settings for large sets: FFT-accelerated interpolation on a coarser grid than
openTSNE's default (3 points per interval instead of 1), about 1.4x faster at 20,000 points
with the same trustworthiness and k-NN accuracy (see ``bench/embed.py``)."""


@dataclass(frozen=True)
class Quality:
    """How well a 2-D map keeps labels and neighbourhoods.

    ``knn_accuracy``: k-NN label accuracy in the map (cross-validated; ``None`` without
    two labelled classes). ``trustworthiness``: in [0, 1], 1 when every 2-D neighbour
    is also a neighbour in feature space; computed on ``trust_n`` points.
    """

    knn_accuracy: float | None
    knn_k: int
    trustworthiness: float
    trust_k: int
    trust_n: int

    def to_json(self) -> dict:
        return {"knn_accuracy": self.knn_accuracy, "knn_k": self.knn_k, "trustworthiness": self.trustworthiness,
                "trust_k": self.trust_k, "trust_n": self.trust_n}


@dataclass(frozen=True)
class Embedding:
    """A 2-D map of one layer: ``coords (N, 2)`` for ``files`` with their ``labels``."""

    model: str
    weights: str
    layer: str
    method: str
    backend: str
    label_kind: str
    coords: np.ndarray
    files: list[str]
    labels: list[str | None]
    quality: Quality
    n_features: int
    seed: int
    params: dict = field(default_factory=dict)
    skipped: list[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.files)

    def rows(self) -> list[dict]:
        return [{"file": f, "label": "" if lab is None else lab, "x": float(x), "y": float(y)}
                for f, lab, (x, y) in zip(self.files, self.labels, self.coords)]

    def to_json(self) -> dict:
        """Everything but the coordinates (see :meth:`rows` / :meth:`write_csv`)."""
        return {"model": self.model, "weights": self.weights, "layer": self.layer, "method": self.method,
                "backend": self.backend, "label": self.label_kind, "n": len(self), "n_features": self.n_features,
                "seed": self.seed, "params": self.params, "quality": self.quality.to_json(),
                "skipped": self.skipped}

    def write_csv(self, path: str | os.PathLike) -> Path:
        """Columns ``file,label,x,y``, written atomically."""
        import io

        from vizcore.cache import atomic_write_text

        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=["file", "label", "x", "y"])
        w.writeheader()
        w.writerows(self.rows())
        atomic_write_text(Path(path), buf.getvalue())
        return Path(path)


# ------------------------------------------------------------------ projection
def _cuml_available() -> bool:
    try:
        import torch

        if not torch.cuda.is_available():
            return False
        import cuml  # noqa: F401
    except Exception:  # noqa: BLE001 - optional extra
        return False
    return True


def _pca(x: np.ndarray, dims: int, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    dims = min(dims, x.shape[0], x.shape[1])
    return PCA(n_components=dims, random_state=seed, svd_solver="auto").fit_transform(x).astype(np.float32)


def project(x: np.ndarray, method: str = "tsne", *, seed: int = 0, perplexity: float = 30.0,
            n_neighbors: int = 15, pca_dims: int | None = 50, backend: str = "auto",
            n_jobs: int | None = None) -> tuple[np.ndarray, str]:
    """Project ``x (N, F)`` to ``(N, 2)``; returns the coordinates and the backend used.

    Args:
        method: ``"tsne"``, ``"pca"`` or ``"umap"``.
        seed: makes every method deterministic.
        perplexity: t-SNE perplexity (lowered to ``(N - 1) / 3`` for tiny sets).
        n_neighbors: UMAP neighbourhood size (at most ``N - 1``).
        pca_dims: reduce to this many principal components before t-SNE/UMAP (``None``: don't).
        backend: ``"auto"`` (cuML t-SNE when CUDA and cuML are present), ``"opentsne"``, ``"cuml"``.
        n_jobs: threads for openTSNE (default: all cores from 5,000 points, else one).
    """
    x = np.asarray(x, dtype=np.float32)
    n = x.shape[0]
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if n < 3:
        raise ValueError(f"need at least 3 points to embed, got {n}")
    if method == "pca":
        return _pca(x, 2, seed), "sklearn-pca"
    if pca_dims and x.shape[1] > pca_dims:
        x = _pca(x, pca_dims, seed)
    if method == "umap":
        import warnings

        import umap

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "n_jobs overridden by random_state"
            reducer = umap.UMAP(n_components=2, n_neighbors=max(2, min(n_neighbors, n - 1)), random_state=seed,
                                init="spectral" if n > 10 else "random")
            return np.asarray(reducer.fit_transform(x), dtype=np.float32), "umap-learn"
    perp = float(max(1.0, min(perplexity, (n - 1) / 3)))
    if backend == "cuml" or (backend == "auto" and _cuml_available()):
        from cuml.manifold import TSNE as CumlTSNE

        y = CumlTSNE(n_components=2, perplexity=perp, random_state=seed, method="fft").fit_transform(x)
        return np.asarray(y, dtype=np.float32), "cuml"
    import openTSNE

    # Barnes-Hut below 5,000 points, FFT interpolation from there (the FFT grid has a fixed cost
    # that only pays off for large sets; bench/embed.py). Threads only help large sets too; on a
    # busy machine they can make small ones much slower.
    if n_jobs is None:
        n_jobs = (os.cpu_count() or 1) if n >= 5000 else 1
    gradient = FFT_SETTINGS if n >= 5000 else {"negative_gradient_method": "bh"}
    tsne = openTSNE.TSNE(n_components=2, perplexity=perp, metric="euclidean", initialization="pca",
                         n_jobs=n_jobs, random_state=seed, neighbors="auto" if n > 1000 else "exact",
                         verbose=False, **gradient)
    return np.asarray(tsne.fit(x), dtype=np.float32), "opentsne"


def embedding_quality(x: np.ndarray, coords: np.ndarray, labels: Sequence[str | None] | None = None, *,
                      k: int = 10, folds: int = 5, trust_k: int = 10, max_trust: int = 2000,
                      seed: int = 0) -> Quality:
    """k-NN label accuracy of ``coords`` and trustworthiness of ``coords`` against ``x``.

    Args:
        x: the high-dimensional features ``(N, F)``; coords: the map ``(N, 2)``.
        labels: one per point (``None`` = unlabelled, left out of the k-NN score).
        k: neighbours of the k-NN classifier; folds: stratified folds (fewer for small classes).
        trust_k: neighbourhood size of the trustworthiness; max_trust: subsample size above which
            trustworthiness is estimated on a seeded random subset (it needs all pairwise distances).
    """
    from collections import Counter

    from sklearn.manifold import trustworthiness
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    n = len(coords)
    rng = np.random.default_rng(seed)
    sub = np.sort(rng.choice(n, max_trust, replace=False)) if n > max_trust else np.arange(n)
    tk = max(1, min(trust_k, (len(sub) - 1) // 2 - 1)) if len(sub) > 3 else 1
    trust = float(trustworthiness(np.asarray(x)[sub], np.asarray(coords)[sub], n_neighbors=tk))

    acc = None
    kk = k
    if labels is not None:
        counts = Counter(lab for lab in labels if lab is not None)
        keep_cls = {c for c, m in counts.items() if m >= 2}
        rows = np.array([i for i, lab in enumerate(labels) if lab in keep_cls], dtype=int)
        if len(keep_cls) >= 2:
            y = np.array([labels[i] for i in rows])
            nf = max(2, min(folds, min(counts[c] for c in keep_cls)))
            train_size = len(rows) - len(rows) // nf
            kk = max(1, min(k, train_size - 1))
            cv = StratifiedKFold(n_splits=nf, shuffle=True, random_state=seed)
            acc = float(cross_val_score(KNeighborsClassifier(n_neighbors=kk), coords[rows], y, cv=cv).mean())
    return Quality(acc, kk, trust, tk, int(len(sub)))


# ------------------------------------------------------------------------ embed
def _params(method: str, perplexity: float, n_neighbors: int, pca_dims: int | None) -> dict:
    return {"perplexity": perplexity, "pca_dims": pca_dims} if method == "tsne" else (
        {"n_neighbors": n_neighbors, "pca_dims": pca_dims} if method == "umap" else {})


def _map_key(lm: LoadedModel, dataset: ImageDataset, layer: str, pooling: Pooling, method: str, seed: int,
             backend: str, label: str, params: dict) -> str:
    from vizcore.identity import result_key

    # Version 2: weights identified by content (vizcore.identity), like every other result.
    return result_key("embed", 2, lm, dataset, layer=lm.resolve(layer), pooling=pooling.to_json(),
                      method=method, seed=seed, backend=backend, label=label, **params)


def embed(lm: LoadedModel, dataset: ImageDataset, layer: str, *, method: str = "tsne", label: str = "class",
          seed: int = 0, perplexity: float = 30.0, n_neighbors: int = 15, pca_dims: int | None = 50,
          pool: Pooling | int | None = None, backend: str = "auto", options: RunOptions | None = None,
          progress: bool | Callable[[int, int], None] = False, should_stop: Callable[[], bool] | None = None,
          **run: Any) -> Embedding:
    """The 2-D map of ``dataset`` at ``layer`` of ``lm`` with its quality numbers.

    Features come from :func:`vizcore.features.extract_features` (shared cache with the
    probes), computed as ``options`` say (:class:`vizcore.jobs.RunOptions`: batch size, workers,
    engine ``local`` or ``ray``, Ray address, cache; ``run``: the same as keywords); see
    :func:`project` and :func:`embedding_quality` for the other arguments. ``should_stop`` raises
    :class:`vizcore.jobs.Stopped`.
    """
    import torch

    from vizcore.cache import load_torch, save_torch

    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    options = RunOptions.of(options, **run)
    cache = options.cache
    pooling = as_pooling(pool)
    feats = extract_features(lm, dataset, [layer], pool=pooling, options=options, progress=progress,
                             should_stop=should_stop)
    x = feats.layers[layer]
    labels = feats.labels(dataset, label)
    params = _params(method, perplexity, n_neighbors, pca_dims)
    key = _map_key(lm, dataset, layer, pooling, method, seed, backend, label, params) if cache else None
    hit = load_torch("embed", key) if key else None
    if hit is not None:
        coords, used, quality = hit["coords"].numpy(), hit["backend"], Quality(**hit["quality"])
    else:
        if should_stop is not None and should_stop():
            raise Stopped("stopped before the projection")
        coords, used = project(x, method, seed=seed, perplexity=perplexity, n_neighbors=n_neighbors,
                               pca_dims=pca_dims, backend=backend)
        quality = embedding_quality(x, coords, labels, seed=seed)
        if key:
            save_torch("embed", key, {"coords": torch.from_numpy(coords), "backend": used,
                                      "quality": quality.to_json()})
    return Embedding(model=lm.spec.name, weights=lm.weights.label(), layer=layer, method=method, backend=used,
                     label_kind=label, coords=coords, files=feats.files, labels=labels, quality=quality,
                     n_features=int(x.shape[1]), seed=seed, params=params, skipped=feats.skipped)


class EmbedMapsJob(StepJob[list]):
    """The maps of some layers (:func:`embed`, one per tick), as a job (:mod:`vizcore.jobs`).

    Run after the :class:`vizcore.features.FeaturesJob` of the same layers (in a
    :class:`vizcore.jobs.ChainJob`, as the Embeddings page does), each map reads its features from
    the cache and is cached by :func:`embed` itself; :meth:`load` gives the maps when every one is
    cached. The partial result is the maps made so far. ``units_per_map``: what one map counts for on
    a shared progress bar (a chain measured in images).
    """

    kind = "embed_maps"
    unit = "maps"

    def __init__(self, lm: LoadedModel, dataset: ImageDataset, layers: Sequence[str], *, method: str = "tsne",
                 label: str = "class", seed: int = 0, perplexity: float = 30.0, units_per_map: int = 1,
                 options: RunOptions | None = None):
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
        self.lm, self.dataset, self.layers = lm, dataset, list(layers)
        self.args = {"method": method, "label": label, "seed": int(seed), "perplexity": float(perplexity)}
        self.units_per_map = max(1, int(units_per_map))
        self.options = options or RunOptions(workers=0)
        self.total = len(self.layers) * self.units_per_map

    def _keys(self) -> list[str]:
        a = self.args
        params = _params(a["method"], a["perplexity"], 15, 50)
        return [_map_key(self.lm, self.dataset, layer, as_pooling(None), a["method"], a["seed"], "auto", a["label"],
                         params) for layer in self.layers]

    def key(self) -> str:
        from vizcore.cache import cache_key

        return cache_key(maps=self._keys())

    def describe(self) -> str:
        return f"maps {self.lm.spec.name}"

    def load(self) -> list | None:
        from vizcore.cache import load_torch

        if any(load_torch("embed", k) is None for k in self._keys()):
            return None
        try:  # every map is cached: this reads them (with their features: in a chain, the FeaturesJob before
            # this one has checked they are cached)
            return [embed(self.lm, self.dataset, layer, options=self.options, **self.args) for layer in self.layers]
        except Exception:  # noqa: BLE001 - features evicted meanwhile: a miss, computed again
            return None

    def save(self, result: list) -> None:
        pass  # each map is cached by embed()

    def work(self):
        out: list[Embedding] = []
        yield Tick(0, self.total)
        for i, layer in enumerate(self.layers):
            out.append(embed(self.lm, self.dataset, layer, options=self.options, **self.args))
            yield Tick((i + 1) * self.units_per_map, self.total, list(out))
        return out
