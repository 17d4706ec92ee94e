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
- The running state per layer is three ``(C, k)`` tensors (value, image index,
  flat position) merged with each batch by two vectorised sorts: memory is
  bounded by ``C * k`` whatever the dataset size, and there is no Python loop
  over channels. Ties are broken by value (largest first), then image index
  (smallest first), so streaming equals a brute-force sort over all maps
  exactly, and :meth:`MiningResult.merge` of two disjoint parts of a dataset
  equals mining the whole.
- One image contributes at most once per channel: its maximum (first position
  in row-major order on ties).
- Results are cached per layer under ``$VIZCORE_CACHE/patches``, keyed by model,
  weights, layer, ``k``, preprocessing, the dataset fingerprint and the images
  mined. Entries are written atomically, and only once the pass has finished;
  a stopped or interrupted run leaves nothing behind.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from vizcore.data.datasets import BatchReport, ImageDataset, iter_batches, open_dataset
from vizcore.models import LoadedModel
from vizcore.tap import forward_until, tap

CACHE_KIND = "patches"
CACHE_VERSION = 1
MAX_WITH_INDICES_ABOVE = 0.2
"""Share of a batch's (image, channel) pairs entering the top-k above which the next
batch takes maxima with positions in one pass, instead of amax plus argmaxes of entrants."""
_NO_IMAGE = 2**62  # image-index sentinel of an empty slot (sorts after every real index)

Progress = Callable[[int, int], None]
"""``progress(images_done, images_total)``, called after every batch."""


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
        the few (image, channel) pairs that enter the top-k.
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


def _merge_topk(state, v: torch.Tensor, pos: torch.Tensor | None, flat: torch.Tensor | None,
                idx: torch.Tensor, k: int):
    """Merge a batch into the running top-k of every channel.

    Args:
        state: ``(values, image index, flat position)``, each ``(C, k)``, or ``None``.
        v: the batch's maxima ``(B, C)``.
        pos: their positions ``(B, C)``, or ``None`` to find them in ``flat``
            (``(B, C, H*W)``) for the pairs that enter the top-k only.
        idx: dataset indices of the batch ``(B,)``.

    Returns:
        The new state, sorted per channel by value (desc), then image index
        (asc), and how many of the batch's (image, channel) pairs entered it.
    """
    v = torch.nan_to_num(v.t(), nan=float("-inf"))
    c, b = v.shape
    i = idx.to(v.device).unsqueeze(0).expand(c, b)
    col = torch.arange(b, device=v.device).unsqueeze(0).expand(c, b)  # batch row, -1 for old entries
    p = pos.t() if pos is not None else torch.zeros((c, b), dtype=torch.long, device=v.device)
    if state is not None:
        v = torch.cat([state[0], v], 1)
        i = torch.cat([state[1], i], 1)
        p = torch.cat([state[2], p], 1)
        col = torch.cat([col.new_full(state[0].shape, -1), col], 1)
    # Two stable sorts give the lexicographic order (value desc, index asc); the
    # rows are only k + B long, so this costs next to nothing beside the forward.
    o = i.argsort(dim=1, stable=True)
    v, i, p, col = v.gather(1, o), i.gather(1, o), p.gather(1, o), col.gather(1, o)
    o = v.argsort(dim=1, descending=True, stable=True)[:, :k]
    v, i, p, col = v.gather(1, o), i.gather(1, o), p.gather(1, o), col.gather(1, o)
    ch, slot = (col >= 0).nonzero(as_tuple=True)
    if pos is None and flat is not None and len(ch):
        p = p.clone()
        p[ch, slot] = flat[col[ch, slot], ch].argmax(dim=1)  # first maximum (row-major) on ties
    if v.shape[1] < k:  # fewer images than k so far: pad with empty slots
        pad = k - v.shape[1]
        v = torch.cat([v, v.new_full((c, pad), float("-inf"))], 1)
        i = torch.cat([i, i.new_full((c, pad), _NO_IMAGE)], 1)
        p = torch.cat([p, p.new_zeros((c, pad))], 1)
    return (v, i, p), len(ch)


class PatchMiner:
    """The bounded streaming state of a mining: ``(C, k)`` tensors per layer.

    Args:
        lm: the loaded model.
        layers: tap names or module paths (duplicates of one module are merged).
        k: hits kept per channel.
    """

    def __init__(self, lm: LoadedModel, layers: Sequence[str], k: int = 9):
        if k < 1:
            raise ValueError("k must be at least 1")
        self.lm, self.k = lm, int(k)
        self.modules: dict[str, str] = {}
        for name in layers:
            path = lm.resolve(name)
            if path not in self.modules.values():
                self.modules[name] = path
        if not self.modules:
            raise ValueError("no layers to mine")
        self.state: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self.map_size: dict[str, tuple[int, int]] = {}
        self._entering: dict[str, float] = {}  # share of the last batch's pairs that entered the top-k

    def update(self, x: torch.Tensor, indices: Sequence[int]) -> None:
        """Run one batch ``(B, 3, H, W)`` of images with dataset ``indices`` through the model.

        The top-k merge happens inside each layer's hook, while its map is at
        hand; only the ``(C, k)`` state survives the hook.
        """
        lm = self.lm
        by_path = {p: n for n, p in self.modules.items()}
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        new: dict[str, tuple] = {}

        def reduce(path: str, t: torch.Tensor):
            name = by_path[path]
            # While many pairs still enter the top-k (the first batches), one max-with-
            # indices pass is cheapest; later, amax plus a few argmaxes over entrants.
            v, pos, flat, hw = _batch_max(t, positions=self._entering.get(name, 1.0) > MAX_WITH_INDICES_ABOVE)
            new[name], n_in = _merge_topk(self.state.get(name), v, pos, flat, idx, self.k)
            self._entering[name] = n_in / max(1, v.numel())
            self.map_size[name] = hw
            return True

        with torch.inference_mode(), tap(lm.model, list(by_path), reduce=reduce, stop=True, lock=lm.lock):
            forward_until(lm.model, x.to(lm.device))
        missing = [n for n in self.modules if n not in new]
        if missing:
            raise RuntimeError(f"layers {', '.join(missing)} did not run in the forward pass")
        self.state = {**self.state, **new}  # all layers advance together, or none

    def hits(self, files: Sequence[str]) -> dict[str, list[list[Hit]]]:
        """The hits so far, with receptive-field boxes; ``files[i]`` names dataset image ``i``."""
        size = self.lm.spec.input_size
        out = {}
        for name, path in self.modules.items():
            if name not in self.state:
                continue
            v, i, p = (t.cpu() for t in self.state[name])
            h, w = self.map_size[name]
            boxes = _boxes(self.lm, path, (h, w), size)
            vals, idxs, poss = v.tolist(), i.tolist(), p.tolist()
            chans = []
            for c in range(len(vals)):
                chans.append([Hit(files[ii], vv, pp // w, pp % w, boxes(pp // w, pp % w), ii)
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


def _weights_digest(lm: LoadedModel) -> str | None:
    """Random-init weights differ per process: key them by their values."""
    if lm.weights.source != "random":
        return None
    h = hashlib.sha256()
    params = list(lm.model.parameters())
    for t in params[:2] + params[-2:]:
        h.update(t.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _cache_key(lm: LoadedModel, ds: ImageDataset, path: str, k: int, indices: Sequence[int] | None,
               fingerprint: str) -> str:
    from vizcore.cache import cache_key

    sel = None
    if indices is not None:
        sel = hashlib.sha256(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()[:16]
    return cache_key(kind=CACHE_KIND, version=CACHE_VERSION, model=lm.name,
                     weights=[lm.weights.source, lm.weights.detail, _weights_digest(lm)],
                     module=path, k=k, preprocess=lm.spec.preprocess.to_json(),
                     dataset=fingerprint, indices=sel)


class MiningJob:
    """A mining that can run in steps (for the dashboard) and caches itself when done.

    Layers found in the cache are loaded at once; the rest are mined together in
    one pass. :meth:`step` processes some batches and can be called again to
    go on; when the last batch is done the new layers are written to the cache.

    Args:
        lm: the loaded model.
        dataset: an :class:`ImageDataset` or a spec for :func:`open_dataset`.
        layers: tap names or module paths; ``None`` for all the model's taps.
        k: hits kept per channel.
        batch_size, workers: passed to :func:`vizcore.data.iter_batches`.
        indices: mine only these dataset images (e.g. one part, to merge later).
        cache: read and write the on-disk cache.
    """

    def __init__(self, lm: LoadedModel, dataset: ImageDataset | str, layers: Sequence[str] | None = None, *,
                 k: int = 9, batch_size: int = 32, workers: int | None = None,
                 indices: Sequence[int] | None = None, cache: bool = True):
        self.lm = lm
        self.ds = dataset if isinstance(dataset, ImageDataset) else open_dataset(dataset)
        names = list(layers) if layers is not None else [t.name for t in lm.taps()]
        self.miner = PatchMiner(lm, names, k)
        self.k, self.batch_size, self.workers, self.cache = int(k), int(batch_size), workers, cache
        self.indices = list(range(len(self.ds))) if indices is None else [int(i) for i in indices]
        self._sel = None if indices is None else self.indices
        self.fingerprint = self.ds.fingerprint()
        self.pos = 0  # images of self.indices done (mined or skipped)
        self.n_done = 0  # images mined
        self.report = BatchReport()
        self.layer_modules = dict(self.miner.modules)  # every requested layer, in order
        self.cached: dict[str, list[list[Hit]]] = {}
        self._cached_meta: dict | None = None
        if cache:
            self._load_cached()
        self.todo = {n: p for n, p in self.miner.modules.items() if n not in self.cached}
        self.miner.modules = dict(self.todo)
        self.saved = False
        self._final: dict[str, list[list[Hit]]] | None = None

    @property
    def total(self) -> int:
        return len(self.indices)

    @property
    def done(self) -> bool:
        return not self.todo or self.pos >= self.total

    @property
    def from_cache(self) -> bool:
        return not self.todo

    def _key(self, path: str) -> str:
        return _cache_key(self.lm, self.ds, path, self.k, self._sel, self.fingerprint)

    def _load_cached(self) -> None:
        from vizcore.cache import load_torch

        for name, path in self.miner.modules.items():
            state = load_torch(CACHE_KIND, self._key(path))
            if not state or state.get("version") != CACHE_VERSION:
                continue
            res = MiningResult._from_state(state)
            (chans,) = res.layers.values()
            self.cached[name] = chans
            self._cached_meta = {"n_images": res.n_images, "skipped": res.skipped}

    def step(self, max_batches: int | None = None, *, progress: Progress | None = None,
             should_stop: Callable[[], bool] | None = None) -> bool:
        """Mine up to ``max_batches`` more batches (all that are left if ``None``).

        Returns:
            ``True`` when the mining has finished (and been cached).
        """
        if self.done:
            self._finish()
            return True
        end = self.total if max_batches is None else min(self.total, self.pos + max_batches * self.batch_size)
        chunk = self.indices[self.pos:end]
        sub = self.ds.subset(chunk)
        start = self.pos
        batches = iter_batches(sub, self.lm.transform(), batch_size=self.batch_size, workers=self.workers,
                               report=self.report)
        try:
            while True:
                # Asked before the next batch is read, so a stopped run reports only what it did.
                if should_stop is not None and should_stop():
                    break
                try:
                    x, local = next(batches)
                except StopIteration:
                    self.pos = end
                    break
                self.miner.update(x, [chunk[j] for j in local])
                self.n_done += len(local)
                # Batches are contiguous runs of the chunk, so everything before this point is done
                # (a batch of unreadable files only shows up in report.skipped).
                self.pos = min(end, start + (local[-1] // self.batch_size + 1) * self.batch_size)
                if progress is not None:
                    progress(self.pos, self.total)
        finally:
            batches.close()  # ends the loader (and its worker processes) now
        if self.done:
            self._finish()
        return self.done

    def run(self, *, progress: Progress | None = None, should_stop: Callable[[], bool] | None = None) -> bool:
        return self.step(None, progress=progress, should_stop=should_stop)

    def _finish(self) -> None:
        if self._final is None and self.todo:
            self._final = self.miner.hits(self.ds.paths)
        if self.saved or not self.cache or not self.todo:
            return
        from vizcore.cache import save_torch

        fresh = self._result(self._final, complete=True)
        for name, path in self.todo.items():
            one = replace(fresh, layers={name: fresh.layers[name]}, modules={name: path})
            save_torch(CACHE_KIND, self._key(path), one._state())
        self.saved = True

    def _result(self, layers: dict[str, list[list[Hit]]], *, complete: bool) -> MiningResult:
        lm = self.lm
        if self.todo:
            n_images, skipped = self.n_done, list(self.report.skipped)
        else:
            n_images, skipped = self._cached_meta["n_images"], self._cached_meta["skipped"]
        return MiningResult(
            model=lm.name, weights=lm.weights.to_json(), dataset=self.ds.to_json(), n_images=n_images,
            skipped=skipped, k=self.k, input_size=lm.spec.input_size, preprocess=lm.spec.preprocess.to_json(),
            layers=layers, modules={n: self.layer_modules[n] for n in layers}, complete=complete,
            cached=not self.todo)

    def result(self) -> MiningResult:
        """The hits so far (``complete=False`` until every image is done), layers in request order."""
        if not self.todo:
            fresh = {}
        elif self.done and self._final is not None:
            fresh = self._final  # converted once when the pass ended
        else:
            fresh = self.miner.hits(self.ds.paths)
        layers = {n: (self.cached[n] if n in self.cached else fresh[n])
                  for n in self.layer_modules if n in self.cached or n in fresh}
        return self._result(layers, complete=self.done)


def mine_top_patches(lm: LoadedModel, dataset: ImageDataset | str, layers: Sequence[str] | None = None, *,
                     k: int = 9, batch_size: int = 32, workers: int | None = None,
                     progress: Progress | None = None, should_stop: Callable[[], bool] | None = None,
                     cache: bool = True, indices: Sequence[int] | None = None) -> MiningResult:
    """Mine the top-``k`` images of every channel of ``layers`` in one pass over ``dataset``.

    Args:
        lm: the loaded model (``vizcore.models.load_model``).
        dataset: an :class:`ImageDataset` or a spec (folder, ``samples``, ``cifar10``...).
        layers: tap names or module paths; ``None`` for every tap of the model.
        k: hits kept per channel (default 9).
        batch_size, workers: data loading (see :func:`vizcore.data.iter_batches`).
        progress: ``progress(images_done, images_total)`` after each batch.
        should_stop: checked before each batch; when it returns ``True`` the run
            ends and the partial result comes back with ``complete=False`` (not cached).
        cache: reuse and write the on-disk cache (a second identical call does not
            run the model).
        indices: mine only these dataset images (results of disjoint parts merge
            exactly with :meth:`MiningResult.merge`).

    Returns:
        A :class:`MiningResult`; ``skipped`` lists the files that could not be read.
    """
    job = MiningJob(lm, dataset, layers, k=k, batch_size=batch_size, workers=workers, indices=indices,
                    cache=cache)
    job.run(progress=progress, should_stop=should_stop)
    return job.result()


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
