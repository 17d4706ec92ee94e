"""Concurrent sessions sharing one cached model: every thread gets exactly what it would
get alone, and no hook survives."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from vizcore import activations as A
from vizcore.data import load_sample
from vizcore.models import load_model

JOBS = [  # (image, layers for extract, layers for Grad-CAM)
    ("cat", None, ["blocks.5.3"]),
    ("coffee", ["stem", "blocks.3.0"], ["head"]),
    ("astronaut", ["head", "blocks.1.1", "logits"], ["blocks.4.2", "head"]),
    ("rocket", ["blocks.6.0"], ["blocks.3.2"]),
]


def _no_hooks(model: torch.nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
               and not getattr(m, "_backward_pre_hooks", None) for m in model.modules())


def _run(lm, image, layers, cam_layers):
    res = A.extract(lm, image, layers)
    heat = A.gradcam(lm, image, cam_layers)
    preds = A.predict(lm, [image], topk=3)[0]
    return res, heat, preds


def _same(a, b) -> None:
    res_a, heat_a, pred_a = a
    res_b, heat_b, pred_b = b
    assert list(res_a.layers) == list(res_b.layers)
    for name in res_a.layers:
        assert torch.equal(res_a.layers[name].output, res_b.layers[name].output), name
        np.testing.assert_array_equal(res_a.layers[name].stats.mean, res_b.layers[name].stats.mean)
    assert res_a.predictions == res_b.predictions
    assert list(heat_a) == list(heat_b)
    for name in heat_a:
        np.testing.assert_array_equal(heat_a[name], heat_b[name])
    assert pred_a == pred_b


@pytest.mark.slow
def test_threads_share_a_model_without_interference(lite0):
    images = {n: load_sample(n) for n, _, _ in JOBS}
    alone = [_run(lite0, images[n], layers, cam) for n, layers, cam in JOBS]
    assert _no_hooks(lite0.model)
    start = threading.Barrier(len(JOBS) * 2)

    def job(i):
        n, layers, cam = JOBS[i % len(JOBS)]
        start.wait(timeout=120)
        return _run(lite0, images[n], layers, cam)

    with ThreadPoolExecutor(max_workers=len(JOBS) * 2) as pool:
        together = list(pool.map(job, range(len(JOBS) * 2)))
    for i, got in enumerate(together):
        _same(got, alone[i % len(JOBS)])
    assert _no_hooks(lite0.model)
    assert all(not p.requires_grad for p in lite0.model.parameters())


def test_load_model_is_shared_across_threads(lite0):
    with ThreadPoolExecutor(max_workers=4) as pool:
        models = list(pool.map(lambda _: load_model("efficientnet_lite0"), range(4)))
    assert all(m is lite0 for m in models)


def _hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               + len(getattr(m, "_backward_pre_hooks", {})) for m in model.modules())


@pytest.mark.parametrize("request_kind", ["extract", "gradcam"])
def test_failed_request_leaves_no_hooks(request_kind):
    """A request that fails inside the hooked forward pass (a block raises midway) leaves no hook
    behind and releases the lock. The failing block records how many hooks were attached when it
    ran, so the test proves it looked while hooks were there (not after a failure before any)."""
    from vizcore.models import LoadedModel, WeightsInfo, build, get_spec

    spec = get_spec("resnet18")  # a private model, outside the shared cache: the shared ones are never patched
    lm = LoadedModel(spec, build(spec, seed=0), WeightsInfo("random", "seed 0"), weights_arg="random:0")
    cat = load_sample("cat")
    seen: list[int] = []

    def broken(*_args, **_kwargs):
        seen.append(_hook_count(lm.model))
        raise RuntimeError("block failed")

    lm.model.layer3[0].conv1.forward = broken
    with pytest.raises(RuntimeError, match="block failed"):
        if request_kind == "extract":
            A.extract(lm, cat, ["conv1", "layer2", "layer4"])
        else:
            A.gradcam(lm, cat, ["layer4"], target=3)
    assert seen and seen[0] > 0, "the request failed before any hook was attached"
    assert _hook_count(lm.model) == 0 and _no_hooks(lm.model)
    del lm.model.layer3[0].conv1.forward  # the real forward again
    # The lock was released: another thread can still use the model.
    with ThreadPoolExecutor(max_workers=1) as pool:
        res = pool.submit(A.extract, lm, cat, ["layer4"], 1).result(timeout=120)
    assert list(res.layers) == ["layer4"]
    assert _hook_count(lm.model) == 0


def test_unknown_layer_request_leaves_no_hooks(lite0):
    cat = load_sample("cat")
    with pytest.raises(KeyError):
        A.extract(lite0, cat, ["stem", "no.such.layer"])
    with pytest.raises(KeyError):
        A.gradcam(lite0, cat, ["no_such_layer"])
    assert _no_hooks(lite0.model)
