"""Convolution and transposed-convolution arithmetic, after Dumoulin & Visin, "A guide to
convolution arithmetic for deep learning" (2016, https://arxiv.org/abs/1603.07285).

Per axis, for input size ``i``, kernel ``k``, stride ``s``, padding ``p`` (and output padding
``a`` of the transpose):

- convolution: ``o = floor((i + 2p - k) / s) + 1`` (relationship 6 of the guide);
- transposed convolution: ``o = (i - 1) s - 2p + k + a`` (relationship 14), equivalent to a
  unit-stride convolution of the input with ``s - 1`` zeros inserted between cells and
  ``k - p - 1`` cells of padding (``+ a`` on one side).

:func:`connectivity` says which input cells each output cell touches, the picture of the guide's
figures; the tests check it against ``torch.nn.ConvTranspose2d`` shapes and gradients.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CASES = {
    "no padding, unit strides": dict(i=4, k=3, s=1, p=0, a=0),
    "padding": dict(i=5, k=4, s=1, p=2, a=0),
    "strides": dict(i=5, k=3, s=2, p=0, a=0),
    "padding and strides": dict(i=5, k=3, s=2, p=1, a=0),
    "padding, strides and output padding": dict(i=6, k=3, s=2, p=1, a=1),
}
"""The guide's cases (its figures 2.1-2.7 and 4.1-4.7), as presets of the explorer."""


class DeconvError(ValueError):
    """Settings that give no output (kernel larger than the padded input, output padding >= stride, ...)."""


def conv_output(i: int, k: int, s: int = 1, p: int = 0) -> int:
    """Output size of a convolution (relationship 6)."""
    _check(i, k, s, p, 0)
    o = (i + 2 * p - k) // s + 1
    if o < 1:
        raise DeconvError(f"a {k}-cell kernel does not fit a {i}-cell input with padding {p}")
    return o


def transposed_output(i: int, k: int, s: int = 1, p: int = 0, a: int = 0) -> int:
    """Output size of a transposed convolution (relationship 14; PyTorch's ConvTranspose formula)."""
    _check(i, k, s, p, a)
    o = (i - 1) * s - 2 * p + k + a
    if o < 1:
        raise DeconvError(f"padding {p} removes the whole output ({o} cells)")
    return o


def _check(i: int, k: int, s: int, p: int, a: int) -> None:
    if min(i, k, s) < 1 or p < 0 or a < 0:
        raise DeconvError("input, kernel and stride must be at least 1, padding and output padding at least 0")
    if a >= max(s, 1) and a > 0:
        raise DeconvError(f"output padding ({a}) must be smaller than the stride ({s})")


def connectivity(i: int, k: int, s: int = 1, p: int = 0, a: int = 0, *, transposed: bool = True) -> np.ndarray:
    """``(out, in)`` booleans: output cell ``o`` touches input cell ``n`` (one axis).

    Convolution: ``o`` reads ``n = o s - p + t`` for kernel taps ``t < k``. Transposed: input ``n``
    writes ``o = n s - p + t``, so the transposed matrix is the convolution's, transposed
    (Dumoulin & Visin's section 4).
    """
    if transposed:
        o = transposed_output(i, k, s, p, a)
        m = np.zeros((o, i), dtype=bool)
        for n in range(i):
            for t in range(k):
                q = n * s - p + t
                if 0 <= q < o:
                    m[q, n] = True
        return m
    o = conv_output(i, k, s, p)
    m = np.zeros((o, i), dtype=bool)
    for q in range(o):
        for t in range(k):
            n = q * s - p + t
            if 0 <= n < i:
                m[q, n] = True
    return m


@dataclass(frozen=True)
class Arithmetic:
    """One setting, both ways: the convolution ``i -> o`` and its transpose ``o -> i'`` (and of ``i``)."""

    i: int
    k: int
    s: int
    p: int
    a: int
    conv_out: int | None
    transposed_out: int
    stretched: int
    equivalent_padding: int

    def formulas(self) -> dict[str, str]:
        """The size formulas with the numbers filled in."""
        f = {"transposed": f"o = (i - 1)·s - 2p + k + a = ({self.i} - 1)·{self.s} - 2·{self.p} + {self.k} + {self.a} "
                           f"= {self.transposed_out}",
             "equivalent": f"= a unit-stride {self.k}x{self.k} convolution of the input stretched to "
                           f"{self.stretched} cells (s - 1 = {self.s - 1} zeros between cells), padded by "
                           f"k - p - 1 = {self.equivalent_padding}" + (f" (+{self.a} on one side)" if self.a else "")}
        if self.conv_out is not None:
            f["conv"] = (f"o = ⌊(i + 2p - k) / s⌋ + 1 = ⌊({self.i} + 2·{self.p} - {self.k}) / {self.s}⌋ + 1 "
                         f"= {self.conv_out}")
        return f


def arithmetic(i: int, k: int, s: int = 1, p: int = 0, a: int = 0) -> Arithmetic:
    """The sizes of one setting (``conv_out`` is ``None`` where the convolution has no output)."""
    t = transposed_output(i, k, s, p, a)
    try:
        c = conv_output(i, k, s, p)
    except DeconvError:
        c = None
    return Arithmetic(i, k, s, p, a, c, t, i + (i - 1) * (s - 1), k - p - 1)
