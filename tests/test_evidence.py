"""vizcore.evidence on real models: exactness of CAM, FCN and BagNet maps, the captum methods
against hand computations, faithfulness curves, and the CLI contract."""
from __future__ import annotations

import csv
import json
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vizcore.activations import gradcam as activations_gradcam
from vizcore.activations import preprocess
from vizcore.data import load_image, load_sample, sample_path
from vizcore.evidence import (
    MethodNotApplicable,
    UnknownClassError,
    evidence,
    evidence_channels,
    explain,
    faithfulness,
    get_method,
    layer_tap,
    list_methods,
    random_map,
    resolve_target,
    to_input,
    top_patches,
)
from vizcore.evidence.attribution import default_layer, gradcam_raw
from vizcore.evidence.cam import convolutionalize, fcn_map
from vizcore.models import load_model
from vizcore.summary import Geometry

from tests.test_cli import assert_one_line_error, vizcore


def _random(name: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_model(name, "random")


def _no_hooks(model: torch.nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
               and not getattr(m, "_backward_pre_hooks", {}) for m in model.modules())


@pytest.fixture(scope="module")
def cat_x(lite0):
    return preprocess(lite0, load_sample("cat"))


def _logit(lm, x, t):
    with torch.no_grad():
        return float(lm.model(x)[0, t])


# ------------------------------------------------------------------ CAM / FCN / BagNet
def test_cam_mean_is_the_logit_on_lite0(lite0, cat_x):
    ev = evidence(lite0, cat_x, 285, "cam")
    assert ev.raw.shape == (7, 7) and ev.map.shape == (224, 224)
    assert abs(float(ev.raw.mean()) - _logit(lite0, cat_x, 285)) < 1e-4
    assert ev.geometry == Geometry(851, 32, 31.0)
    # another class gives another map with its own logit as mean
    ev2 = evidence(lite0, cat_x, 8, "cam")
    assert abs(float(ev2.raw.mean()) - _logit(lite0, cat_x, 8)) < 1e-4
    assert not np.allclose(ev.raw - ev.raw.mean(), ev2.raw - ev2.raw.mean())


def test_cam_mean_is_the_logit_on_random_resnet18(resnet18_random):
    torch.manual_seed(0)
    x = torch.randn(1, 3, 224, 224)
    for t in (0, 517, 999):
        ev = evidence(resnet18_random, x, t, "cam")
        assert ev.raw.shape == (7, 7)
        assert abs(float(ev.raw.mean()) - _logit(resnet18_random, x, t)) < 1e-4
    assert _no_hooks(resnet18_random.model)


def test_gradcam_at_the_last_feature_map_is_cam_without_bias(lite0, cat_x):
    # Selvaraju et al.: with GAP + linear head, the pooled gradients are W[t] / (h*w).
    cam = evidence(lite0, cat_x, 285, "cam").raw
    gc = evidence(lite0, cat_x, 285, "gradcam").raw
    b = float(lite0.model.classifier.bias[285])
    np.testing.assert_allclose(gc, (cam - b) / cam.size, rtol=1e-3, atol=1e-5)
    # activations.gradcam is the same Grad-CAM, ReLU'd, resized and scaled to [0, 1]
    heat = activations_gradcam(lite0, load_sample("cat"), ["head"], target=285)["head"]
    want = F.interpolate(torch.from_numpy(gc).clamp_min(0)[None, None], size=(224, 224), mode="bilinear",
                         align_corners=False)[0, 0].numpy()
    np.testing.assert_allclose(heat, want / want.max(), atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["alexnet", "vgg11"])
def test_fcn_conversion_reproduces_logits_and_maps_larger_inputs(name):
    lm = _random(name)
    fc6 = lm.model.classifier[1 if name == "alexnet" else 0].weight
    before = fc6.clone()
    torch.manual_seed(0)
    x = torch.randn(2, 3, 224, 224) * 3
    net = convolutionalize(lm)
    with torch.no_grad():
        want, got = lm.model(x), net(x)
    assert got.shape == (2, 1000, 1, 1)
    assert (got[:, :, 0, 0] - want).abs().max() < 1e-4
    # negative control: the same weights with fc6's kernel transposed (H <-> W) miss by far more
    with torch.no_grad():
        feats = net.features(x)
        wrong = F.conv2d(feats, net.fc6.weight.transpose(2, 3), net.fc6.bias)
        for mod in list(net.children())[2:]:
            wrong = mod(wrong)
    assert (wrong[:, :, 0, 0] - want).abs().max() > 1e-3
    # a larger, non-square input gives a coarse score map
    big = torch.randn(1, 3, 320, 400)
    raw, geom = fcn_map(lm, big, 5)
    assert raw.shape[0] > 1 and raw.shape[1] > raw.shape[0]
    assert geom.jump == 32 and geom.rf > 224
    assert convolutionalize(lm) is net  # built once per loaded model
    assert torch.equal(fc6, before) and _no_hooks(lm.model)
    ev = evidence(lm, x[:1], 3, "cam")  # the crop upscaled to 448 px: an 8x8 map over the crop
    assert ev.raw.shape == (8, 8) and ev.map.shape == (224, 224) and "fully connected" in ev.caveats[0]


@pytest.mark.slow
def test_bagnet_patch_evidence_is_the_model_on_each_cropped_patch():
    lm = _random("bagnet9")
    torch.manual_seed(1)
    x = torch.randn(1, 3, 64, 64)
    ev = evidence(lm, x, 7, "bagnet")
    assert ev.raw.shape == (7, 7) and ev.geometry == Geometry(9, 8, 4.0)
    assert abs(float(ev.raw.mean()) - _logit(lm, x, 7)) < 1e-4
    for i, j in [(0, 0), (2, 5), (6, 6)]:
        patch = x[:, :, 8 * i:8 * i + 9, 8 * j:8 * j + 9]
        assert abs(_logit(lm, patch, 7) - float(ev.raw[i, j])) < 1e-3 * max(1.0, abs(float(ev.raw[i, j])))
    # the top patch's box is the 9x9 window that was cropped
    value, box = top_patches(ev, k=1)[0]
    i, j = divmod(int(np.argmax(ev.raw)), 7)
    assert value == pytest.approx(float(ev.raw.max())) and box == (8 * j, 8 * i, 8 * j + 9, 8 * i + 9)
    assert any("random weights" in c for c in ev.caveats)


def test_methods_that_do_not_fit_the_model_say_why(lite0, cat_x):
    with pytest.raises(MethodNotApplicable, match="BagNet"):
        evidence(lite0, cat_x, 1, "bagnet")
    with pytest.raises(ValueError, match="unknown setting"):
        evidence(lite0, cat_x, 1, "cam", window=3)
    with pytest.raises(KeyError, match="gradcam"):
        get_method("gradcams")
    assert set(list_methods()) >= {"cam", "bagnet", "occlusion", "guided", "deconv", "ig", "gradcam"}


@pytest.mark.slow
def test_cam_on_mobilenet_v3_explains_its_nonlinear_head():
    with pytest.raises(MethodNotApplicable, match="Hardswish"):
        evidence(_random("mobilenet_v3_small"), torch.zeros(1, 3, 224, 224), 1, "cam")


# ------------------------------------------------------------------ captum methods
def test_guided_and_deconv_on_relu6_lite0_are_the_plain_gradient(lite0, cat_x):
    x = cat_x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        lite0.model(x)[0, 285].backward()
    plain = x.grad[0].abs().amax(0).numpy()
    for m in ("guided", "deconv"):
        ev = evidence(lite0, cat_x, 285, m)
        np.testing.assert_allclose(ev.raw, plain, rtol=1e-4, atol=1e-7)
        assert "plain input gradient" in ev.caveats[0] and "ReLU6" in ev.caveats[0]
    assert _no_hooks(lite0.model) and not any(p.requires_grad for p in lite0.model.parameters())


class _GuidedReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g.clamp_min(0) * (x > 0)


class _GuidedModule(torch.nn.Module):
    def forward(self, x):
        return _GuidedReLU.apply(x)


def test_guided_backprop_on_resnet18_matches_a_hand_rolled_one_with_reused_relus(resnet18_random):
    import copy

    # torchvision's BasicBlock calls its one ReLU module twice; captum must rewrite both calls.
    torch.manual_seed(2)
    x = torch.randn(1, 3, 224, 224)
    ev = evidence(resnet18_random, x, 3, "guided")
    with resnet18_random.lock:
        twin = copy.deepcopy(resnet18_random.model)
    for mod in list(twin.modules()):
        for name, child in list(mod.named_children()):
            if type(child) is torch.nn.ReLU:
                setattr(mod, name, _GuidedModule())
    xg = x.clone().requires_grad_(True)
    with torch.enable_grad():
        twin(xg)[0, 3].backward()
    np.testing.assert_allclose(ev.raw, xg.grad[0].abs().amax(0).numpy(), rtol=1e-4, atol=1e-8)
    xp = x.clone().requires_grad_(True)
    with torch.enable_grad():
        resnet18_random.model(xp)[0, 3].backward()
    assert not np.allclose(ev.raw, xp.grad[0].abs().amax(0).numpy(), rtol=1e-2)  # not the plain gradient
    assert not any("plain input gradient" in c for c in ev.caveats)
    assert _no_hooks(resnet18_random.model)


def test_occlusion_is_the_logit_drop_batched_with_progress_and_stop(lite0, cat_x):
    calls = []
    ev = evidence(lite0, cat_x, 285, "occlusion", window=56, stride=56, batch=6,
                  progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (4, 4) and ev.extra["windows"] == 16  # 1 plain pass + 16 windows in 3 batches
    grey = cat_x.clone()
    grey[:, :, :56, :56] = 0
    drop = _logit(lite0, cat_x, 285) - _logit(lite0, grey, 285)
    assert ev.raw[10, 10] == pytest.approx(drop, abs=1e-3)
    assert ev.geometry == Geometry(56, 56, 27.5)
    from vizcore.jobs import Stopped

    with pytest.raises(Stopped):  # the one stop rule (no evidence-only stop exception); nothing cached
        evidence(lite0, cat_x, 285, "occlusion", window=56, stride=56, batch=6, should_stop=lambda: True,
                 cache=False)
    with pytest.raises(ValueError, match="stride"):
        evidence(lite0, cat_x, 285, "occlusion", window=16, stride=32)


def test_integrated_gradients_are_complete_up_to_the_reported_gap(lite0, cat_x):
    calls = []
    ev = evidence(lite0, cat_x, 285, "ig", n_steps=8, internal_batch_size=4,
                  progress=lambda d, t: calls.append((d, t)))
    assert calls[-1][1] == 2 and ev.settings["n_steps"] == 8
    diff = _logit(lite0, cat_x, 285) - _logit(lite0, torch.zeros_like(cat_x), 285)
    assert abs(float(ev.raw.sum()) - diff) == pytest.approx(ev.extra["convergence_delta"], abs=1e-2)


# ------------------------------------------------------------------ channels behind a map
def _close(a: float, b: float, rel: float = 1e-4) -> bool:
    return abs(a - b) <= rel * max(abs(a), abs(b), 1e-6)


def test_channel_shares_sum_to_the_gradcam_map_and_plus_bias_to_the_logit_on_lite0(lite0, cat_x):
    ec = evidence_channels(lite0, cat_x, 285)
    assert (ec.layer, ec.module, ec.asked) == ("head", "bn2", "bn2")  # the CAM layer, named by its tap
    raw = gradcam_raw(lite0, cat_x, 285, "bn2")
    assert ec.shares.shape == (1280,) and _close(float(ec.shares.sum()), float(raw.sum()))
    assert _close(ec.total, float(raw.sum()))
    # right below global pooling and the linear head: each share is w_c * mean(A_c), shares + bias = logit
    b = float(lite0.model.classifier.bias[285])
    assert ec.bias == pytest.approx(b) and _close(float(ec.shares.sum()) + b, _logit(lite0, cat_x, 285))
    assert ec.logit == pytest.approx(_logit(lite0, cat_x, 285), abs=1e-4)
    w285 = lite0.model.classifier.weight[285].detach().numpy()
    c = ec.top[0].channel
    assert ec.top[0].share == pytest.approx(float(w285[c]) * ec.top[0].mean, rel=1e-3)
    assert "bias" in ec.method and "logit" in ec.method
    # top: positive, largest first, and the largest of all; bottom: the most negative
    tops = [t.share for t in ec.top]
    assert len(ec.top) == 8 and tops == sorted(tops, reverse=True) and tops[-1] > 0
    assert tops[0] == pytest.approx(float(ec.shares.max()))
    assert ec.bottom and ec.bottom[0].share == pytest.approx(float(ec.shares.min())) and ec.bottom[0].share < 0
    assert ec.activation.shape == (1280, 7, 7) and ec.image.size == (224, 224)
    assert _no_hooks(lite0.model)
    # a class by label, and top1 from the same forward pass
    assert evidence_channels(lite0, cat_x, "Egyptian cat").target.index == 285
    assert evidence_channels(lite0, cat_x, None, k=3).target == resolve_target(lite0, None, lite0.model(cat_x))


def test_channel_shares_of_a_container_come_from_its_last_tap(resnet18_random):
    lm = resnet18_random
    assert default_layer(lm) == "layer4"
    tap, same = layer_tap(lm, "layer4")
    assert (tap.name, same) == ("layer4.1", True)
    torch.manual_seed(0)
    x = torch.randn(1, 3, 224, 224)
    for t in (0, 517):
        ec = evidence_channels(lm, x, t)
        assert (ec.layer, ec.asked) == ("layer4.1", "layer4")
        raw = gradcam_raw(lm, x, t, "layer4")  # the container's map is its last tap's
        assert _close(ec.total, float(raw.sum())) and _close(float(ec.shares.sum()), float(raw.sum()))
        assert _close(ec.total + float(lm.model.fc.bias[t]), _logit(lm, x, t))
    # an earlier block, asked by its module path, and a tap asked by name
    ec = evidence_channels(lm, x, 3, "layer3")
    assert ec.layer == "layer3.1" and ec.shares.shape == (256,) and ec.bias is None
    assert _close(ec.total, float(gradcam_raw(lm, x, 3, "layer3").sum()))
    assert evidence_channels(lm, x, 3, "layer2.0").layer == "layer2.0"
    assert _no_hooks(lm.model)


@pytest.mark.slow
def test_channel_shares_on_densenet_see_its_features_before_the_in_place_relu():
    lm = _random("densenet121")
    torch.manual_seed(0)
    x = torch.randn(1, 3, 224, 224)
    ec = evidence_channels(lm, x, 7)
    assert (ec.layer, ec.asked) == ("norm5", "features")
    assert _close(ec.total, float(gradcam_raw(lm, x, 7, "features.norm5").sum()))
    assert (ec.activation < 0).any()  # norm5's output, before torchvision's F.relu(inplace=True)
    assert ec.bias is None  # a ReLU lies between the map and the head
    assert _no_hooks(lm.model)


def test_channel_shares_say_what_they_cannot_do(resnet18_random):
    import dataclasses

    import torchvision

    from vizcore.models import LoadedModel, UnknownLayerError

    lm = resnet18_random
    x = torch.zeros(1, 3, 224, 224)
    with pytest.raises(UnknownLayerError, match="layer4"):
        evidence_channels(lm, x, 1, "layer44")
    with pytest.raises(MethodNotApplicable, match="not one of its taps"):
        evidence_channels(lm, x, 1, "layer4.1.conv1")  # a module inside a tap, holding none
    with pytest.raises(MethodNotApplicable, match="no .* map"):
        evidence_channels(lm, x, 1, "fc")
    # no classification head: no class names, or a network that outputs features, not logits
    nameless = dataclasses.replace(lm, spec=dataclasses.replace(lm.spec, categories=None))
    with pytest.raises(MethodNotApplicable, match="no classification head"):
        evidence_channels(nameless, x, 1)
    body = torchvision.models.resnet18()
    body.fc = torch.nn.Identity()
    for p in body.parameters():
        p.requires_grad_(False)
    headless = LoadedModel(lm.spec, body.eval(), lm.weights)
    with pytest.raises(MethodNotApplicable, match="no 1000 class logits"):
        evidence_channels(headless, x, 1)
    assert _no_hooks(lm.model) and _no_hooks(body)


# ------------------------------------------------------------------ geometry and targets
def test_to_input_puts_each_cell_at_its_receptive_field_centre():
    raw = torch.zeros(4, 4)
    raw[1, 2] = 1.0
    out = to_input(raw, Geometry(20, 10, 5.0), (40, 40))
    assert np.unravel_index(np.argmax(out), out.shape) == (15, 25)
    assert out[15, 25] == pytest.approx(1.0) and out[0, 0] == 0.0
    assert to_input(raw, None, (8, 8)).shape == (8, 8)


def test_targets_by_index_label_and_top1(lite0, cat_x):
    assert resolve_target(lite0, "Egyptian CAT").index == 285
    assert resolve_target(lite0, "285").label == "Egyptian cat"
    assert resolve_target(lite0.spec, 0).label == "tench"
    with torch.no_grad():
        top = int(lite0.model(cat_x).argmax())
    assert resolve_target(lite0, "top1", lite0.model(cat_x)).index == top
    with pytest.raises(UnknownClassError, match="Closest: tabby"):
        resolve_target(lite0, "tabby cats")
    with pytest.raises(UnknownClassError, match="ambiguous"):
        resolve_target(lite0, "Cardigan")
    with pytest.raises(UnknownClassError, match="out of range"):
        resolve_target(lite0, 1000)


# ------------------------------------------------------------------ faithfulness
def test_faithfulness_curves_start_and_end_where_they_must(lite0, cat_x):
    ev = evidence(lite0, cat_x, 285, "cam")
    f = faithfulness(lite0, cat_x, ev.map, 285, steps=8)
    with torch.no_grad():
        p = lambda t: float(torch.softmax(lite0.model(t), 1)[0, 285])  # noqa: E731
        p_img, p_grey = p(cat_x), p(torch.zeros_like(cat_x))
    assert f.fractions[0] == 0 and f.fractions[-1] == 1 and len(f.deletion) == 9
    assert f.deletion[0] == pytest.approx(p_img, abs=1e-5) and f.deletion[-1] == pytest.approx(p_grey, abs=1e-5)
    assert f.insertion[-1] == pytest.approx(p_img, abs=1e-5) and f.insertion[0] < p_img
    assert 0 <= f.deletion_auc <= 1 and 0 <= f.insertion_auc <= 1
    assert f.deletion_auc < f.insertion_auc  # the CAM of the top class on a clear cat photo
    r = random_map((224, 224), seed=0)
    assert r.shape == (224, 224) and np.array_equal(r, random_map((224, 224), seed=0))
    assert not np.array_equal(r, random_map((224, 224), seed=1))
    with pytest.raises(ValueError, match="shape"):
        faithfulness(lite0, cat_x, r[:100], 285)


def test_explain_scores_each_map_and_the_random_baseline(lite0):
    rep = explain(lite0, load_sample("cat"), "top1", ["cam", "gradcam"], steps=4)
    j = rep.to_json()
    assert j["target"]["index"] == rep.target.index and set(j["methods"]) == {"cam", "gradcam"}
    assert j["target_logit"] == pytest.approx(float(rep.maps["cam"].raw.mean()), abs=1e-4)
    for entry in [*j["methods"].values(), j["random"]]:
        assert 0 <= entry["deletion_auc"] <= 1 and 0 <= entry["insertion_auc"] <= 1


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_cam_and_gradcam_beat_the_random_map_on_deletion_for_most_photos(lite0, imagenet_samples):
    rows = list(csv.DictReader((imagenet_samples / "labels.csv").open()))[::50][:20]
    wins = {"cam": 0, "gradcam": 0}
    for r in rows:
        x = preprocess(lite0, load_image(imagenet_samples / r["file"]))
        t = int(r["index"])
        base = faithfulness(lite0, x, random_map((224, 224), seed=0), t, steps=8, curves=("deletion",))
        for m in wins:
            ev = evidence(lite0, x, t, m)
            f = faithfulness(lite0, x, ev.map, t, steps=8, curves=("deletion",))
            wins[m] += f.deletion_auc < base.deletion_auc
    fractions = {m: v / len(rows) for m, v in wins.items()}
    print(f"fraction of {len(rows)} photos where the map beats the random map on deletion: {fractions}")
    assert all(v > 0.5 for v in fractions.values()), fractions


# ------------------------------------------------------------------ CLI
@pytest.mark.slow
def test_cli_writes_index_overlays_and_raw_maps(tmp_path):
    out = tmp_path / "ev"
    p = vizcore("evidence", sample_path("cat"), "--target", "egyptian cat", "--methods", "cam", "gradcam",
                "--steps", "4", "--out", out, "--json")
    printed = json.loads(p.stdout)
    index = json.loads((out / "index.json").read_text())
    assert printed == index
    assert set(index) >= {"model", "weights", "target", "target_logit", "methods", "random"}
    assert index["target"] == {"index": 285, "label": "Egyptian cat"}
    assert set(index["random"]) >= {"deletion_auc", "insertion_auc"}
    for name in ("cam", "gradcam"):
        e = index["methods"][name]
        assert set(e) >= {"overlay", "raw", "settings", "deletion_auc", "insertion_auc", "caveats"}
        assert (out / e["overlay"]).is_file()
        assert np.load(out / e["raw"]).shape == (7, 7)
    assert abs(float(np.load(out / "cam.npy").mean()) - index["target_logit"]) < 1e-4
    # the channels behind the map: the engine's, for the same class, at the tap the unit page names
    ch = index["channels"]
    ref = evidence_channels(load_model("efficientnet_lite0"), load_sample("cat"), 285, k=6)
    assert ch["layer"] == ref.layer == "head" and len(ch["top"]) == 6
    assert [c["channel"] for c in ch["top"]] == [c.channel for c in ref.top]
    np.testing.assert_allclose([c["share"] for c in ch["top"]], [c.share for c in ref.top], rtol=1e-4)
    assert abs(ch["total"] + ch["bias"] - index["target_logit"]) < 1e-3
    text = vizcore("evidence", sample_path("cat"), "--methods", "gradcam", "--steps", "2", "--channels", "3").stdout
    assert "channels of head behind the map" in text and text.count("(+") >= 3


def test_cli_unknown_class_and_method_are_one_line_errors(tmp_path):
    p = vizcore("evidence", sample_path("cat"), "--target", "tabby cats", ok=False)
    assert_one_line_error(p, "unknown class", "tabby")
    p = vizcore("evidence", sample_path("cat"), "--methods", "cams", ok=False)
    assert_one_line_error(p, "unknown evidence method", "cam")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    assert_one_line_error(vizcore("evidence", bad, ok=False), "bad.png")


@pytest.mark.slow
def test_a_second_cli_run_returns_from_the_cache(tmp_path, monkeypatch):
    """Every map and score is a cached job (by image content, model, target and settings): the
    second `vizcore evidence` on the same image and settings reads them back, with the same index;
    other settings or --no-cache compute afresh."""
    monkeypatch.setenv("VIZCORE_CACHE", str(tmp_path / "cache"))
    args = ("evidence", sample_path("cat"), "--methods", "occlusion", "ig", "--window", "56", "--stride", "56",
            "--ig-steps", "4", "--ig-batch", "2", "--steps", "2", "--channels", "0", "--json")
    first = vizcore(*args)
    assert "from the cache" not in first.stderr
    assert sorted(p.parent.name for p in (tmp_path / "cache").rglob("*.pt")) == \
        ["evidence", "evidence", "faithfulness", "faithfulness", "faithfulness"]
    second = vizcore(*args)
    assert "maps and scores from the cache" in second.stderr
    assert json.loads(second.stdout) == json.loads(first.stdout)
    other = vizcore(*args[:-1], "--window", "112", "--stride", "112", "--json")  # another window: computed
    assert "from the cache" not in other.stderr
    assert json.loads(other.stdout)["methods"]["occlusion"]["settings"]["window"] == 112
    assert "from the cache" not in vizcore(*args, "--no-cache").stderr


def test_evidence_jobs_tick_stop_resume_and_cache(lite0, cat_x, tmp_path, monkeypatch):
    """Occlusion as a StepJob: a tick per forward batch, stopped between batches, resumed to the
    same map as one run, cached once complete."""
    from vizcore.evidence import EvidenceJob
    from vizcore.jobs import JobRun, RunOptions, cached

    monkeypatch.setenv("VIZCORE_CACHE", str(tmp_path / "cache"))
    job = EvidenceJob(lite0, cat_x, 285, "occlusion", {"window": 56, "stride": 56, "batch": 6})
    run = JobRun(job, RunOptions())
    assert not run.complete
    run.step(2)  # the plain pass and the first batch of 6 windows
    assert (run.done, run.total) == (2, 4) and cached(job, RunOptions()) is None
    run.step()
    whole = evidence(lite0, cat_x, 285, "occlusion", window=56, stride=56, batch=6, cache=False)
    np.testing.assert_array_equal(run.result.raw, whole.raw)
    hit = cached(EvidenceJob(lite0, cat_x, 285, "occlusion", {"window": 56, "stride": 56, "batch": 6}), RunOptions())
    np.testing.assert_array_equal(hit.map, whole.map)
    assert hit.geometry == whole.geometry and hit.caveats == whole.caveats and hit.image.size == whole.image.size
