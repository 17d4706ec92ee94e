"""Region proposals by Selective Search (Uijlings et al., IJCV 2013), as R-CNN used them.

The segmentation and the hierarchical grouping come from OpenCV contrib's maintained
implementation (``cv2.ximgproc.segmentation``); this module only converts images, caps the
count, drops degenerate boxes and reports what it did.
"""
from __future__ import annotations

import ctypes
import threading
import time
from dataclasses import dataclass

import numpy as np
from PIL import Image

MODES = ("fast", "quality")
MIN_SIDE = 32
"""Images with a shorter side than this (pixels) are refused: Selective Search finds nothing useful."""
MIN_BOX = 8
"""Proposals narrower or shorter than this (pixels) are dropped (a few pixels hold no object)."""


_RAND_LOCK = threading.Lock()


def _seed_c_rand(seed: int) -> None:
    """Seed the C library's ``rand``: OpenCV's Selective Search ranks regions by ``level x rand()``
    (``selectivesearchsegmentation.cpp``), and ``cv2.setRNGSeed`` does not reach it. Without this the
    same image gives the same set of boxes in another order, so a cap keeps another subset."""
    try:
        ctypes.CDLL(None).srand(ctypes.c_uint(seed))
    except (OSError, AttributeError):  # no C library to reach (unusual platforms): order may vary
        pass


class ProposalError(ValueError):
    """Bad input for proposals (image too small, no proposal found); the message is for users."""


@dataclass(frozen=True)
class Proposals:
    """Boxes ``(N, 4)`` float32 ``x1, y1, x2, y2`` in pixels of ``image_size`` (w, h), in Selective
    Search's order (it ranks by a randomised hierarchy level, so the first are the largest groups)."""

    boxes: np.ndarray
    image_size: tuple[int, int]
    mode: str
    found: int
    seconds: float

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def to_json(self) -> dict:
        return {"count": len(self), "found": self.found, "mode": self.mode, "seconds": round(self.seconds, 4),
                "image_size": list(self.image_size)}


def selective_search(image: Image.Image, *, mode: str = "fast", max_proposals: int = 2000,
                     min_box: int = MIN_BOX, seed: int = 0) -> Proposals:
    """Selective Search proposals for ``image``, at most ``max_proposals``.

    Args:
        image: any PIL image (converted to RGB).
        mode: ``fast`` (``switchToSelectiveSearchFast``: HSV and Lab, two strategies) or
            ``quality`` (``switchToSelectiveSearchQuality``: more colour spaces and ks, ~4x slower).
        max_proposals: cap on the number of boxes kept (R-CNN used about 2,000).
        min_box: boxes with a side shorter than this many pixels are dropped.
        seed: seed of the random part of Selective Search's ranking (the same seed, the same order).

    Raises:
        ProposalError: an image smaller than :data:`MIN_SIDE`, a bad mode or cap, or no proposal.
    """
    import cv2

    if mode not in MODES:
        raise ProposalError(f"unknown proposal mode {mode!r}: use one of {', '.join(MODES)}")
    if max_proposals < 1:
        raise ProposalError(f"the number of proposals must be at least 1, not {max_proposals}")
    rgb = np.asarray(image.convert("RGB"))
    h, w = rgb.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise ProposalError(f"the image is too small for region proposals ({w}x{h} px; "
                            f"at least {MIN_SIDE} px on each side)")
    t0 = time.perf_counter()
    ss = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    ss.setBaseImage(np.ascontiguousarray(rgb[:, :, ::-1]))  # OpenCV wants BGR
    if mode == "fast":
        ss.switchToSelectiveSearchFast()
    else:
        ss.switchToSelectiveSearchQuality()
    with _RAND_LOCK:
        _seed_c_rand(seed)
        rects = np.asarray(ss.process(), dtype=np.float32).reshape(-1, 4)  # x, y, w, h
    found = int(rects.shape[0])
    keep = (rects[:, 2] >= min_box) & (rects[:, 3] >= min_box)
    rects = rects[keep][:max_proposals]
    boxes = np.stack([rects[:, 0], rects[:, 1], rects[:, 0] + rects[:, 2], rects[:, 1] + rects[:, 3]], axis=1)
    seconds = time.perf_counter() - t0
    if boxes.shape[0] == 0:
        raise ProposalError(f"Selective Search found no region of at least {min_box} px in this image "
                            f"({found} before filtering); try a larger or busier image")
    return Proposals(boxes.astype(np.float32), (w, h), mode, found, seconds)


def whole_image_box(image_size: tuple[int, int]) -> np.ndarray:
    """The one box covering the whole image, ``(1, 4)``."""
    w, h = image_size
    return np.array([[0.0, 0.0, float(w), float(h)]], dtype=np.float32)
