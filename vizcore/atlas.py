"""Activation atlases: a tap's activation vectors over a dataset, laid out in 2-D and drawn cell by cell.

After Carter et al., "Activation Atlas" (Distill 2019, https://distill.pub/2019/activation-atlas/):
sample spatial activation vectors of one tap over a dataset (:class:`vizcore.concepts.VectorJob`:
seeded positions per image, an exactly merging pass that runs on Ray), lay them out in 2-D
(UMAP, seeded; t-SNE by openTSNE as an option), bin the layout into a ``grid x grid`` grid,
average the vectors of each cell and render each cell's mean as a feature visualisation (the
cosine-weighted direction objective, all cells in batches: :class:`vizcore.concepts.DirectionIconsJob`).
Cells with fewer than ``min_count`` vectors stay empty.

A *class atlas* keeps only the vectors whose contribution to one class is strongest: the share
``keep`` of the sample with the largest gradient x activation for that class (summed over
channels), as the paper's class atlases do.

Differences from the paper: positions are drawn per image (not one random position of each of
millions of images); a session image's positions are placed at the cell whose mean is closest in
cosine (the layout is not re-fitted), which is what :func:`place` returns.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
from PIL import Image

from vizcore.concepts import (CACHE_VERSION, ConceptError, DirectionIcons, DirectionIconsJob, VectorJob,
                              icons_from_data, icons_to_data, spatial_shape)
from vizcore.identity import result_key
from vizcore.jobs import RunOptions, StepJob, Tick, shifted, sub_run

if TYPE_CHECKING:
    from vizcore.data.datasets import ImageDataset
    from vizcore.models import LoadedModel

__all__ = ["Atlas", "AtlasError", "AtlasJob", "atlas_image", "atlas_of", "bin_layout", "class_filter", "layout_2d", "place",
           "position_crop"]

LAYOUTS = ("umap", "tsne")


class AtlasError(ConceptError):
    """Bad input for an atlas (a dataset too small for the grid, ...): one clear line."""


# ------------------------------------------------------------------------------ the pieces
def layout_2d(vectors: np.ndarray, *, method: str = "umap", seed: int = 0, n_neighbors: int = 15,
              min_dist: float = 0.01) -> np.ndarray:
    """``(N, 2)`` positions in ``[0, 1]`` of the ``(N, C)`` vectors (cosine metric).

    ``umap``: umap-learn with ``random_state=seed`` (single-threaded, so a seed gives one layout);
    ``tsne``: openTSNE with the same seed.
    """
    x = np.asarray(vectors, dtype=np.float32)
    n = x.shape[0]
    if method not in LAYOUTS:
        raise AtlasError(f"unknown layout {method!r}; choose from {', '.join(LAYOUTS)}")
    if n < 4:
        raise AtlasError(f"{n} vectors are too few to lay out")
    if method == "umap":
        import warnings

        import umap

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "n_jobs overridden to 1 by setting random_state": wanted
            emb = umap.UMAP(n_components=2, n_neighbors=min(int(n_neighbors), n - 1), min_dist=min_dist,
                            metric="cosine", random_state=int(seed), init="spectral").fit_transform(x)
    else:
        from openTSNE import TSNE

        emb = np.asarray(TSNE(n_components=2, metric="cosine", random_state=int(seed), n_jobs=1,
                              perplexity=min(30.0, max(2.0, (n - 1) / 3))).fit(x))
    emb = emb.astype(np.float64)
    lo, hi = emb.min(0), emb.max(0)
    return ((emb - lo) / np.where(hi - lo > 0, hi - lo, 1.0)).astype(np.float32)


@dataclass(frozen=True)
class Bins:
    """A layout binned into a grid: ``cell`` per point (``row * grid + col``), the cells kept (at least
    ``min_count`` points) with their members, and the points of the cells left empty."""

    grid: int
    cell: np.ndarray
    cells: list[dict]
    empty_points: np.ndarray


def bin_layout(layout: np.ndarray, grid: int, min_count: int = 3) -> Bins:
    """Bin ``(N, 2)`` positions in ``[0, 1]`` into ``grid x grid`` cells (row 0 at the top: y = 1)."""
    g = int(grid)
    xy = np.asarray(layout, dtype=np.float64)
    col = np.clip((xy[:, 0] * g).astype(int), 0, g - 1)
    row = np.clip(((1 - xy[:, 1]) * g).astype(int), 0, g - 1)
    cell = row * g + col
    cells, empty = [], []
    for c in np.unique(cell):
        members = np.flatnonzero(cell == c)
        if len(members) >= int(min_count):
            cells.append({"row": int(c // g), "col": int(c % g), "count": int(len(members)), "members": members})
        else:
            empty.append(members)
    return Bins(g, cell, cells, np.concatenate(empty) if empty else np.zeros(0, np.int64))


def class_filter(score: np.ndarray, keep: float) -> tuple[np.ndarray, np.ndarray]:
    """``(kept, dropped)`` indices: the share ``keep`` of vectors with the largest ``score`` (ties by index)."""
    s = np.asarray(score, dtype=np.float64)
    if not 0 < keep <= 1:
        raise AtlasError(f"keep must be in (0, 1], not {keep}")
    n = max(1, int(round(keep * len(s))))
    order = np.lexsort((np.arange(len(s)), -s))
    return np.sort(order[:n]), np.sort(order[n:])


# ------------------------------------------------------------------------------ the atlas
@dataclass(frozen=True, eq=False)
class Atlas:
    """An activation atlas of one tap.

    Attributes:
        kept: indices into the sample of the vectors laid out (all, or a class atlas's strongest);
            dropped: the others (``kept`` + ``dropped`` = the sample).
        layout: ``(len(kept), 2)`` positions in ``[0, 1]``.
        image, position: dataset index and flat map position of each kept vector; files: the dataset's files.
        cells: ``[{"row", "col", "count", "members", "top"}]`` (members: indices into ``kept``; top:
            the members closest in cosine to the cell's mean, up to 6).
        means: ``(len(cells), C)`` each cell's mean vector; icons: their feature visualisations.
    """

    model: str
    layer: str
    module: str
    hw: tuple[int, int]
    grid: int
    method: str
    seed: int
    min_count: int
    target: int | None
    target_label: str | None
    n_sample: int
    kept: np.ndarray = field(repr=False)
    dropped: np.ndarray = field(repr=False)
    layout: np.ndarray = field(repr=False)
    image: np.ndarray = field(repr=False)
    position: np.ndarray = field(repr=False)
    files: list[str] = field(repr=False)
    cells: list[dict] = field(repr=False)
    means: np.ndarray = field(repr=False)
    icons: DirectionIcons | None = field(repr=False, default=None)

    def to_json(self) -> dict:
        return {"model": self.model, "layer": self.layer, "module": self.module, "hw": list(self.hw),
                "grid": self.grid, "method": self.method, "seed": self.seed, "min_count": self.min_count,
                "target": self.target, "target_label": self.target_label, "n_sample": self.n_sample,
                "n_kept": int(len(self.kept)), "n_cells": len(self.cells),
                "cells": [{"row": c["row"], "col": c["col"], "count": c["count"],
                           "top": [{"file": self.files[int(self.image[m])], "position": int(self.position[m])}
                                   for m in c["top"]]} for c in self.cells],
                "icons": None if self.icons is None else self.icons.to_json()}


def _cells_with_means(vectors: np.ndarray, bins: Bins) -> tuple[list[dict], np.ndarray]:
    means = np.stack([vectors[c["members"]].mean(0) for c in bins.cells]) if bins.cells else \
        np.zeros((0, vectors.shape[1]), np.float32)
    cells = []
    for c, m in zip(bins.cells, means):
        v = vectors[c["members"]]
        cos = (v @ m) / (np.linalg.norm(v, axis=1) * np.linalg.norm(m) + 1e-12)
        top = c["members"][np.lexsort((c["members"], -cos))[:6]]
        cells.append({**c, "top": top})
    return cells, means.astype(np.float32)


class AtlasJob(StepJob[Atlas]):
    """Sample (a cached :class:`VectorJob`), lay out, bin, average and render: the whole atlas as one job.

    Ticks count images, then one for the layout, then one per icon (the total grows once the number of
    cells is known).

    Args:
        grid: cells per side; min_count: fewest vectors a cell needs to be drawn.
        per_image: positions sampled per image (``None``: all).
        target: a class (index or label) for a class atlas, which keeps the share ``keep`` of the vectors
            with the largest gradient x activation for it.
        icon_steps, icon_size, icon_batch, icon_transforms: the feature visualisations (``icon_steps=0``: no
            icons; ``light`` transforms suit icons of a few dozen pixels, where ``standard`` jitter is large).
    """

    kind = "atlas"
    unit = "steps"
    codec = "torch"

    def __init__(self, lm: "LoadedModel", dataset: "ImageDataset", layer: str, grid: int = 20, *,
                 per_image: int | None = 16, seed: int = 0, method: str = "umap", min_count: int = 3,
                 target: int | str | None = None, keep: float = 0.1, icon_steps: int = 64, icon_size: int = 64,
                 icon_batch: int = 32, icon_transforms: str = "standard", options: RunOptions | None = None,
                 indices: Sequence[int] | None = None):
        if method not in LAYOUTS:
            raise AtlasError(f"unknown layout {method!r}; choose from {', '.join(LAYOUTS)}")
        if int(grid) < 2:
            raise AtlasError(f"the grid needs at least 2 cells per side, not {grid}")
        self.lm, self.dataset, self.layer = lm, dataset, layer
        self.grid, self.seed, self.method, self.min_count = int(grid), int(seed), method, max(1, int(min_count))
        self.keep = float(keep)
        self.target_label = None
        if target is not None:
            from vizcore.evidence import resolve_target

            t = resolve_target(lm, target)
            target, self.target_label = t.index, t.label
            if not 0 < self.keep <= 1:
                raise AtlasError(f"keep must be in (0, 1], not {keep}")
        self.target = target
        spatial_shape(lm, layer)  # a tap without spatial maps: one line, before any work
        self.vectors = VectorJob(lm, dataset, layer, per_image=per_image, seed=seed, target=target, indices=indices)
        self.per_image = per_image
        n_img = self.vectors.total
        h, w = self.vectors.pass_.h, self.vectors.pass_.w
        n_vec = n_img * (h * w if per_image is None else min(int(per_image), h * w))
        if target is not None:
            n_vec = max(1, int(round(self.keep * n_vec)))
        if n_vec < 2 * self.grid * self.grid:
            raise AtlasError(f"{n_vec:,} vectors ({n_img} images × {n_vec // max(n_img, 1)} positions"
                             f"{', kept for the class' if target is not None else ''}) are too few for a "
                             f"{self.grid}×{self.grid} grid: need at least {2 * self.grid * self.grid:,}; "
                             "use a smaller grid, more images or more positions per image")
        self.icon_steps, self.icon_size, self.icon_batch = int(icon_steps), int(icon_size), int(icon_batch)
        self.icon_transforms = icon_transforms
        self.options = options or RunOptions(workers=0)
        self.total = n_img + 1 + self.grid * self.grid

    def describe(self) -> str:
        return f"atlas of {self.layer}"

    def key(self) -> str:
        return result_key(self.kind, CACHE_VERSION, None, None, vectors=self.vectors.key(), grid=self.grid,
                          method=self.method, min_count=self.min_count,
                          keep=self.keep if self.target is not None else None, seed=self.seed,
                          icons=[self.icon_steps, self.icon_size, self.icon_batch, self.icon_transforms])

    def work(self):
        n = self.vectors.total
        yield Tick(0, self.total)
        sample = yield from sub_run(self.vectors, self.options, total=self.total)
        if sample.target is not None:
            kept, dropped = class_filter(sample.score, self.keep)
        else:
            kept, dropped = np.arange(len(sample.vectors)), np.zeros(0, np.int64)
        vec = sample.vectors[kept]
        if len(vec) < 2 * self.grid * self.grid:
            raise AtlasError(f"{len(vec):,} vectors were read, too few for a {self.grid}×{self.grid} grid "
                             f"(need {2 * self.grid * self.grid:,}): use a smaller grid or more images")
        lay = layout_2d(vec, method=self.method, seed=self.seed)
        cells, means = _cells_with_means(vec, bin_layout(lay, self.grid, self.min_count))
        total = n + 1 + (len(cells) if self.icon_steps > 0 else 0)
        yield Tick(n + 1, total)
        icons = None
        if self.icon_steps > 0 and len(cells):
            job = DirectionIconsJob(self.lm, self.layer, means, steps=self.icon_steps, size=self.icon_size,
                                    seed=self.seed, batch_size=self.icon_batch,
                                    transforms=self.icon_transforms)
            icons = yield from shifted(job.work(), n + 1, total)
        return Atlas(self.lm.name, self.layer, sample.module, tuple(sample.hw), self.grid, self.method, self.seed,
                     self.min_count, self.target, self.target_label, int(len(sample.vectors)), kept, dropped, lay,
                     sample.image[kept], sample.position[kept], list(sample.files), cells, means, icons)

    def encode(self, a: Atlas) -> dict:
        meta = {k: getattr(a, k) for k in ("model", "layer", "module", "hw", "grid", "method", "seed", "min_count",
                                           "target", "target_label", "n_sample", "files")}
        icons = None if a.icons is None else icons_to_data(a.icons)
        t = torch.from_numpy
        return {"meta": meta, "kept": t(a.kept), "dropped": t(a.dropped), "layout": t(a.layout),
                "image": t(a.image), "position": t(a.position), "means": t(a.means),
                "cells": [{"row": c["row"], "col": c["col"], "count": c["count"], "members": t(c["members"]),
                           "top": t(np.asarray(c["top"]))} for c in a.cells], "icons": icons}

    def decode(self, d: dict) -> Atlas:
        m = d["meta"]
        cells = [{"row": c["row"], "col": c["col"], "count": c["count"], "members": c["members"].numpy(),
                  "top": c["top"].numpy()} for c in d["cells"]]
        icons = None if d["icons"] is None else icons_from_data(d["icons"])
        return Atlas(m["model"], m["layer"], m["module"], tuple(m["hw"]), m["grid"], m["method"], m["seed"],
                     m["min_count"], m["target"], m["target_label"], m["n_sample"], d["kept"].numpy(),
                     d["dropped"].numpy(), d["layout"].numpy(), d["image"].numpy(), d["position"].numpy(),
                     list(m["files"]), cells, d["means"].numpy(), icons)


# ------------------------------------------------------------------------------ drawing and placing
def atlas_image(atlas: Atlas, cell: int = 64, fill: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """The atlas as one picture: each drawn cell's icon at its place, empty cells ``fill``."""
    g = atlas.grid
    out = Image.new("RGB", (g * cell, g * cell), fill)
    if atlas.icons is None:
        return out
    for c, icon in zip(atlas.cells, atlas.icons.images):
        out.paste(icon.resize((cell, cell), Image.Resampling.BILINEAR), (c["col"] * cell, c["row"] * cell))
    return out


def place(lm: "LoadedModel", atlas: Atlas, image: Image.Image) -> list[dict]:
    """Where each position of ``image`` falls on ``atlas``: the cell whose mean is closest in cosine.

    Returns ``[{"y", "x", "row", "col", "cosine"}]``, one per position of the tap's map.
    """
    from vizcore.activations import preprocess
    from vizcore.tap import forward_until, tap

    x = preprocess(lm, image)
    with torch.inference_mode(), tap(lm.model, [atlas.module], stop=True, lock=lm.lock) as store:
        forward_until(lm.model, x)
        a = store[atlas.module][0].float().cpu().numpy()
    c, h, w = a.shape
    v = a.reshape(c, -1).T
    if not len(atlas.means):
        return []
    mn = atlas.means / (np.linalg.norm(atlas.means, axis=1, keepdims=True) + 1e-12)
    cos = (v / (np.linalg.norm(v, axis=1, keepdims=True) + 1e-12)) @ mn.T
    best = cos.argmax(1)
    return [{"y": int(p // w), "x": int(p % w), "row": atlas.cells[int(b)]["row"], "col": atlas.cells[int(b)]["col"],
             "cosine": float(cos[p, b])} for p, b in enumerate(best)]


def position_crop(lm: "LoadedModel", file: str, module: str, position: int, hw: tuple[int, int]) -> Image.Image:
    """The receptive-field crop of one map position of ``file`` (in the model's preprocessed input)."""
    from torchvision import transforms as T

    from vizcore.data import load_image
    from vizcore.summary import layer_geometry, rf_box

    pre = lm.spec.preprocess
    img = T.Compose([T.Resize(pre.resize, interpolation=T.InterpolationMode(pre.interpolation), antialias=True),
                     T.CenterCrop(pre.crop)])(load_image(file).convert("RGB"))
    y, x = divmod(int(position), int(hw[1]))
    try:
        box = rf_box(layer_geometry(lm, module, pre.crop), y, x, pre.crop)
    except Exception:  # noqa: BLE001 - a layer the summary cannot trace: the whole input
        return img
    return img.crop(tuple(int(b) for b in box))


def atlas_of(lm: "LoadedModel", dataset: "ImageDataset", layer: str, grid: int = 20, *,
             options: RunOptions | None = None, progress: Any = False, **kw: Any) -> Atlas:
    """:class:`AtlasJob` run to the end (cached)."""
    from vizcore.jobs import run

    options = options or RunOptions(workers=0)
    return run(AtlasJob(lm, dataset, layer, grid, options=options, **kw), options, progress=progress)
