"""Gradient ascent on the input: wires parameterisation, transforms and objective together.

:func:`render` optimises one image per (channel, copy) in a single batch: the
batch dimension holds the channels, the loss is the sum of each item's own
objective, and the forward pass stops at the target layer (nothing above it
matters). Results record everything needed to reproduce them.

References: Erhan et al. 2009, "Visualizing Higher-Layer Features of a Deep
Network"; Olah et al. 2017, "Feature Visualization", https://distill.pub/2017/feature-visualization/.
Differences from Lucent: seeded per-item initial noise (an item starts alike
alone or in a batch), transforms drawn from a seeded generator, hooks attached
per step through :func:`vizcore.tap.tap` and always removed.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from vizcore.featureviz import objectives as O
from vizcore.featureviz.param import make_param
from vizcore.featureviz.transforms import Transform, get_transforms
from vizcore.jobs import Stopped, Tick
from vizcore.tap import forward_until, tap

ProgressFn = Callable[[int, int, list], None]


@dataclass(frozen=True)
class FeatureVizResult:
    """One optimised image and how it was made.

    ``objective_start``/``objective_final`` are the unit objective (without the
    diversity term) of the untransformed image before and after optimisation.
    """

    model: str
    weights: dict
    layer: str
    module: str
    channel: int | None
    copy: int
    objective: str
    param: str
    decorrelate: bool
    transforms: str
    steps: int
    steps_run: int
    lr: float
    size: int
    seed: int
    diversity: float
    n_per_channel: int
    objective_start: float
    objective_final: float
    image: Image.Image = field(repr=False, compare=False)

    def settings(self) -> dict:
        """The keyword arguments of :func:`render` that reproduce this result."""
        return {"model": self.model, "weights": self.weights, "layer": self.layer, "objective": self.objective,
                "param": self.param, "decorrelate": self.decorrelate, "transforms": self.transforms,
                "steps": self.steps, "lr": self.lr, "size": self.size, "seed": self.seed,
                "diversity": self.diversity, "n_per_channel": self.n_per_channel}

    def to_json(self) -> dict:
        return {**self.settings(), "module": self.module, "channel": self.channel, "copy": self.copy,
                "steps_run": self.steps_run, "objective_start": self.objective_start,
                "objective_final": self.objective_final}


def unit_objective(kind: str | O.Objective, layer: str, channels: Sequence[int | None]) -> O.Objective:
    """The objective for a batch whose item ``b`` is about ``channels[b]``.

    ``kind`` is ``channel``, ``neuron`` or ``layer`` (DeepDream), optionally
    prefixed by ``-`` for the negative; an :class:`Objective`, or a string for
    :func:`~vizcore.featureviz.objectives.parse` (it contains ``:``), is used as is.
    """
    if isinstance(kind, O.Objective):
        return kind
    if ":" in kind:  # a full objective string such as "blocks.4.0:12 - 0.5*blocks.4.0:3"
        return O.parse(kind)
    neg = kind.startswith("-")
    base = kind[1:] if neg else kind
    if base == "layer":
        obj = O.layer(layer)
    elif base in ("channel", "neuron"):
        if any(c is None for c in channels):
            raise ValueError(f"the {base} objective needs channels")
        obj = (O.channel if base == "channel" else O.neuron)(layer, [int(c) for c in channels])
    else:
        raise ValueError(f"unknown objective {kind!r}; choose from channel, neuron, layer (or -KIND)")
    return -obj if neg else obj


def _needs_channels(kind: str | O.Objective) -> bool:
    return isinstance(kind, str) and kind.lstrip("-") in ("channel", "neuron")


class _Forward:
    """Normalise, run the model to the objective's layers (stopping there), return activations."""

    def __init__(self, lm, names: Sequence[str]):
        self.lm = lm
        self.names = list(names)
        self.paths = [lm.resolve(n) for n in self.names]
        pre = lm.spec.preprocess
        dev = lm.device
        self.mean = torch.tensor(pre.mean, device=dev).view(1, 3, 1, 1)
        self.inv_std = 1.0 / torch.tensor(pre.std, device=dev).view(1, 3, 1, 1)

    def __call__(self, x01: torch.Tensor) -> dict[str, torch.Tensor]:
        x = (x01 - self.mean) * self.inv_std
        with tap(self.lm.model, self.paths, stop=True, detach=False, lock=self.lm.lock) as store:
            forward_until(self.lm.model, x)
            return {n: store[p] for n, p in zip(self.names, self.paths)}


def _check_channels(channels: Sequence[int | None], acts: torch.Tensor, layer: str) -> None:
    n = int(acts.shape[1])
    bad = [c for c in channels if c is not None and not 0 <= c < n]
    if bad:
        raise ValueError(f"layer {layer!r} has {n} channels (0-{n - 1}); got {', '.join(map(str, bad))}")


def to_pil(img: torch.Tensor) -> Image.Image:
    """``(3, H, W)`` in ``[0, 1]`` to an RGB PIL image."""
    arr = (img.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(np.ascontiguousarray(arr), "RGB")


@dataclass(frozen=True)
class StepTick(Tick):
    """A :class:`vizcore.jobs.Tick` of :func:`render_batch`: the step done, and each item's objective
    on that step's transformed image (``values``)."""

    values: tuple = ()


def render(lm, layer: str, channels: Sequence[int] | None, *, objective: str | O.Objective = "channel",
           param: str = "fft", steps: int = 256, lr: float = 0.05, size: int | None = None, seed: int = 0,
           transforms: str | Transform | Sequence[Transform] = "standard", diversity: float = 0.0,
           n_per_channel: int = 1, decorrelate: bool = True, progress: ProgressFn | None = None,
           should_stop: Callable[[], bool] | None = None) -> list["FeatureVizResult"]:
    """Optimise images that maximise ``objective`` for each channel of ``layer``: :func:`render_batch`
    to the end.

    Args:
        lm: a :class:`vizcore.models.LoadedModel` (its parameters are never changed).
        layer: tap name or module path.
        channels: channel indices; each gets ``n_per_channel`` images, all in one batch.
            Ignored (may be ``None``) for the ``layer`` objective or a custom one.
        objective: ``channel`` (mean over positions), ``neuron`` (centre position),
            ``layer`` (DeepDream), any of them with a leading ``-``, an
            :class:`~vizcore.featureviz.objectives.Objective` over tap names, or a
            string for :func:`~vizcore.featureviz.objectives.parse` such as
            ``"blocks.4.0:12 - blocks.4.0:3"`` (for these ``channels`` is ignored).
        param: ``fft`` (Fourier, decorrelated colour) or ``pixel``.
        steps, lr: Adam steps and learning rate.
        size: image side in pixels (default: the model's input size).
        seed: seeds the initial noise (per item) and the random transforms.
        transforms: preset name (``standard``, ``lucent``, ``light``, ``none``) or transforms.
        diversity: weight of the diversity term (Gram-matrix cosine similarity
            between the copies of the same channel); needs ``n_per_channel > 1``.
        progress: called after each step with ``(step, steps, values)``, values
            being each item's objective on that step's transformed image.
        should_stop: polled before each step; returning ``True`` raises :class:`vizcore.jobs.Stopped`
            whose ``partial`` holds the images so far (``steps_run < steps``; ``None`` before step 1).

    Returns:
        One :class:`FeatureVizResult` per item, ordered by channel then copy.
    """
    work = render_batch(lm, layer, channels, objective=objective, param=param, steps=steps, lr=lr, size=size,
                        seed=seed, transforms=transforms, diversity=diversity, n_per_channel=n_per_channel,
                        decorrelate=decorrelate)
    last = None
    while True:
        if should_stop is not None and should_stop():
            work.close()
            raise Stopped(f"stopped after {0 if last is None else last.done} of {steps} steps",
                          partial=None if last is None else last.partial())
        try:
            last = next(work)
        except StopIteration as e:
            return e.value
        if progress is not None and last.done:
            progress(last.done, last.total, list(last.values))


def render_batch(lm, layer: str, channels: Sequence[int] | None, *, objective: str | O.Objective = "channel",
                 param: str = "fft", steps: int = 256, lr: float = 0.05, size: int | None = None, seed: int = 0,
                 transforms: str | Transform | Sequence[Transform] = "standard", diversity: float = 0.0,
                 n_per_channel: int = 1, decorrelate: bool = True):
    """The optimisation of one batch of channels as a generator (arguments as :func:`render`).

    Pure: it yields a :class:`StepTick` after each optimisation step (its ``partial``, a
    function, makes the images so far on request) and returns the results; it neither caches
    nor polls anything, so a job (:class:`vizcore.featureviz.FeatVizJob`) or a Ray actor can
    drive it, stop it between steps and resume it.
    """
    size = int(size or lm.spec.input_size)
    channels = None if channels is None else [int(c) for c in channels]
    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a whole number of at least 1, not {steps!r}: with no "
                         "optimisation step the image is the random start, not a visualisation")
    if size < 16 or n_per_channel < 1:
        raise ValueError("need size >= 16 and n_per_channel >= 1")
    if _needs_channels(objective):
        if not channels:
            raise ValueError("no channels given")
        items = [(c, k) for c in channels for k in range(n_per_channel)]
    else:
        items = [(None, k) for k in range(n_per_channel)]
    item_channels = [c for c, _ in items]
    obj = unit_objective(objective, layer, item_channels)
    total = obj
    if diversity:
        total = obj + float(diversity) * O.diversity(layer, groups=item_channels)
    forward = _Forward(lm, total.layers)
    tfm = get_transforms(transforms)
    rng = random.Random(seed)
    device = lm.device
    params, make_image = make_param(param, size, items, seed=seed, decorrelate=decorrelate, device=device)

    with torch.no_grad():
        acts = forward(make_image())
        _check_channels(item_channels, acts[layer] if layer in acts else next(iter(acts.values())), layer)
        start = obj(acts).float().cpu().tolist()

    obj_name = objective if isinstance(objective, str) else repr(objective)

    def results(steps_run: int) -> list[FeatureVizResult]:
        with torch.no_grad():
            img = make_image()
            final = obj(forward(img)).float().cpu().tolist()
        common = dict(model=lm.name, weights=lm.weights.to_json(), layer=layer, module=lm.resolve(layer),
                      objective=obj_name, param=param, decorrelate=decorrelate, transforms=repr(tfm), steps=steps,
                      steps_run=steps_run, lr=float(lr), size=size, seed=seed, diversity=float(diversity),
                      n_per_channel=n_per_channel)
        return [FeatureVizResult(channel=c, copy=k, objective_start=float(s), objective_final=float(f),
                                 image=to_pil(img[i]), **common)
                for i, ((c, k), s, f) in enumerate(zip(items, start, final))]

    try:  # the fused kernel does the whole update in one pass (4x faster on CPU than foreach)
        opt = torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        opt = torch.optim.Adam(params, lr=lr)
    yield StepTick(0, steps, (lambda: results(0)))  # set up: the total, before any step
    for step in range(steps):
        opt.zero_grad(set_to_none=True)
        acts = forward(tfm(make_image(), rng))
        values = total(acts)
        (-values.sum()).backward()
        opt.step()
        shown = obj(acts) if total is not obj else values
        yield StepTick(step + 1, steps, (lambda n=step + 1: results(n)), tuple(shown.detach().float().cpu().tolist()))
    return results(steps)


def best_dataset_value(lm, layer: str, channels: Sequence[int] | None, dataset=None, size: int | None = None, *,
                       objective: str = "channel", batch_size: int = 16, workers: int = 0) -> list[float]:
    """The highest value of the same unit objective over a dataset's images, per channel.

    Images are preprocessed like the model's own recipe but cropped to ``size``
    (resized in the same proportion), so values compare with :func:`render`'s
    at that size. ``dataset`` is an :class:`~vizcore.data.ImageDataset`, a spec
    for :func:`~vizcore.data.open_dataset`, or ``None`` for the built-in samples.

    Returns:
        One value per channel (one value in all for the ``layer`` objective).
    """
    from vizcore.data import iter_batches, open_dataset, samples_dataset
    from vizcore.models import Preprocess

    if dataset is None:
        dataset = samples_dataset()
    elif isinstance(dataset, str):
        dataset = open_dataset(dataset)
    pre = lm.spec.preprocess
    size = int(size or pre.crop)
    recipe = Preprocess(resize=max(size, round(size * pre.resize / pre.crop)), crop=size, mean=pre.mean,
                        std=pre.std, interpolation=pre.interpolation)
    chans: list[int | None] = [int(c) for c in channels] if _needs_channels(objective) else [None]
    path = lm.resolve(layer)
    best = [-math.inf] * len(chans)
    for xs, _idx in iter_batches(dataset, recipe.transform(), batch_size=batch_size, workers=workers):
        with torch.no_grad(), tap(lm.model, [path], stop=True, lock=lm.lock) as store:
            forward_until(lm.model, xs.to(lm.device))
            acts = {layer: store[path]}
        _check_channels(chans, acts[layer], layer)
        n = xs.shape[0]
        for i, c in enumerate(chans):
            v = unit_objective(objective, layer, [c] * n)(acts)
            best[i] = max(best[i], float(v.max()))
    return best
