"""R-CNN, Fast R-CNN, heads from taps, Selective Search and RoIPool/RoIAlign on real models and images."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from vizcore.data import load_sample
from vizcore.models import load_model
from vizcore.regions import roi
from vizcore.regions.heads import HeadError, split
from vizcore.regions.proposals import ProposalError, selective_search, whole_image_box
from vizcore.jobs import Stopped
from vizcore.regions.rcnn import DetectError, DetectJob, RegionRun, agreement, detect, pool_regions


@pytest.fixture(scope="module")
def lite():
    return load_model("efficientnet_lite0")


@pytest.fixture(scope="module")
def cat224():
    return load_sample("cat").resize((224, 224), Image.BILINEAR)


def _logits(lm, image):
    from vizcore.regions.rcnn import normalised  # the same tensor the runs use

    with torch.no_grad():
        return lm.model(normalised(lm, image))


@pytest.mark.parametrize("name,taps", [("efficientnet_lite0", ["blocks.3.1", "blocks.5", "blocks.6"]),
                                       ("resnet18", ["layer2", "layer3.1", "layer4"])])
def test_head_after_trunk_is_the_network(name, taps):
    lm = load_model(name, "auto" if name == "efficientnet_lite0" else "random")
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        ref = lm.model(x)
        for t in taps:
            net = split(lm, t)
            torch.testing.assert_close(net.head(net.trunk(x)), ref, rtol=0, atol=1e-5)


def test_bad_taps_and_architectures_get_one_line(lite):
    with pytest.raises(HeadError, match=r"cannot start from 'head'.*blocks\.0.*blocks\.6"):
        split(lite, "head")
    with pytest.raises(HeadError, match="only timm EfficientNet/MobileNet and torchvision ResNet"):
        split(load_model("vgg11", "random"), "conv5_3")


def test_whole_image_roialign_is_the_feature_map_and_fast_rcnn_the_classifier(lite, cat224):
    """RoIAlign (aligned, 1 sample) over the whole image at the tap's own size returns the map itself,
    so Fast R-CNN's logits for that box are the classifier's logits on the image."""
    from vizcore.regions.rcnn import normalised

    box = whole_image_box(cat224.size)
    for layer in ("blocks.5", "blocks.6"):
        net = split(lite, layer)
        with torch.no_grad():
            feat = net.trunk(normalised(lite, cat224))
        pooled = pool_regions(feat, torch.as_tensor(box), tuple(feat.shape[-2:]), feat.shape[-1] / 224, "align",
                              sampling_ratio=1)
        torch.testing.assert_close(pooled, feat, rtol=0, atol=1e-6)
        run = RegionRun(lite, cat224, box, method="fast-rcnn", layer=layer, context=0, image_size=224,
                        sampling_ratio=1)
        run.step()
        torch.testing.assert_close(run._logits[0], _logits(lite, cat224), rtol=0, atol=1e-4)
    # R-CNN's warp of the whole image to its own size is the image: the same logits.
    run = RegionRun(lite, cat224, box, method="rcnn", context=0, sampling_ratio=1)
    run.step()
    torch.testing.assert_close(run._logits[0], _logits(lite, cat224), rtol=0, atol=1e-4)


def _bilinear(f: np.ndarray, x: float, y: float) -> np.ndarray:
    """Brute-force bilinear sample of ``f`` (C, H, W) at (x, y), zero outside [-1, H] x [-1, W] as in
    Mask R-CNN's RoIAlign (coordinates clamped to the border inside that margin)."""
    _, h, w = f.shape
    if y < -1 or y > h or x < -1 or x > w:
        return np.zeros(f.shape[0])
    y, x = min(max(y, 0.0), h - 1), min(max(x, 0.0), w - 1)
    y0, x0 = int(math.floor(y)), int(math.floor(x))
    y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
    ly, lx = y - y0, x - x0
    return ((1 - ly) * (1 - lx) * f[:, y0, x0] + (1 - ly) * lx * f[:, y0, x1]
            + ly * (1 - lx) * f[:, y1, x0] + ly * lx * f[:, y1, x1])


@pytest.mark.parametrize("box,ratio", [((37.0, 21.5, 181.0, 140.0), 2), ((0.0, 0.0, 223.0, 96.0), 1),
                                       ((100.3, 50.7, 130.1, 90.2), 3)])
def test_roialign_equals_brute_force_bilinear_sampling(lite, cat224, box, ratio):
    from vizcore.regions.rcnn import normalised

    with torch.no_grad():
        feat = split(lite, "blocks.3").trunk(normalised(lite, cat224))[0]
    c = roi.compare(feat, box, scale=14 / 224, output_size=(7, 7), sampling_ratio=ratio)
    f = feat.numpy().astype(np.float64)
    # Sample points by hand: bin (i, j), sample (a, b) at the box's start + (j + (b + .5) / g) bin widths.
    x1, y1, x2, y2 = (v * 14 / 224 - 0.5 for v in box)
    bw, bh = (x2 - x1) / 7, (y2 - y1) / 7
    expect = np.zeros((f.shape[0], 7, 7))
    for i in range(7):
        for j in range(7):
            vals = [_bilinear(f, x1 + (j + (b + 0.5) / ratio) * bw, y1 + (i + (a + 0.5) / ratio) * bh)
                    for a in range(ratio) for b in range(ratio)]
            expect[:, i, j] = np.mean(vals, axis=0)
            assert np.allclose(c.align_points[i, j, 0, 0], (x1 + (j + 0.5 / ratio) * bw, y1 + (i + 0.5 / ratio) * bh))
    np.testing.assert_allclose(c.aligned, expect, rtol=1e-4, atol=1e-5)


def test_roipool_bins_are_the_hand_quantised_cells(lite, cat224):
    """Box (37, 21.5, 181, 140) at stride 16 on a 14x14 map: round(2.3125)=2, round(1.34)=1,
    round(11.3125)=11, round(8.75)=9; width 11-2+1=10 cells, height 9-1+1=9 cells, 7x7 bins of
    10/7 by 9/7 cells with floor/ceil edges."""
    from vizcore.regions.rcnn import normalised

    with torch.no_grad():
        feat = split(lite, "blocks.3").trunk(normalised(lite, cat224))[0]
    box = (37.0, 21.5, 181.0, 140.0)
    c = roi.compare(feat, box, scale=1 / 16, output_size=(7, 7))
    assert c.pool_cells == (2, 1, 11, 9)
    xs = [(math.floor(j * 10 / 7) + 2, math.ceil((j + 1) * 10 / 7) + 2) for j in range(7)]
    ys = [(math.floor(i * 9 / 7) + 1, math.ceil((i + 1) * 9 / 7) + 1) for i in range(7)]
    assert xs == [(2, 4), (3, 5), (4, 7), (6, 8), (7, 10), (9, 11), (10, 12)]
    f = feat.numpy()
    for i, (y0, y1) in enumerate(ys):
        for j, (x0, x1) in enumerate(xs):
            assert tuple(c.pool_bins[i, j]) == (y0, y1, x0, x1)
            np.testing.assert_array_equal(c.pooled[:, i, j], f[:, y0:y1, x0:x1].max(axis=(1, 2)))
    # The quantised edges lie away from the exact ones, in input pixels.
    assert c.misalign_x[0, 0] == pytest.approx(2 * 16 - 37.0)
    assert c.misalign_y[-1, 1] == pytest.approx(10 * 16 - 140.0)
    assert 16 < c.max_misalignment < 2 * 16  # overlapping (ceil) bins and the +1 cell: more than a stride
    assert np.abs(c.difference).max() > 0  # the two pooled maps differ


def test_selective_search_caps_and_refuses_tiny_images():
    img = load_sample("coffee").resize((192, 128))
    p = selective_search(img, max_proposals=50)
    assert 0 < len(p) <= 50 and p.found >= len(p)
    b = p.boxes
    assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all() and (b[:, 2] <= 192).all() and (b[:, 3] <= 128).all()
    assert ((b[:, 2] - b[:, 0]) >= 8).all() and ((b[:, 3] - b[:, 1]) >= 8).all()
    np.testing.assert_array_equal(selective_search(img, max_proposals=50).boxes, b)  # the same order every time
    q = selective_search(img.resize((96, 64)), mode="quality", max_proposals=20)
    assert len(q) <= 20 and q.mode == "quality"
    with pytest.raises(ProposalError, match="too small for region proposals"):
        selective_search(img.resize((20, 40)))
    with pytest.raises(ProposalError, match="unknown proposal mode"):
        selective_search(img, mode="slow")


def test_rcnn_and_fast_rcnn_find_the_cat(lite):
    """Both name the cat with an ImageNet cat class; R-CNN needs one full pass per proposal,
    Fast R-CNN one in all (and is faster)."""
    img = load_sample("cat")
    boxes = np.concatenate([whole_image_box(img.size), selective_search(img, max_proposals=40).boxes])
    cats = {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat"}
    slow = detect(lite, img, boxes, method="rcnn", threshold=0.3)
    fast = detect(lite, img, boxes, method="fast-rcnn", threshold=0.3)
    for r in (slow, fast):
        assert any(d.label in cats for d in r.detections), [d.label for d in r.detections]
        assert all(d.score >= 0.3 for d in r.detections)
        js = r.to_json()
        assert js["proposals"] == len(boxes) and len(js["detections"]) == len(r.detections)
    assert slow.full_passes == len(boxes) and slow.head_passes == 0
    assert fast.full_passes == 1 and fast.head_passes == len(boxes)
    assert fast.layer == "blocks.6" and fast.pooled_size == (7, 7)
    assert fast.seconds["classify"] + fast.seconds["features"] < slow.seconds["classify"]
    a = agreement(slow, fast)
    assert a["large"] >= 1 and 0 <= a["agree_large"] <= 1
    # NMS: no two kept boxes of one class overlap more than the IoU threshold.
    from torchvision.ops import box_iou

    for r in (slow, fast):
        for cls in {d.index for d in r.detections}:
            bx = torch.tensor([d.box for d in r.detections if d.index == cls])
            iou = box_iou(bx, bx).fill_diagonal_(0)
            assert float(iou.max()) <= 0.3 + 1e-6


def test_runs_report_progress_and_stop(lite):
    img = load_sample("cat").resize((160, 107))
    boxes = selective_search(img, max_proposals=12).boxes
    seen = []
    run = RegionRun(lite, img, boxes, method="rcnn", batch_size=4)
    run.step(lambda d, t: seen.append((d, t)), budget_s=0.0)
    assert seen == [(4, len(boxes))] and not run.finished
    with pytest.raises(Stopped, match="stopped after 4 of"):
        run.step(should_stop=lambda: True)
    run.step(lambda d, t: seen.append((d, t)), budget_s=60)  # resumes where it stopped
    assert run.finished and seen[-1] == (len(boxes), len(boxes))
    with pytest.raises(DetectError, match="zero boxes"):
        RegionRun(lite, img, np.zeros((0, 4)))
    with pytest.raises(DetectError, match="unknown method"):
        RegionRun(lite, img, boxes, method="yolo")


def test_detect_job_is_cached_and_stops_without_caching(lite, tmp_path, monkeypatch):
    from vizcore import jobs

    monkeypatch.setenv("VIZCORE_CACHE", str(tmp_path / "cache"))
    img = load_sample("cat").resize((160, 107))
    boxes = selective_search(img, max_proposals=10).boxes
    job = DetectJob(lite, img, boxes, method="fast-rcnn", threshold=0.1, batch_size=4)
    with pytest.raises(Stopped):
        jobs.run(job, should_stop=lambda: True)
    assert jobs.cached(DetectJob(lite, img, boxes, method="fast-rcnn", threshold=0.1)) is None
    r = jobs.run(DetectJob(lite, img, boxes, method="fast-rcnn", threshold=0.1, batch_size=4))
    hit = jobs.cached(DetectJob(lite, img, boxes, method="fast-rcnn", threshold=0.1))
    assert hit is not None
    a, b = hit.to_json(), r.to_json()
    assert {k: v for k, v in a.items() if "seconds" not in k} == {k: v for k, v in b.items() if "seconds" not in k}
    np.testing.assert_array_equal(hit.probs, r.probs)
    assert jobs.cached(DetectJob(lite, img, boxes, method="fast-rcnn", threshold=0.2)) is None
