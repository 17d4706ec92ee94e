"""Nearest neighbours at every depth: the dataset images most similar to a query image, tap by tap.

Cosine similarity on pooled features (:class:`vizcore.features.Pooling`, the same pooling as
probes and embeddings, whose cached features it shares): at an early tap the neighbours share
colours and textures, at a late one the class.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch

from vizcore.data.images import to_rgb
from vizcore.features import Features, Pooling
from vizcore.passes import Progress
from vizcore.similarity import order_layers

if TYPE_CHECKING:
    from PIL import Image

    from vizcore.data.datasets import ImageDataset
    from vizcore.models import LoadedModel

__all__ = ["Neighbour", "Neighbours", "nearest_neighbours"]


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
    :class:`vizcore.features.FeaturesRun` of the same layers and pooling); the query is pooled the
    same way (same grid per tap).

    Args:
        lm: the model. query: an RGB image. dataset: the images to search.
        layers: tap names (default: every tap). k: neighbours per tap (at most the dataset size).
    """
    from vizcore.features import as_pooling, extract_features, pooling_reducer
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
    x = lm.transform()(to_rgb(query))[None].to(lm.device)
    with tap(lm.model, paths, reduce=pooling_reducer(pooling, grids), stop=True, lock=lm.lock) as store, torch.no_grad():
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
