"""Fully convolutional segmentation (torchvision FCN and DeepLabv3, VOC labels on COCO images).

Long et al., FCN, CVPR 2015 (https://arxiv.org/abs/1411.4038); Chen et al., DeepLabv3, 2017
(https://arxiv.org/abs/1706.05587). The classifier's per-class score map is taken at its native
resolution (the ``classifier`` module's output, stride 8 with the dilated ResNet-50) beside the
model's own bilinear upsampling to the input, whose arg-max is the mask.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from vizcore.models import LoadedModel, require_task
from vizcore.tap import tap


@dataclass(frozen=True)
class SegmentationResult:
    """``native`` ``(C, h, w)`` class scores at the classifier's resolution; ``scores`` ``(C, H, W)``
    upsampled to the network's input; ``mask`` ``(H0, W0)`` class indices at the original size;
    ``classes`` the classes present, by area fraction."""

    model: str
    weights: str
    categories: tuple[str, ...]
    image_size: tuple[int, int]
    input_size: tuple[int, int]
    native: np.ndarray
    scores: np.ndarray
    mask: np.ndarray
    classes: tuple[tuple[int, str, float], ...]
    seconds: float

    @property
    def stride(self) -> float:
        return self.input_size[0] / self.native.shape[1]

    def to_json(self) -> dict:
        return {"model": self.model, "weights": self.weights, "image_size": list(self.image_size),
                "input_size": list(self.input_size), "native_size": list(self.native.shape[1:]),
                "stride": self.stride, "seconds": round(self.seconds, 4),
                "classes": [{"index": i, "label": n, "fraction": round(f, 5)} for i, n, f in self.classes]}


def segment(lm: LoadedModel, image: Image.Image, *, size: int | None = None) -> SegmentationResult:
    """Segment ``image`` (short side resized to ``size``, default the model's 520)."""
    from torchvision.transforms.functional import normalize, pil_to_tensor

    require_task(lm.name, "segmentation")
    size = int(size or lm.spec.preprocess.resize)
    if size < 32:
        raise ValueError(f"the segmentation input must be at least 32 px, not {size}")
    img = image.convert("RGB")
    w0, h0 = img.size
    f = size / min(w0, h0)
    win, hin = max(1, round(w0 * f)), max(1, round(h0 * f))
    x = pil_to_tensor(img.resize((win, hin), Image.BILINEAR)).float().div(255)
    p = lm.spec.preprocess
    x = normalize(x, p.mean, p.std).unsqueeze(0).to(lm.device)
    t0 = time.perf_counter()
    with torch.no_grad(), tap(lm.model, ["classifier"], lock=lm.lock) as store:
        out = lm.model(x)["out"][0]
        native = store["classifier"][0]
    seconds = time.perf_counter() - t0
    up = torch.nn.functional.interpolate(out[None], size=(h0, w0), mode="bilinear", align_corners=False)[0]
    mask = up.argmax(0).cpu().numpy().astype(np.int64)
    cats = tuple(lm.categories or [str(i) for i in range(out.shape[0])])
    counts = np.bincount(mask.ravel(), minlength=len(cats))
    classes = tuple((int(i), cats[i], float(counts[i] / mask.size)) for i in np.argsort(-counts) if counts[i] > 0)
    return SegmentationResult(lm.name, lm.weights.source, cats, (w0, h0), (hin, win), native.cpu().numpy(),
                              out.cpu().numpy(), mask, classes, seconds)
