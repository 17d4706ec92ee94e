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
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from vizcore.data.datasets import ImageDataset
from vizcore.identity import result_key
from vizcore.models import LoadedModel
from vizcore.jobs import run_pass
from vizcore.passes import DatasetPass, NoImagesError, PassInfo, Progress, Stopped

__all__ = ["DEFAULT_TARGET", "FeaturesPass", "Features", "NoImagesError", "Pooling", "Stopped", "as_pooling",
           "extract_features"]

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


def pooling_reducer(pooling: Pooling, grids: dict[str, int]):
    """The ``reduce=`` hook of :func:`vizcore.tap.tap` that pools each map as ``pooling`` says to a
    ``(B, features)`` float32 CPU tensor; records each module's grid in ``grids`` (0: not a map)."""
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
        with tap(lm.model, self.paths, reduce=pooling_reducer(self.pooling, grids), stop=True, lock=lm.lock) as store, \
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


def extract_features(lm: LoadedModel, dataset: ImageDataset, layers: Sequence[str] | None = None, *,
                     pool: Pooling | int | None = None, batch_size: int = 32, workers: int | None = None,
                     progress: bool | Progress = False, should_stop: Callable[[], bool] | None = None,
                     cache: bool = True, engine: str = "local", ray_address: str | None = None) -> Features:
    """Pooled features of ``layers`` (tap names or module paths; ``None`` = every tap).

    Args:
        lm: the loaded model (its device is used).
        dataset: the images; unreadable files are skipped and listed in ``skipped``.
        layers: tap names or module paths, returned in network order (tap order, then as given).
        pool: a :class:`Pooling`, a target feature count, or ``None`` for ~9,600 per layer.
        batch_size, workers: for :func:`vizcore.data.iter_batches`.
        progress: ``True`` for a tqdm bar on stderr, or ``f(images_done, total)``.
        should_stop: polled between batches; when it returns true :class:`Stopped` is raised
            and nothing is cached.
        cache: read and write the on-disk cache (the same keys whatever the engine).
        engine: ``local`` or ``ray`` (:mod:`vizcore.distributed`); the same features.
        ray_address: the Ray cluster for ``engine="ray"``.

    Returns:
        :class:`Features` with one ``(N, F)`` float32 array per layer.

    Raises:
        NoImagesError: no image of the dataset could be read.
    """
    pooling = as_pooling(pool)
    names, modules = _plan(lm, layers)
    keys, out, grids, meta = _from_cache(lm, dataset, names, modules, pooling, cache)
    todo = [n for n in names if n not in out]
    if not todo and meta is not None:
        return Features(lm.spec.name, lm.weights.label(), {n: out[n] for n in names}, grids,
                        meta["indices"].numpy(), [dataset.items[int(i)].path for i in meta["indices"]],
                        list(meta["skipped"]), from_cache=True)

    paths = list(dict.fromkeys(modules[n] for n in todo))
    result = run_pass(
        FeaturesPass(lm, paths, pooling), dataset, engine=engine, batch_size=batch_size, workers=workers,
        progress=progress, should_stop=should_stop, ray_address=ray_address)
    if meta is not None and list(meta["indices"].tolist()) != result[0].tolist():
        out.clear()  # files changed readability since the cached entries: recompute everything
        return extract_features(lm, dataset, layers, pool=pooling, batch_size=batch_size, workers=workers,
                                progress=progress, should_stop=should_stop, cache=False, engine=engine,
                                ray_address=ray_address)
    return _assemble(lm, dataset, names, modules, keys, out, grids, todo, result)


def _plan(lm: LoadedModel, layers: Sequence[str] | None) -> tuple[list[str], dict[str, str]]:
    """The requested names in network order (every non-input tap for ``None``) and their module paths."""
    taps = lm.taps()
    names = [t.name for t in taps if t.kind != "input"] if layers is None else list(dict.fromkeys(layers))
    modules = {n: lm.resolve(n) for n in names}
    order = {t.name: i for i, t in enumerate(taps)}
    names.sort(key=lambda n: order.get(n, len(order)))
    return names, modules


def _from_cache(lm: LoadedModel, dataset: ImageDataset, names: list[str], modules: dict[str, str],
                pooling: Pooling, cache: bool):
    """``(keys, rows, grids, meta)`` of the layers already in the disk cache (``meta``: one hit's entry)."""
    from vizcore.cache import load_torch

    out: dict[str, np.ndarray] = {}
    grids: dict[str, int] = {}
    meta: dict | None = None
    keys = {n: (_layer_key(lm, dataset, modules[n], pooling) if cache else None) for n in names}
    for n in names:
        if keys[n] is None or (hit := load_torch("features", keys[n])) is None:
            continue
        out[n] = hit["x"].numpy()
        grids[n] = int(hit["grid"])
        meta = meta or hit
    return keys, out, grids, meta


def _assemble(lm: LoadedModel, dataset: ImageDataset, names: list[str], modules: dict[str, str],
              keys: dict[str, str | None], out: dict[str, np.ndarray], grids: dict[str, int], todo: list[str],
              result) -> Features:
    """:class:`Features` from a finished :class:`FeaturesPass` (``result``) for ``todo`` plus the cached
    rest; each computed layer is written to the disk cache."""
    from vizcore.cache import save_torch

    idx_t, rows, path_grids, skipped = result
    indices = idx_t.tolist()
    for n in todo:
        x = rows[modules[n]]
        out[n] = x.numpy()
        grids[n] = path_grids.get(modules[n], 0)
        if keys[n] is not None:
            save_torch("features", keys[n], {"x": x, "grid": grids[n], "indices": idx_t, "skipped": skipped})
    return Features(lm.spec.name, lm.weights.label(), {n: out[n] for n in names}, grids,
                    idx_t.numpy(), [dataset.items[i].path for i in indices], list(skipped))


class FeaturesRun:
    """:func:`extract_features` a few batches at a time, for a page that shows progress and a Stop
    button between steps (as :func:`vizcore.cueconflict.shape_bias_run` does for shape bias).

    Already done when every layer is in the disk cache. Otherwise one :class:`FeaturesPass`
    computes every requested layer (cached ones too: the forward pass is the cost, and all rows
    then come from the same reading of the files); :meth:`result` writes the cache once the
    pass is complete, never before, so a stopped run leaves nothing behind.
    """

    def __init__(self, lm: LoadedModel, dataset: ImageDataset, layers: Sequence[str] | None = None, *,
                 pool: Pooling | int | None = None, batch_size: int = 32, workers: int | None = 0,
                 cache: bool = True):
        from vizcore.passes import PassRun

        self.lm, self.dataset, self.pooling = lm, dataset, as_pooling(pool)
        self.names, self.modules = _plan(lm, layers)
        self.keys, out, grids, meta = _from_cache(lm, dataset, self.names, self.modules, self.pooling, cache)
        self._features: Features | None = None
        if len(out) == len(self.names) and meta is not None:
            self._features = Features(lm.spec.name, lm.weights.label(), {n: out[n] for n in self.names}, grids,
                                      meta["indices"].numpy(),
                                      [dataset.items[int(i)].path for i in meta["indices"]],
                                      list(meta["skipped"]), from_cache=True)
        paths = list(dict.fromkeys(self.modules[n] for n in self.names))
        self.run = PassRun(FeaturesPass(lm, paths, self.pooling), dataset, batch_size=batch_size,
                           workers=workers, indices=[] if self._features is not None else None)

    @property
    def pos(self) -> int:
        return self.run.pos

    @property
    def total(self) -> int:
        return self.run.total

    @property
    def done(self) -> bool:
        return self.run.done

    def step(self, max_batches: int | None = None, *, progress: Progress | None = None,
             should_stop: Callable[[], bool] | None = None) -> bool:
        """Up to ``max_batches`` more batches (see :meth:`vizcore.passes.PassRun.step`); returns :attr:`done`."""
        return self.run.step(max_batches, progress=progress, should_stop=should_stop)

    def result(self) -> Features:
        """The features, once :attr:`done` (written to the disk cache the first time)."""
        if self._features is None:
            if not self.done:
                raise RuntimeError(f"the feature pass is not finished ({self.pos}/{self.total} images)")
            result = self.run.result()
            if not len(result[0]):  # as run_pass says it
                from vizcore.passes import no_images_error

                raise no_images_error(self.dataset.name, self.run.info.skipped)
            self._features = _assemble(self.lm, self.dataset, self.names, self.modules, self.keys, {}, {},
                                       self.names, result)
        return self._features


def features_cache_dir() -> Path:
    from vizcore.cache import cache_root

    return cache_root() / "features"
