"""The hook context manager: exact captures, early stop, cleanup, thread isolation."""
from __future__ import annotations

import threading

import pytest
import torch
import torch.nn as nn

from vizcore.tap import forward_until, tap


class Counter(nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x


def tiny() -> nn.Sequential:
    conv = nn.Conv2d(1, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight[:] = torch.tensor([1.0, -2.0]).view(2, 1, 1, 1)
    return nn.Sequential(conv, nn.ReLU(), Counter()).eval()


def test_captures_exact_values_and_removes_hooks():
    m = tiny()
    x = torch.arange(4.0).view(1, 1, 2, 2) - 1
    with tap(m, ["0", "1"]) as store:
        m(x)
        assert torch.equal(store["0"][0, 0], x[0, 0])
        assert torch.equal(store["0"][0, 1], -2 * x[0, 0])
        assert torch.equal(store["1"], store["0"].clamp(min=0))
    assert all(not mod._forward_hooks for mod in m.modules())
    assert not m._forward_pre_hooks


def test_stop_skips_later_layers_and_reduce_applies():
    m = tiny()
    with tap(m, ["1"], stop=True, reduce=lambda _p, t: t.amax(dim=(2, 3))) as store:
        out = forward_until(m, torch.ones(3, 1, 4, 4))
        assert out is None and m[2].calls == 0
        assert store["1"].shape == (3, 2)
        # A second pass starts afresh and stops again.
        forward_until(m, torch.ones(1, 1, 4, 4))
        assert store["1"].shape == (1, 2) and m[2].calls == 0


def test_hooks_removed_after_exception():
    m = tiny()
    with pytest.raises(RuntimeError):
        with tap(m, ["0"]):
            raise RuntimeError("boom")
    assert all(not mod._forward_hooks for mod in m.modules())


def test_unknown_module():
    with pytest.raises(KeyError, match="no module named nope"):
        with tap(tiny(), ["nope"]):
            pass


def test_other_threads_do_not_leak_into_capture():
    m = tiny()
    barrier = threading.Barrier(2)
    seen_by_other: list = []

    def other():
        barrier.wait()
        for _ in range(50):
            m(torch.full((1, 1, 2, 2), 7.0))
        seen_by_other.append(True)

    t = threading.Thread(target=other)
    with tap(m, ["0"]) as store:
        t.start()
        barrier.wait()
        for _ in range(50):
            m(torch.ones(1, 1, 2, 2))
            assert torch.equal(store["0"][0, 0], torch.ones(2, 2))
    t.join()
    assert seen_by_other


def test_clone_keeps_the_output_from_later_in_place_operations():
    conv = nn.Conv2d(1, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight[:] = torch.tensor([1.0, -2.0]).view(2, 1, 1, 1)
    m = nn.Sequential(conv, nn.ReLU(inplace=True)).eval()
    x = (torch.arange(4.0).view(1, 1, 2, 2) - 1).requires_grad_(True)
    with tap(m, ["0"]) as store:
        m(x)
        assert (store["0"] >= 0).all()  # overwritten by the in-place ReLU
    with torch.enable_grad(), tap(m, ["0"], detach=False, clone=True) as store:
        out = m(x)
        a = store["0"]
        assert torch.equal(a[0, 1], -2 * x[0, 0].detach())  # as the convolution returned it
        (g,) = torch.autograd.grad(out.sum(), a)
        assert torch.equal(g, (a > 0).float())  # the ReLU's gradient, taken at the convolution's output
    assert all(not mod._forward_hooks for mod in m.modules())
