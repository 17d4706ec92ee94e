"""Robustness transforms: small random changes applied to the image at every step.

Optimising through random jitter, scaling and rotation keeps gradient ascent
from exploiting single-pixel patterns the network would never see twice, and is
the main reason visualisations show structure rather than noise (Olah et al.,
"Feature Visualization", Distill 2017, section "Transformation robustness";
Mordvintsev et al. 2015 "Inceptionism").

Each factory returns a :class:`Transform`: a callable ``t(x, rng) -> x`` on
``(B, 3, H, W)`` images in ``[0, 1]``, where ``rng`` is a :class:`random.Random`
owned by the renderer (so runs are reproducible under a seed). The same random
draw is applied to every batch item, so items stay independent of each other.
Transforms chain with :func:`compose`; ``repr`` gives a description for the
result's JSON.
"""
from __future__ import annotations

import math
import random
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

FILL = 0.5  # grey, the value padding and rotation corners take


class Transform:
    """A named ``(x, rng) -> x`` function; ``repr`` is how it is recorded."""

    def __init__(self, fn: Callable[[torch.Tensor, random.Random], torch.Tensor], desc: str):
        self._fn, self._desc = fn, desc

    def __call__(self, x: torch.Tensor, rng: random.Random) -> torch.Tensor:
        return self._fn(x, rng)

    def __repr__(self) -> str:
        return self._desc


def pad(width: int, *, value: float = FILL) -> Transform:
    """Pad every side by ``width`` pixels of constant ``value`` (grey by default)."""
    def fn(x, _rng):
        return F.pad(x, (width, width, width, width), mode="constant", value=value)

    return Transform(fn, f"pad({width})")


def jitter(d: int) -> Transform:
    """Crop a random ``(H - d, W - d)`` window: a shift of up to ``d`` pixels."""
    if d < 1:
        raise ValueError("jitter needs d >= 1")

    def fn(x, rng):
        h, w = x.shape[-2:]
        dy, dx = rng.randrange(d + 1), rng.randrange(d + 1)
        return x[..., dy:dy + h - d, dx:dx + w - d]

    return Transform(fn, f"jitter({d})")


def random_scale(scales: Sequence[float]) -> Transform:
    """Resize by a factor drawn from ``scales`` (bilinear)."""
    scales = tuple(float(s) for s in scales)

    def fn(x, rng):
        s = rng.choice(scales)
        if s == 1.0:
            return x
        h, w = x.shape[-2:]
        return F.interpolate(x, size=(max(1, round(h * s)), max(1, round(w * s))), mode="bilinear",
                             align_corners=False)

    return Transform(fn, f"random_scale({min(scales):g}..{max(scales):g})")


def _rotation_grid(x: torch.Tensor, degrees: float) -> torch.Tensor:
    a = math.radians(degrees)
    c, s = math.cos(a), math.sin(a)
    theta = torch.tensor([[c, -s, 0.0], [s, c, 0.0]], dtype=x.dtype, device=x.device)
    return F.affine_grid(theta.expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)


def random_rotate(angles: Sequence[float]) -> Transform:
    """Rotate about the centre by an angle (degrees) drawn from ``angles``; corners grey."""
    angles = tuple(float(a) for a in angles)

    def fn(x, rng):
        a = rng.choice(angles)
        if a == 0.0:
            return x
        out = F.grid_sample(x - FILL, _rotation_grid(x, a), mode="bilinear", padding_mode="zeros",
                            align_corners=False)
        return out + FILL

    return Transform(fn, f"random_rotate({min(angles):g}..{max(angles):g})")


def compose(*transforms: Transform) -> Transform:
    """Apply ``transforms`` left to right."""
    ts = tuple(transforms)

    def fn(x, rng):
        for t in ts:
            x = t(x, rng)
        return x

    return Transform(fn, "[" + ", ".join(repr(t) for t in ts) + "]")


def identity() -> Transform:
    return Transform(lambda x, _rng: x, "[]")


def random_affine(*, scales: Sequence[float] = (1.0,), angles: Sequence[float] = (0.0,),
                  shift: int = 0, pad: int = 0) -> Transform:
    """Scale, rotate, shift and pad in one bilinear resample that keeps the image size.

    Equivalent to ``pad(pad)``, a random shift of up to ``shift`` pixels,
    ``random_scale(scales)`` and ``random_rotate(angles)`` followed by a crop
    back to the input size, but with one ``grid_sample`` and a constant shape
    (so convolution kernels tuned for one input shape are reused every step).
    Areas outside the image read as grey.
    """
    scales = tuple(float(s) for s in scales)
    angles = tuple(float(a) for a in angles)

    def fn(x, rng):
        h, w = x.shape[-2:]
        zoom = rng.choice(scales) * min(h, w) / (min(h, w) + 2 * pad)
        a = math.radians(rng.choice(angles))
        dy, dx = (rng.uniform(-shift, shift) for _ in range(2))
        c, s = math.cos(a) / zoom, math.sin(a) / zoom
        # output coordinates (normalised to [-1, 1]) -> input coordinates
        theta = torch.tensor([[c, -s, 2 * dx / w], [s, c, 2 * dy / h]], dtype=x.dtype, device=x.device)
        grid = F.affine_grid(theta[None], [1, x.shape[1], h, w], align_corners=False)
        out = F.grid_sample(x - FILL, grid.expand(x.shape[0], -1, -1, -1), mode="bilinear",
                            padding_mode="zeros", align_corners=False)
        return out + FILL

    desc = (f"random_affine(scale {min(scales):g}..{max(scales):g}, rotate {min(angles):g}..{max(angles):g}, "
            f"shift {shift}, pad {pad})")
    return Transform(fn, desc)


def lucent_chain() -> Transform:
    """The classic chain (after Lucent's ``standard_transforms``): the image size varies per step.

    Pad 12 px, jitter 8 px, scale 0.95-1.05, rotate -8..8 degrees, jitter 4 px.
    """
    return compose(
        pad(12),
        jitter(8),
        random_scale([1 + (i - 5) / 100 for i in range(11)]),
        random_rotate(list(range(-8, 9, 2))),
        jitter(4),
    )


def standard() -> Transform:
    """The default: :func:`random_affine` with the strength of :func:`lucent_chain`, fixed size.

    Pad 6 px a side, shift up to 6 px, scale 0.95-1.05, rotate -8..8 degrees.
    """
    return random_affine(scales=[1 + (i - 5) / 100 for i in range(11)], angles=list(range(-8, 9, 2)),
                         shift=6, pad=6)


def light() -> Transform:
    """A milder default for small images: shift up to 4 px, pad 2 px, scale 0.97-1.03."""
    return random_affine(scales=[0.97, 1.0, 1.03], shift=4, pad=2)


PRESETS: dict[str, Callable[[], Transform]] = {"standard": standard, "lucent": lucent_chain, "light": light,
                                                "none": identity}


def get_transforms(spec: str | Transform | Sequence[Transform] | None) -> Transform:
    """``"standard"``, ``"lucent"``, ``"light"``, ``"none"``/``None``, one transform, or a list to compose."""
    if spec is None:
        return identity()
    if isinstance(spec, Transform):
        return spec
    if isinstance(spec, str):
        try:
            return PRESETS[spec]()
        except KeyError:
            raise ValueError(f"unknown transforms {spec!r}; choose from {', '.join(PRESETS)}") from None
    return compose(*spec)
