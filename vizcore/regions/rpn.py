"""Faster R-CNN and Mask R-CNN (torchvision) stage by stage, so every stage can be shown.

Ren et al., Faster R-CNN, NeurIPS 2015 (https://arxiv.org/abs/1506.01497); He et al., Mask R-CNN,
ICCV 2017 (https://arxiv.org/abs/1703.06870). The stages are torchvision's own modules, called in
the order ``GeneralizedRCNN.forward`` calls them (``transform``, ``backbone``, ``rpn.head``,
``rpn.anchor_generator``, ``rpn.box_coder``, ``rpn.filter_proposals``, ``roi_heads``,
``transform.postprocess``); nothing is rewritten and the shared model is never changed (the
resizing transform is a fresh copy when a different input size is asked for). Boxes come back in
pixels of the original image.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from vizcore.models import LoadedModel, require_task


@dataclass(frozen=True)
class Level:
    """One FPN level: its name, grid ``(h, w)``, stride in input pixels, anchor sizes and ratios."""

    name: str
    grid: tuple[int, int]
    stride: tuple[float, float]
    sizes: tuple[int, ...]
    ratios: tuple[float, ...]

    @property
    def per_location(self) -> int:
        return len(self.sizes) * len(self.ratios)

    @property
    def count(self) -> int:
        return self.grid[0] * self.grid[1] * self.per_location


@dataclass(frozen=True)
class RPNView:
    """Everything one image went through.

    ``anchors`` ``(sum of H x W x A, 4)`` and ``objectness`` (logits, same order: level, row,
    column, anchor) in input pixels; ``objectness_maps[l]`` ``(A, H, W)`` sigmoid scores;
    ``pre_nms`` / ``pre_nms_scores`` the top proposals before NMS, ``proposals`` /
    ``proposal_scores`` after (at most ``post_nms_top_n``), both in original pixels;
    ``boxes``, ``labels``, ``scores`` the final detections; ``masks`` ``(D, H, W)`` in [0, 1] for
    Mask R-CNN, else ``None``. ``input_size`` is the resized ``(h, w)`` the network saw.
    """

    model: str
    weights: str
    image_size: tuple[int, int]
    input_size: tuple[int, int]
    levels: tuple[Level, ...]
    anchors: np.ndarray
    objectness: np.ndarray
    objectness_maps: tuple[np.ndarray, ...]
    pre_nms: np.ndarray
    pre_nms_scores: np.ndarray
    proposals: np.ndarray
    proposal_scores: np.ndarray
    post_nms_top_n: int
    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    label_names: tuple[str, ...]
    masks: np.ndarray | None
    seconds: dict

    @property
    def scale(self) -> tuple[float, float]:
        """Input pixels per original pixel, ``(x, y)``."""
        return self.input_size[1] / self.image_size[0], self.input_size[0] / self.image_size[1]

    def anchors_at(self, x: float, y: float) -> list[dict]:
        """The anchors centred at the grid cell under original pixel ``(x, y)``, per level: their boxes
        in original pixels with size and ratio, and the objectness of each."""
        sx, sy = self.scale
        out, start = [], 0
        for lv in self.levels:
            h, w = lv.grid
            i = min(h - 1, max(0, int(y * sy // lv.stride[0])))
            j = min(w - 1, max(0, int(x * sx // lv.stride[1])))
            first = start + (i * w + j) * lv.per_location
            boxes = self.anchors[first:first + lv.per_location] / np.array([sx, sy, sx, sy], dtype=np.float32)
            # torchvision's base anchors run over ratios, then sizes (AnchorGenerator.generate_anchors).
            pairs = [(s, r) for r in lv.ratios for s in lv.sizes]
            out.append({"level": lv.name, "cell": (i, j), "boxes": boxes, "sizes": [p[0] for p in pairs],
                        "ratios": [p[1] for p in pairs],
                        "objectness": 1 / (1 + np.exp(-self.objectness[first:first + lv.per_location]))})
            start += lv.count
        return out

    def to_json(self) -> dict:
        return {"model": self.model, "weights": self.weights, "image_size": list(self.image_size),
                "input_size": list(self.input_size),
                "levels": [{"name": lv.name, "grid": list(lv.grid), "stride": list(lv.stride), "sizes": list(lv.sizes),
                            "ratios": list(lv.ratios), "anchors": lv.count} for lv in self.levels],
                "anchors": int(self.anchors.shape[0]), "proposals": int(self.proposals.shape[0]),
                "post_nms_top_n": self.post_nms_top_n,
                "detections": [{"box": [round(float(v), 2) for v in b], "index": int(lab), "label": name,
                                "score": round(float(s), 5)}
                               for b, lab, s, name in zip(self.boxes, self.labels, self.scores, self.label_names)],
                "masks": None if self.masks is None else list(self.masks.shape),
                "seconds": {k: round(v, 4) for k, v in self.seconds.items()}}


def _transform(lm: LoadedModel, min_size: int | None):
    t = lm.model.transform
    if min_size is None or (len(t.min_size) == 1 and t.min_size[0] == min_size):
        return t
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    return GeneralizedRCNNTransform(min_size, max(min_size, int(t.max_size * min_size / t.min_size[0])),
                                    t.image_mean, t.image_std, size_divisible=t.size_divisible).eval()


def run_rpn(lm: LoadedModel, image: Image.Image, *, min_size: int | None = None, pre_nms_show: int = 200,
            score_threshold: float = 0.5) -> RPNView:
    """Run a torchvision Faster / Mask R-CNN on ``image`` and keep every stage.

    Args:
        min_size: the short side the image is resized to (default: the model's, 800).
        pre_nms_show: how many top-scoring proposals before NMS to keep for display.
        score_threshold: final detections below this score are dropped (torchvision keeps >= 0.05).
    """
    from torchvision.models.detection.rpn import concat_box_prediction_layers
    from torchvision.transforms.functional import pil_to_tensor

    require_task(lm.name, "detection")
    m = lm.model
    rpn = m.rpn
    x = pil_to_tensor(image.convert("RGB")).float().div(255).to(lm.device)
    w0, h0 = image.size
    t = {}
    with lm.lock, torch.no_grad():
        t0 = time.perf_counter()
        tf = _transform(lm, min_size)
        images, _ = tf([x])
        features = m.backbone(images.tensors)
        t["backbone"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        feats = list(features.values())
        obj, deltas = rpn.head(feats)
        anchors = rpn.anchor_generator(images, feats)
        per_level = [o[0].numel() for o in obj]
        obj_flat, deltas_flat = concat_box_prediction_layers(obj, deltas)
        decoded = rpn.box_coder.decode(deltas_flat.detach(), anchors).view(1, -1, 4)
        boxes, scores = rpn.filter_proposals(decoded, obj_flat.detach(), images.image_sizes, per_level)
        t["rpn"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        dets, _ = m.roi_heads(features, boxes, images.image_sizes)
        dets = tf.postprocess(dets, images.image_sizes, [(h0, w0)])[0]
        t["heads"] = time.perf_counter() - t0
    hin, win = images.image_sizes[0]
    ph, pw = images.tensors.shape[-2:]
    gen = rpn.anchor_generator
    levels = tuple(Level(str(name), tuple(int(v) for v in f.shape[-2:]), (ph / f.shape[-2], pw / f.shape[-1]),
                         tuple(int(s) for s in gen.sizes[k]), tuple(float(r) for r in gen.aspect_ratios[k]))
                   for k, (name, f) in enumerate(features.items()))
    back = torch.tensor([w0 / win, h0 / hin, w0 / win, h0 / hin])
    flat = obj_flat.flatten()
    k = min(pre_nms_show, flat.numel())
    top_s, top_i = flat.topk(k)
    pre = decoded[0][top_i]
    pre[:, 0::2] = pre[:, 0::2].clamp(0, win)
    pre[:, 1::2] = pre[:, 1::2].clamp(0, hin)
    keep = dets["scores"] >= score_threshold
    cats = lm.categories or ()
    labels = dets["labels"][keep].cpu().numpy()
    masks = dets.get("masks")
    return RPNView(
        lm.name, lm.weights.source, (w0, h0), (int(hin), int(win)), levels,
        anchors[0].cpu().numpy(), flat.cpu().numpy(),
        tuple(torch.sigmoid(o[0]).cpu().numpy() for o in obj),
        (pre.cpu() * back).numpy(), torch.sigmoid(top_s).cpu().numpy(),
        (boxes[0].cpu() * back).numpy(), scores[0].cpu().numpy(), int(rpn.post_nms_top_n()),
        dets["boxes"][keep].cpu().numpy(), labels, dets["scores"][keep].cpu().numpy(),
        tuple(str(cats[i]) if i < len(cats) else str(i) for i in labels),
        None if masks is None else masks[keep][:, 0].cpu().numpy(), t)
