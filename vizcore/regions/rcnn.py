"""R-CNN and Fast R-CNN with any ImageNet classifier: the lecture's "reuse convolutions".

- R-CNN (Girshick et al., CVPR 2014, https://arxiv.org/abs/1311.2524): every proposal is dilated
  so that, warped to the classifier's input, it has ``context`` (16) pixels of surrounding image,
  warped (anisotropically) and classified by a full forward pass.
- Fast R-CNN (Girshick, ICCV 2015, https://arxiv.org/abs/1504.08083): one forward pass of the
  whole image (short side: the classifier's resize size) to a tap; every proposal is pooled from that map (``torchvision.ops.roi_align`` or
  ``roi_pool``) to the size the rest of the network sees at that tap on a normal input, and only
  the rest of the network (:mod:`vizcore.regions.heads`) runs per proposal.

Both then keep, per proposal, the top ImageNet class and its probability (an ImageNet classifier
has no background class), drop proposals under ``threshold`` and run per-class non-maximum
suppression (``torchvision.ops.batched_nms``). How they differ from the papers: no fine-tuning,
no SVMs, no bounding-box regression; the classifier is used as it was trained.

The work is steppable (:class:`RegionRun`): ``step()`` classifies batches for a bounded time
and reports ``progress(done, total)``; :func:`detect` loops it, checking ``should_stop()``;
:class:`DetectJob` is the same as a :class:`vizcore.jobs.StepJob` (cached, stoppable, resumable:
``vizcore.jobs.run`` for the CLI, ``run_job`` on the dashboard).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from PIL import Image

from vizcore.jobs import StepJob, Stopped, Tick
from vizcore.models import LoadedModel
from vizcore.regions.heads import SplitNetwork, split

METHODS = ("rcnn", "fast-rcnn")
POOLS = ("align", "pool")
CONTEXT = 16
"""R-CNN's context padding: pixels of image around the box at the warped size (the paper's p = 16)."""
DEFAULT_LAYER = {"efficientnet": "blocks.6", "resnet": "layer4.0", "resnext": "layer4.0",
                 "wide_resnet": "layer4.0", "highway": "layer4.0"}
"""The tap Fast R-CNN pools from when none is given: the last stage before the head
(as Fast R-CNN pooled VGG-16's conv5_3, leaving fc6 and fc7 per region)."""

Progress = Callable[[int, int], None]


class DetectError(ValueError):
    """Bad input for detection (a method, pool or threshold that does not exist); one line for users."""


@dataclass(frozen=True)
class Detection:
    """One detection: ``box`` ``(x1, y1, x2, y2)`` in image pixels, ImageNet ``index``, ``label``, ``score``."""

    box: tuple[float, float, float, float]
    index: int
    label: str
    score: float
    proposal: int

    def to_json(self) -> dict:
        return {"box": [round(float(v), 2) for v in self.box], "index": self.index, "label": self.label,
                "score": round(float(self.score), 5), "proposal": self.proposal}


@dataclass(frozen=True)
class DetectionResult:
    """What one method made of one image's proposals.

    ``probs`` ``(N, classes)`` are the softmax of every proposal; ``top`` ``(N,)`` their argmax;
    ``full_passes`` the full forward passes run, ``head_passes`` the per-region passes through the
    rest of the network (Fast R-CNN only); ``seconds`` by stage.
    """

    method: str
    model: str
    weights: str
    boxes: np.ndarray
    probs: np.ndarray
    detections: tuple[Detection, ...]
    full_passes: int
    head_passes: int
    seconds: dict
    layer: str | None = None
    pool: str | None = None
    pooled_size: tuple[int, int] | None = None
    threshold: float = 0.5
    iou: float = 0.3
    image_size: tuple[int, int] = (0, 0)

    @property
    def top(self) -> np.ndarray:
        return self.probs.argmax(axis=1)

    @property
    def total_seconds(self) -> float:
        return float(sum(self.seconds.values()))

    def to_json(self) -> dict:
        return {"method": self.method, "model": self.model, "weights": self.weights,
                "proposals": int(self.boxes.shape[0]), "layer": self.layer, "pool": self.pool,
                "pooled_size": list(self.pooled_size) if self.pooled_size else None,
                "threshold": self.threshold, "iou": self.iou, "full_forward_passes": self.full_passes,
                "head_passes": self.head_passes, "seconds": {k: round(v, 4) for k, v in self.seconds.items()},
                "total_seconds": round(self.total_seconds, 4), "image_size": list(self.image_size),
                "detections": [d.to_json() for d in self.detections]}


# ------------------------------------------------------------------ geometry
def dilate(boxes: np.ndarray | torch.Tensor, context: int, size: int) -> torch.Tensor:
    """Boxes grown about their centres so that, warped to ``size``, ``context`` pixels of image surround
    the original box (R-CNN's padding: a factor ``size / (size - 2 context)`` per side)."""
    b = torch.as_tensor(np.asarray(boxes), dtype=torch.float32).reshape(-1, 4)
    if context <= 0:
        return b.clone()
    if 2 * context >= size:
        raise DetectError(f"context padding {context} px leaves nothing of a {size} px input")
    f = size / (size - 2 * context)
    c = (b[:, :2] + b[:, 2:]) / 2
    half = (b[:, 2:] - b[:, :2]) / 2 * f
    return torch.cat([c - half, c + half], dim=1)


def normalised(lm: LoadedModel, image: Image.Image, size: tuple[int, int] | None = None) -> torch.Tensor:
    """``(1, 3, H, W)`` tensor of ``image`` (resized to ``size`` = (w, h) if given) with the model's mean/std."""
    from torchvision.transforms.functional import normalize, pil_to_tensor

    img = image.convert("RGB")
    if size is not None and img.size != tuple(size):
        img = img.resize(tuple(size), Image.BILINEAR)
    x = pil_to_tensor(img).float().div_(255)
    p = lm.spec.preprocess
    return normalize(x, p.mean, p.std).unsqueeze(0).to(lm.device)


def warp(x: torch.Tensor, boxes: torch.Tensor, size: int, sampling_ratio: int = 2) -> torch.Tensor:
    """Each box of image tensor ``x`` ``(1, 3, H, W)`` warped to ``(size, size)``: ``(N, 3, size, size)``.

    Bilinear sampling by ``roi_align`` (``sampling_ratio`` squared samples per output pixel, which
    averages down large boxes); outside the image the normalised value is 0, the mean colour (R-CNN filled with it).
    """
    from torchvision.ops import roi_align

    rois = torch.cat([torch.zeros(len(boxes), 1), boxes], dim=1).to(x)
    return roi_align(x, rois, (size, size), spatial_scale=1.0, sampling_ratio=sampling_ratio, aligned=True)


def pool_regions(feat: torch.Tensor, boxes: torch.Tensor, out: tuple[int, int], scale: float, pool: str,
                 sampling_ratio: int = 2) -> torch.Tensor:
    """Pool every box (in input pixels) from ``feat`` ``(1, C, h, w)`` to ``(N, C, *out)``.

    ``align``: ``roi_align(aligned=True)`` (He et al.'s RoIAlign: exact bins, bilinear samples);
    ``pool``: ``roi_pool`` (Fast R-CNN's RoIPool: box and bins rounded to the grid, max per bin).
    """
    from torchvision.ops import roi_align, roi_pool

    rois = torch.cat([torch.zeros(len(boxes), 1), boxes], dim=1).to(feat)
    if pool == "align":
        return roi_align(feat, rois, out, spatial_scale=scale, sampling_ratio=sampling_ratio, aligned=True)
    if pool == "pool":
        return roi_pool(feat, rois, out, spatial_scale=scale)
    raise DetectError(f"unknown pooling {pool!r}: use one of {', '.join(POOLS)}")


def default_layer(lm: LoadedModel) -> str:
    """The tap Fast R-CNN pools from by default (:data:`DEFAULT_LAYER`, else the last stage)."""
    from vizcore.regions.heads import head_taps

    if lm.spec.family in DEFAULT_LAYER:
        return DEFAULT_LAYER[lm.spec.family]
    taps = head_taps(lm.model)
    return taps[-1] if taps else "blocks.6"


def fit_to_stride(size: tuple[int, int], short: int, stride: float) -> tuple[int, int]:
    """``(w, h)`` scaled so the short side is about ``short``, each side a multiple of ``stride``
    (so every feature cell covers exactly ``stride`` input pixels)."""
    w, h = size
    f = short / min(w, h)
    s = max(1, int(round(stride)))
    return max(s, int(round(w * f / s)) * s), max(s, int(round(h * f / s)) * s)


_TAP_SIZE: dict[tuple, tuple[int, int]] = {}


def tap_size(lm: LoadedModel, net: SplitNetwork) -> tuple[int, int]:
    """The tap's ``(h, w)`` on the classifier's own input (crop x crop): what the head expects."""
    key = (lm.name, net.tap, lm.spec.input_size)
    if key not in _TAP_SIZE:
        s = lm.spec.input_size
        with torch.no_grad():
            f = net.trunk(torch.zeros(1, 3, s, s, device=lm.device))
        _TAP_SIZE[key] = (int(f.shape[-2]), int(f.shape[-1]))
    return _TAP_SIZE[key]


# ------------------------------------------------------------------- the run
class RegionRun:
    """Classify one image's proposals by R-CNN or Fast R-CNN, a batch at a time.

    Args:
        lm: an ImageNet classifier.
        image: the image the boxes are in.
        boxes: ``(N, 4)`` proposals ``x1, y1, x2, y2`` in pixels of ``image``.
        method: ``rcnn`` or ``fast-rcnn``.
        layer: Fast R-CNN's tap (default :func:`default_layer`).
        pool: ``align`` or ``pool``.
        context: padding of R-CNN, applied to the boxes of both methods so they classify the same regions.
        image_size: Fast R-CNN's short side of the whole image (rounded to the tap's stride); default
            the classifier's resize size (256 for a 224 px crop): an ImageNet classifier that was not
            fine-tuned sees objects at the scale it was trained on (at twice that, EfficientNet-Lite0's
            whole-image prediction of some photos collapses; see bench/regions.py).
        batch_size: regions per forward pass.
        sampling_ratio: samples per bin side of RoIAlign (Fast R-CNN) and of the warp (R-CNN).
    """

    def __init__(self, lm: LoadedModel, image: Image.Image, boxes: np.ndarray, *, method: str = "rcnn",
                 layer: str | None = None, pool: str = "align", context: int = CONTEXT,
                 image_size: int | None = None, batch_size: int | None = None, sampling_ratio: int = 2):
        if method not in METHODS:
            raise DetectError(f"unknown method {method!r}: use one of {', '.join(METHODS)}")
        if pool not in POOLS:
            raise DetectError(f"unknown pooling {pool!r}: use one of {', '.join(POOLS)}")
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        if boxes.shape[0] == 0:
            raise DetectError("there are no proposals to classify (zero boxes)")
        if not lm.categories:
            raise DetectError(f"{lm.name} has no classification head to name regions with")
        self.lm, self.image, self.boxes, self.method, self.pool = lm, image, boxes, method, pool
        self.context = int(context)
        self.size = lm.spec.input_size
        self.regions = dilate(boxes, self.context, self.size)
        self.batch_size = batch_size or (32 if method == "rcnn" else 256)
        self.sampling_ratio = sampling_ratio
        self.done = 0
        self.seconds = {"classify": 0.0}
        self._logits: list[torch.Tensor] = []
        self.net = self.feat = None
        self.layer = None
        self.pooled_size = None
        if method == "fast-rcnn":
            self.net = split(lm, layer or default_layer(lm))
            self.layer = self.net.tap
            self.pooled_size = tap_size(lm, self.net)
            self.stride = self.size / self.pooled_size[1]
            self.image_size = int(image_size or lm.spec.preprocess.resize)
            self._x = None
        else:
            self._x = None

    @property
    def total(self) -> int:
        return int(self.boxes.shape[0])

    def counts(self) -> tuple[int, int]:
        return self.done, self.total

    @property
    def finished(self) -> bool:
        return self.done >= self.total

    def _prepare(self) -> None:
        t0 = time.perf_counter()
        w, h = self.image.size
        if self.method == "rcnn":
            self._x = normalised(self.lm, self.image)
            self._scale = (1.0, 1.0)
        else:
            win, hin = fit_to_stride((w, h), self.image_size, self.stride)
            self._x = normalised(self.lm, self.image, (win, hin))
            self._scale = (win / w, hin / h)
            with self.lm.lock, torch.no_grad():
                self.feat = self.net.trunk(self._x)
            self.spatial_scale = self.feat.shape[-1] / win
            self.seconds["features"] = time.perf_counter() - t0
            return
        self.seconds["prepare"] = time.perf_counter() - t0

    def _batch(self, a: int, b: int) -> torch.Tensor:
        r = self.regions[a:b].clone()
        r[:, 0::2] *= self._scale[0]
        r[:, 1::2] *= self._scale[1]
        with self.lm.lock, torch.no_grad():
            if self.method == "rcnn":
                return self.lm.model(warp(self._x, r, self.size, self.sampling_ratio))
            pooled = pool_regions(self.feat, r, self.pooled_size, self.spatial_scale, self.pool, self.sampling_ratio)
            return self.net.head(pooled)

    def step(self, progress: Progress | None = None, *, budget_s: float = 1.0,
             should_stop: Callable[[], bool] | None = None) -> None:
        """Classify batches for about ``budget_s`` seconds (at least one batch)."""
        if self._x is None:
            self._prepare()
        t0 = time.perf_counter()
        while not self.finished:
            if should_stop is not None and should_stop():
                raise Stopped(f"stopped after {self.done} of {self.total} regions")
            a, b = self.done, min(self.total, self.done + self.batch_size)
            t1 = time.perf_counter()
            self._logits.append(self._batch(a, b).float().cpu())
            self.seconds["classify"] += time.perf_counter() - t1
            self.done = b
            if progress is not None:
                progress(self.done, self.total)
            if time.perf_counter() - t0 >= budget_s:
                break

    def result(self, *, threshold: float = 0.5, iou: float = 0.3) -> DetectionResult:
        """Per-proposal probabilities, then threshold and per-class NMS, of a finished run."""
        from torchvision.ops import batched_nms

        if not self.finished:
            raise DetectError(f"the run is not finished ({self.done} of {self.total} regions)")
        if not 0 <= threshold <= 1 or not 0 < iou <= 1:
            raise DetectError(f"threshold must lie in [0, 1] and iou in (0, 1], not {threshold} and {iou}")
        t0 = time.perf_counter()
        probs = torch.cat(self._logits).softmax(dim=1)
        score, cls = probs.max(dim=1)
        keep = torch.nonzero(score >= threshold).flatten()
        boxes = torch.as_tensor(self.boxes)
        kept = keep[batched_nms(boxes[keep], score[keep], cls[keep], iou)] if len(keep) else keep
        cats = self.lm.categories
        dets = tuple(Detection(tuple(float(v) for v in self.boxes[i]), int(cls[i]), str(cats[int(cls[i])]),
                               float(score[i]), int(i)) for i in kept.tolist())
        seconds = dict(self.seconds, nms=time.perf_counter() - t0)
        full, head = (self.total, 0) if self.method == "rcnn" else (1, self.total)
        return DetectionResult(self.method, self.lm.name, self.lm.weights.source, self.boxes, probs.numpy(),
                               dets, full, head, seconds, self.layer, self.pool if self.method != "rcnn" else None,
                               self.pooled_size, threshold, iou, tuple(self.image.size))


def detect(lm: LoadedModel, image: Image.Image, boxes: np.ndarray, *, method: str = "rcnn",
           threshold: float = 0.5, iou: float = 0.3, progress: Progress | None = None,
           should_stop: Callable[[], bool] | None = None, **kwargs) -> DetectionResult:
    """Run :class:`RegionRun` to the end; ``should_stop()`` true raises :class:`Stopped`.

    Keyword arguments are those of :class:`RegionRun` (``layer``, ``pool``, ``context``, ...).
    """
    run = RegionRun(lm, image, boxes, method=method, **kwargs)
    while not run.finished:
        run.step(progress, budget_s=3600.0, should_stop=should_stop)
    return run.result(threshold=threshold, iou=iou)


def agreement(a: DetectionResult, b: DetectionResult, *, min_area: float = 0.5) -> dict:
    """How often two methods give a proposal the same top class, over proposals covering at least
    ``min_area`` of the image (where both see much the same pixels) and over all proposals."""
    if a.boxes.shape != b.boxes.shape or not np.array_equal(a.boxes, b.boxes):
        raise DetectError("agreement needs both results on the same proposals")
    w, h = a.image_size
    area = (a.boxes[:, 2] - a.boxes[:, 0]) * (a.boxes[:, 3] - a.boxes[:, 1]) / max(w * h, 1.0)
    same = a.top == b.top
    big = area >= min_area
    return {"proposals": int(len(same)), "agree_all": float(same.mean()), "large": int(big.sum()),
            "agree_large": float(same[big].mean()) if big.any() else float("nan")}


# ------------------------------------------------------------------------ the job
def image_identity(image: Image.Image) -> str:
    """A digest of the image's pixels, mode and size (what a region result depends on)."""
    import hashlib

    h = hashlib.sha256(f"{image.mode}{image.size}".encode())
    h.update(image.tobytes())
    return h.hexdigest()[:24]


class DetectJob(StepJob[DetectionResult]):
    """R-CNN or Fast R-CNN on one image's proposals as a job: one tick per batch of regions.

    Cached under ``detect`` by the weights, the image's pixels, the boxes and every setting.
    """

    kind = "detect"
    unit = "regions"
    VERSION = 1

    def __init__(self, lm: LoadedModel, image: Image.Image, boxes: np.ndarray, *, method: str = "rcnn",
                 threshold: float = 0.5, iou: float = 0.3, **kwargs):
        self.lm, self.image, self.method = lm, image, method
        self.boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        self.threshold, self.iou, self.kwargs = float(threshold), float(iou), kwargs
        self.run = RegionRun(lm, image, self.boxes, method=method, **kwargs)  # checks the settings now
        self.total = self.run.total

    def key(self) -> str:
        import hashlib

        from vizcore.identity import result_key

        settings = {k: v for k, v in self.kwargs.items() if k not in ("batch_size", "layer")}
        return result_key(self.kind, self.VERSION, self.lm, method=self.method, image=image_identity(self.image),
                          boxes=hashlib.sha256(self.boxes.tobytes()).hexdigest()[:24], threshold=self.threshold,
                          iou=self.iou, layer=self.run.layer, **settings)

    def describe(self) -> str:
        return f"{self.method} {self.lm.name}"

    def work(self):
        run = self.run
        yield Tick(run.done, run.total)
        while not run.finished:
            run.step(budget_s=0.0)  # one batch per tick
            yield Tick(run.done, run.total)
        return run.result(threshold=self.threshold, iou=self.iou)

    def encode(self, r: DetectionResult) -> dict:
        d = r.to_json()
        d["boxes"] = torch.from_numpy(r.boxes)
        d["probs"] = torch.from_numpy(r.probs)
        return d

    def decode(self, d: dict) -> DetectionResult:
        dets = tuple(Detection(tuple(x["box"]), x["index"], x["label"], x["score"], x["proposal"])
                     for x in d["detections"])
        return DetectionResult(d["method"], d["model"], d["weights"], d["boxes"].numpy(), d["probs"].numpy(), dets,
                               d["full_forward_passes"], d["head_passes"], dict(d["seconds"]), d["layer"], d["pool"],
                               tuple(d["pooled_size"]) if d["pooled_size"] else None, d["threshold"], d["iou"],
                               tuple(d["image_size"]))
