"""Faster / Mask R-CNN stages and FCN / DeepLab segmentation, on random init (no downloads).

With COCO / VOC weights in the torch hub cache the same code gives real detections; the tests that
need them skip with the reason.
"""
from __future__ import annotations

import numpy as np
import pytest

from vizcore.data import load_sample
from vizcore.models import WrongTaskError, get_spec, list_models, load_model, require_task, weights_available
from vizcore.regions.rpn import run_rpn
from vizcore.regions.segment import segment


@pytest.fixture(scope="module")
def mobile():
    return load_model("fasterrcnn_mobilenet_v3_large_fpn", "random")


def test_registered_with_their_task_categories_and_weights():
    assert list_models(task="detection") == ["fasterrcnn_resnet50_fpn_v2", "fasterrcnn_mobilenet_v3_large_fpn",
                                             "maskrcnn_resnet50_fpn_v2"]
    assert list_models(task="segmentation") == ["fcn_resnet50", "deeplabv3_resnet50"]
    assert not set(list_models()) & set(list_models(task="detection"))  # classification pages never list them
    spec = get_spec("maskrcnn_resnet50_fpn_v2")
    assert spec.categories()[1] == "person" and len(spec.categories()) == 91
    assert spec.weights[0].url.startswith("https://download.pytorch.org/models/maskrcnn_resnet50_fpn_v2_coco")
    assert len(get_spec("fcn_resnet50").categories()) == 21
    with pytest.raises(WrongTaskError, match="detection model, not a classification one"):
        require_task("fasterrcnn_resnet50_fpn_v2")


def test_rpn_anchors_levels_and_proposals(mobile):
    img = load_sample("astronaut")
    v = run_rpn(mobile, img, min_size=224, score_threshold=0.0)
    assert v.input_size == (224, 224)
    # Anchors: the sum over levels of H x W x anchors per location, each of its size and ratio.
    assert v.anchors.shape[0] == sum(lv.grid[0] * lv.grid[1] * lv.per_location for lv in v.levels)
    assert v.objectness.shape[0] == v.anchors.shape[0]
    assert [m.shape for m in v.objectness_maps] == [(lv.per_location, *lv.grid) for lv in v.levels]
    for at in v.anchors_at(256, 256):
        b = at["boxes"] * np.array([*v.scale, *v.scale])  # back to input pixels
        w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        np.testing.assert_allclose(np.sqrt(w * h), at["sizes"], rtol=0.03)
        np.testing.assert_allclose(h / w, at["ratios"], rtol=0.05)
        cx = (b[:, 0] + b[:, 2]) / 2
        lv = next(lv for lv in v.levels if lv.name == at["level"])
        np.testing.assert_allclose(cx, at["cell"][1] * lv.stride[1], atol=1)  # centred on the cell's corner
    assert 0 < v.proposals.shape[0] <= v.post_nms_top_n
    assert v.pre_nms.shape[0] == 200 and (np.diff(v.pre_nms_scores) <= 1e-6).all()
    assert (v.proposals[:, 2] <= img.size[0] + 1e-3).all() and (v.proposals[:, 3] <= img.size[1] + 1e-3).all()
    js = v.to_json()
    assert js["anchors"] == v.anchors.shape[0] and len(js["levels"]) == len(v.levels)


@pytest.mark.slow
def test_mask_rcnn_masks_have_the_image_size():
    lm = load_model("maskrcnn_resnet50_fpn_v2", "random")
    img = load_sample("coffee").resize((160, 120))
    v = run_rpn(lm, img, min_size=160, score_threshold=0.0)
    assert v.masks is not None and v.masks.shape == (len(v.boxes), 120, 160)
    assert ((v.masks >= 0) & (v.masks <= 1)).all()
    assert all(lv.per_location == 3 for lv in v.levels) and len(v.levels) == 5


def test_segmentation_native_and_upsampled_maps():
    lm = load_model("fcn_resnet50", "random")
    img = load_sample("horse").resize((120, 90))
    r = segment(lm, img, size=96)
    assert r.mask.shape == (90, 120) and r.native.shape[0] == 21
    assert r.scores.shape[1:] == r.input_size == (96, 128)
    assert r.stride == 8  # the dilated ResNet-50 of torchvision's FCN
    assert abs(sum(f for *_, f in r.classes) - 1) < 1e-9
    with pytest.raises(WrongTaskError):
        segment(load_model("efficientnet_lite0"), img)


@pytest.mark.skipif(weights_available(get_spec("fasterrcnn_mobilenet_v3_large_fpn")) not in ("hub-cache",),
                    reason="COCO weights of fasterrcnn_mobilenet_v3_large_fpn are not in the torch hub cache")
def test_coco_weights_find_the_astronaut():
    lm = load_model("fasterrcnn_mobilenet_v3_large_fpn")
    v = run_rpn(lm, load_sample("astronaut"))
    assert "person" in v.label_names


def test_backbone_taps_are_ordinary_taps(mobile):
    """extract() runs a detector's backbone on a classification-style input and stops there: its taps
    equal the backbone body's outputs on the detector's own transform, and there are no class scores."""
    import torch

    from vizcore.activations import extract, predict

    img = load_sample("astronaut").resize((96, 80))
    r = extract(mobile, img)
    assert list(r.layers) == [t.name for t in mobile.taps()] and r.predictions == []
    assert predict(mobile, [img]) == [[]]
    with torch.no_grad():
        batch, _ = mobile.model.transform([r.input])  # the detector normalises and resizes itself
        body = mobile.model.backbone.body
        x = batch.tensors
        for name, mod in body.named_children():
            x = mod(x)
            torch.testing.assert_close(r.layers[f"backbone.body.{name}"].output, x[0], rtol=1e-4, atol=1e-5)
    assert r.input.shape[1:] == (800, 800) and r.layers["backbone.body.16"].shape[1:] == (25, 25)


def test_backbone_units_mine_with_their_receptive_fields(mobile):
    """Dataset examples on a detector's backbone: the hits are the engine's maps' peaks, and each box is
    the unit's receptive field through the detector's own transform (a resize to the same size is the
    identity for the geometry), not an empty box."""
    from vizcore.activations import extract
    from vizcore.data.datasets import file_list
    from vizcore.data.samples import sample_path
    from vizcore.patches import mine_top_patches
    from vizcore.summary import layer_geometry

    ds = file_list([sample_path("astronaut"), sample_path("coffee")])
    r = mine_top_patches(mobile, ds, ["backbone.body.0"], k=1, batch_size=2, workers=0)
    g = layer_geometry(mobile, "backbone.body.0")
    assert (g.rf, g.jump, g.start) == (3, 2, 0.0)  # the stem's 3x3 stride-2 convolution on the 800 px input
    (hit,) = r.hits("backbone.body.0", 4)
    from vizcore.data.images import load_image

    act = extract(mobile, load_image(ds.items[hit.index].path), ["backbone.body.0"], topk=0).layers["backbone.body.0"]
    assert hit.value == pytest.approx(float(act.output[4].max()), rel=1e-4)
    x0, y0, x1, y1 = hit.box
    assert 0 < x1 - x0 <= 3 and 0 < y1 - y0 <= 3 and x0 <= 2 * hit.x < x1
