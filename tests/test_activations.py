"""Activations engine: exact statistics on a hand-set net, real extraction on the bundled
EfficientNet-Lite0, channel grids, Grad-CAM and overlays."""
from __future__ import annotations

import json
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from vizcore import activations as A
from vizcore import render as R
from vizcore.data import load_sample
from vizcore.models import LoadedModel, ModelSpec, Preprocess, Tap, UnknownLayerError, WeightsInfo

CAT_CLASSES = range(281, 286)


# ------------------------------------------------------------ hand-weighted net
def _tiny_lm() -> LoadedModel:
    """conv (ch0 = +R, ch1 = -R) -> ReLU -> global average -> fc (logits = [ch0, ch1, 0])."""
    conv = nn.Conv2d(3, 2, 1, bias=False)
    fc = nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0] = 1.0
        conv.weight[1, 0] = -1.0
        fc.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
    model = nn.Sequential(OrderedDict(conv=conv, relu=nn.ReLU(), pool=nn.AdaptiveAvgPool2d(1),
                                      flat=nn.Flatten(), fc=fc)).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    spec = ModelSpec(
        name="tiny", family="test", builder=lambda: model,
        taps=lambda m: [Tap("conv", "conv", "conv"), Tap("relu", "relu", "conv"),
                        Tap("pool", "pool", "pool"), Tap("logits", "fc", "logits")],
        preprocess=Preprocess(resize=4, crop=4, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)),
        categories=lambda: ("a", "b", "c"))
    return LoadedModel(spec=spec, model=model, weights=WeightsInfo("random", "hand-set"))


def _tiny_image() -> Image.Image:
    a = np.zeros((4, 4, 3), np.uint8)
    a[..., 0] = np.array([[0, 51, 102, 153], [204, 255, 0, 0], [51, 51, 0, 0], [0, 0, 0, 255]])
    a[..., 1] = 77  # green and blue are ignored by the conv
    return Image.fromarray(a, "RGB")


def test_exact_values_on_hand_weighted_net():
    lm = _tiny_lm()
    img = _tiny_image()
    res = A.extract(lm, img)
    r = torch.from_numpy(np.asarray(img)[..., 0].astype(np.float32) / 255)
    assert torch.allclose(res.input[0], r, atol=1e-6)
    assert list(res.layers) == ["conv", "relu", "pool", "logits"]
    conv = res.layers["conv"]
    assert conv.shape == (2, 4, 4) and conv.module == "conv" and conv.kind == "conv"
    assert torch.allclose(conv.output[0], r) and torch.allclose(conv.output[1], -r)
    s = conv.stats
    np.testing.assert_allclose(s.mean, [r.mean(), -r.mean()], rtol=1e-6)
    np.testing.assert_allclose(s.max, [r.max(), -r.min()], rtol=1e-6)
    np.testing.assert_allclose(s.std, [r.std(correction=0)] * 2, rtol=1e-5)
    np.testing.assert_allclose(s.frac_active, [8 / 16, 0.0])
    relu = res.layers["relu"].stats
    np.testing.assert_allclose(relu.mean, [r.mean(), 0.0], rtol=1e-6)
    assert res.layers["pool"].shape == (2, 1, 1)
    logits = res.layers["logits"]
    assert logits.shape == (3,)
    np.testing.assert_allclose(logits.stats.mean, [r.mean(), 0.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(logits.stats.std, [0.0, 0.0, 0.0])
    e = np.exp([float(r.mean()), 0.0, 0.0])
    p = e / e.sum()
    assert [q.label for q in res.predictions] == ["a", "b", "c"]
    np.testing.assert_allclose([q.prob for q in res.predictions], [p[0], p[1], p[2]], rtol=1e-5)
    assert res.predictions[0] == A.Prediction(0, "a", pytest.approx(p[0], rel=1e-5))


def test_grid_of_hand_set_maps():
    lm = _tiny_lm()
    res = A.extract(lm, _tiny_image(), ["conv"], topk=0)
    grid, chans = R.channel_grid(res.layers["conv"].output, top=2, order="mean", cell=8, pad=1)
    assert chans == [0, 1]  # channel 0 has the larger mean
    assert grid.size == (2 * 8 + 3, 8 + 2)
    a = np.asarray(grid)
    lut = R.colorize(np.array([0.0, 1.0]))
    # Pixel (1, 1) of the map (R = 255, the maximum) is the top colour of channel 0 ...
    assert tuple(a[1 + 1 * 2, 1 + 1 * 2]) == tuple(lut[1])
    # ... and the bottom colour of channel 1 (whose values are -R).
    assert tuple(a[1 + 1 * 2, 1 + 8 + 1 + 1 * 2]) == tuple(lut[0])


# ------------------------------------------------------------ the real network
@pytest.fixture(scope="module")
def cat():
    return load_sample("cat")


@pytest.fixture(scope="module")
def cat_result(lite0, cat):
    return A.extract(lite0, cat)


def test_extract_every_tap(lite0, cat_result):
    res = cat_result
    expected = [(t.name, shape) for t, shape in A.tap_shapes(lite0)]
    assert [(n, a.shape) for n, a in res.layers.items()] == expected
    assert len(res.layers) == len(lite0.taps())
    assert res.layers["stem"].shape == (32, 112, 112) and res.layers["logits"].shape == (1000,)
    assert res.predictions[0].index in CAT_CLASSES and len(res.predictions) == 5
    assert res.model == "efficientnet_lite0" and res.weights.source == "package"
    assert res.input.shape == (3, 224, 224) and res.image.size == (224, 224)
    for a in res.layers.values():
        assert a.stats.mean.shape == (a.shape[0],) and a.stats.mean.dtype == np.float32
        assert np.all((a.stats.frac_active >= 0) & (a.stats.frac_active <= 1))
        assert np.all(a.stats.max >= a.stats.mean - 1e-5)
    doc = json.loads(json.dumps(res.to_json()))
    assert [d["name"] for d in doc["layers"]] == list(res.layers)
    assert doc["layers"][0]["output_shape"] == [32, 112, 112]
    assert len(doc["layers"][0]["stats"]["mean"]) == 32


def test_stats_agree_with_torch(cat_result):
    a = cat_result.layers["blocks.3.0"]
    flat = a.output.reshape(a.shape[0], -1).double()
    np.testing.assert_allclose(a.stats.mean, flat.mean(1).numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(a.stats.max, flat.amax(1).numpy(), rtol=1e-6)
    np.testing.assert_allclose(a.stats.std, flat.std(1, correction=0).numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(a.stats.frac_active, (flat > 0).double().mean(1).numpy(), atol=1e-6)
    assert list(a.stats.order("max")[:3]) == torch.argsort(flat.amax(1), descending=True)[:3].tolist()


def test_logits_tap_matches_prediction(lite0, cat_result):
    logits = cat_result.layers["logits"].output
    probs = torch.softmax(logits, 0)
    top = cat_result.predictions[0]
    assert int(logits.argmax()) == top.index
    assert probs[top.index].item() == pytest.approx(top.prob, rel=1e-5)


def test_only_requested_layers_are_kept(lite0, cat, cat_result):
    res = A.extract(lite0, cat, ["blocks.5.0", "stem", "blocks.1.0.conv_pw"], topk=0)
    assert list(res.layers) == ["stem", "blocks.1.0.conv_pw", "blocks.5.0"]  # network order
    assert res.predictions == []  # the pass stopped at blocks.5.0
    assert res.layers["blocks.1.0.conv_pw"].kind == "module"
    kept = sum(a.output.numel() for a in res.layers.values())
    assert kept == 32 * 112 * 112 + 96 * 112 * 112 + 192 * 7 * 7
    assert torch.equal(res.layers["blocks.5.0"].output, cat_result.layers["blocks.5.0"].output)
    # Outputs do not pin the storage of other layers.
    for a in res.layers.values():
        assert a.output.untyped_storage().nbytes() <= a.output.numel() * 4
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in lite0.model.modules())
    with pytest.raises(UnknownLayerError, match="Closest valid names"):
        A.extract(lite0, cat, ["blocks.9.0"])


def test_predict_batches_match_extract(lite0, cat, cat_result):
    coffee = load_sample("coffee")
    preds = A.predict(lite0, [cat, coffee, cat], topk=5, batch_size=2)
    assert len(preds) == 3
    assert [p.index for p in preds[0]] == [p.index for p in cat_result.predictions]
    assert preds[0][0].prob == pytest.approx(cat_result.predictions[0].prob, abs=1e-4)
    assert preds[1][0].index in (967, 968)
    assert [p.index for p in preds[2]] == [p.index for p in preds[0]]


def test_grid_sizes_and_order(cat_result):
    act = cat_result.layers["blocks.2.0"].output  # (40, 28, 28)
    grid, chans = R.channel_grid(act, top=16, cell=32, pad=2)
    assert grid.size == (4 * 32 + 5 * 2,) * 2 and grid.mode == "RGB"
    assert chans == list(cat_result.layers["blocks.2.0"].stats.order("mean")[:16])
    _, by_max = R.channel_grid(act, top=5, order="max")
    assert by_max == list(cat_result.layers["blocks.2.0"].stats.order("max")[:5])
    grid, chans = R.channel_grid(act, top=6, order="index", cols=3, cell=10, pad=1)
    assert chans == list(range(6)) and grid.size == (3 * 10 + 4, 2 * 10 + 3)
    grid, chans = R.channel_grid(act, top=0, cell=8)
    assert len(chans) == 40 and sorted(chans) == list(range(40))
    grid, chans = R.channel_grid(act, top=500, cell=8)
    assert len(chans) == 40
    with pytest.raises(ValueError, match="order"):
        R.channel_grid(act, order="median")


def test_vector_layers_make_flat_cells(cat_result):
    logits = cat_result.layers["logits"].output
    grid, chans = R.channel_grid(logits, top=10, cell=12, pad=0, cols=10)
    assert grid.size == (120, 12)
    assert chans[0] == cat_result.predictions[0].index
    a = np.asarray(grid)
    for k in range(10):  # each cell is one flat colour
        cell = a[:, k * 12:(k + 1) * 12]
        assert (cell == cell[0, 0]).all()
    assert tuple(a[0, 0]) == tuple(R.colorize(np.array(1.0)))  # the largest value: top colour


def test_shared_and_per_channel_scales_differ():
    act = torch.zeros(2, 8, 8)
    act[0, :4] = 1.0  # weak channel: half on at 1
    act[1, :, :4] = 10.0  # strong channel: half on at 10
    per, chans = R.channel_grid(act, top=2, order="index", cell=8, pad=0, cols=2)
    shared, _ = R.channel_grid(act, top=2, order="index", cell=8, pad=0, cols=2, shared_scale=True)
    lut = R.colorize(np.array([0.0, 0.1, 1.0]))
    p, s = np.asarray(per), np.asarray(shared)
    assert tuple(p[0, 0]) == tuple(lut[2]) and tuple(p[0, 8]) == tuple(lut[2])  # each channel full range
    assert tuple(s[0, 0]) == tuple(lut[1])  # the weak channel is dim on the shared scale
    assert tuple(s[0, 8]) == tuple(lut[2])
    assert not np.array_equal(p, s)


def test_denormalize_and_overlay(lite0, cat_result):
    img = A.denormalize(lite0, cat_result.input)
    assert img.size == (224, 224)
    assert np.array_equal(np.asarray(img), np.asarray(cat_result.image))
    x = (torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255 - 0.5) / 0.5
    assert torch.allclose(x, cat_result.input, atol=0.51 / 255 / 0.5)  # rounding to 8 bits only
    heat = np.zeros((224, 224), np.float32)
    heat[:, 112:] = 1.0
    ov = R.overlay(img, heat, alpha=0.5)
    assert ov.size == img.size and ov.mode == "RGB"
    assert np.array_equal(np.asarray(R.overlay(img, heat, alpha=0.0)), np.asarray(img))
    o, base = np.asarray(ov).astype(int), np.asarray(img).astype(int)
    hot, cold = R.colorize(np.array(1.0), R.HEAT_CMAP), R.colorize(np.array(0.0), R.HEAT_CMAP)
    assert np.abs(o[100, 200] - (base[100, 200] + hot) / 2).max() <= 1
    assert np.abs(o[100, 20] - (base[100, 20] + cold) / 2).max() <= 1
    small = R.overlay(img, heat[::4, ::4])  # heat maps of another size are resized
    assert small.size == img.size


@pytest.mark.slow
def test_gradcam_finds_the_cat(lite0, cat):
    """The cat in the top-left quadrant of a grey canvas: the heat must be there."""
    canvas = Image.new("RGB", (448, 448), (128, 128, 128))
    canvas.paste(cat.resize((224, 224)), (0, 0))
    heats = A.gradcam(lite0, canvas, ["blocks.5.3", "head", "logits"], target=285)
    assert list(heats) == ["blocks.5.3", "head"]  # logits have no spatial extent
    for name, h in heats.items():
        assert h.shape == (224, 224) and h.dtype == np.float32
        assert h.min() >= 0 and h.max() == pytest.approx(1.0)
    h = heats["head"]
    # After resize (256) and centre crop (224), the cat covers about [0, 112) x [0, 112).
    inside, outside = h[:112, :112].mean(), (h.sum() - h[:112, :112].sum()) / (224 * 224 - 112 * 112)
    assert inside > 2 * outside
    y, x = np.unravel_index(h.argmax(), h.shape)
    assert y < 130 and x < 130
    assert all(not m._forward_hooks and not m._backward_hooks for m in lite0.model.modules())
    assert all(not p.requires_grad for p in lite0.model.parameters())


def test_gradcam_default_target_is_prediction(lite0, cat):
    a = A.gradcam(lite0, cat, ["head"])
    top = A.predict(lite0, [cat], topk=1)[0][0].index
    b = A.gradcam(lite0, cat, ["head"], target=top)
    np.testing.assert_array_equal(a["head"], b["head"])
    assert a["head"].shape == (224, 224) and 0 <= a["head"].min() and a["head"].max() <= 1


def test_tap_shapes_at_other_sizes():
    shapes = dict((t.name, s) for t, s in A.tap_shapes("inception_v3"))
    assert shapes["Conv2d_1a_3x3"] == (32, 149, 149) and shapes["fc"] == (1000,)
    shapes = dict((t.name, s) for t, s in A.tap_shapes("resnet18", input_size=128))
    assert shapes["layer4.1"] == (512, 4, 4) and shapes["conv1"] == (64, 64, 64)


@pytest.mark.parametrize("name,cam_layer", [
    ("alexnet", "conv5"), ("mobilenet_v3_small", "head"),
    pytest.param("densenet121", "norm5", marks=pytest.mark.slow),  # followed by an in-place ReLU
    pytest.param("googlenet", "inception4e", marks=pytest.mark.slow),
])
def test_other_architectures(name, cam_layer):
    import warnings

    from vizcore.models import load_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lm = load_model(name, "random")
    img = load_sample("astronaut")
    res = A.extract(lm, img)
    assert [(n, a.shape) for n, a in res.layers.items()] == [(t.name, s) for t, s in A.tap_shapes(lm)]
    assert len(res.predictions) == 5 and res.weights.source == "random"
    heat = A.gradcam(lm, img, [cam_layer], target=res.predictions[0].index)[cam_layer]
    size = lm.spec.input_size
    assert heat.shape == (size, size) and heat.min() >= 0 and heat.max() <= 1
    assert all(not m._forward_hooks and not m._backward_hooks for m in lm.model.modules())


def test_a_tap_followed_by_an_in_place_operation_keeps_its_own_output():
    """torchvision DenseNet applies ``F.relu(features, inplace=True)`` after the ``norm5`` tap: the kept
    map (and its statistics) must be the batch norm's output, negatives included, not the ReLU's."""
    from vizcore.models import load_model

    lm = load_model("densenet121", "random")
    image = load_sample("cat")
    res = A.extract(lm, image, layers=["norm5"])
    with torch.no_grad():
        ref = lm.model.features(A.preprocess(lm, image))[0]  # features ends with norm5; the ReLU comes after
    got = res.layers["norm5"].output
    assert float(ref.min()) < 0 and float(got.min()) < 0
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    assert float(np.min(res.layers["norm5"].stats.mean)) < 0  # statistics of the same map
