""":func:`render` with an on-disk cache: the same request twice optimises once.

Entries live under ``$VIZCORE_CACHE/featviz``, keyed by
:func:`vizcore.identity.result_key` (the weights by content, the preprocessing,
and every setting that changes the images). Each entry holds the results as
JSON plus the images as PNG bytes (lossless, so a cached image is the rendered
one pixel for pixel), written atomically by :func:`vizcore.cache.save_torch`.
A run stopped before its last step is returned but never cached.
"""
from __future__ import annotations

import io
from dataclasses import fields
from typing import Callable, Sequence

from PIL import Image

from vizcore.featureviz.render import FeatureVizResult, ProgressFn, render

CACHE_KIND = "featviz"
#: Bumped whenever :func:`render` would give other images for the same settings.
CACHE_VERSION = 1


def render_key(lm, layer: str, channels: Sequence[int] | None, *, objective: str = "channel",
               param: str = "fft", steps: int = 256, lr: float = 0.05, size: int | None = None, seed: int = 0,
               transforms: str = "standard", diversity: float = 0.0, n_per_channel: int = 1,
               decorrelate: bool = True) -> str:
    """The cache key of one :func:`render` request (arguments as for :func:`render_cached`)."""
    from vizcore.identity import result_key

    return result_key(
        CACHE_KIND, CACHE_VERSION, lm, module=lm.resolve(layer),
        channels=None if channels is None else [int(c) for c in channels], objective=str(objective),
        param=param, steps=int(steps), lr=float(lr), size=int(size or lm.spec.input_size), seed=int(seed),
        transforms=str(transforms), diversity=float(diversity), n_per_channel=int(n_per_channel),
        decorrelate=bool(decorrelate))


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _pack(results: list[FeatureVizResult]) -> dict:
    return {"version": CACHE_VERSION, "results": [r.to_json() for r in results],
            "png": [_png(r.image) for r in results]}


def _unpack(entry: dict) -> list[FeatureVizResult] | None:
    """The results of a cache entry, or ``None`` for an entry of another version or shape."""
    try:
        if entry.get("version") != CACHE_VERSION:
            return None
        names = {f.name for f in fields(FeatureVizResult)} - {"image"}
        out = []
        for js, png in zip(entry["results"], entry["png"], strict=True):
            img = Image.open(io.BytesIO(png))
            img.load()
            out.append(FeatureVizResult(image=img.convert("RGB"), **{k: js[k] for k in names}))
        return out
    except (KeyError, TypeError, ValueError, OSError):
        return None


def render_cached(lm, layer: str, channels: Sequence[int] | None, *, objective: str = "channel",
                  param: str = "fft", steps: int = 256, lr: float = 0.05, size: int | None = None,
                  seed: int = 0, transforms: str = "standard", diversity: float = 0.0, n_per_channel: int = 1,
                  decorrelate: bool = True, progress: ProgressFn | None = None,
                  should_stop: Callable[[], bool] | None = None, use_cache: bool = True,
                  ) -> tuple[list[FeatureVizResult], bool]:
    """:func:`~vizcore.featureviz.render`, read from and written to the disk cache.

    Arguments are those of :func:`~vizcore.featureviz.render` (``objective`` and
    ``transforms`` as strings, since they are part of the key); ``use_cache=False``
    neither reads nor writes.

    Returns:
        ``(results, cached)``: the results, and whether they came from the cache (then
        nothing was optimised and ``progress`` was never called).
    """
    from vizcore.cache import load_torch, save_torch

    kwargs = dict(objective=objective, param=param, steps=steps, lr=lr, size=size, seed=seed,
                  transforms=transforms, diversity=diversity, n_per_channel=n_per_channel,
                  decorrelate=decorrelate)
    key = render_key(lm, layer, channels, **kwargs) if use_cache else None
    if key is not None and (entry := load_torch(CACHE_KIND, key)) is not None:
        hit = _unpack(entry)
        if hit is not None:
            return hit, True
    results = render(lm, layer, channels, progress=progress, should_stop=should_stop, **kwargs)
    if key is not None and results and all(r.steps_run == r.steps for r in results):
        save_torch(CACHE_KIND, key, _pack(results))
    return results, False
