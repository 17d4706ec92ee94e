"""Top-activating dataset patches, mined in one streaming pass.

For every requested layer and every channel at once, one pass over a dataset
keeps the ``k`` images that drive the channel hardest and where in the map its
maximum lies; each hit becomes a crop of the input covering the unit's
receptive field there (Zeiler & Fergus, "Visualizing and Understanding
Convolutional Networks", ECCV 2014, https://arxiv.org/abs/1311.2901; OpenAI
Microscope's "dataset examples"). Unlike the paper, which projects activations
back with a deconvnet, we show the raw receptive-field crop and, on request, the
channel's activation map over the whole image.

Design:

- The forward hook (``reduce=`` of :func:`vizcore.tap.tap`) turns each map
  ``(B, C, H, W)`` into its per-image maxima and their positions ``(B, C)`` at
  once, so full maps are never kept, and the forward stops at the deepest layer.
- Mining is a dataset pass (:class:`MiningPass`, :mod:`vizcore.passes`): the
  partial state per layer is three ``(C, k)`` tensors (value, image index, flat
  position), and two states merge by two vectorised sorts: memory is bounded by
  ``C * k`` whatever the dataset size, and there is no Python loop over channels.
  Ties are broken by value (largest first), then image index (smallest first),
  so any split into batches, processes or Ray workers equals a brute-force sort
  over all maps exactly, and :meth:`MiningResult.merge` of two disjoint parts of
  a dataset equals mining the whole.
- One image contributes at most once per channel: its maximum (first position
  in row-major order on ties).
- Results are cached per layer under ``$VIZCORE_CACHE/patches``, keyed by model,
  weights, layer, ``k``, preprocessing, the dataset fingerprint and the images
  mined. :class:`MiningJob` (:mod:`vizcore.jobs`) writes them, through the cache
  module, only once the pass has finished; a stopped or interrupted run leaves
  nothing behind (and raises :class:`vizcore.jobs.Stopped` with the partial result).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image

from vizcore.data.datasets import ImageDataset, open_dataset
from vizcore.identity import result_key
from vizcore.models import LoadedModel
from vizcore import jobs
from vizcore.jobs import PassJob, RunOptions
from vizcore.passes import DatasetPass, NoImagesError, PassInfo, Progress, no_images_error
from vizcore.tap import forward_until, tap

__all__ = ["Hit", "MiningJob", "MiningPass", "MiningResult", "NoImagesError", "activation_map",
           "mine_top_patches"]

CACHE_KIND = "patches"
CACHE_VERSION = 2  # 2: weights identified by content (vizcore.identity.result_key)
MAX_WITH_INDICES_ABOVE = 0.2
"""Share of a batch's (image, channel) pairs entering the top-k above which the next
batch takes maxima with positions in one pass, instead of amax plus argmaxes of entrants."""
_NO_IMAGE = 2**62  # image-index sentinel of an empty slot (sorts after every real index)


# ------------------------------------------------------------------------ results
@dataclass(frozen=True)
class Hit:
    """One top-activating image of a channel.

    Attributes:
        file: the image file.
        value: the channel's maximum over the map for this image.
        y, x: where that maximum lies in the layer's map (0, 0 for vectors).
        box: ``(x0, y0, x1, y1)`` half-open receptive field of that unit in pixels
            of the preprocessed input, clipped to the image.
        index: the image's index in the dataset (breaks ties; not in the JSON).
    """

    file: str
    value: float
    y: int
    x: int
    box: tuple[int, int, int, int]
    index: int = -1

    def to_json(self) -> dict:
        return {"file": self.file, "value": self.value, "y": self.y, "x": self.x, "box": list(self.box)}


@dataclass(frozen=True)
class MiningResult:
    """Top-k hits of every channel of some layers over a dataset.

    Attributes:
        model: registered model name.
        weights: ``WeightsInfo.to_json()`` of the weights used.
        dataset: ``{"name", "root", "n_images", "fingerprint"}`` of the whole dataset.
        n_images: images actually mined (unreadable files and, for a partial
            run, images not reached are not counted).
        skipped: ``[{"file", "error"}]`` files that could not be decoded.
        k: hits kept per channel.
        input_size: side of the preprocessed input the boxes refer to.
        preprocess: ``Preprocess.to_json()`` used to make the input.
        layers: ``{layer: [hits of channel 0, hits of channel 1, ...]}``, each list
            sorted by value, largest first (ties: dataset order).
        modules: ``{layer: module path}``.
        complete: ``False`` when the run was stopped before the end (never cached).
        cached: ``True`` when every layer came from the on-disk cache.
    """

    model: str
    weights: dict
    dataset: dict
    n_images: int
    skipped: list[dict]
    k: int
    input_size: int
    preprocess: dict
    layers: dict[str, list[list[Hit]]]
    modules: dict[str, str]
    complete: bool = True
    cached: bool = False

    def hits(self, layer: str, channel: int) -> list[Hit]:
        return self.layers[layer][channel]

    def n_channels(self, layer: str) -> int:
        return len(self.layers[layer])

    def to_json(self) -> dict:
        """The ``index.json`` schema of ``vizcore mine`` (issue 3, section 2)."""
        return {
            "model": self.model,
            "weights": self.weights,
            "dataset": self.dataset,
            "n_images": self.n_images,
            "skipped": list(self.skipped),
            "layers": {name: [{"channel": c, "hits": [h.to_json() for h in hits]}
                              for c, hits in enumerate(chans)]
                       for name, chans in self.layers.items()},
        }

    def merge(self, other: "MiningResult") -> "MiningResult":
        """The top-k of the union of two minings of disjoint parts of one dataset.

        Both must come from the same model, weights, preprocessing, ``k``, layers
        and dataset (fingerprint); an image mined in both counts once.
        """
        for attr in ("model", "k", "input_size", "preprocess", "modules"):
            if getattr(self, attr) != getattr(other, attr):
                raise ValueError(f"cannot merge minings with different {attr}")
        if self.weights.get("source") != other.weights.get("source") or \
                self.weights.get("detail") != other.weights.get("detail"):
            raise ValueError("cannot merge minings with different weights")
        if self.dataset.get("fingerprint") != other.dataset.get("fingerprint"):
            raise ValueError("cannot merge minings of different datasets (fingerprints differ)")
        layers = {}
        for name, chans in self.layers.items():
            merged = []
            for a, b in zip(chans, other.layers[name]):
                seen: dict[int, Hit] = {}
                for h in a + b:
                    seen.setdefault(h.index, h)
                merged.append(sorted(seen.values(), key=lambda h: (-h.value, h.index))[: self.k])
            layers[name] = merged
        skipped = list({s["file"]: s for s in self.skipped + other.skipped}.values())
        return replace(self, n_images=self.n_images + other.n_images, skipped=skipped, layers=layers,
                       complete=self.complete and other.complete, cached=False)

    # -- persistence (the same plain structure the cache uses)
    def _state(self) -> dict:
        meta = {f: getattr(self, f) for f in ("model", "weights", "dataset", "n_images", "skipped", "k",
                                              "input_size", "preprocess", "modules", "complete")}
        return {"version": CACHE_VERSION, "meta": json.dumps(meta),
                "layers": {name: _pack(chans, self.k) for name, chans in self.layers.items()}}

    @classmethod
    def _from_state(cls, state: dict, *, cached: bool = False) -> "MiningResult":
        meta = json.loads(state["meta"])
        layers = {name: _unpack(packed) for name, packed in state["layers"].items()}
        return cls(layers=layers, cached=cached, **meta)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the result to ``path`` (a torch file, atomically)."""
        from vizcore.cache import atomic_write_bytes

        buf = io.BytesIO()
        torch.save(self._state(), buf)
        atomic_write_bytes(Path(path), buf.getvalue())
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "MiningResult":
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
        return cls._from_state(state)


def _pack(chans: list[list[Hit]], k: int) -> dict:
    """Hits as ``(C, k)`` tensors (empty slots: index -1) plus the file of each index."""
    empty = Hit("", float("-inf"), 0, 0, (0, 0, 0, 0), -1)
    rows = [hits[:k] + [empty] * (k - len(hits[:k])) for hits in chans]
    flat = [h for row in rows for h in row]
    c = len(chans)
    files = {h.index: h.file for h in flat if h.index >= 0}
    keys = sorted(files)
    return {"values": torch.tensor([h.value for h in flat], dtype=torch.float32).reshape(c, k),
            "index": torch.tensor([h.index for h in flat], dtype=torch.long).reshape(c, k),
            "yx": torch.tensor([(h.y, h.x) for h in flat], dtype=torch.long).reshape(c, k, 2),
            "box": torch.tensor([h.box for h in flat], dtype=torch.long).reshape(c, k, 4),
            "file_index": torch.tensor(keys, dtype=torch.long), "files": [files[i] for i in keys]}


def _unpack(p: dict) -> list[list[Hit]]:
    files = dict(zip(p["file_index"].tolist(), p["files"]))
    values, index, yx, box = p["values"].tolist(), p["index"].tolist(), p["yx"].tolist(), p["box"].tolist()
    out = []
    for ci in range(len(values)):
        out.append([Hit(files[i], v, y, x, tuple(b), i)
                    for v, i, (y, x), b in zip(values[ci], index[ci], yx[ci], box[ci]) if i >= 0])
    return out


# ------------------------------------------------------------------------- mining
def _batch_max(t: torch.Tensor, *, positions: bool):
    """Per-image, per-channel maxima of a batch of maps.

    Returns:
        ``(values (B, C), positions (B, C) or None, flat maps (B, C, H*W) or None, (H, W))``.
        Without ``positions`` only ``amax`` runs (several times cheaper than
        max-with-indices on a CPU); the positions are then found afterwards for
        the few (image, channel) pairs that can still enter the top-k.
    """
    if t.dim() == 4:
        b, c, h, w = t.shape
        flat = t.reshape(b, c, h * w)
        if positions:
            v, p = flat.max(dim=2)  # first maximum (row-major) on ties
            return v.float(), p, None, (h, w)
        return flat.amax(dim=2).float(), None, flat, (h, w)
    if t.dim() == 2:
        return t.float(), torch.zeros(t.shape, dtype=torch.long, device=t.device), None, (1, 1)
    raise ValueError(f"cannot mine a layer whose output has shape {tuple(t.shape)}; "
                     "use a convolutional map (B, C, H, W) or a vector (B, C)")


TopK = tuple  # (values (C, k) float32, image index (C, k) long, flat position (C, k) long, (H, W))


def _topk(v: torch.Tensor, i: torch.Tensor, p: torch.Tensor, k: int):
    """The top ``k`` of every row of ``(C, n)`` candidates, sorted by value (desc), then image
    index (asc); fewer than ``k`` candidates are padded with empty slots (``-inf``, no image).

    Two stable sorts give the lexicographic order; rows are only ``2k`` (or ``k + B``)
    long, so this costs next to nothing beside the forward. Exact and order-free: the
    result depends only on the set of candidates, which makes :meth:`MiningPass.merge`
    associative and commutative.
    """
    o = i.argsort(dim=1, stable=True)
    v, i, p = v.gather(1, o), i.gather(1, o), p.gather(1, o)
    o = v.argsort(dim=1, descending=True, stable=True)[:, :k]
    v, i, p = v.gather(1, o), i.gather(1, o), p.gather(1, o)
    if v.shape[1] < k:  # fewer images than k so far: pad with empty slots
        c, pad = v.shape[0], k - v.shape[1]
        v = torch.cat([v, v.new_full((c, pad), float("-inf"))], 1)
        i = torch.cat([i, i.new_full((c, pad), _NO_IMAGE)], 1)
        p = torch.cat([p, p.new_zeros((c, pad))], 1)
    return v, i, p


def _merge_topk(a: TopK, b: TopK, k: int) -> TopK:
    """The top-k of the union of two disjoint top-k states of one layer."""
    v, i, p = (torch.cat([x, y], 1) for x, y in zip(a[:3], b[:3]))
    return (*_topk(v, i, p, k), a[3])


def _best_of(best: tuple | None, top: TopK, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(C, k)`` best ``(values, images)`` of ``best`` and a batch's ``top``, each image
    counted once per channel (a batch that comes again, e.g. a retried one, must not raise
    the floor with copies of the same images)."""
    v, i = top[0], top[1]
    if best is None:
        return v, i
    dup = (i.unsqueeze(2) == best[1].unsqueeze(1)).any(2) & (i != _NO_IMAGE)  # (C, k) x (C, k): cheap
    v = v.masked_fill(dup, float("-inf"))
    i = i.masked_fill(dup, _NO_IMAGE)
    o = torch.cat([best[0], v], 1).argsort(dim=1, descending=True, stable=True)[:, :k]
    return torch.cat([best[0], v], 1).gather(1, o), torch.cat([best[1], i], 1).gather(1, o)


class MiningPass(DatasetPass):
    """Top-k patch mining as a :class:`~vizcore.passes.DatasetPass`.

    The partial state of a batch, and of any union of batches, is one :data:`TopK`
    per layer still to mine: ``(C, k)`` values, dataset indices and flat positions
    of the maxima, plus the map size. Memory is bounded by ``C * k`` whatever the
    dataset size, and there is no Python loop over channels. :meth:`merge` keeps the
    top ``k`` of both by (value desc, index asc), so any split of a dataset into
    batches, processes or machines gives exactly the result of one loop.

    Construction resolves the layers and loads the layers already in the on-disk
    cache; the others (``todo``) are mined, in one forward per batch that stops at the
    deepest of them. The pass never writes the cache: :class:`MiningJob` does, once complete.

    Args:
        lm: the loaded model.
        dataset: the images (for the cache key; the run is given them again).
        layers: tap names or module paths (duplicates of one module are merged);
            ``None`` for every tap.
        k: hits kept per channel.
        indices: the dataset images the run covers (``None``: all); part of the cache key.
        cache: reuse the layers already in the on-disk cache.
    """

    kind = "mining"

    def __init__(self, lm: LoadedModel, dataset: ImageDataset, layers: Sequence[str] | None = None,
                 k: int = 9, *, indices: Sequence[int] | None = None, cache: bool = True):
        if k < 1:
            raise ValueError("k must be at least 1")
        super().__init__({"net": lm})
        self.k = int(k)
        names = list(layers) if layers is not None else [t.name for t in lm.taps()]
        self.layer_modules: dict[str, str] = {}  # every requested layer, in order
        for name in names:
            path = lm.resolve(name)
            if path not in self.layer_modules.values():
                self.layer_modules[name] = path
        if not self.layer_modules:
            raise ValueError("no layers to mine")
        self.cache = cache
        sel = None
        if indices is not None:
            sel = hashlib.sha256(np.asarray(list(indices), dtype=np.int64).tobytes()).hexdigest()[:16]
        self.keys = {name: result_key(CACHE_KIND, CACHE_VERSION, lm, dataset, module=path, k=self.k, indices=sel)
                     for name, path in self.layer_modules.items()} if cache else {}
        self._cached: dict[str, list[list[Hit]]] = {}
        self._cached_meta: dict | None = None
        if cache:
            self._load_cached()
        self.modules = {n: p for n, p in self.layer_modules.items() if n not in self._cached}  # to mine
        self._best: dict[str, tuple] = {}  # per layer, the (C, k) best (values, images) this process has seen
        self._floor: dict[str, torch.Tensor] = {}  # their k-th (last) column
        self._entering: dict[str, float] = {}  # share of the last batch's pairs that could enter the top-k

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state.update(_cached={}, _best={}, _floor={}, _entering={})  # cached hits stay with the driver
        return state

    @property
    def todo(self) -> dict[str, str]:
        return self.modules

    @property
    def from_cache(self) -> bool:
        """Every layer came from the cache: nothing to run."""
        return not self.modules

    def _load_cached(self) -> None:
        from vizcore.cache import load_torch

        for name, key in self.keys.items():
            state = load_torch(CACHE_KIND, key)
            if not state or state.get("version") != CACHE_VERSION:
                continue
            res = MiningResult._from_state(state)
            (chans,) = res.layers.values()
            self._cached[name] = chans
            self._cached_meta = {"n_images": res.n_images, "skipped": res.skipped}

    # -- the protocol
    def transform(self):
        return self.model("net").transform()

    def empty(self) -> dict[str, TopK]:
        return {}

    def step(self, x: torch.Tensor, indices: Sequence[int]) -> dict[str, TopK]:
        """One batch ``(B, 3, H, W)`` with dataset ``indices``: the batch's top-k of every layer.

        The maxima are taken inside each layer's hook, while its map is at hand; only
        ``(B, C)`` values survive the hook. Once this process has seen ``k`` images, pairs
        below the ``k``-th best value of their channel cannot be in the top-k of any union
        that includes those images: they get no position (the costly part) and no slot.
        """
        lm = self.model("net")
        by_path = {p: n for n, p in self.modules.items()}
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        new: dict[str, TopK] = {}

        def reduce(path: str, t: torch.Tensor):
            name = by_path[path]
            floor = self._floor.get(name)
            # While many pairs still enter (the first batches), one max-with-indices pass is
            # cheapest; later, amax plus argmaxes over the few pairs that can enter.
            positions = floor is None or self._entering.get(name, 1.0) > MAX_WITH_INDICES_ABOVE
            v, pos, flat, hw = _batch_max(t, positions=positions)
            v = torch.nan_to_num(v, nan=float("-inf")).t()  # (C, B)
            c, b = v.shape
            i = idx.to(v.device).unsqueeze(0).expand(c, b)
            enter = None if floor is None else v >= floor.to(v.device).unsqueeze(1)
            if pos is not None:
                p = pos.t()
            else:
                p = torch.zeros((c, b), dtype=torch.long, device=v.device)
                ch, col = enter.nonzero(as_tuple=True)
                if len(ch):
                    p[ch, col] = flat[col, ch].argmax(dim=1)  # first maximum (row-major) on ties
            if enter is not None:  # below the floor: can never be in the top-k
                v = v.masked_fill(~enter, float("-inf"))
                i = i.masked_fill(~enter, _NO_IMAGE)
            top = (*_topk(v, i, p, self.k), hw)
            new[name] = top
            self._entering[name] = 1.0 if enter is None else float(enter.sum()) / max(1, enter.numel())
            self._best[name] = best = _best_of(self._best.get(name), top, self.k)
            self._floor[name] = best[0][:, -1]
            return True

        with torch.inference_mode(), tap(lm.model, list(by_path), reduce=reduce, stop=True, lock=lm.lock):
            forward_until(lm.model, x.to(lm.device))
        missing = [n for n in self.modules if n not in new]
        if missing:
            raise RuntimeError(f"layers {', '.join(missing)} did not run in the forward pass")
        return {n: tuple(t.cpu() if torch.is_tensor(t) else t for t in top) for n, top in new.items()}

    def merge(self, a: dict[str, TopK], b: dict[str, TopK]) -> dict[str, TopK]:
        out = dict(a)
        for name, top in b.items():
            out[name] = _merge_topk(out[name], top, self.k) if name in out else top
        return out

    def finish(self, state: dict[str, TopK], info: PassInfo) -> "MiningResult":
        """The :class:`MiningResult` of the merged state, cached layers included, layers in
        request order. Pure: the job (:class:`MiningJob`) writes the cache."""
        lm = self.model("net") if self.modules else None
        if self.modules and info.complete and info.n_images == 0 and info.done:
            raise no_images_error(info.dataset.name, info.skipped)
        fresh = _hits(lm, self.modules, state, info.dataset) if self.modules else {}
        layers = {n: (self._cached[n] if n in self._cached else fresh[n])
                  for n in self.layer_modules if n in self._cached or n in fresh}
        return self._result(info, layers)

    def _result(self, info: PassInfo, layers: dict[str, list[list[Hit]]]) -> "MiningResult":
        lm = self.model("net")
        if self.modules:
            n_images, skipped = info.n_images, list(info.skipped)
        else:
            n_images, skipped = self._cached_meta["n_images"], self._cached_meta["skipped"]
        return MiningResult(
            model=lm.name, weights=lm.weights.to_json(), dataset=info.dataset.to_json(), n_images=n_images,
            skipped=skipped, k=self.k, input_size=lm.spec.input_size, preprocess=lm.spec.preprocess.to_json(),
            layers=layers, modules={n: self.layer_modules[n] for n in layers},
            complete=info.complete or not self.modules, cached=not self.modules)


def _hits(lm: LoadedModel, modules: dict[str, str], state: dict[str, TopK], dataset: ImageDataset
          ) -> dict[str, list[list[Hit]]]:
    """The hits of a state, with receptive-field boxes."""
    size = lm.spec.input_size
    out = {}
    for name, path in modules.items():
        if name not in state:
            continue
        v, i, p, (h, w) = state[name]
        boxes = _boxes(lm, path, (h, w), size)
        vals, idxs, poss = v.tolist(), i.tolist(), p.tolist()
        chans = []
        for c in range(len(vals)):
            chans.append([Hit(dataset.items[ii].path, vv, pp // w, pp % w, boxes(pp // w, pp % w), ii)
                          for vv, ii, pp in zip(vals[c], idxs[c], poss[c]) if ii != _NO_IMAGE])
        out[name] = chans
    return out


def _boxes(lm: LoadedModel, path: str, hw: tuple[int, int], size: int) -> Callable[[int, int], tuple]:
    """``box(y, x)`` for one layer: its receptive field from the summary, or the whole input."""
    full = (0, 0, size, size)
    if hw == (1, 1):
        return lambda y, x: full
    try:
        from vizcore.summary import layer_geometry, rf_box

        geom = layer_geometry(lm, path, size)
    except Exception:  # noqa: BLE001 - a layer the summary cannot trace: whole image
        return lambda y, x: full
    cache: dict[tuple[int, int], tuple] = {}

    def box(y: int, x: int) -> tuple:
        if (y, x) not in cache:
            cache[(y, x)] = tuple(int(b) for b in rf_box(geom, y, x, size))
        return cache[(y, x)]

    return box


class MiningJob(PassJob[MiningResult]):
    """Mining as a job (:mod:`vizcore.jobs`): one :class:`MiningPass`, cached per layer.

    Each layer is its own cache entry (``patches/<key>.pt``, written through
    :mod:`vizcore.cache` by :meth:`save`, only for a complete run), so mining a deeper layer
    later reuses the earlier ones and the pass mines only the layers not yet cached
    (``reuse=True``). :meth:`load` is the result when every layer is cached. A stopped run's
    partial result is a :class:`MiningResult` with ``complete=False``.
    """

    kind = CACHE_KIND
    unit = "images"

    def __init__(self, lm: LoadedModel, dataset: ImageDataset, layers: Sequence[str] | None = None, k: int = 9, *,
                 indices: Sequence[int] | None = None, reuse: bool = True):
        super().__init__(dataset, indices)
        self.lm, self.layers, self.k, self.reuse = lm, layers, int(k), reuse

    def make_pass(self) -> MiningPass:
        return MiningPass(self.lm, self.dataset, self.layers, self.k, indices=self.indices, cache=self.reuse)

    def key(self) -> str:
        from vizcore.cache import cache_key

        return cache_key(layers=_layer_keys(self.pass_, self.lm, self.dataset, self.indices))

    def describe(self) -> str:
        return f"mining {self.lm.name}"

    @property
    def from_cache(self) -> bool:
        """Every layer is cached: nothing to mine."""
        return self.reuse and self.pass_.from_cache

    def load(self) -> MiningResult | None:
        if not self.from_cache:
            return None
        return self.pass_.finish(self.pass_.empty(), PassInfo(self.dataset, total=self.total, complete=True))

    def save(self, result: MiningResult) -> None:
        from vizcore.cache import save_torch

        keys = _layer_keys(self.pass_, self.lm, self.dataset, self.indices)
        for name, path in self.pass_.modules.items():
            one = replace(result, layers={name: result.layers[name]}, modules={name: path}, cached=False)
            save_torch(CACHE_KIND, keys[name], one._state())

    def check(self, state, info: PassInfo) -> None:
        pass  # the pass says when no image could be read (only if it had layers to mine)


def _layer_keys(p: MiningPass, lm: LoadedModel, dataset: ImageDataset, indices: Sequence[int] | None
                ) -> dict[str, str]:
    """The cache key of each layer of ``p`` (the pass's own, or computed when it does not use the cache)."""
    if p.keys:
        return p.keys
    sel = None if indices is None else hashlib.sha256(np.asarray(list(indices), dtype=np.int64).tobytes()).hexdigest()[:16]
    return {name: result_key(CACHE_KIND, CACHE_VERSION, lm, dataset, module=path, k=p.k, indices=sel)
            for name, path in p.layer_modules.items()}


def mine_top_patches(lm: LoadedModel, dataset: ImageDataset | str, layers: Sequence[str] | None = None, *,
                     k: int = 9, options: RunOptions | None = None, progress: bool | Progress = False,
                     should_stop: Callable[[], bool] | None = None, indices: Sequence[int] | None = None,
                     **run: Any) -> MiningResult:
    """Mine the top-``k`` images of every channel of ``layers`` in one pass over ``dataset``.

    Args:
        lm: the loaded model (``vizcore.models.load_model``).
        dataset: an :class:`ImageDataset` or a spec (folder, ``samples``, ``cifar10``...).
        layers: tap names or module paths; ``None`` for every tap of the model.
        k: hits kept per channel (default 9).
        options: batch size, loader workers, engine (``local`` or ``ray``; the same result), Ray
            address and cache (:class:`vizcore.jobs.RunOptions`: a second identical call does not
            run the model; a result computed on Ray lands under the same keys); ``run``: the same
            as keywords (``batch_size=16, workers=0, cache=False``).
        progress: ``True`` for a tqdm bar, or ``progress(images_done, images_total)`` after each batch.
        should_stop: checked between batches; when it returns ``True`` the run ends with
            :class:`vizcore.jobs.Stopped`, whose ``partial`` is the result so far (a
            :class:`MiningResult` with ``complete=False``, never cached; ``None`` before the first
            batch). This is the one stop rule of every job: no partial result is *returned*.
        indices: mine only these dataset images (results of disjoint parts merge
            exactly with :meth:`MiningResult.merge`).

    Returns:
        A complete :class:`MiningResult`; ``skipped`` lists the files that could not be read.

    Raises:
        NoImagesError: no image of the dataset could be read.
        vizcore.jobs.Stopped: ``should_stop`` said so (the partial result in ``partial``).
    """
    options = RunOptions.of(options, **run)
    ds = dataset if isinstance(dataset, ImageDataset) else open_dataset(dataset)
    return jobs.run(MiningJob(lm, ds, layers, k, indices=indices, reuse=options.cache), options,
                    progress=progress, should_stop=should_stop)


# ------------------------------------------------------------------ maps
def activation_map(lm: LoadedModel, layer: str, channel: int, image: Image.Image | str) -> torch.Tensor:
    """The map ``(H, W)`` of one channel for one image (a vector layer gives ``(1, 1)``)."""
    from vizcore.data import load_image

    path = lm.resolve(layer)
    img = load_image(image) if isinstance(image, (str, os.PathLike)) else image
    x = lm.transform()(img.convert("RGB")).unsqueeze(0).to(lm.device)
    with torch.inference_mode(), tap(lm.model, [path], stop=True, lock=lm.lock) as store:
        forward_until(lm.model, x)
        out = store[path]
    m = out[0, channel]
    return (m if m.dim() == 2 else m.reshape(1, 1)).float().cpu()


# Crops, montages and heat maps are drawn by vizcore.render; these names lived here before and
# still resolve, so code written against them keeps working.
_MOVED_TO_RENDER = {"input_image": "input_image", "patch_image": "patch_image", "_upsample": "upsample_map",
                    "heatmap_overlay": "heatmap_overlay", "_fit": "fit", "channel_montage": "channel_montage",
                    "layer_montage": "layer_montage"}


def __getattr__(name: str):
    if name in _MOVED_TO_RENDER:
        from vizcore import render

        return getattr(render, _MOVED_TO_RENDER[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
