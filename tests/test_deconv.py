"""The transposed-convolution explorer against torch.nn.ConvTranspose2d: shapes and gradients."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from vizcore.regions.deconv import CASES, DeconvError, arithmetic, connectivity, conv_output, transposed_output

GRID = [(i, k, s, p, a) for i, k, s, p, a in itertools.product((1, 3, 4, 6), (1, 2, 3, 4), (1, 2, 3), (0, 1, 2),
                                                               (0, 1, 2)) if a < s]


@pytest.mark.parametrize("i,k,s,p,a", GRID)
def test_sizes_and_connectivity_match_conv_transpose(i, k, s, p, a):
    conv = torch.nn.ConvTranspose2d(1, 1, k, stride=s, padding=p, output_padding=a, bias=False)
    torch.nn.init.ones_(conv.weight)
    x = torch.zeros(1, 1, i, i, requires_grad=True)
    try:
        expect = transposed_output(i, k, s, p, a)
    except DeconvError:  # torch refuses, or returns an empty output
        try:
            assert conv(x).shape[-1] <= 0
        except RuntimeError:
            pass
        return
    y = conv(x)
    assert tuple(y.shape[-2:]) == (expect, expect)
    m = connectivity(i, k, s, p, a)
    for o in range(expect):  # the gradient of output cell (o, 0) marks the input cells it touches
        (g,) = torch.autograd.grad(y[0, 0, o, 0], x, retain_graph=True)
        # 2-D: rows by the row connectivity, columns by that of column 0 (the axes are independent)
        np.testing.assert_array_equal((g[0, 0] != 0).numpy(), np.outer(m[o], m[0]), err_msg=f"output cell {o}")


@pytest.mark.parametrize("i,k,s,p", [(i, k, s, p) for i, k, s, p in itertools.product((3, 5, 8), (1, 3, 4), (1, 2, 3),
                                                                                       (0, 1, 2))])
def test_convolution_sizes_and_connectivity_match_conv2d(i, k, s, p):
    conv = torch.nn.Conv2d(1, 1, k, stride=s, padding=p, bias=False)
    torch.nn.init.ones_(conv.weight)
    x = torch.zeros(1, 1, i, i, requires_grad=True)
    if i + 2 * p < k:
        with pytest.raises(DeconvError):
            conv_output(i, k, s, p)
        return
    y = conv(x)
    o = conv_output(i, k, s, p)
    assert y.shape[-1] == o
    m = connectivity(i, k, s, p, transposed=False)
    for q in range(o):
        (g,) = torch.autograd.grad(y[0, 0, q, 0], x, retain_graph=True)
        np.testing.assert_array_equal((g[0, 0] != 0).numpy(), np.outer(m[q], m[0]))
    # The transpose of a convolution maps its output size back to the input size (up to the
    # cells the stride dropped, which output padding restores).
    a = (i + 2 * p - k) % s
    assert transposed_output(o, k, s, p, a) == i
    np.testing.assert_array_equal(connectivity(o, k, s, p, a), m.T)


def test_the_guides_cases_and_formulas():
    r = arithmetic(**CASES["no padding, unit strides"])
    assert (r.conv_out, r.transposed_out) == (2, 6)  # the guide's figure 4.1: 2x2 -> 4x4 from a 4x4 -> 2x2 conv
    assert r.formulas()["transposed"].endswith("= 6")
    s = arithmetic(**CASES["strides"])
    assert s.stretched == 9 and s.equivalent_padding == 2 and s.transposed_out == 11
    with pytest.raises(DeconvError, match="output padding"):
        arithmetic(4, 3, 2, 0, 2)
