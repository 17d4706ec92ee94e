"""The class being explained and the input it is explained on, shared by every evidence module."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from vizcore.models import LoadedModel, ModelSpec

__all__ = ["Target", "UnknownClassError", "prepare", "resolve_target"]


class UnknownClassError(ValueError):
    """A class name or index the model does not have."""


@dataclass(frozen=True)
class Target:
    """The class being explained: ImageNet ``index`` and ``label``."""

    index: int
    label: str

    def to_json(self) -> dict:
        return {"index": self.index, "label": self.label}


def resolve_target(lm: LoadedModel | ModelSpec, target: int | str | None,
                   logits: torch.Tensor | None = None) -> Target:
    """The class meant by ``target``: an index, a label (case-insensitive) or ``"top1"``/``None``.

    ``lm`` may be a loaded model or just its spec (to check a label before loading).
    ``logits`` ``(1, K)`` are needed for ``top1``. Unknown labels raise
    :class:`UnknownClassError` naming the closest labels.
    """
    import difflib

    if isinstance(lm, ModelSpec):
        cats = list(lm.categories() if lm.categories else [])
    else:
        cats = list(lm.categories or [])
    if not cats:
        raise UnknownClassError(f"{lm.name} has no class names; it cannot be explained by class")
    if target is None or (isinstance(target, str) and target.strip().lower() == "top1"):
        if logits is None:
            raise ValueError("top1 needs the logits of the image")
        i = int(logits[0].argmax())
        return Target(i, cats[i])
    if isinstance(target, str) and target.strip().lstrip("-").isdigit():
        target = int(target.strip())
    if isinstance(target, (int, np.integer)):
        if not 0 <= int(target) < len(cats):
            raise UnknownClassError(f"class index {target} is out of range 0-{len(cats) - 1}")
        return Target(int(target), cats[int(target)])
    name = str(target).strip().lower()
    hits = [i for i, c in enumerate(cats) if c.lower() == name]
    if len(hits) == 1:
        return Target(hits[0], cats[hits[0]])
    if len(hits) > 1:
        raise UnknownClassError(f"class {target!r} is ambiguous (indices {', '.join(map(str, hits))}); "
                                "give the index")
    lower = {c.lower(): c for c in cats}
    close = [lower[c] for c in difflib.get_close_matches(name, list(lower), n=5, cutoff=0.6)]
    close += [c for c in cats if name in c.lower() and c not in close][: max(0, 5 - len(close))]
    hint = f" Closest: {', '.join(close)}." if close else ""
    raise UnknownClassError(f"unknown class {target!r} for {lm.name}.{hint} Give a label, an index 0-"
                            f"{len(cats) - 1} or top1.")


def prepare(lm: LoadedModel, image: Image.Image | torch.Tensor) -> tuple[torch.Tensor, Image.Image]:
    """The network's input ``(1, 3, H, W)`` for ``image`` (a PIL image, preprocessed as the model
    expects, or an input tensor as it is) and the RGB crop it shows."""
    from vizcore.activations import denormalize, preprocess

    if torch.is_tensor(image):
        x = image if image.dim() == 4 else image[None]
        x = x.to(lm.device)
    else:
        x = preprocess(lm, image)
    return x, denormalize(lm, x[0])
