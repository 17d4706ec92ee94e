"""Image parameterisations: the tensors gradient ascent changes, and how they become an image.

Each parameterisation returns ``(params, make_image)``: a list of leaf tensors to
optimise and a function ``make_image() -> (B, 3, H, W)`` with values in ``[0, 1]``.
The model's own mean/std normalisation is applied later, by the renderer.

Two parameterisations, after Olah et al., "Feature Visualization" (Distill 2017,
https://distill.pub/2017/feature-visualization/, section "Preconditioning"):

* ``pixel``: one free value per pixel and colour channel.
* ``fft``: the image's 2-D Fourier coefficients, scaled by ``1 / frequency``
  so that every frequency has comparable influence. Plain pixel gradients are
  dominated by high frequencies; this whitening is what turns high-frequency
  noise into visible structure within a few hundred steps.

Both pass through a colour decorrelation (see :data:`COLOUR_SQRT_COV`) and a
sigmoid, so every value of the parameters gives a valid image.

Every batch item has its own random generator, seeded from ``(seed, key)``, so an
item starts from the same noise whether it is optimised alone or in a batch.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

ImageFn = Callable[[], torch.Tensor]

# Square root of the RGB covariance of ImageNet photographs, columns ordered by
# decreasing variance (luminance, red-vs-blue, green-vs-magenta), scaled so the
# longest column has norm 1.
#
# How it was computed (reproducible with :func:`colour_sqrt_cov`): every one of the
# 1000 validation photographs in ``shared/data/imagenet-samples`` was reduced to
# 32x32, its pixels (RGB in [0, 1]) pooled, the 3x3 covariance C taken, and
# ``U diag(sqrt(lambda))`` from C = U diag(lambda) U^T formed (eigenvalues
# 0.180, 0.0152, 0.0038). Each column's sign is chosen so its largest entry is
# positive. Independent unit-variance noise ``z`` then maps to colours
# ``M z`` whose covariance is proportional to ImageNet's: the optimiser works in
# decorrelated colour space, where one step changes luminance and chroma evenly.
# Lucent's published matrix agrees with this one to two decimals, up to column
# order and sign.
COLOUR_SQRT_COV = np.array([
    [0.5632, 0.2123, -0.0576],
    [0.5794, -0.0021, 0.1192],
    [0.5892, -0.2008, -0.0621],
], dtype=np.float32)


def colour_sqrt_cov(paths: Sequence[str | Path], *, side: int = 32) -> np.ndarray:
    """Recompute :data:`COLOUR_SQRT_COV` from photographs (3x3, max column norm 1).

    Args:
        paths: image files; each is reduced to ``side`` x ``side`` pixels.
        side: resolution used for pooling pixels (colour statistics barely depend on it).
    """
    from PIL import Image

    pixels = []
    for p in paths:
        with Image.open(p) as im:
            im.draft("RGB", (2 * side, 2 * side))
            im = im.convert("RGB").resize((side, side))
            pixels.append(np.asarray(im, dtype=np.float64).reshape(-1, 3) / 255.0)
    cov = np.cov(np.concatenate(pixels).T)
    eigval, eigvec = np.linalg.eigh(cov)
    order = np.argsort(eigval)[::-1]
    sq = eigvec[:, order] * np.sqrt(np.clip(eigval[order], 0, None))
    for j in range(3):
        if sq[np.argmax(np.abs(sq[:, j])), j] < 0:
            sq[:, j] = -sq[:, j]
    return (sq / np.linalg.norm(sq, axis=0).max()).astype(np.float32)


def item_generator(seed: int, key: object, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator seeded from ``(seed, key)``: the same key gives the same noise in any batch."""
    digest = hashlib.sha256(f"{seed}|{key}".encode()).digest()
    g = torch.Generator(device="cpu")
    g.manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
    return g


def _noise(shape: Sequence[int], keys: Sequence[object], seed: int, sd: float) -> torch.Tensor:
    """Gaussian noise ``(len(keys), *shape)``, each item from its own seeded generator."""
    return torch.stack([torch.randn(*shape, generator=item_generator(seed, k)) * sd for k in keys])


def to_valid_rgb(t: torch.Tensor, *, decorrelate: bool = True) -> torch.Tensor:
    """Map unconstrained ``(B, 3, H, W)`` values to RGB in ``[0, 1]`` (colour matrix, sigmoid)."""
    if decorrelate:
        m = torch.as_tensor(COLOUR_SQRT_COV, device=t.device, dtype=t.dtype)
        t = torch.einsum("ij,bjhw->bihw", m, t)
    return torch.sigmoid(t)


def pixel_image(size: int, keys: Sequence[object], *, seed: int = 0, sd: float = 0.01,
                decorrelate: bool = True, device: torch.device | str = "cpu") -> tuple[list[torch.Tensor], ImageFn]:
    """Free pixel values; one image per key, shape ``(len(keys), 3, size, size)``."""
    t = _noise((3, size, size), keys, seed, sd).to(device).requires_grad_(True)
    m = torch.as_tensor(COLOUR_SQRT_COV, device=device) if decorrelate else None

    def make_image() -> torch.Tensor:
        x = torch.einsum("ij,bjhw->bihw", m, t) if m is not None else t
        return torch.sigmoid(x)

    return [t], make_image


def spectrum_scale(size: int, *, decay_power: float = 1.0) -> torch.Tensor:
    """``(size, size // 2 + 1)`` weights ``size / (4 f**decay_power)`` for real-FFT coefficients.

    ``f`` is the frequency in cycles per image, at least 1 so the DC term is not
    blown up. Used with an orthonormal inverse FFT (which divides by ``size``), a
    pixel is ``sum(coefficient / f) / 4``: a coefficient's influence falls as
    ``1/f``, the amplitude spectrum of natural images, so gradient steps no
    longer favour high frequencies. The overall gain makes Adam's default
    learning rate of 0.05 move pixel values by a few hundredths per step early on.
    """
    fy = torch.fft.fftfreq(size)[:, None] * size
    fx = torch.fft.rfftfreq(size)[None, :] * size
    f = torch.sqrt(fx * fx + fy * fy).clamp(min=1.0)
    return f.pow(-decay_power) * (size / 4.0)


def fft_image(size: int, keys: Sequence[object], *, seed: int = 0, sd: float = 0.01,
              decay_power: float = 1.0, decorrelate: bool = True,
              device: torch.device | str = "cpu") -> tuple[list[torch.Tensor], ImageFn]:
    """Fourier-parameterised images (Olah et al. 2017); ``(len(keys), 3, size, size)``.

    The parameters are the real and imaginary parts of ``rfft2`` coefficients,
    weighted by :func:`spectrum_scale` and inverted with ``irfft2``.
    """
    h, w = size, size // 2 + 1
    spec = _noise((3, h, w, 2), keys, seed, sd).to(device).requires_grad_(True)
    scale = spectrum_scale(size, decay_power=decay_power).to(device)
    m = torch.as_tensor(COLOUR_SQRT_COV, device=device) if decorrelate else None

    def make_image() -> torch.Tensor:
        coeffs = torch.view_as_complex(spec) * scale
        x = torch.fft.irfft2(coeffs, s=(size, size), norm="ortho")
        if m is not None:
            x = torch.einsum("ij,bjhw->bihw", m, x)
        return torch.sigmoid(x)

    return [spec], make_image


PARAMS = {"fft": fft_image, "pixel": pixel_image}


def make_param(name: str, size: int, keys: Sequence[object], **kwargs) -> tuple[list[torch.Tensor], ImageFn]:
    """Look up a parameterisation by name (``fft`` or ``pixel``) and build it."""
    try:
        fn = PARAMS[name]
    except KeyError:
        raise ValueError(f"unknown parameterisation {name!r}; choose from {', '.join(PARAMS)}") from None
    return fn(size, keys, **kwargs)
