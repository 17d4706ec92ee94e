"""How much a map is worth: deletion and insertion curves (Petsiuk et al., RISE,
BMVC 2018, https://arxiv.org/abs/1806.07421).

Deletion removes the most important pixels first (sets them to the mean colour,
0 after normalisation) and tracks the target's softmax probability; a faithful
map makes it fall fast (low area). Insertion starts from a blurred image and
reveals the most important pixels first; a faithful map makes it rise fast
(high area). A random map, scored in the same run, is the baseline.

Written here rather than taken from a library: captum's ``infidelity`` and
``sensitivity_max`` measure other things, and the curves need the model's own
preprocessing and batched forward passes through the shared model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from vizcore.evidence.registry import Progress, drive
from vizcore.jobs import Tick
from vizcore.models import LoadedModel


@dataclass(frozen=True, eq=False)
class Faithfulness:
    """Deletion and insertion curves of one map for one image and class.

    Attributes:
        fractions: ``(S + 1,)`` fraction of pixels removed / revealed, 0 to 1.
        deletion: ``(S + 1,)`` target probability as pixels are removed.
        insertion: ``(S + 1,)`` target probability as pixels are revealed.
        deletion_auc: area under ``deletion`` (trapezoid over ``fractions``), in [0, 1]; lower is better.
        insertion_auc: area under ``insertion``, in [0, 1]; higher is better.
    """

    fractions: np.ndarray
    deletion: np.ndarray
    insertion: np.ndarray
    deletion_auc: float
    insertion_auc: float

    def to_json(self, curves: bool = False) -> dict:
        out = {"deletion_auc": round(self.deletion_auc, 5), "insertion_auc": round(self.insertion_auc, 5)}
        if curves:
            out.update(fractions=[round(float(v), 5) for v in self.fractions],
                       deletion=[round(float(v), 5) for v in self.deletion],
                       insertion=[round(float(v), 5) for v in self.insertion])
        return out


def random_map(shape: tuple[int, int], seed: int = 0, grid: int = 7) -> np.ndarray:
    """A random map at ``shape``: uniform noise on a ``grid`` x ``grid`` lattice, upsampled bilinearly.

    The granularity matters as much as the ranking: deleting many scattered blobs
    harms a network far more than deleting one region of the same area, so a fine
    random map gets a low deletion area whatever the image shows. The default 7x7
    lattice matches the coarsest maps compared with it (CAM and Grad-CAM at stride 32
    of a 224 crop); on lite0 and 12 ImageNet photos CAM beat it on deletion for 9 of
    12, a 14x14 lattice for 4 of 12 and a 56x56 one for none.
    """
    g = torch.Generator().manual_seed(int(seed))
    coarse = torch.rand(1, 1, grid, grid, generator=g)
    fine = F.interpolate(coarse, size=tuple(shape), mode="bilinear", align_corners=False)[0, 0]
    # a whisper of pixel noise breaks the ties of the bilinear plateaus, reproducibly
    fine = fine + 1e-6 * torch.rand(tuple(shape), generator=g)
    return fine.numpy().astype(np.float32)


def _blur(x: torch.Tensor, frac: float = 0.05) -> torch.Tensor:
    from torchvision.transforms.functional import gaussian_blur

    sigma = max(1.0, frac * max(x.shape[-2:]))
    k = int(2 * math.ceil(3 * sigma) + 1)
    k = min(k, 2 * (min(x.shape[-2:]) // 2) - 1)
    return gaussian_blur(x, [k, k], [sigma, sigma])


def _probs(lm: LoadedModel, batch: torch.Tensor, target: int) -> np.ndarray:
    with lm.lock, torch.no_grad():
        out = lm.model(batch)
    if not torch.is_tensor(out):
        out = getattr(out, "logits", out[0])
    return torch.softmax(out.float(), dim=1)[:, target].cpu().numpy()


def faithfulness(lm: LoadedModel, x: torch.Tensor, heat: np.ndarray, target: int, *, steps: int = 32,
                 batch_size: int = 17, curves: tuple[str, ...] = ("deletion", "insertion"),
                 progress: Progress | None = None, should_stop: Callable[[], bool] | None = None) -> Faithfulness:
    """Deletion and insertion curves of ``heat`` for class ``target`` (:func:`faithfulness_steps` to
    the end; ``should_stop`` raises :class:`vizcore.jobs.Stopped`)."""
    return drive(faithfulness_steps(lm, x, heat, target, steps=steps, batch_size=batch_size, curves=curves),
                 progress, should_stop)


def faithfulness_steps(lm: LoadedModel, x: torch.Tensor, heat: np.ndarray, target: int, *, steps: int = 32,
                       batch_size: int = 17, curves: tuple[str, ...] = ("deletion", "insertion")):
    """Deletion and insertion curves of ``heat`` for class ``target``, as a generator: a
    :class:`vizcore.jobs.Tick` (images scored so far) after each forward batch, then the result.

    Args:
        lm: the model (shared; only read).
        x: ``(1, 3, H, W)`` preprocessed input.
        heat: ``(H, W)`` map at input resolution; larger means more important.
        steps: number of steps; each removes or reveals ``H*W/steps`` pixels.
        batch_size: images per forward pass.
        curves: which curves to compute (a skipped one is all NaN with NaN area).

    Returns:
        a :class:`Faithfulness`.
    """
    h, w = int(x.shape[-2]), int(x.shape[-1])
    heat = np.asarray(heat, dtype=np.float32)
    if heat.shape != (h, w):
        raise ValueError(f"map shape {heat.shape} does not match the input {(h, w)}")
    if steps < 1:
        raise ValueError("steps must be at least 1")
    n = h * w
    # Most important first; a stable sort keeps equal values in a fixed order.
    order = torch.from_numpy(np.argsort(-np.nan_to_num(heat, nan=-np.inf).reshape(-1), kind="stable").copy())
    counts = [round(n * i / steps) for i in range(steps + 1)]
    rank = torch.empty(n, dtype=torch.long)
    rank[order] = torch.arange(n)
    rank = rank.view(1, 1, h, w).to(x.device)
    fr = np.asarray(counts, dtype=np.float64) / n
    blurred = _blur(x)
    todo = [c for c in ("deletion", "insertion") if c in curves]
    total = len(todo) * (steps + 1)
    done = 0
    res: dict[str, np.ndarray] = {}
    yield Tick(0, total)
    for curve in todo:
        start, end = (x, torch.zeros_like(x)) if curve == "deletion" else (blurred, x)
        probs = []
        for i in range(0, steps + 1, batch_size):
            ks = torch.tensor(counts[i:i + batch_size], device=x.device).view(-1, 1, 1, 1)
            mask = (rank < ks).to(x.dtype)  # (B, 1, H, W): 1 where already removed / revealed
            batch = start * (1 - mask) + end * mask
            probs.append(_probs(lm, batch, target))
            done += len(ks)
            yield Tick(done, total)
        res[curve] = np.concatenate(probs).astype(np.float64)
    nan = np.full(steps + 1, np.nan)
    dele, ins = res.get("deletion", nan), res.get("insertion", nan)

    def auc(y: np.ndarray) -> float:
        return float(np.trapezoid(y, fr)) if not np.isnan(y).any() else float("nan")

    return Faithfulness(fr, dele, ins, auc(dele), auc(ins))
