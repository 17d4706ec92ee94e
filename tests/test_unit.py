"""The unit engine on real models: drivers, class support, effective receptive fields, crops."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from vizcore import render as R
from vizcore import unit as U
from vizcore.data import load_sample
from vizcore.summary import layer_geometry


@pytest.fixture(scope="module")
def photos():
    return [load_sample("cat"), load_sample("coffee")]


# ----------------------------------------------------------------------- drivers
def test_weight_drivers_match_a_direct_read_of_the_conv_weight(lite0, resnet18_random):
    # lite0 "head" is bn2(conv_head(blocks.6.0)): one 1x1 convolution connects the two taps.
    assert U.direct_conv(lite0, "head") == "conv_head"
    d = U.drivers(lite0, "head", 7, top=5)
    mags = lite0.model.conv_head.weight[7].detach().abs().sum(dim=(1, 2))
    expect = torch.argsort(mags, descending=True)[:5].tolist()
    assert d.kind == "weights" and d.conv == "conv_head" and d.source == "blocks.6.0"
    assert [x.channel for x in d.drivers] == expect
    assert [x.value for x in d.drivers] == pytest.approx(mags[expect].tolist())
    assert all(x.layer == "blocks.6.0" for x in d.drivers)
    assert "conv_head" in d.method and "weight magnitude" in d.method

    # The first tap is driven by the input's colour channels (resnet18: conv1 -> bn1 -> relu).
    assert U.direct_conv(resnet18_random, "conv1") == "conv1"
    d = U.drivers(resnet18_random, "conv1", 3)
    w = resnet18_random.model.conv1.weight[3].detach().abs().sum(dim=(1, 2))
    assert [x.label for x in d.drivers] == [U.RGB[i] for i in torch.argsort(w, descending=True).tolist()]
    assert d.source == "input" and all(x.layer is None for x in d.drivers)


def test_no_direct_conv_across_residual_blocks_or_several_convs(lite0, resnet18_random):
    assert U.direct_conv(resnet18_random, "layer1.0") is None  # two convolutions and a shortcut
    assert U.direct_conv(resnet18_random, "pool1") is None  # a max pool, no convolution
    assert U.direct_conv(lite0, "blocks.4.0") is None  # expand, depthwise, project
    with pytest.raises(ValueError, match="give images"):
        U.drivers(lite0, "blocks.4.0", 0)


def test_gradient_drivers_equal_captum_gradient_x_activation(lite0, photos):
    from captum.attr import LayerGradientXActivation

    d = U.drivers(lite0, "blocks.4.0", 12, photos, top=6)
    assert d.kind == "gradient x activation" and d.n_images == 2 and d.source == "blocks.3.2"
    assert "averaged over 2 images" in d.method
    # Captum on a private copy of the model (it attaches its own hooks).
    model = copy.deepcopy(lite0.model)
    x = torch.stack([lite0.transform()(p) for p in photos])
    out_mod, prev_mod = model.blocks[4][0], model.blocks[3][2]

    def unit_mean(inp):
        store = {}
        h = out_mod.register_forward_hook(lambda _m, _i, o: store.setdefault("a", o))
        try:
            model(inp)
        finally:
            h.remove()
        return store["a"][:, 12].mean(dim=(1, 2))

    attr = LayerGradientXActivation(unit_mean, prev_mod).attribute(x.requires_grad_(True))
    scores = attr.sum(dim=(2, 3)).mean(dim=0)
    expect = torch.argsort(scores, descending=True)[:6].tolist()
    assert [x.channel for x in d.drivers] == expect
    assert [x.value for x in d.drivers] == pytest.approx(scores[expect].tolist(), rel=1e-4, abs=1e-6)


# ----------------------------------------------------------------- class support
def test_class_support_below_the_head_is_the_classifier_column(lite0, photos):
    w = lite0.model.classifier.weight.detach()
    for layer in ("head", "pool"):  # bn2 -> global pool -> linear, and the pooled vector itself
        cs = U.class_support(lite0, layer, 100, photos, top=5)
        expect = torch.argsort(w[:, 100], descending=True)[:5].tolist()
        assert [c.index for c in cs.top] == expect
        assert [c.value for c in cs.top] == pytest.approx(w[expect, 100].tolist(), rel=1e-4, abs=1e-6)
        assert [c.index for c in cs.bottom] == torch.argsort(w[:, 100])[:5].tolist()
        assert cs.top[0].label == lite0.categories[expect[0]]
        assert "averaged over 2 images" in cs.method and "mean activation" in cs.method
    with pytest.raises(ValueError, match="head itself"):
        U.class_support(lite0, "logits", 0, photos)
    with pytest.raises(ValueError, match="channels"):
        U.class_support(lite0, "head", 5000, photos)


@pytest.mark.slow
def test_class_support_matches_finite_differences(lite0, photos):
    """Deep below the head: a uniform shift of the channel's map, by central differences in float64."""
    layer, ch = "blocks.5.0", 17
    cs = U.class_support(lite0, layer, ch, photos, top=5)
    model = copy.deepcopy(lite0.model).double()
    x = torch.stack([lite0.transform()(p) for p in photos]).double()
    mod = dict(model.named_modules())[lite0.resolve(layer)]
    eps = 1e-3

    def logits(shift: float) -> torch.Tensor:
        def hook(_m, _i, o):
            o = o.clone()
            o[:, ch] += shift
            return o
        h = mod.register_forward_hook(hook)
        try:
            with torch.no_grad():
                return model(x)
        finally:
            h.remove()

    fd = ((logits(eps) - logits(-eps)) / (2 * eps)).mean(dim=0)
    for c in cs.top + cs.bottom:
        assert c.value == pytest.approx(float(fd[c.index]), rel=2e-3, abs=1e-5)
    assert [c.index for c in cs.top] == torch.argsort(fd, descending=True)[:5].tolist()


# ------------------------------------------------------- effective receptive field
def test_smallest_box_equals_brute_force():
    rng = np.random.default_rng(0)

    def brute(w, mass):
        h, wd = w.shape
        target, best = mass * w.sum() * (1 - 1e-9), None
        for y0 in range(h):
            for y1 in range(y0 + 1, h + 1):
                for x0 in range(wd):
                    for x1 in range(x0 + 1, wd + 1):
                        s = w[y0:y1, x0:x1].sum()
                        if s >= target:
                            a = (y1 - y0) * (x1 - x0)
                            if best is None or a < best[0] or (a == best[0] and s > best[1] + 1e-12):
                                best = (a, s)
                            break
        return best

    for _ in range(6):
        w = rng.random((6, 8)) ** 6
        x0, y0, x1, y1 = U.smallest_box(w, 0.9)
        area, held = brute(w, 0.9)
        assert (x1 - x0) * (y1 - y0) == area
        assert w[y0:y1, x0:x1].sum() == pytest.approx(held)
    assert U.smallest_box(np.zeros((4, 4))) is None


def test_erf_of_a_conv_layer_lies_inside_its_theoretical_field(lite0, photos):
    erf = U.effective_rf(lite0, "blocks.1.0", 5, photos[0])
    tx0, ty0, tx1, ty1 = erf.theoretical
    assert erf.geometry.rf == 11
    assert erf.grad.shape == (224, 224) and erf.grad.sum() > 0
    # No gradient at all outside the theoretical field (it is exact), and the box inside it.
    outside = erf.grad.copy()
    outside[ty0:ty1, tx0:tx1] = 0
    assert outside.max() == 0
    x0, y0, x1, y1 = erf.box
    assert tx0 <= x0 < x1 <= tx1 and ty0 <= y0 < y1 <= ty1
    assert erf.grad[y0:y1, x0:x1].sum() >= 0.9 * erf.grad.sum() * (1 - 1e-6)


def test_erf_at_blocks_5_0_is_smaller_than_the_image(lite0, photos):
    geom = layer_geometry(lite0, "blocks.5.0")
    assert geom.rf >= 224  # the theoretical field is the whole picture
    erf = U.effective_rf(lite0, "blocks.5.0", 30, photos[1], 3, 3)
    x0, y0, x1, y1 = erf.box
    assert (x1 - x0) * (y1 - y0) < 0.75 * 224 * 224
    assert erf.grad[y0:y1, x0:x1].sum() >= 0.9 * erf.grad.sum() * (1 - 1e-6)
    assert erf.theoretical == (0, 0, 224, 224) or (erf.theoretical[2] - erf.theoretical[0]) > (x1 - x0)


# ------------------------------------------------------------------------ crops
@pytest.fixture(scope="module")
def mined(lite0):
    from vizcore.patches import mine_top_patches

    return mine_top_patches(lite0, "samples", ["stem", "blocks.5.0", "head"], k=2, batch_size=8, workers=0)


def test_crop_policy_context_for_small_fields_erf_for_whole_image_fields(lite0, mined):
    c = U.hit_crop(lite0, mined, "stem", 4, 0)
    assert c.method == "receptive field + context"
    fx0, fy0, fx1, fy1 = c.field_box
    cx0, cy0, cx1, cy1 = c.crop_box
    assert fx1 - fx0 == 3 or fx0 == 0 or fx1 == 224  # the 3 px stem field (clipped at a border)
    assert cx1 - cx0 >= 64 + (fx1 - fx0) and cy1 - cy0 >= 64 + (fy1 - fy0)
    assert cx0 <= fx0 and cy0 <= fy0 and fx1 <= cx1 and fy1 <= cy1
    assert c.image.size == (cx1 - cx0, cy1 - cy0)
    # The field is outlined in cyan inside the crop.
    arr = np.asarray(c.image)
    assert (arr == [0, 255, 255]).all(axis=2).any()

    hit = mined.hits("blocks.5.0", 10)[0]
    c = U.hit_crop(lite0, mined, "blocks.5.0", 10, 0, region="erf")
    erf = U.effective_rf(lite0, "blocks.5.0", 10, hit.file, hit.y, hit.x)
    assert c.method == "effective receptive field (90 % of gradient)"
    assert c.field_box == erf.box
    w, h = c.crop_box[2] - c.crop_box[0], c.crop_box[3] - c.crop_box[1]
    assert w * h < 224 * 224 and c.image.size == (w, h)


def test_half_max_box_is_the_connected_region_around_the_unit():
    up = np.zeros((50, 60))
    up[10:20, 5:15] = 4.0  # the peak region
    up[30:40, 40:55] = 3.0  # above half the max too, but not connected to the peak
    up[12, 8] = 5.0
    assert U.half_max_box(up) == (5, 10, 15, 20)
    assert U.half_max_box(up, 35, 45) == (40, 30, 55, 40)  # the region holding the given pixel
    assert U.half_max_box(up, 0, 0) == (5, 10, 15, 20)  # below the threshold: the maximum's region
    assert U.half_max_box(np.zeros((8, 9))) == (0, 0, 9, 8)  # flat: the whole map


def test_deep_crops_hold_the_peak_and_are_smaller_than_the_image(lite0):
    """blocks.4.1's field is the whole input; the crop is the map's half-maximum region around its peak."""
    from vizcore.patches import activation_map, mine_top_patches

    res = mine_top_patches(lite0, "samples", ["blocks.4.1"], k=2, batch_size=8, workers=0)
    geom = layer_geometry(lite0, "blocks.4.1")
    assert geom.rf >= U.COVER * 224
    for ch in (0, 5, 12, 40):
        for r in range(2):
            hit = res.hits("blocks.4.1", ch)[r]
            c = U.hit_crop(lite0, res, "blocks.4.1", ch, r)
            up = R.upsampled_map(lite0, "blocks.4.1", activation_map(lite0, "blocks.4.1", ch, hit.file))
            py, px = divmod(int(up.argmax()), 224)
            x0, y0, x1, y1 = c.crop_box
            assert x0 <= px < x1 and y0 <= py < y1, (ch, r)
            assert c.method == "activation ≥ half its max"
            fx0, fy0, fx1, fy1 = c.field_box
            assert (up[fy0:fy1, fx0:fx1] >= 0.5 * up.max()).any() and c.field_box == U.half_max_box(up, py, px)
            if (up >= 0.5 * up.max()).mean() < 0.25:  # a peaked map: the crop says where
                assert (x1 - x0) * (y1 - y0) < 0.5 * 224 * 224, (ch, r, c.crop_box)
            assert c.image.size == (x1 - x0, y1 - y0) and min(c.image.size) >= min(64, 224)


def test_upsampled_map_peaks_at_the_receptive_field_centre(lite0, photos):
    from vizcore.activations import extract

    res = extract(lite0, photos[0], layers=["blocks.5.0"])
    m = res.layers["blocks.5.0"].output[30]
    y, x = divmod(int(m.argmax()), m.shape[1])
    up = R.upsampled_map(lite0, "blocks.5.0", m)
    assert up.shape == (224, 224)
    py, px = divmod(int(up.argmax()), 224)
    geom = layer_geometry(lite0, "blocks.5.0")
    assert abs(py - (geom.start + geom.jump * y)) <= geom.jump / 2
    assert abs(px - (geom.start + geom.jump * x)) <= geom.jump / 2
    grid = R.overlay_grid(lite0, "blocks.5.0", res.layers["blocks.5.0"].output, res.image, [30, 1, 2, 3], cell=50)
    assert grid.size == (2 * 52 + 2, 2 * 52 + 2)


def test_erf_of_a_unit_clipped_by_relu6_uses_its_pre_activation(lite0, mined):
    """lite0's head is BatchNorm + ReLU6: a top unit at exactly 6 has no input gradient."""
    hit = mined.hits("head", 7)[0]
    assert hit.value == 6.0
    erf = U.effective_rf(lite0, "head", 7, hit.file, hit.y, hit.x)
    assert erf.value == 6.0 and erf.target == "bn2.drop"  # the BatchNorm output before the activation
    assert erf.box is not None and erf.grad.sum() > 0
    c = U.hit_crop(lite0, mined, "head", 7, 0, region="erf")
    assert c.method == "effective receptive field (90 % of gradient, before its clipping activation)"
    assert c.field_box == erf.box


# ------------------------------------------------------------------------ jobs
@pytest.fixture()
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VIZCORE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_unit_analyses_as_jobs_equal_the_functions_stop_resume_and_cache(lite0, photos, mined, fresh_cache):
    from vizcore.jobs import JobRun, RunOptions, Stopped, cached, run

    opts = RunOptions()
    # Class support: one image per unit of work; a stop carries the support of the images done.
    job = U.ClassSupportJob(lite0, "blocks.5.0", 30, photos, top=5)
    with pytest.raises(Stopped) as e:
        run(job, opts, should_stop=(lambda it=iter(range(10)): next(it) >= 1))
    assert e.value.partial == U.class_support(lite0, "blocks.5.0", 30, photos[:1], top=5)
    assert cached(job, opts) is None  # nothing half-done is cached
    r = JobRun(U.ClassSupportJob(lite0, "blocks.5.0", 30, photos, top=5), opts)
    r.step(1)
    assert (r.done, r.total) == (1, 2) and r.partial().n_images == 1
    assert r.step(1)  # resumed to the end
    want = U.class_support(lite0, "blocks.5.0", 30, photos, top=5)
    got = cached(U.ClassSupportJob(lite0, "blocks.5.0", 30, photos, top=5), opts)  # a new job object: the disk
    assert [c.index for c in got.top] == [c.index for c in want.top]
    assert [c.value for c in got.top] == pytest.approx([c.value for c in want.top], rel=1e-4, abs=1e-7)
    assert got.method == want.method and got.n_images == 2
    # Another image is another entry (keyed by content).
    assert cached(U.ClassSupportJob(lite0, "blocks.5.0", 30, photos[::-1], top=5), opts) is None

    # Drivers: gradient x activation image by image equals the batch; by weights in one unit.
    d = run(U.DriversJob(lite0, "blocks.4.0", 12, photos, top=6), opts)
    ref = U.drivers(lite0, "blocks.4.0", 12, photos, top=6)
    assert [x.channel for x in d.drivers] == [x.channel for x in ref.drivers]
    assert cached(U.DriversJob(lite0, "blocks.4.0", 12, photos, top=6), opts) == d
    assert run(U.DriversJob(lite0, "head", 7, None, top=5), opts) == U.drivers(lite0, "head", 7, top=5)

    # Effective receptive field: the map, boxes and input survive the cache.
    erf = run(U.EffectiveRFJob(lite0, "blocks.5.0", 30, photos[1], 3, 3), opts)
    again = cached(U.EffectiveRFJob(lite0, "blocks.5.0", 30, photos[1], 3, 3), opts)
    ref = U.effective_rf(lite0, "blocks.5.0", 30, photos[1], 3, 3)
    assert again.box == erf.box == ref.box and again.theoretical == ref.theoretical
    assert np.allclose(again.grad, ref.grad) and again.geometry == ref.geometry
    assert np.array_equal(np.asarray(again.input), np.asarray(ref.input))

    # Crops of a mining result's hits: one per hit, as hit_crop draws them.
    crops = run(U.CropsJob(lite0, mined, "blocks.5.0", 10), opts)
    back = cached(U.CropsJob(lite0, mined, "blocks.5.0", 10), opts)
    for r_, (a, b) in enumerate(zip(crops, back)):
        c = U.hit_crop(lite0, mined, "blocks.5.0", 10, r_)
        assert a.method == b.method == c.method and a.crop_box == b.crop_box == c.crop_box
        assert np.array_equal(np.asarray(b.image), np.asarray(c.image))
    assert len(crops) == len(mined.hits("blocks.5.0", 10))
