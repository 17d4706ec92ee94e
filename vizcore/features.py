"""Pooled features of every tap for a whole dataset, in one pass, cached on disk.

Linear probes and embeddings both need, for each image and each layer, a
fixed-length vector. Following the layer-wise probing protocol of Zhang,
Isola & Efros ("Split-Brain Autoencoders", CVPR 2017, https://arxiv.org/abs/1611.09842),
itself after Noroozi & Favaro's AlexNet probes, each feature map ``(C, H, W)``
is average-pooled to a small ``g x g`` grid chosen per layer so that every
depth gives about the same number of features (``C * g * g`` close to
``target``, 9,600 by default). Vectors ``(C,)`` (fully connected layers,
logits) are kept as they are; token maps ``(L, D)`` are averaged over tokens.

The pooling runs inside the forward hook (:func:`vizcore.tap.tap` with
``reduce=``), so full-resolution maps are never kept for more than one layer
at a time; the pass is a :class:`FeaturesPass` (:mod:`vizcore.passes`), so it
runs locally or on Ray with the same result. Results are cached per layer under
``$VIZCORE_CACHE/features``, keyed by :func:`vizcore.identity.result_key` (the
weights' content, layer, pooling, preprocessing and the dataset's fingerprint);
entries are written only once the whole pass has finished, so a stopped or
failed run leaves nothing behind.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from vizcore.data.datasets import ImageDataset
from vizcore.identity import result_key
from vizcore.models import LoadedModel
from vizcore import jobs
from vizcore.jobs import PassJob, RunOptions
from vizcore.passes import DatasetPass, NoImagesError, PassInfo, Progress

__all__ = ["DEFAULT_TARGET", "FeaturesJob", "FeaturesPass", "Features", "NoImagesError", "Pooling", "as_pooling",
           "extract_features", "random_twin"]

DEFAULT_TARGET = 9600
"""Features per layer aimed at by the pooling grid (the classic AlexNet probing protocol)."""


@dataclass(frozen=True)
class Pooling:
    """How a feature map becomes a vector.

    Args:
        target: features aimed at per layer; the grid side is
            ``round(sqrt(target / C))`` clipped to ``[1, min(H, W)]``.
        grid: a fixed grid side for every conv layer instead (overrides ``target``).
    """

    target: int = DEFAULT_TARGET
    grid: int | None = None

    def grid_for(self, channels: int, height: int, width: int) -> int:
        g = self.grid if self.grid is not None else round(math.sqrt(self.target / max(1, channels)))
        return int(max(1, min(g, height, width)))

    def to_json(self) -> dict:
        return {"target": self.target, "grid": self.grid}


def as_pooling(pool: Pooling | int | None) -> Pooling:
    """``None``: the default; an int: a target feature count; a :class:`Pooling` as is."""
    if pool is None:
        return Pooling()
    if isinstance(pool, Pooling):
        return pool
    return Pooling(target=int(pool))


@dataclass(frozen=True)
class Features:
    """Pooled features of one model on one dataset.

    Attributes:
        model: model name. weights: where its weights came from (``WeightsInfo.label()``).
        layers: tap name (or module path) -> array ``(N, F)`` float32, network order.
        grids: tap name -> pooling grid side (0 for vectors).
        indices: dataset indices of the ``N`` rows (unreadable files are skipped).
        files: the ``N`` file paths. skipped: ``{"file", "error"}`` for each skipped file.
    """

    model: str
    weights: str
    layers: dict[str, np.ndarray]
    grids: dict[str, int]
    indices: np.ndarray
    files: list[str]
    skipped: list[dict] = field(default_factory=list)
    from_cache: bool = False

    def __len__(self) -> int:
        return len(self.indices)

    def labels(self, dataset: ImageDataset, kind: str = "class") -> list[str | None]:
        """The ``kind`` label of each row."""
        return [dataset.items[int(i)].get_label(kind) for i in self.indices]


CACHE_VERSION = 2  # 2: weights identified by content (vizcore.identity.result_key)


def _layer_key(lm: LoadedModel, dataset: ImageDataset, module: str, pooling: Pooling) -> str:
    return result_key("features", CACHE_VERSION, lm, dataset, layer=module, pooling=pooling.to_json())


def _reduce(pooling: Pooling, grids: dict[str, int]):
    def reduce(path: str, t: torch.Tensor) -> torch.Tensor:
        if t.ndim == 4:
            g = pooling.grid_for(t.shape[1], t.shape[2], t.shape[3])
            grids[path] = g
            t = F.adaptive_avg_pool2d(t.float(), g)
        elif t.ndim == 3:  # tokens (B, L, D)
            grids[path] = 0
            t = t.float().mean(dim=1)
        else:
            grids[path] = 0
        return t.flatten(1).to("cpu", torch.float32)

    return reduce


@dataclass
class FeatureRows:
    """Partial state of :class:`FeaturesPass`: pooled rows of some images, in chunks.

    ``indices[j]`` are the dataset indices of the rows of ``x[path][j]``; ``grids`` the
    pooling grid side per module path (0 for vectors and tokens).
    """

    indices: list[torch.Tensor] = field(default_factory=list)
    x: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    grids: dict[str, int] = field(default_factory=dict)


class FeaturesPass(DatasetPass):
    """Pooled features of some module paths, as a :class:`~vizcore.passes.DatasetPass`.

    The partial state of a batch is its pooled rows keyed by dataset index
    (:class:`FeatureRows`); :meth:`merge` concatenates chunks and :meth:`finish` orders
    the rows by index, so the result does not depend on how the batches were split or
    in which order they came back. Pooling runs inside the forward hook, so full maps
    are never kept for more than one layer at a time; the hooks (and the model's lock)
    are held one batch at a time, so other users of a shared model get turns.
    """

    kind = "features"

    def __init__(self, lm: LoadedModel, paths: Sequence[str], pooling: Pooling):
        super().__init__({"net": lm})
        self.paths, self.pooling = list(paths), pooling

    def transform(self):
        return self.model("net").transform()

    def empty(self) -> FeatureRows:
        return FeatureRows(x={p: [] for p in self.paths})

    def step(self, x: torch.Tensor, indices: Sequence[int]) -> FeatureRows:
        from vizcore.tap import forward_until, tap

        lm = self.model("net")
        grids: dict[str, int] = {}
        with tap(lm.model, self.paths, reduce=_reduce(self.pooling, grids), stop=True, lock=lm.lock) as store, \
                torch.no_grad():
            forward_until(lm.model, x.to(lm.device))
            rows = {p: [store[p]] for p in self.paths}
        return FeatureRows([torch.as_tensor(list(indices), dtype=torch.long)], rows, grids)

    def merge(self, a: FeatureRows, b: FeatureRows) -> FeatureRows:
        return FeatureRows(a.indices + b.indices, {p: a.x.get(p, []) + b.x.get(p, []) for p in self.paths},
                           {**a.grids, **b.grids})

    def finish(self, state: FeatureRows, info: PassInfo) -> tuple[torch.Tensor, dict[str, torch.Tensor],
                                                                  dict[str, int], list[dict]]:
        """``(indices (N,), {path: rows (N, F)}, {path: grid}, skipped)``, rows in dataset order."""
        if not state.indices:
            return torch.zeros(0, dtype=torch.long), {p: torch.zeros(0, 0) for p in self.paths}, {}, list(info.skipped)
        idx = torch.cat(state.indices)
        order = idx.argsort(stable=True)
        return (idx[order], {p: torch.cat(state.x[p])[order] for p in self.paths},
                {p: state.grids.get(p, 0) for p in self.paths}, list(info.skipped))


class FeaturesJob(PassJob[Features]):
    """Pooled features of some layers over a dataset, as a job (:mod:`vizcore.jobs`).

    Cached per layer (``features/<key>.pt`` through :mod:`vizcore.cache`): :meth:`load` gives
    the result when every layer is cached; otherwise the pass computes only the layers not yet
    cached (``reuse=True``) and :meth:`complete_result` adds the cached ones; :meth:`save` writes
    the computed layers. The partial result of a stopped run is the :class:`Features` of the
    computed layers for the images done so far.
    """

    kind = "features"

    def __init__(self, lm: LoadedModel, dataset: ImageDataset, layers: Sequence[str] | None = None, *,
                 pool: Pooling | int | None = None, reuse: bool = True):
        super().__init__(dataset)
        self.lm, self.pooling, self.reuse = lm, as_pooling(pool), reuse
        self.names, self.modules = _plan(lm, layers)
        self.keys = {n: _layer_key(lm, dataset, self.modules[n], self.pooling) for n in self.names}
        self._hits: dict[str, dict] | None = None

    @property
    def hits(self) -> dict[str, dict]:
        """The layers already in the disk cache (read once; none with ``reuse=False``)."""
        if self._hits is None:
            from vizcore.cache import load_torch

            self._hits = {}
            for n in self.names if self.reuse else ():
                if (hit := load_torch("features", self.keys[n])) is not None:
                    self._hits[n] = hit
        return self._hits

    @property
    def todo(self) -> list[str]:
        return [n for n in self.names if n not in self.hits]

    def key(self) -> str:
        from vizcore.cache import cache_key

        return cache_key(layers=[self.keys[n] for n in self.names])

    def describe(self) -> str:
        return f"features {self.lm.spec.name}"

    def make_pass(self) -> FeaturesPass:
        return FeaturesPass(self.lm, list(dict.fromkeys(self.modules[n] for n in self.todo)), self.pooling)

    def load(self) -> Features | None:
        if not self.reuse or self.todo:
            return None
        meta = self.hits[self.names[0]]
        if any(not torch.equal(h["indices"], meta["indices"]) for h in self.hits.values()):
            return None
        return self._features({n: (h["x"], int(h["grid"])) for n, h in self.hits.items()}, meta["indices"],
                              list(meta["skipped"]), from_cache=True)

    def save(self, result: Features) -> None:
        from vizcore.cache import save_torch

        idx = torch.as_tensor(result.indices, dtype=torch.long)
        for n in self.todo:
            save_torch("features", self.keys[n], {"x": torch.from_numpy(result.layers[n]), "grid": result.grids[n],
                                                  "indices": idx, "skipped": list(result.skipped)})

    def _features(self, rows: dict[str, tuple[torch.Tensor, int]], idx: torch.Tensor, skipped: list[dict], *,
                  from_cache: bool = False) -> Features:
        names = [n for n in self.names if n in rows]
        return Features(self.lm.spec.name, self.lm.weights.label(), {n: rows[n][0].numpy() for n in names},
                        {n: rows[n][1] for n in names}, idx.numpy(), [self.dataset.items[int(i)].path for i in idx],
                        list(skipped), from_cache=from_cache)

    def partial_result(self, state: FeatureRows, info: PassInfo) -> Features:
        idx, rows, grids, skipped = self.pass_.finish(state, info)
        return self._features({n: (rows[self.modules[n]], grids.get(self.modules[n], 0)) for n in self.todo},
                              idx, skipped)

    def complete_result(self, result) -> Features:
        idx, rows, grids, skipped = result
        out = {n: (rows[self.modules[n]], grids.get(self.modules[n], 0)) for n in self.todo}
        for n, h in self.hits.items():
            if not torch.equal(h["indices"], idx):  # files changed readability since: recompute every layer
                raise StaleFeatures(n)
            out[n] = (h["x"], int(h["grid"]))
        return self._features(out, idx, skipped)


class StaleFeatures(RuntimeError):
    """A cached layer was computed on other readable files than this run (see :func:`extract_features`)."""


def extract_features(lm: LoadedModel, dataset: ImageDataset, layers: Sequence[str] | None = None, *,
                     pool: Pooling | int | None = None, options: RunOptions | None = None,
                     progress: bool | Progress = False, should_stop: Callable[[], bool] | None = None,
                     **run: Any) -> Features:
    """Pooled features of ``layers`` (tap names or module paths; ``None`` = every tap).

    Args:
        lm: the loaded model (its device is used).
        dataset: the images; unreadable files are skipped and listed in ``skipped``.
        layers: tap names or module paths, returned in network order (tap order, then as given).
        pool: a :class:`Pooling`, a target feature count, or ``None`` for ~9,600 per layer.
        options: batch size, loader workers, engine (``local`` or ``ray``, the same features), Ray
            address and cache (:class:`vizcore.jobs.RunOptions`; the same keys whatever the engine);
            ``run``: the same as keywords (``batch_size=16, workers=0, cache=False``).
        progress: ``True`` for a tqdm bar on stderr, or ``f(images_done, total)``.
        should_stop: polled between batches; when it returns true :class:`vizcore.jobs.Stopped` is
            raised (with the features so far) and nothing is cached.

    Returns:
        :class:`Features` with one ``(N, F)`` float32 array per layer.

    Raises:
        NoImagesError: no image of the dataset could be read.
    """
    options = RunOptions.of(options, **run)
    job = FeaturesJob(lm, dataset, layers, pool=pool, reuse=options.cache)
    try:
        return jobs.run(job, options, progress=progress, should_stop=should_stop)
    except StaleFeatures:
        job = FeaturesJob(lm, dataset, layers, pool=pool, reuse=False)
        return jobs.run(job, options, progress=progress, should_stop=should_stop)


def _plan(lm: LoadedModel, layers: Sequence[str] | None) -> tuple[list[str], dict[str, str]]:
    """The requested names in network order (every non-input tap for ``None``) and their module paths."""
    taps = lm.taps()
    names = [t.name for t in taps if t.kind != "input"] if layers is None else list(dict.fromkeys(layers))
    modules = {n: lm.resolve(n) for n in names}
    order = {t.name: i for i, t in enumerate(taps)}
    names.sort(key=lambda n: order.get(n, len(order)))
    return names, modules


def random_twin(lm_or_name: LoadedModel | str, seed: int = 0) -> LoadedModel:
    """The same architecture with seeded random initialisation (reproducible, cacheable).

    The same weights as ``load_model(name, f"random:{seed}")``, built without the process cache.
    """
    from vizcore.models import WeightsInfo, build, get_spec

    spec = get_spec(lm_or_name) if isinstance(lm_or_name, str) else lm_or_name.spec
    device = None if isinstance(lm_or_name, str) else lm_or_name.device
    model = build(spec, seed=seed)
    if device is not None:
        model.to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    return LoadedModel(spec=spec, model=model, weights=WeightsInfo("random", f"seed {seed}"),
                       weights_arg=f"random:{seed}")


def features_cache_dir() -> Path:
    from vizcore.cache import cache_root

    return cache_root() / "features"
