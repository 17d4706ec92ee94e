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
at a time; the hooks (and the model's lock) are held one batch at a time. Results are cached per layer under ``$VIZCORE_CACHE/features``,
keyed by model, weights, layer, pooling, preprocessing and the dataset's
fingerprint; entries are written only once the whole pass has finished, so a
stopped or failed run leaves nothing behind.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from vizcore.data.datasets import BatchReport, ImageDataset, iter_batches
from vizcore.models import LoadedModel

DEFAULT_TARGET = 9600
"""Features per layer aimed at by the pooling grid (the classic AlexNet probing protocol)."""

Progress = Callable[[int, int], None]


class Stopped(RuntimeError):
    """Raised when ``should_stop()`` asked a long computation to end early."""


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


def _weights_key(lm: LoadedModel) -> str | None:
    """What identifies the weights, or ``None`` when they cannot be identified (unseeded random)."""
    w = lm.weights
    if w.source == "random":
        return f"random:{w.detail}" if w.detail.startswith("seed") else None
    if w.source == "file":
        try:
            st = os.stat(w.detail)
            return f"file:{w.detail}:{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            return None
    return f"{w.source}:{w.detail}"


def _layer_key(lm: LoadedModel, dataset: ImageDataset, module: str, pooling: Pooling) -> str | None:
    from vizcore.cache import cache_key

    wk = _weights_key(lm)
    if wk is None:
        return None
    return cache_key(v=1, model=lm.spec.name, weights=wk, layer=module, pooling=pooling.to_json(),
                     preprocess=lm.spec.preprocess.to_json(), dataset=dataset.fingerprint(),
                     n=len(dataset))


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


def extract_features(lm: LoadedModel, dataset: ImageDataset, layers: Sequence[str] | None = None, *,
                     pool: Pooling | int | None = None, batch_size: int = 32, workers: int | None = None,
                     progress: bool | Progress = False, should_stop: Callable[[], bool] | None = None,
                     cache: bool = True) -> Features:
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
        cache: read and write the on-disk cache.

    Returns:
        :class:`Features` with one ``(N, F)`` float32 array per layer.
    """
    from vizcore.cache import load_torch, save_torch

    pooling = as_pooling(pool)
    taps = lm.taps()
    names = [t.name for t in taps if t.kind != "input"] if layers is None else list(dict.fromkeys(layers))
    modules = {n: lm.resolve(n) for n in names}
    order = {t.name: i for i, t in enumerate(taps)}
    names.sort(key=lambda n: order.get(n, len(order)))

    out: dict[str, np.ndarray] = {}
    grids: dict[str, int] = {}
    meta: dict | None = None
    keys = {n: (_layer_key(lm, dataset, modules[n], pooling) if cache else None) for n in names}
    for n in names:
        if keys[n] is None:
            continue
        hit = load_torch("features", keys[n])
        if hit is None:
            continue
        out[n] = hit["x"].numpy()
        grids[n] = int(hit["grid"])
        meta = meta or hit
    todo = [n for n in names if n not in out]
    if not todo and meta is not None:
        return Features(lm.spec.name, lm.weights.label(), {n: out[n] for n in names}, grids,
                        meta["indices"].numpy(), [dataset.items[int(i)].path for i in meta["indices"]],
                        list(meta["skipped"]), from_cache=True)

    from vizcore.tap import forward_until, tap

    paths = [modules[n] for n in todo]
    chunks: dict[str, list[torch.Tensor]] = {p: [] for p in paths}
    path_grids: dict[str, int] = {}
    report = BatchReport()
    indices: list[int] = []
    bar = None
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(dataset), unit="img", desc=f"features {lm.spec.name}")
    try:
        reduce = _reduce(pooling, path_grids)
        for xs, idx in iter_batches(dataset, lm.transform(), batch_size=batch_size, workers=workers,
                                    report=report):
            if should_stop is not None and should_stop():
                raise Stopped("stopped before the features were complete")
            # hooks (and the model's lock) per batch, so other users of a shared model get turns
            with tap(lm.model, paths, reduce=reduce, stop=True, lock=lm.lock) as store, torch.no_grad():
                forward_until(lm.model, xs.to(lm.device))
                for p in paths:
                    chunks[p].append(store[p])
            indices += list(idx)
            done = len(indices) + len(report.skipped)
            if bar is not None:
                bar.update(done - bar.n)
            elif callable(progress):
                progress(done, len(dataset))
    finally:
        if bar is not None:
            bar.close()
    if not indices:
        raise ValueError(f"no image of {dataset.name} could be read ({len(report.skipped)} skipped)")
    if meta is not None and list(meta["indices"].tolist()) != indices:
        out.clear()  # files changed readability since the cached entries: recompute everything
        return extract_features(lm, dataset, layers, pool=pooling, batch_size=batch_size, workers=workers,
                                progress=progress, should_stop=should_stop, cache=False)
    idx_t = torch.tensor(indices, dtype=torch.long)
    for n, p in zip(todo, paths):
        x = torch.cat(chunks.pop(p))
        out[n] = x.numpy()
        grids[n] = path_grids.get(p, 0)
        if keys[n] is not None:
            save_torch("features", keys[n], {"x": x, "grid": grids[n], "indices": idx_t,
                                             "skipped": report.skipped})
    return Features(lm.spec.name, lm.weights.label(), {n: out[n] for n in names}, grids,
                    idx_t.numpy(), [dataset.items[i].path for i in indices], list(report.skipped))


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
