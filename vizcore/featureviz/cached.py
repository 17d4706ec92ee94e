"""Feature visualisation as jobs (:mod:`vizcore.jobs`): the same request twice optimises once.

A :class:`FeatVizJob` renders ONE batch of channels of one layer with given settings
(:func:`~vizcore.featureviz.render.render_batch`, pure): it ticks after each optimisation
step, its partial result is the images so far, and it is cached per batch. Entries live
under ``$VIZCORE_CACHE/featviz``, keyed by :func:`vizcore.identity.result_key` (the weights
by content, the preprocessing, the channels and every setting that changes the images).
Each entry holds the results as JSON plus the images as PNG bytes (lossless, so a cached
image is the rendered one pixel for pixel), written through :mod:`vizcore.cache` by the job
layer. A run stopped before its last step raises :class:`vizcore.jobs.Stopped` and is never cached.

A whole layer (or network) is :func:`featviz_jobs`: independent batch jobs, each runnable
anywhere (a Ray actor that holds the model can run ``jobs.run(job)`` and gets the same
cache entry as this process).
"""
from __future__ import annotations

import io
from dataclasses import fields
from typing import Callable, Sequence

from PIL import Image

from vizcore.featureviz.render import FeatureVizResult, ProgressFn, render, render_batch
from vizcore.jobs import StepJob

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


class FeatVizJob(StepJob[list]):
    """One batch of channels of one layer, rendered with given settings (a :class:`vizcore.jobs.StepJob`).

    Settings are those of :func:`~vizcore.featureviz.render` with ``objective`` and ``transforms``
    as strings (they are part of the cache key). Units are optimisation steps.
    """

    kind = CACHE_KIND
    unit = "steps"

    def __init__(self, lm, layer: str, channels: Sequence[int] | None, **settings):
        self.lm, self.layer = lm, layer
        self.channels = None if channels is None else [int(c) for c in channels]
        self.settings = dict(settings)
        self.total = int(self.settings.get("steps", 256))

    def key(self) -> str:
        return render_key(self.lm, self.layer, self.channels, **self.settings)

    def describe(self) -> str:
        return f"featviz {self.layer}"

    def work(self):
        return (yield from render_batch(self.lm, self.layer, self.channels, **self.settings))

    def encode(self, results: list[FeatureVizResult]) -> dict:
        return _pack(results)

    def decode(self, entry: dict) -> list[FeatureVizResult]:
        hit = _unpack(entry)
        if hit is None:
            raise ValueError("a feature-visualisation entry of another version")
        return hit


def featviz_jobs(lm, layer: str, channels: Sequence[int], *, batch: int = 16, **settings) -> list[FeatVizJob]:
    """The jobs that render ``channels`` of ``layer``, ``batch`` channels each (the last one shorter).

    Each is independent and cached on its own, so a precompute of a whole network can send them
    to workers in any order; the images do not depend on how channels are batched beyond
    floating-point noise (each item has its own seeded start, and the transforms' seeded draws
    are shared by every item of a batch whatever its size).
    """
    if batch < 1:
        raise ValueError("batch must be at least 1")
    chans = [int(c) for c in channels]
    return [FeatVizJob(lm, layer, chans[i:i + batch], **settings) for i in range(0, len(chans), batch)]


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

    Raises:
        vizcore.jobs.Stopped: ``should_stop`` said so (the images so far in ``partial``; nothing cached).
    """
    kwargs = dict(objective=objective, param=param, steps=steps, lr=lr, size=size, seed=seed,
                  transforms=transforms, diversity=diversity, n_per_channel=n_per_channel,
                  decorrelate=decorrelate)
    job = FeatVizJob(lm, layer, channels, **kwargs)
    if use_cache and (hit := job.load()) is not None:
        return hit, True
    results = render(lm, layer, channels, progress=progress, should_stop=should_stop, **kwargs)  # may raise Stopped
    if use_cache:
        job.save(results)
    return results, False
