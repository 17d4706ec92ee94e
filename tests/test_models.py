"""The model zoo: every architecture builds, runs, and every tap resolves and fires;
the bundled weights recognise real photographs; unknown names get close matches."""
from __future__ import annotations

import pytest
import torch

from vizcore.models import (
    UnknownLayerError,
    UnknownModelError,
    build,
    get_spec,
    list_models,
    load_model,
    resolve_layer,
    taps_for,
)
from vizcore.tap import tap

REQUIRED = [
    "alexnet", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn",
    "vgg_c", "googlenet", "inception_v3", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "resnext50_32x4d", "resnext101_32x8d", "wide_resnet50_2", "densenet121", "densenet169",
    "densenet201", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small", "bagnet9", "bagnet17",
    "bagnet33", "efficientnet_lite0",
]
# More than ~10 GFLOPs or ~80 M parameters at their input size: slow on a laptop CPU.
HEAVY = {"vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn", "vgg_c",
         "resnet152", "resnext101_32x8d", "wide_resnet50_2", "bagnet33", "bagnet17", "bagnet9",
         # and the deep ones that take longest to build and run on a small CPU
         "densenet121", "densenet169", "densenet201", "inception_v3", "resnet101"}


def test_registry_covers_the_issue():
    names = list_models()
    missing = [n for n in REQUIRED if n not in names]
    assert not missing, missing
    assert len(names) == len(set(names))
    assert list_models("vgg*")[:2] == ["vgg11", "vgg11_bn"]


def _params():
    return [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in list_models()]


@pytest.mark.parametrize("name", _params())
def test_builds_runs_and_every_tap_fires(name):
    spec = get_spec(name)
    model = build(spec)
    taps = taps_for(spec, model)
    assert len(taps) >= 5, f"{name} has only {len(taps)} taps"
    assert len({t.name for t in taps}) == len(taps), "duplicate tap names"
    size = spec.input_size
    assert size == (299 if name == "inception_v3" else {"efficientnet_lite1": 240,
                                                        "efficientnet_lite2": 260}.get(name, 224))
    paths = []
    for t in taps:
        assert resolve_layer(spec, model, t.name) == t.module
        assert resolve_layer(spec, model, t.module) == t.module  # module paths work too
        paths.append(t.module)
    x = torch.rand(1, 3, size, size)
    with torch.no_grad(), tap(model, paths, reduce=lambda _p, o: tuple(o.shape)) as store:
        out = model(x)
        fired = dict(store)
    assert set(fired) == set(paths), f"taps that never fired: {set(paths) - set(fired)}"
    assert tuple(out.shape) == (1, 1000)
    assert torch.isfinite(out).all()
    # The last tap is the logits layer and sees exactly the output.
    assert fired[taps[-1].module] == (1, 1000)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_vgg_c_is_configuration_c():
    model = build(get_spec("vgg_c"))
    n = sum(p.numel() for p in model.parameters())
    assert 133.5e6 < n < 134.5e6  # the VGG paper's 134 M
    one_by_one = [m for m in model.features if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1)]
    assert len(one_by_one) == 3


def test_timm_model_by_name():
    spec = get_spec("timm/resnet10t")
    assert spec.family == "timm" and spec.input_size >= 176
    model = build(spec)
    taps = taps_for(spec, model)
    assert taps and taps[-1].kind == "logits"
    with torch.no_grad(), tap(model, [t.module for t in taps]) as store:
        model(torch.rand(1, 3, spec.input_size, spec.input_size))
        assert set(store) == {t.module for t in taps}


def test_unknown_model_suggests_close_names():
    with pytest.raises(UnknownModelError) as e:
        get_spec("resnet05")
    msg = str(e.value)
    assert "resnet50" in msg and "vizcore models" in msg
    with pytest.raises(UnknownModelError) as e:
        get_spec("timm/resnet10tt")
    assert "timm/resnet10t" in str(e.value)


@pytest.mark.parametrize("name", ["timm/../../etc/passwd", "timm//etc/passwd", "timm/resnet50/../x",
                                  "timm/[x](http://127.0.0.1:9/a)", "timm/", "timm/a b"])
def test_a_timm_name_that_is_no_name_is_an_input_error(name, monkeypatch):
    """A path, a URL or markup after ``timm/`` is the user's input error, said in one line (a
    ``ValueError``, not an internal ``KeyError`` only), and timm is never asked about it."""
    import timm

    monkeypatch.setattr(timm, "list_models", lambda *a, **k: pytest.fail("timm was asked"))
    with pytest.raises(UnknownModelError, match=r"bad model name .*: a timm model is timm/ and a name") as e:
        load_model(name)
    assert isinstance(e.value, ValueError)
    assert "\n" not in str(e.value)


def test_a_timm_name_that_is_no_name_in_the_cli(capsys):
    from vizcore.cli import main

    assert main(["layers", "--model", "timm/../../etc/passwd"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vizcore layers: error: bad model name 'timm/../../etc/passwd': a timm model is")
    assert len(err.splitlines()) == 1


def test_unknown_layer_suggests_close_names(resnet18_random):
    with pytest.raises(UnknownLayerError) as e:
        resnet18_random.resolve("layer4.3")
    msg = str(e.value)
    assert "unknown layer 'layer4.3'" in msg and "layer4.1" in msg and "resnet18" in msg
    with pytest.raises(UnknownLayerError) as e:
        resnet18_random.resolve("")
    assert resnet18_random.resolve("layer3.1.conv2") == "layer3.1.conv2"


@pytest.mark.parametrize("sample,classes", [("cat", range(281, 286)), ("coffee", (967, 968))])
def test_bundled_weights_recognise_photographs(lite0, sample, classes):
    from vizcore.activations import predict
    from vizcore.data import load_sample

    (preds,) = predict(lite0, [load_sample(sample)], topk=3)
    assert preds[0].index in classes, preds
    assert preds[0].prob > 0.3
    assert preds[0].label == lite0.categories[preds[0].index]
