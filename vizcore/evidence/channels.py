"""The channels behind a Grad-CAM map (and, right below global pooling, a class activation map).

Grad-CAM weights each channel ``A_c`` of a layer by ``alpha_c``, the spatial mean of
``d logit / d A_c``, and sums them (Selvaraju et al. 2017, https://arxiv.org/abs/1610.02391).
Summed over the map, channel ``c`` contributes ``alpha_c * sum_hw A_c(h, w)``: its share.
The shares add up to the sum of the Grad-CAM map before its ReLU. For the layer right
below global average pooling and a linear head, ``alpha_c = w_c / hw`` and the share is
``w_c * mean(A_c)``, the channel's part of the logit (shares + bias = logit): the class
activation map is made of the same terms.

Written out here rather than through captum because ``LayerGradCam`` returns only the
summed map, not the per-channel terms. The hook comes from :func:`vizcore.tap.tap`
(under ``lm.lock``, always removed); gradients flow from the input, never into the
shared model's parameters.

The unit page names channels by *tap*, so a layer that is a container (resnet18's
``layer4``, mobilenet_v2's ``features``) is computed at the tap with the same output:
the last tap inside it (a Sequential's output is its last child's).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from vizcore.evidence.registry import MethodNotApplicable
from vizcore.evidence.targets import prepare, resolve_target
from vizcore.models import LoadedModel
from vizcore.models.registry import Tap
from vizcore.tap import tap

if TYPE_CHECKING:
    from vizcore.evidence.targets import Target

__all__ = ["ChannelShare", "EvidenceChannels", "evidence_channels", "layer_tap"]


@dataclass(frozen=True)
class ChannelShare:
    """One channel's term of the map: ``share = weight * mean * h * w``.

    Attributes:
        weight: ``alpha_c``, the spatial mean of d logit / d activation.
        mean: the channel's mean activation over the map.
    """

    channel: int
    share: float
    weight: float
    mean: float

    def to_json(self) -> dict:
        return {"channel": self.channel, "share": self.share, "weight": self.weight, "mean": self.mean}


@dataclass(frozen=True, eq=False)
class EvidenceChannels:
    """The channels of one layer that make the Grad-CAM map of one class.

    Attributes:
        layer: the tap computed on (a name the unit page accepts).
        module: its module path.
        asked: the layer asked for (a tap name or module path; default Grad-CAM's layer).
        method: the method in words, for display.
        total: sum of all shares (the sum of the Grad-CAM map before its ReLU).
        logit: the model's logit of the target, from the same forward pass.
        bias: the head's bias when the layer lies right below global average pooling and
            a linear head (then ``total + bias == logit``), else ``None``.
        top: the channels with the largest positive shares, largest first.
        bottom: the most negative shares, most negative first.
        shares, weights: every channel's share and ``alpha_c``, ``(C,)``.
        activation: the layer's output ``(C, h, w)``; image: the crop it was computed on.
    """

    model: str
    target: "Target"
    layer: str
    module: str
    asked: str
    method: str
    total: float
    logit: float
    bias: float | None
    top: list[ChannelShare]
    bottom: list[ChannelShare]
    shares: np.ndarray = field(repr=False)
    weights: np.ndarray = field(repr=False)
    activation: np.ndarray = field(repr=False)
    image: Image.Image = field(repr=False)

    def to_json(self) -> dict:
        return {"model": self.model, "target": self.target.to_json(), "layer": self.layer, "module": self.module,
                "asked": self.asked, "method": self.method, "total": self.total, "logit": self.logit,
                "bias": self.bias, "n_channels": int(self.shares.shape[0]),
                "top": [c.to_json() for c in self.top], "bottom": [c.to_json() for c in self.bottom]}


def _last_children(model: nn.Module, path: str) -> list[str]:
    """Module paths whose output is ``path``'s: its last child, that one's last child, ... while
    they are Sequentials (whose output is their last child's)."""
    modules = dict(model.named_modules())
    out = []
    m = modules[path]
    while isinstance(m, nn.Sequential) and len(m):
        path = f"{path}.{list(m._modules)[-1]}"
        m = modules[path]
        out.append(path)
    return out


def layer_tap(lm: LoadedModel, layer: str) -> tuple[Tap, bool]:
    """The tap for ``layer`` (a tap name or module path) and whether its output is ``layer``'s.

    A tap name or a tap's module is that tap. A container that is no tap (resnet18's
    ``layer4``) gives the last tap inside it; its output is the container's when it is the
    container's last child, or that one's, through Sequentials (``layer4`` -> ``layer4.1``).
    Unknown names raise :class:`vizcore.models.UnknownLayerError`; a module that is no tap
    and holds none raises :class:`MethodNotApplicable`.
    """
    path = lm.resolve(layer)
    taps = lm.taps()
    hit = next((t for t in taps if t.name == layer), None) or next((t for t in taps if t.module == path), None)
    if hit is not None:
        return hit, True
    inside = [t for t in taps if t.module.startswith(path + ".")]
    if not inside:
        raise MethodNotApplicable(f"{layer!r} of {lm.name} is not one of its taps and holds none; "
                                  f"channels are shown for taps ({', '.join(t.name for t in taps[-4:])}, …)")
    last = inside[-1]
    return last, last.module in _last_children(lm.model, path)


def _cam_bias(lm: LoadedModel, module: str, target: int) -> tuple[float, str] | None:
    """``(bias, head path)`` when ``module``'s output goes straight into global average pooling and a
    linear head (the class activation map's layer, no ReLU between), else ``None``."""
    from vizcore.evidence.cam import cam_head

    try:
        head = cam_head(lm)
    except MethodNotApplicable:
        return None
    if head.features is None or head.relu:
        return None
    feats = lm.resolve(head.features)
    if module != feats and module not in _last_children(lm.model, feats):
        return None
    lin = dict(lm.model.named_modules())[head.head]
    return (float(lin.bias[target]) if lin.bias is not None else 0.0), head.head


def evidence_channels(lm: LoadedModel, image: Image.Image | torch.Tensor, target: int | str | None,
                      layer: str | None = None, *, k: int = 8, negative: int = 3) -> EvidenceChannels:
    """Each channel's share of the Grad-CAM map of class ``target`` at ``layer``.

    Args:
        lm: a loaded classifier (shared; not modified).
        image: a PIL image (preprocessed as the model expects) or a ``(1, 3, H, W)`` tensor.
        target: class index, label, or ``"top1"``/``None`` for the top prediction.
        layer: tap name or module path; default the layer Grad-CAM explains
            (:func:`vizcore.evidence.attribution.default_layer`). Containers are computed at
            their last tap (see :func:`layer_tap`).
        k: positive channels returned in ``top``; ``negative``: channels returned in ``bottom``.

    Returns:
        An :class:`EvidenceChannels` whose ``layer`` is a tap name.
    """
    from vizcore.activations import class_logits
    from vizcore.evidence.attribution import default_layer

    if not lm.categories:
        raise MethodNotApplicable(f"{lm.name} has no classification head: there is no class logit to split "
                                  "into channels")
    asked = layer or default_layer(lm)
    t, same = layer_tap(lm, asked)
    x, crop = prepare(lm, image)
    # clone: torchvision DenseNet applies ReLU in place to its last tap's output; Grad-CAM (captum)
    # sees the output before it.
    with torch.enable_grad(), tap(lm.model, [t.module], detach=False, clone=True, lock=lm.lock) as store:
        inp = x.detach().clone().requires_grad_(True)  # parameters are frozen: the input puts the layer in the graph
        logits = class_logits(lm.model(inp))
        if logits is None or logits.shape[1] != len(lm.categories):
            raise MethodNotApplicable(f"{lm.name} outputs no {len(lm.categories)} class logits: no classification "
                                      "head to explain")
        tgt = resolve_target(lm, target, logits.detach())
        act = store.get(t.module)
        if act is None or act.dim() != 4:
            shape = "nothing" if act is None else "×".join(map(str, act.shape[1:]))
            raise MethodNotApplicable(f"{t.name} of {lm.name} outputs no (C, h, w) map ({shape}): "
                                      "Grad-CAM needs one")
        (grad,) = torch.autograd.grad(logits[0, tgt.index], act)
    a = act.detach()[0].float()
    alpha = grad.detach()[0].float().mean(dim=(1, 2))
    shares = (alpha * a.sum(dim=(1, 2))).cpu().numpy().astype(np.float64)
    means = a.mean(dim=(1, 2)).cpu().numpy()
    weights = alpha.cpu().numpy()
    logit = float(logits.detach()[0, tgt.index])

    def row(c: int) -> ChannelShare:
        return ChannelShare(int(c), float(shares[c]), float(weights[c]), float(means[c]))

    order = np.argsort(-shares, kind="stable")
    top = [row(c) for c in order if shares[c] > 0][: max(0, int(k))]
    bottom = [row(c) for c in order[::-1] if shares[c] < 0][: max(0, int(negative))]
    h, w = int(a.shape[1]), int(a.shape[2])
    method = (f"Grad-CAM at {t.name}: each channel's activation summed over the {h}×{w} map, times the spatial "
              f"mean of d logit / d activation for “{tgt.label}”; the terms add up to the Grad-CAM map before "
              "its ReLU, summed")
    if t.name != asked:
        method += (f" ({asked} is computed at its last tap, {t.name}, which outputs the same map)" if same else
                   f" ({asked} is not a tap: computed at the last tap inside it, {t.name}, whose map is not "
                   f"{asked}'s)")
    cam = _cam_bias(lm, t.module, tgt.index)
    bias = None
    if cam is not None:
        bias, head = cam
        method += (f". Here, right below global average pooling and the linear head {head}, a term is the "
                   f"channel's weight times its mean activation, its part of the logit, and the class activation "
                   f"map is made of the same terms: terms {shares.sum():.4g} + bias {bias:.4g} = logit {logit:.4g}")
    return EvidenceChannels(lm.name, tgt, t.name, t.module, asked, method, float(shares.sum()), logit, bias,
                            top, bottom, shares, weights, a.cpu().numpy(), crop)
