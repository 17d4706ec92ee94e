"""The orders of a layer's channels that the Model atlas offers (besides channel number).

- :func:`channel_means`: each channel's mean activation on one image (one forward pass).
- :func:`class_dependence`: how strongly one class logit depends on each channel for one
  image: gradient times input, summed over the channel's map, i.e. the first-order change of
  the logit were the channel switched off (Simonyan et al. 2014 and Shrikumar et al. 2016,
  https://arxiv.org/abs/1605.01713, applied to a whole channel rather than one pixel). One
  forward and one backward pass.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from PIL import Image

    from vizcore.models import LoadedModel


def _module(lm: "LoadedModel", layer: str) -> str:
    for t in lm.taps():
        if t.name == layer:
            return t.module
    lm.resolve(layer)  # an unknown name fails with the closest valid ones
    return layer


def channel_means(lm: "LoadedModel", image: "Image.Image", layer: str) -> np.ndarray:
    """``(C,)``: each channel's mean over its map of ``layer`` for ``image``."""
    from vizcore.activations import preprocess
    from vizcore.tap import forward_until, tap

    module = _module(lm, layer)
    x = preprocess(lm, image).to(lm.device)
    with torch.no_grad(), tap(lm.model, [module], stop=True, lock=lm.lock) as store:
        forward_until(lm.model, x)
    act = store[module][0].float()
    return act.reshape(act.shape[0], -1).mean(dim=1).cpu().numpy()


def class_dependence(lm: "LoadedModel", image: "Image.Image", layer: str, target: int) -> np.ndarray:
    """``(C,)``: gradient x activation of class ``target``'s logit, summed over each channel's map."""
    from vizcore.activations import class_logits, preprocess
    from vizcore.tap import tap

    module = _module(lm, layer)
    # the input asks for gradients, so the graph exists whether or not the weights are frozen
    x = preprocess(lm, image).to(lm.device).requires_grad_(True)
    with torch.enable_grad(), tap(lm.model, [module], detach=False, clone=True, lock=lm.lock) as store:
        logits = class_logits(lm.model(x))
        if logits is None:
            raise ValueError(f"{lm.name} returns no class logits; order by channel or activation instead")
        if not 0 <= int(target) < logits.shape[-1]:
            raise ValueError(f"class {target} is not one of {lm.name}'s {logits.shape[-1]} classes")
        act = store[module]
        (grad,) = torch.autograd.grad(logits[0, int(target)], act)
    score = (grad * act).detach()[0].float()
    return score.reshape(score.shape[0], -1).sum(dim=1).cpu().numpy()


__all__ = ["channel_means", "class_dependence"]
