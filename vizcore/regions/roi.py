"""RoIPool against RoIAlign for one box, bin by bin (He et al., Mask R-CNN, ICCV 2017,
https://arxiv.org/abs/1703.06870, section 3).

RoIPool (Fast R-CNN) rounds the box to the feature grid, splits it into bins whose edges are
rounded again, and takes the maximum of each bin; RoIAlign keeps the box exact, samples each bin
at regular points by bilinear interpolation and averages. The pooled values come from
``torchvision.ops.roi_pool`` / ``roi_align``; this module recomputes the geometry each of them
uses (torchvision's kernels in ``csrc/ops/cpu/roi_pool_kernel.cpp`` and ``roi_align_common.h``)
so it can be drawn and measured: the bins, the sample points, and how far each quantised bin edge
lies from the exact one in input pixels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

EXPLANATION = (
    "RoIPool rounds the box and its bins to the feature grid, moving bin edges by up to about a stride "
    "(tens of input pixels): harmless for a class label or a box regressed afterwards.",
    "A mask is predicted pixel by pixel inside the box, so the same shift misplaces every mask pixel; "
    "RoIAlign samples the exact box (bilinear) and removes it (He et al., Mask R-CNN, 2017).",
)


def _round(v: float) -> int:
    """C's ``round`` (half away from zero), as torchvision's RoIPool kernel uses."""
    return int(math.floor(v + 0.5)) if v >= 0 else -int(math.floor(-v + 0.5))


@dataclass(frozen=True)
class RoiComparison:
    """One box pooled both ways from a ``(C, H, W)`` map of an image.

    Coordinates: ``box`` in input pixels; ``grid_box`` = box x ``scale`` in feature cells;
    ``pool_cells`` RoIPool's rounded box ``(x1, y1, x2, y2)`` in whole cells (inclusive end, as the
    kernel has it); ``pool_bins`` ``(ph, pw, 4)`` each bin's ``[y0, y1, x0, x1)`` in cells;
    ``align_edges_x/y`` RoIAlign's bin edges in feature coordinates (``aligned=True``: pixel
    centres at +0.5); ``align_points`` ``(ph, pw, g, g, 2)`` its sample points ``(x, y)`` in
    feature coordinates; ``misalign_x/y`` ``(bins, 2)`` the quantised minus the exact start and end
    edge of each bin, in input pixels; ``pooled`` and ``aligned`` the two ``(C, ph, pw)`` results.
    """

    box: tuple[float, float, float, float]
    scale: float
    feature_size: tuple[int, int]
    output_size: tuple[int, int]
    sampling_ratio: int
    grid_box: tuple[float, float, float, float]
    pool_cells: tuple[int, int, int, int]
    pool_bins: np.ndarray
    align_edges_x: np.ndarray
    align_edges_y: np.ndarray
    align_points: np.ndarray
    misalign_x: np.ndarray
    misalign_y: np.ndarray
    pooled: np.ndarray
    aligned: np.ndarray

    @property
    def stride(self) -> float:
        return 1.0 / self.scale

    @property
    def max_misalignment(self) -> float:
        """The largest distance, in input pixels, between a RoIPool bin edge and the exact one."""
        return float(max(np.abs(self.misalign_x).max(), np.abs(self.misalign_y).max()))

    def pool_bins_px(self) -> np.ndarray:
        """RoIPool's bins ``(ph, pw, 4)`` as ``x0, y0, x1, y1`` in input pixels (whole cells)."""
        b = self.pool_bins.astype(np.float64) * self.stride
        return np.stack([b[..., 2], b[..., 0], b[..., 3], b[..., 1]], axis=-1)

    def align_bins_px(self) -> tuple[np.ndarray, np.ndarray]:
        """RoIAlign's bin edges in x and y, in input pixels (the box split evenly)."""
        return (self.align_edges_x + 0.5) * self.stride, (self.align_edges_y + 0.5) * self.stride

    def align_points_px(self) -> np.ndarray:
        """RoIAlign's sample points ``(ph, pw, g, g, 2)`` as ``(x, y)`` in input pixels."""
        return (self.align_points + 0.5) * self.stride

    @property
    def difference(self) -> np.ndarray:
        return self.aligned - self.pooled

    def to_json(self) -> dict:
        return {"box": list(self.box), "scale": self.scale, "feature_size": list(self.feature_size),
                "output_size": list(self.output_size), "sampling_ratio": self.sampling_ratio,
                "grid_box": list(self.grid_box), "pool_cells": list(self.pool_cells),
                "pool_bins": self.pool_bins.tolist(), "misalign_x": self.misalign_x.round(3).tolist(),
                "misalign_y": self.misalign_y.round(3).tolist(),
                "max_misalignment_px": round(self.max_misalignment, 3),
                "mean_abs_difference": float(np.abs(self.difference).mean())}


def pool_bins(box: tuple[float, float, float, float], scale: float, feature_size: tuple[int, int],
              output_size: tuple[int, int]) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """RoIPool's rounded box in cells and its bins ``(ph, pw, 4)`` as ``[y0, y1, x0, x1)``, as the kernel does."""
    h, w = feature_size
    ph, pw = output_size
    x1, y1, x2, y2 = (_round(v * scale) for v in box)
    rh, rw = max(y2 - y1 + 1, 1), max(x2 - x1 + 1, 1)
    bh, bw = rh / ph, rw / pw
    bins = np.zeros((ph, pw, 4), dtype=np.int64)
    for i in range(ph):
        for j in range(pw):
            y0 = min(max(int(math.floor(i * bh)) + y1, 0), h)
            ye = min(max(int(math.ceil((i + 1) * bh)) + y1, 0), h)
            x0 = min(max(int(math.floor(j * bw)) + x1, 0), w)
            xe = min(max(int(math.ceil((j + 1) * bw)) + x1, 0), w)
            bins[i, j] = (y0, ye, x0, xe)
    return (x1, y1, x2, y2), bins


def align_geometry(box: tuple[float, float, float, float], scale: float, output_size: tuple[int, int],
                   sampling_ratio: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """RoIAlign's (``aligned=True``) bin edges in x and y and sample points ``(ph, pw, gy, gx, 2)``,
    in feature coordinates; ``sampling_ratio <= 0`` means ``ceil(bin size)`` as in torchvision."""
    ph, pw = output_size
    x1, y1, x2, y2 = (v * scale - 0.5 for v in box)
    bw, bh = (x2 - x1) / pw, (y2 - y1) / ph
    gy = sampling_ratio if sampling_ratio > 0 else int(math.ceil((y2 - y1) / ph))
    gx = sampling_ratio if sampling_ratio > 0 else int(math.ceil((x2 - x1) / pw))
    ex = x1 + bw * np.arange(pw + 1)
    ey = y1 + bh * np.arange(ph + 1)
    pts = np.zeros((ph, pw, gy, gx, 2), dtype=np.float64)
    for i in range(ph):
        for j in range(pw):
            for a in range(gy):
                for b in range(gx):
                    pts[i, j, a, b] = (x1 + j * bw + (b + 0.5) * bw / gx, y1 + i * bh + (a + 0.5) * bh / gy)
    return ex, ey, pts, max(gx, gy)


def compare(feature: torch.Tensor, box: tuple[float, float, float, float], scale: float,
            output_size: tuple[int, int] = (7, 7), sampling_ratio: int = 2) -> RoiComparison:
    """Pool ``box`` (input pixels) from ``feature`` ``(C, H, W)`` (or ``(1, C, H, W)``) both ways.

    ``scale`` maps input pixels to feature cells (``1 / stride``).
    """
    from torchvision.ops import roi_align, roi_pool

    f = feature if feature.dim() == 4 else feature.unsqueeze(0)
    f = f.detach().float().cpu()
    _, _, h, w = f.shape
    box = tuple(float(v) for v in box)
    if not (box[2] > box[0] and box[3] > box[1]):
        raise ValueError(f"the box must have x2 > x1 and y2 > y1, not {box}")
    rois = torch.tensor([[0.0, *box]])
    pooled = roi_pool(f, rois, output_size, spatial_scale=scale)[0].numpy()
    aligned = roi_align(f, rois, output_size, spatial_scale=scale, sampling_ratio=sampling_ratio,
                        aligned=True)[0].numpy()
    cells, bins = pool_bins(box, scale, (h, w), output_size)
    ex, ey, pts, g = align_geometry(box, scale, output_size, sampling_ratio)
    stride = 1.0 / scale
    # Exact edges in input pixels: the box split evenly; quantised: whole cells (cell k spans
    # [k, k + 1) strides of input pixels).
    exact_x = box[0] + (box[2] - box[0]) / output_size[1] * np.arange(output_size[1] + 1)
    exact_y = box[1] + (box[3] - box[1]) / output_size[0] * np.arange(output_size[0] + 1)
    mx = np.stack([bins[0, :, 2] * stride - exact_x[:-1], bins[0, :, 3] * stride - exact_x[1:]], axis=1)
    my = np.stack([bins[:, 0, 0] * stride - exact_y[:-1], bins[:, 0, 1] * stride - exact_y[1:]], axis=1)
    return RoiComparison(box, float(scale), (h, w), tuple(output_size), g, tuple(v * scale for v in box), cells,
                         bins, ex, ey, pts, mx, my, pooled, aligned)


def compare_on_image(lm, image, box: tuple[float, float, float, float], *, layer: str | None = None,
                     image_size: int | None = None, sampling_ratio: int = 2):
    """:func:`compare` on the map Fast R-CNN pools from: ``image`` resized as Fast R-CNN resizes it
    (short side ``image_size``, default the classifier's resize size, sides multiples of the stride),
    ``box`` in pixels of ``image``, pooled to the tap's own size. Returns the comparison (in pixels
    of the resized image) and that image.
    """
    from PIL import Image

    from vizcore.regions.heads import split
    from vizcore.regions.rcnn import default_layer, fit_to_stride, normalised, tap_size

    net = split(lm, layer or default_layer(lm))
    out = tap_size(lm, net)
    stride = lm.spec.input_size / out[1]
    w, h = image.size
    win, hin = fit_to_stride((w, h), int(image_size or lm.spec.preprocess.resize), stride)
    resized = image.convert("RGB").resize((win, hin), Image.BILINEAR)
    with lm.lock, torch.no_grad():
        feat = net.trunk(normalised(lm, resized))[0]
    sx, sy = win / w, hin / h
    b = (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)
    return compare(feat, b, feat.shape[-1] / win, out, sampling_ratio), resized
