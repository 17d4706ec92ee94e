"""Every picture the engine draws: colour maps, channel grids, heat-map overlays, activation
maps at input pixels, dataset patch crops and montages.

The analyses compute tensors and results (:mod:`vizcore.activations`,
:mod:`vizcore.patches`); this module turns them into PIL images and PNG files
for the CLI and the dashboard, so a new analysis reuses one colour map, one
overlay and one montage layout instead of drawing its own.

- Colour maps: :func:`lut` (a 256-entry table of any matplotlib colormap,
  greyscale without matplotlib) and :func:`colorize`.
- One image through one layer: :func:`channel_grid` (the top channels' maps in
  a grid), :func:`overlay` (a ``[0, 1]`` heat map blended over an image).
- Dataset examples of a :class:`~vizcore.patches.MiningResult`:
  :func:`input_image` (the preprocessed input the boxes refer to),
  :func:`patch_image` (one receptive-field crop), :func:`upsample_map` (a
  channel's map resampled to input pixels, each unit at its receptive-field
  centre), :func:`heatmap_overlay`, :func:`channel_montage`,
  :func:`layer_montage`, and :func:`write_montages` (every layer's montage PNG
  in one go: each input image decoded once for all layers, each distinct crop
  resized once, crops and PNG encoding spread over a thread pool).
"""
from __future__ import annotations

import functools
import io
import math
import os
import re
import threading
import zlib
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import numpy as np
import torch
from PIL import Image

from vizcore.data.images import to_rgb

if TYPE_CHECKING:
    from vizcore.models import LoadedModel, Preprocess
    from vizcore.patches import MiningResult

ORDERS = ("mean", "max", "index")
"""How :func:`channel_grid` picks and orders channels."""

HEAT_CMAP = "inferno"
"""The colour map of every heat-map overlay: its lightness rises monotonically from black to
pale yellow, so brighter always means more (``jet`` does not: its cyan and yellow are lighter
than its top red)."""


# ------------------------------------------------------------------ colour maps
@functools.lru_cache(maxsize=32)
def lut(name: str) -> np.ndarray:
    """The ``(256, 3)`` uint8 table of matplotlib colormap ``name`` (greyscale without matplotlib).

    Cached and read-only: every caller shares one table per colormap.
    """
    try:
        import matplotlib

        cmap = matplotlib.colormaps[name]
        table = (cmap(np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)
    except Exception:  # noqa: BLE001 - matplotlib missing: greyscale
        g = np.arange(256, dtype=np.uint8)
        table = np.stack([g, g, g], axis=1)
    table.setflags(write=False)
    return table


def colorize(values: np.ndarray, cmap: str = "viridis") -> np.ndarray:
    """Map values in ``[0, 1]`` to RGB uint8 through a matplotlib colormap (``(..., 3)``)."""
    idx = np.clip(np.nan_to_num(values) * 255, 0, 255).round().astype(np.uint8)
    return lut(cmap)[idx]


def png_bytes(img: Image.Image, *, fast: bool = False) -> bytes:
    """``img`` encoded as PNG; ``fast`` trades a few per cent of size for several times the speed.

    ``fast`` uses zlib level 1 with run-length matching (``Z_RLE``): on montages (flat
    backgrounds, photo tiles) it is about 3x faster than Pillow's default level 6 and the
    files come out no larger.
    """
    buf = io.BytesIO()
    if fast:
        img.save(buf, format="PNG", compress_level=1, compress_type=zlib.Z_RLE)
    else:
        img.save(buf, format="PNG")
    return buf.getvalue()


# ------------------------------------------------------- one image, one layer
def label_tile(tile: Image.Image, text: str) -> Image.Image:
    """``tile`` with ``text`` (a channel number) in its top-left corner, white on a dark box
    (Pillow's built-in font, scaled to the tile: a quarter of its side, at least 10 px)."""
    from PIL import ImageDraw, ImageFont

    size = max(10, tile.size[1] // 4)
    font = ImageFont.load_default(size=size)
    draw = ImageDraw.Draw(tile)
    x0, y0, x1, y1 = draw.textbbox((2, 1), text, font=font)
    draw.rectangle((0, 0, x1 + 2, y1 + 1), fill=(0, 0, 0))
    draw.text((2, 1), text, fill=(255, 255, 255), font=font)
    return tile


def channel_grid(act: torch.Tensor | np.ndarray, *, top: int | None = 16, order: str = "mean",
                 shared_scale: bool = False, cell: int = 64, cols: int | None = None,
                 cmap: str = "viridis", pad: int = 2, labels: bool = False) -> tuple[Image.Image, list[int]]:
    """A grid image of the ``top`` channels of one layer output.

    Args:
        act: ``(C, H, W)`` feature maps, or ``(C,)`` for a vector (each channel a flat cell).
        top: how many channels to show (``None`` or ``0``: all).
        order: pick and order channels by ``mean`` or ``max`` activation, or by ``index``.
        shared_scale: one colour scale for all shown channels (compare strengths) instead
            of one per channel (see each channel's pattern). Vectors and 1x1 maps always
            use the shared scale, since one value per channel has no pattern of its own.
        cell: side of one cell in pixels; maps are upscaled with nearest neighbour so
            the true resolution stays visible.
        cols: number of columns (default: about square).
        labels: write each tile's channel number in its top-left corner (:func:`label_tile`).

    Returns:
        ``(image, channels)``: the RGB grid and the channel indices in reading order.
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(ORDERS)}, not {order!r}")
    t = torch.as_tensor(act).detach().float().cpu()
    if t.dim() == 1:
        t = t[:, None, None]
    if t.dim() != 3:
        raise ValueError(f"expected (C, H, W) or (C,), got shape {tuple(t.shape)}")
    c = t.shape[0]
    n = c if not top else min(int(top), c)
    if order == "index":
        chans = list(range(n))
    else:
        flat = t.reshape(c, -1)
        key = flat.mean(1) if order == "mean" else flat.amax(1)
        chans = torch.argsort(-key, stable=True)[:n].tolist()
    maps = t[chans]  # (n, H, W)
    flat = maps.reshape(max(n, 1), -1) if n else maps.reshape(0, 1)
    if shared_scale or maps.shape[1] * maps.shape[2] == 1:
        lo = flat.min() if n else torch.tensor(0.0)
        hi = flat.max() if n else torch.tensor(1.0)
        lo, hi = lo.expand(n)[:, None, None], hi.expand(n)[:, None, None]
    else:
        lo = flat.amin(1)[:, None, None]
        hi = flat.amax(1)[:, None, None]
    span = (hi - lo).clamp_min(1e-12)
    norm = ((maps - lo) / span).clamp(0, 1)
    norm = torch.where(hi - lo > 1e-12, norm, torch.zeros_like(norm))
    rgb = colorize(norm.numpy(), cmap)  # (n, H, W, 3)
    cols = max(1, int(cols) if cols else math.ceil(math.sqrt(max(n, 1))))
    rows = max(1, math.ceil(n / cols))
    grid = Image.new("RGB", (cols * cell + (cols + 1) * pad, rows * cell + (rows + 1) * pad), (255, 255, 255))
    h, w = maps.shape[1], maps.shape[2]
    resample = Image.Resampling.NEAREST if h <= cell and w <= cell else Image.Resampling.BOX
    for k in range(n):
        r, q = divmod(k, cols)
        tile = Image.fromarray(np.ascontiguousarray(rgb[k]), "RGB").resize((cell, cell), resample)
        if labels:
            label_tile(tile, str(int(chans[k])))
        grid.paste(tile, (pad + q * (cell + pad), pad + r * (cell + pad)))
    return grid, [int(ch) for ch in chans]


def overlay(image: Image.Image, heat: np.ndarray, alpha: float = 0.5, cmap: str = HEAT_CMAP) -> Image.Image:
    """Blend a ``[0, 1]`` heat map (resized to the image if needed) over ``image``."""
    img = to_rgb(image)
    h = np.asarray(heat, dtype=np.float32)
    if h.shape != (img.height, img.width):
        h = np.asarray(Image.fromarray(h, "F").resize(img.size, Image.Resampling.BILINEAR))
    col = colorize(np.clip(h, 0, 1), cmap).astype(np.float32)
    base = np.asarray(img, dtype=np.float32)
    mixed = base * (1 - alpha) + col * alpha
    return Image.fromarray(mixed.clip(0, 255).round().astype(np.uint8), "RGB")


# ------------------------------------------------------------- dataset patches
def _preprocess_of(result: "MiningResult") -> "Preprocess":
    from vizcore.models import Preprocess

    p = dict(result.preprocess)
    return Preprocess(resize=int(p["resize"]), crop=int(p["crop"]), mean=tuple(p["mean"]),
                      std=tuple(p["std"]), interpolation=p.get("interpolation", "bilinear"))


def _decode_input(file: str, preprocess: "Preprocess") -> Image.Image:
    from torchvision import transforms as T

    from vizcore.data import load_image

    interp = T.InterpolationMode(preprocess.interpolation)
    # The resize and crop the model's transform applies (on the PIL image, before
    # ToTensor/Normalize), i.e. exactly the denormalised network input.
    tf = T.Compose([T.Resize(preprocess.resize, interpolation=interp, antialias=True),
                    T.CenterCrop(preprocess.crop)])
    return tf(load_image(file)).convert("RGB")


@functools.lru_cache(maxsize=256)
def _input_image(file: str, mtime_ns: int, preprocess: "Preprocess") -> Image.Image:
    return _decode_input(file, preprocess)


def _mtime(file: str) -> int:
    try:
        return os.stat(file).st_mtime_ns
    except OSError:
        return 0


def input_image(result: "MiningResult", file: str) -> Image.Image:
    """The preprocessed (resized, centre-cropped) input the boxes of ``result`` refer to.

    The last 256 inputs are kept in memory (keyed by file, modification time and
    preprocessing), so the crops of one image's hits decode it once.
    """
    return _input_image(file, _mtime(file), _preprocess_of(result))


def patch_image(result: "MiningResult", layer: str, channel: int, rank: int = 0) -> Image.Image:
    """The receptive-field crop of hit ``rank`` of ``channel`` (clipped to the input)."""
    hit = result.hits(layer, channel)[rank]
    return input_image(result, hit.file).crop(hit.box)


def upsample_map(lm: "LoadedModel", layer: str, m: torch.Tensor, size: int) -> np.ndarray:
    """A layer's ``(H, W)`` map resampled to ``size x size`` input pixels, each unit placed at
    its receptive-field centre (from :func:`vizcore.summary.layer_geometry`); a layer the
    summary cannot trace is resized plainly."""
    import torch.nn.functional as F

    h, w = m.shape
    if (h, w) == (1, 1):
        return np.full((size, size), float(m[0, 0]))
    try:
        from vizcore.summary import layer_geometry

        g = layer_geometry(lm, lm.resolve(layer), size)
        coords = (torch.arange(size, dtype=torch.float32) - float(g.start)) / float(g.jump)
        gy = 2 * coords / max(h - 1, 1) - 1
        gx = 2 * coords / max(w - 1, 1) - 1
        grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], -1).unsqueeze(0)
        up = F.grid_sample(m[None, None], grid, mode="bilinear", padding_mode="border", align_corners=True)
    except Exception:  # noqa: BLE001 - no geometry for this layer: plain resize
        up = F.interpolate(m[None, None], size=(size, size), mode="bilinear", align_corners=False)
    return up[0, 0].numpy()


def heatmap_overlay(lm: "LoadedModel", result: "MiningResult", layer: str, channel: int, rank: int = 0, *,
                    alpha: float = 0.55, draw_box: bool = True) -> Image.Image:
    """The channel's activation map for hit ``rank`` over its input, box outlined.

    The map is recomputed for that single image (:func:`vizcore.patches.activation_map`);
    values are scaled to ``[0, max]`` of the map (negative values show as zero).
    """
    from matplotlib import colormaps
    from PIL import ImageDraw

    from vizcore.patches import activation_map

    hit = result.hits(layer, channel)[rank]
    img = input_image(result, hit.file)
    m = activation_map(lm, layer, channel, hit.file)
    heat = upsample_map(lm, layer, m, img.size[0])
    top = float(heat.max())
    heat = np.clip(heat, 0, None) / top if top > 0 else np.zeros_like(heat)
    rgb = (colormaps[HEAT_CMAP](heat)[..., :3] * 255).astype(np.uint8)
    out = Image.blend(img, Image.fromarray(rgb).resize(img.size), alpha)
    if draw_box:
        x0, y0, x1, y1 = hit.box
        ImageDraw.Draw(out).rectangle([x0, y0, x1 - 1, y1 - 1], outline=(0, 255, 255), width=2)
    return out


# ------------------------------------------------------------------- montages
def fit(img: Image.Image, cell: int, fill=(40, 40, 40)) -> Image.Image:
    """``img`` scaled to fit a ``cell`` square, centred on a dark background."""
    w, h = img.size
    s = cell / max(w, h, 1)
    img = img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.BILINEAR)
    out = Image.new("RGB", (cell, cell), fill)
    out.paste(img, ((cell - img.size[0]) // 2, (cell - img.size[1]) // 2))
    return out


def channel_montage(result: "MiningResult", layer: str, channel: int, *, cell: int = 96,
                    cols: int | None = None, pad: int = 2) -> Image.Image:
    """The top-k patches of one channel in a grid (one row unless ``cols``), best first."""
    hits = result.hits(layer, channel)
    k = result.k
    cols = cols or k
    rows = max(1, -(-k // cols))
    out = Image.new("RGB", (cols * (cell + pad) + pad, rows * (cell + pad) + pad), (255, 255, 255))
    for r, _h in enumerate(hits):
        tile = fit(patch_image(result, layer, channel, r), cell)
        out.paste(tile, (pad + (r % cols) * (cell + pad), pad + (r // cols) * (cell + pad)))
    return out


@dataclass(frozen=True)
class _Layout:
    """Where everything of one layer montage goes."""

    size: tuple[int, int]
    cell: int
    labels: list[tuple[tuple[int, int], str]]
    tiles: list[tuple[str, tuple[int, int, int, int], tuple[int, int]]]  # (file, box, top-left)


def _layout(result: "MiningResult", layer: str, channels: Sequence[int] | None, cell: int | None,
            rows_per_block: int, pad: int) -> _Layout:
    chans = list(range(result.n_channels(layer))) if channels is None else list(channels)
    if cell is None:
        cell = 64 if len(chans) <= 256 else 48 if len(chans) <= 512 else 32
    label_w = 8 * len(str(max(chans, default=0))) + 6
    row_w = label_w + result.k * (cell + pad) + pad
    n_blocks = max(1, -(-len(chans) // rows_per_block))
    n_rows = min(len(chans), rows_per_block) or 1
    labels, tiles = [], []
    for n, c in enumerate(chans):
        bx = (n // rows_per_block) * (row_w + 8)
        y = pad + (n % rows_per_block) * (cell + pad)
        labels.append(((bx + 2, y + cell // 2 - 5), str(c)))
        tiles += [(h.file, tuple(h.box), (bx + label_w + pad + r * (cell + pad), y))
                  for r, h in enumerate(result.hits(layer, c))]
    return _Layout((n_blocks * (row_w + 8), n_rows * (cell + pad) + pad), cell, labels, tiles)


def _tiles_of(image: Image.Image, boxes: Iterable[tuple[int, int, int, int]], cell: int) -> dict:
    """One fitted tile ``(cell, cell, 3)`` per distinct box of one input image."""
    return {box: np.asarray(fit(image.crop(box), cell)) for box in dict.fromkeys(boxes)}


def _draw(lay: _Layout, get_input: Callable[[str], Image.Image],
          pool: ThreadPoolExecutor | None = None) -> Image.Image:
    """Paint one layout: the crops of each file made together (in ``pool`` when given), each
    distinct (file, box) resized once, then copied into place."""
    from PIL import ImageDraw

    # The canvas is an array: copying tiles into slices costs a fraction of Image.paste.
    canvas = np.full((lay.size[1], lay.size[0], 3), 255, dtype=np.uint8)
    by_file: dict[str, list[tuple[tuple[int, int, int, int], tuple[int, int]]]] = {}
    for file, box, xy in lay.tiles:
        by_file.setdefault(file, []).append((box, xy))
    files = sorted(by_file)  # file by file: each image is fetched once
    c = lay.cell

    def tiles(file: str) -> dict:
        return _tiles_of(get_input(file), (b for b, _ in by_file[file]), c)

    # Crops and resizes run in C without the GIL, so threads overlap them; chunks bound
    # the tiles waiting to be copied.
    step = 64
    for s in range(0, len(files), step):
        chunk = files[s:s + step]
        made = pool.map(tiles, chunk) if pool is not None else map(tiles, chunk)
        for file, got in zip(chunk, made):
            for box, (x, y) in by_file[file]:
                canvas[y:y + c, x:x + c] = got[box]
    out = Image.fromarray(canvas, "RGB")
    draw = ImageDraw.Draw(out)
    for xy, text in lay.labels:  # the label column never overlaps a tile
        draw.text(xy, text, fill=(0, 0, 0))
    return out


def layer_montage(result: "MiningResult", layer: str, channels: Sequence[int] | None = None, *,
                  cell: int | None = None, rows_per_block: int = 256, pad: int = 2) -> Image.Image:
    """Every channel's top-k patches: one row per channel (``k`` patches, best first).

    Rows are labelled with the channel number; beyond ``rows_per_block``
    channels, further blocks of rows continue to the right, so wide layers
    (2,048 channels) stay a reasonable image. ``cell`` defaults to 64, 48 or
    32 pixels as the layer widens.
    """
    lay = _layout(result, layer, channels, cell, rows_per_block, pad)
    return _draw(lay, functools.partial(input_image, result))


def montage_name(layer: str) -> str:
    """File name of a layer's montage: ``montage_<layer>.png`` with unsafe characters as ``_``."""
    return "montage_" + re.sub(r"[^A-Za-z0-9._-]+", "_", layer) + ".png"


class _Inputs:
    """Preprocessed inputs of one :func:`write_montages` call, each decoded once.

    Kept up to ``budget_mb`` (least recently used dropped first; a 224 px input is
    150 KB, so the default holds about 3,500), which covers every file of most minings:
    an image used by several layers is then decoded once for all of them. Thread-safe;
    decoding happens outside the lock.
    """

    def __init__(self, preprocess: "Preprocess", budget_mb: float = 512):
        self.pre, self.budget = preprocess, int(budget_mb * 2**20)
        self.store: OrderedDict[str, Image.Image] = OrderedDict()
        self.used = 0
        self.decoded = 0
        self.lock = threading.Lock()

    def __call__(self, file: str) -> Image.Image:
        with self.lock:
            img = self.store.get(file)
            if img is not None:
                self.store.move_to_end(file)
                return img
        img = _decode_input(file, self.pre)
        with self.lock:
            self.decoded += 1
            if file not in self.store:
                self.store[file] = img
                self.used += img.width * img.height * 3
                while self.used > self.budget and len(self.store) > 1:
                    _, old = self.store.popitem(last=False)
                    self.used -= old.width * old.height * 3
        return img


def write_montages(result: "MiningResult", out_dir: str | os.PathLike, layers: Sequence[str] | None = None, *,
                   cell: int | None = None, workers: int | None = None,
                   progress: Callable[[int, int], None] | None = None) -> list[Path]:
    """Write ``montage_<layer>.png`` (:func:`layer_montage`) of every layer into ``out_dir``.

    Faster than one :func:`layer_montage` per layer, with the same pixels: each input
    image is decoded once for all layers (:class:`_Inputs`), each distinct crop of a
    layer is resized once (the hits of vector layers all share the whole image), crops
    run in a pool of ``workers`` threads (default: the CPU count, at most 4), and each
    PNG is encoded with fast settings (:func:`png_bytes`) in the pool while the next
    layer is drawn. Files are written atomically.

    Args:
        progress: ``progress(layers_done, layers_total)`` after each file is written.

    Returns:
        The paths written, in the order of ``layers`` (default: all of ``result``'s).
    """
    from vizcore.cache import atomic_write_bytes

    names = list(result.layers) if layers is None else list(layers)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    workers = max(1, min(4, os.cpu_count() or 1)) if workers is None else max(1, int(workers))
    inputs = _Inputs(_preprocess_of(result))
    paths = [out / montage_name(n) for n in names]
    done = 0

    def save(img: Image.Image, path: Path) -> None:
        atomic_write_bytes(path, png_bytes(img, fast=True))

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="montage") as pool:
        pending = []
        for name, path in zip(names, paths):
            img = _draw(_layout(result, name, None, cell, 256, 2), inputs, pool if workers > 1 else None)
            pending.append(pool.submit(save, img, path))
            del img
            # at most `workers` finished canvases wait for their encoding
            while len(pending) > workers or (pending and pending[0].done()):
                pending.pop(0).result()
                done += 1
                if progress is not None:
                    progress(done, len(names))
        for f in pending:
            f.result()
            done += 1
            if progress is not None:
                progress(done, len(names))
    return paths


def upsampled_map(lm: "LoadedModel", layer: str, m: torch.Tensor | np.ndarray, size: int | None = None) -> np.ndarray:
    """A channel's ``(H, W)`` map (any array shape ending in ``H, W``) resampled to input pixels, each
    unit at its receptive-field centre (bilinear), as the Dataset examples heatmaps are."""
    t = torch.as_tensor(np.asarray(m, dtype=np.float32))
    return upsample_map(lm, layer, t.reshape(t.shape[-2:]) if t.dim() >= 2 else t.reshape(1, 1),
                        int(size or lm.spec.input_size))


def overlay_grid(lm: "LoadedModel", layer: str, act: torch.Tensor | np.ndarray, image: Image.Image,
                 channels: Sequence[int], *, cell: int = 96, cols: int | None = None, alpha: float = 0.55,
                 shared_scale: bool = False, pad: int = 2, labels: bool = False) -> Image.Image:
    """Channels of a ``(C, H, W)`` activation upsampled over ``image`` (the preprocessed input), in a grid.

    Each map is scaled to ``[0, its max]`` (``shared_scale``: the max over the shown channels),
    negative values showing as zero, and blended over the image (colour map :data:`HEAT_CMAP`);
    ``labels`` writes each tile's channel number in its corner.
    """
    a = torch.as_tensor(np.asarray(act, dtype=np.float32))
    chans = [int(c) for c in channels]
    ups = [upsampled_map(lm, layer, a[c], image.size[0]) for c in chans]
    top_all = max((float(u.max()) for u in ups), default=0.0)
    cols = cols or max(1, int(np.ceil(np.sqrt(len(chans)))))
    rows = max(1, -(-len(chans) // cols))
    grid = Image.new("RGB", (cols * (cell + pad) + pad, rows * (cell + pad) + pad), (255, 255, 255))
    for k, u in enumerate(ups):
        top = top_all if shared_scale else float(u.max())
        heat = np.clip(u, 0, None) / top if top > 0 else np.zeros_like(u)
        tile = overlay(image, heat, alpha=alpha, cmap=HEAT_CMAP).resize((cell, cell), Image.Resampling.BILINEAR)
        if labels:
            label_tile(tile, str(chans[k]))
        r, q = divmod(k, cols)
        grid.paste(tile, (pad + q * (cell + pad), pad + r * (cell + pad)))
    return grid


# ------------------------------------------------------------ regions and pixels
def palette(n: int, cmap: str = "tab20") -> np.ndarray:
    """``(n, 3)`` uint8 distinct colours (a qualitative colormap, repeated if needed)."""
    table = lut(cmap)
    return table[(np.arange(n) * 13) % 256] if cmap != "tab20" else table[((np.arange(n) % 20) * 256 // 20) + 6]


def draw_boxes(image: Image.Image, boxes: np.ndarray, labels: Sequence[str] = (), *,
               colors: np.ndarray | None = None, width: int = 2) -> Image.Image:
    """``image`` with rectangles ``(N, 4)`` (``x1, y1, x2, y2`` in its pixels) and an optional label each."""
    from PIL import ImageDraw

    img = to_rgb(image).copy()
    d = ImageDraw.Draw(img)
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    cols = palette(max(1, len(boxes))) if colors is None else np.asarray(colors)
    for k, b in enumerate(boxes):
        c = tuple(int(v) for v in cols[k % len(cols)])
        d.rectangle([float(b[0]), float(b[1]), float(b[2]), float(b[3])], outline=c, width=width)
        if k < len(labels) and labels[k]:
            x, y = float(b[0]), max(0.0, float(b[1]) - 12)
            tw = d.textlength(labels[k])
            d.rectangle([x, y, x + tw + 4, y + 12], fill=c)
            d.text((x + 2, y), labels[k], fill=(0, 0, 0) if sum(c) > 380 else (255, 255, 255))
    return img


def label_overlay(image: Image.Image, mask: np.ndarray, alpha: float = 0.5, *, skip: Iterable[int] = (0,)) -> Image.Image:
    """Blend a class-index mask ``(H, W)`` (resized to the image, nearest) over it, one colour per
    class; classes in ``skip`` (the background) are left clear."""
    img = to_rgb(image)
    m = np.asarray(mask)
    if m.shape != (img.height, img.width):
        m = np.asarray(Image.fromarray(m.astype(np.int32), "I").resize(img.size, Image.Resampling.NEAREST))
    cols = palette(int(m.max()) + 1).astype(np.float32)
    base = np.asarray(img, dtype=np.float32)
    show = ~np.isin(m, list(skip))
    out = base.copy()
    out[show] = base[show] * (1 - alpha) + cols[m[show]] * alpha
    return Image.fromarray(out.clip(0, 255).round().astype(np.uint8), "RGB")


def masks_overlay(image: Image.Image, masks: np.ndarray, threshold: float = 0.5, alpha: float = 0.5) -> Image.Image:
    """Blend instance masks ``(D, H, W)`` in [0, 1] over ``image``, one colour per instance."""
    masks = np.asarray(masks)
    m = np.zeros(masks.shape[1:], dtype=np.int64)
    for k in range(masks.shape[0] - 1, -1, -1):  # the first (highest-scoring) instance on top
        m[masks[k] >= threshold] = k + 1
    return label_overlay(image, m, alpha)
