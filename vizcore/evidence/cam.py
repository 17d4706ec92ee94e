"""Score maps read straight off the network: class activation maps, BagNet patch
evidence and the convolutionalised ("fully convolutional") AlexNet/VGG head.

For a network that ends in global average pooling and a linear layer, applying
that layer at every location of the last feature map gives a map whose mean is
exactly the image's logit (Zhou et al., CVPR 2016, https://arxiv.org/abs/1512.04150).
For BagNet this map is the paper's per-patch class evidence (Brendel & Bethge,
ICLR 2019, https://openreview.net/forum?id=SkfMWhAqYQ). Networks with fully
connected heads (AlexNet, VGG) become fully convolutional by reading fc6 as a
kxk convolution and fc7/fc8 as 1x1 convolutions (Long et al., CVPR 2015,
https://arxiv.org/abs/1411.4038); on an input larger than 224 they output a
coarse map of class scores.

None of this needs a library: it is one forward pass and a matrix product, and
no library exposes the per-location head of an arbitrary registered model.
"""
from __future__ import annotations

import copy
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from vizcore.evidence.registry import MethodNotApplicable, RawEvidence, method
from vizcore.models import LoadedModel
from vizcore.summary import Geometry, layer_geometry
from vizcore.tap import tap

FCN_FAMILIES = ("alexnet", "vgg")


@dataclass(frozen=True)
class CamHead:
    """Where the last feature map and the linear head of a GAP network live.

    Attributes:
        features: module path whose output is the last ``(C, h, w)`` feature map,
            or ``None`` for timm models (read through ``forward_features``).
        head: module path of the ``nn.Linear`` applied after global average pooling.
        relu: a functional ReLU sits between them (torchvision DenseNet).
    """

    features: str | None
    head: str
    relu: bool = False


_HEADS = {
    "resnet": CamHead("layer4", "fc"), "resnext": CamHead("layer4", "fc"),
    "wide_resnet": CamHead("layer4", "fc"), "bagnet": CamHead("layer4", "fc"),
    "densenet": CamHead("features", "classifier", relu=True),
    "googlenet": CamHead("inception5b", "fc"), "inception": CamHead("Mixed_7c", "fc"),
    "efficientnet": CamHead("bn2", "classifier"),
}


def cam_head(lm: LoadedModel) -> CamHead:
    """The feature map and linear head of ``lm``, or :class:`MethodNotApplicable` saying why not."""
    fam = lm.spec.family
    model = lm.model
    modules = dict(model.named_modules())
    if fam in _HEADS:
        head = _HEADS[fam]
    elif fam == "mobilenet":
        # MobileNet-V2 ends Dropout -> Linear (a CAM head); V3 has Linear -> Hardswish -> Linear.
        kids = list(model.classifier.named_children())
        lin = [n for n, m in kids if isinstance(m, nn.Linear)]
        others = [m for _, m in kids if not isinstance(m, (nn.Linear, nn.Dropout, nn.Identity))]
        if len(lin) != 1 or others:
            raise MethodNotApplicable(
                f"{lm.name}'s head is not one linear layer after average pooling "
                f"({' -> '.join(type(m).__name__ for _, m in kids)}), so it has no class activation "
                "map; use gradcam instead.")
        head = CamHead("features", f"classifier.{lin[0]}")
    elif fam == "timm":
        pool = getattr(model, "global_pool", None)
        clf = model.get_classifier() if hasattr(model, "get_classifier") else None
        if not (isinstance(clf, nn.Linear) and getattr(pool, "pool_type", "") == "avg"
                and hasattr(model, "forward_features")):
            raise MethodNotApplicable(
                f"{lm.name} does not end in average pooling and one linear layer; use gradcam instead.")
        path = next(n for n, m in modules.items() if m is clf)
        head = CamHead(None, path)
    elif fam in FCN_FAMILIES:
        raise MethodNotApplicable(f"{lm.name} has a fully connected head: use convolutionalize()")
    else:
        raise MethodNotApplicable(f"no class activation map is defined for {lm.name} (family {fam})")
    if not isinstance(modules.get(head.head), nn.Linear):
        raise MethodNotApplicable(f"{lm.name}: {head.head} is not a linear layer")
    return head


def _geometry(lm: LoadedModel, path: str | None, size: int) -> Geometry | None:
    if path is None:
        return None
    try:
        return layer_geometry(lm.spec, path, size)
    except Exception:  # noqa: BLE001 - a model the tracer cannot follow: spread cells evenly
        return None


def class_map(lm: LoadedModel, x: torch.Tensor, target: int) -> tuple[torch.Tensor, float, CamHead]:
    """The linear head applied at every location of the last feature map.

    Args:
        lm: a GAP + linear-head network (shared; only read).
        x: ``(1, 3, H, W)`` preprocessed input.
        target: class index.

    Returns:
        ``(map, logit, head)``: ``map`` is ``(h, w)`` with ``map.mean() == logit`` (the model's
        own output for ``target``, from the same forward pass).
    """
    head = cam_head(lm)
    model = lm.model
    lin: nn.Linear = dict(model.named_modules())[head.head]
    with torch.no_grad():
        if head.features is None:
            with lm.lock:
                feats = model.forward_features(x)
                logits = model.forward_head(feats)
        else:
            with tap(model, [head.features], lock=lm.lock) as store:
                logits = model(x)
                feats = store[head.features]
        f = feats[0].float()
        if head.relu:
            f = F.relu(f)
        w = lin.weight[target].float()
        b = lin.bias[target].float() if lin.bias is not None else f.new_zeros(())
        cam = torch.einsum("c,chw->hw", w, f) + b
    return cam.cpu(), float(logits[0, target]), head


@method("cam", title="Class activation map", paper="https://arxiv.org/abs/1512.04150",
        description="The linear head applied at every location of the last feature map (one forward "
                    "pass). Its mean is the logit. AlexNet/VGG: the convolutionalised head on an "
                    "upscaled crop.", defaults={"fcn_size": 448})
def cam_method(lm: LoadedModel, x: torch.Tensor, target: int, *, progress=None, should_stop=None,
               fcn_size: int = 448) -> RawEvidence:
    """Class activation map (Zhou et al. 2016); for AlexNet/VGG the FCN score map of the crop."""
    size = int(x.shape[-1])
    if lm.spec.family in FCN_FAMILIES:
        if fcn_size < size:
            raise ValueError(f"fcn_size must be at least the crop size {size}, got {fcn_size}")
        up = F.interpolate(x, size=(fcn_size, fcn_size), mode="bilinear", align_corners=False)
        raw, geom = fcn_map(lm, up, target)
        s = size / fcn_size
        geom = Geometry(int(round(geom.rf * s)), geom.jump * s, (geom.start + 0.5) * s - 0.5)
        return RawEvidence(
            raw, geom, {"fcn_size": fcn_size}, display="minmax",
            caveats=(f"{lm.name} has a fully connected head: this is its convolutionalised head "
                     f"(fc6 as a {conv_kernel(lm)}x{conv_kernel(lm)} convolution, fc7 and fc8 as 1x1) run on "
                     f"the crop upscaled to {fcn_size} px, so each cell scores a window of about "
                     f"{geom.rf} px of the crop; its mean is not the crop's logit.",))
    raw, logit, head = class_map(lm, x, target)
    caveats = []
    if raw.numel() <= 1:
        caveats.append("the last feature map is 1x1 at this input size: the map is one number")
    return RawEvidence(raw, _geometry(lm, head.features, size), {}, tuple(caveats), display="minmax",
                       extra={"map_mean": float(raw.mean()), "logit": logit,
                              "features": head.features or "forward_features", "head": head.head})


@method("bagnet", title="BagNet patch evidence", paper="https://openreview.net/forum?id=SkfMWhAqYQ",
        description="Per-patch class logits of BagNet-9/17/33 (one forward pass, no final average "
                    "pool); their mean is the logit.")
def bagnet_method(lm: LoadedModel, x: torch.Tensor, target: int, *, progress=None,
                  should_stop=None) -> RawEvidence:
    """Per-patch logits of a BagNet: each cell is the class evidence of one small patch."""
    if lm.spec.family != "bagnet":
        raise MethodNotApplicable(f"bagnet evidence needs a BagNet (bagnet9, bagnet17, bagnet33), not {lm.name}")
    raw, logit, head = class_map(lm, x, target)
    geom = _geometry(lm, head.features, int(x.shape[-1]))
    caveats = []
    if not lm.weights.pretrained:
        caveats.append("random weights: the patch evidence means nothing about ImageNet classes")
    return RawEvidence(raw, geom, {}, tuple(caveats), display="minmax",
                       extra={"map_mean": float(raw.mean()), "logit": logit,
                              "patch": geom.rf if geom else None})


# --------------------------------------------------------------------- FCN
_FCN: "weakref.WeakKeyDictionary[nn.Module, nn.Module]" = weakref.WeakKeyDictionary()
_FCN_LOCK = threading.Lock()


def conv_kernel(lm: LoadedModel) -> int:
    """Side of the fc6 convolution: the output size of the network's adaptive average pool."""
    out = lm.model.avgpool.output_size
    return int(out if isinstance(out, int) else out[0])


def convolutionalize(lm: LoadedModel) -> nn.Module:
    """AlexNet or VGG with its fully connected head read as convolutions.

    fc6 (``Linear(C*k*k, 4096)`` after flattening a ``(C, k, k)`` map) becomes a
    ``kxk`` convolution, fc7 and fc8 become 1x1 convolutions; dropout is dropped
    (inference). At the network's own input size (224) the map is 1x1 and equals
    the logits; larger inputs give an ``(h, w)`` grid of class scores.

    The shared model is never modified: the feature extractor is deep-copied
    (under the model's lock, so no other caller's hooks are copied along), and the
    head's weights are views of the original ones (read-only; no second copy of
    VGG's 400 MB fc6). One module is kept per loaded model.

    Returns:
        ``nn.Module`` mapping ``(N, 3, H, W)`` to ``(N, 1000, h, w)``.
    """
    if lm.spec.family not in FCN_FAMILIES:
        raise MethodNotApplicable(f"only AlexNet and VGG have fully connected heads to convert, not {lm.name}")
    with _FCN_LOCK:
        net = _FCN.get(lm.model)
        if net is not None:
            return net
        model = lm.model
        k = conv_kernel(lm)
        with lm.lock:
            features = copy.deepcopy(model.features)
        layers: list[tuple[str, nn.Module]] = [("features", features)]
        first, n_fc = True, 0
        for child in model.classifier.children():
            if isinstance(child, nn.Linear):
                n_fc += 1
                ks = k if first else 1
                cin = child.in_features // (ks * ks)
                conv = nn.Conv2d(cin, child.out_features, ks)
                # Views of the shared weights (flattening order of fc6's input is C, H, W).
                conv.weight = nn.Parameter(child.weight.detach().view(child.out_features, cin, ks, ks),
                                           requires_grad=False)
                conv.bias = nn.Parameter(child.bias.detach(), requires_grad=False)
                layers.append((f"fc{5 + n_fc}", conv))
                first = False
            elif isinstance(child, nn.ReLU):
                layers.append((f"relu{5 + n_fc}", nn.ReLU()))
            elif not isinstance(child, nn.Dropout):
                raise MethodNotApplicable(f"cannot convolutionalise a {type(child).__name__} in {lm.name}'s head")
        net = nn.Sequential(OrderedDict(layers)).eval()
        _FCN[lm.model] = net
        return net


def fcn_map(lm: LoadedModel, x: torch.Tensor, target: int) -> tuple[torch.Tensor, Geometry]:
    """Class-``target`` score map of the convolutionalised network on ``x`` ``(1, 3, H, W)``.

    Returns:
        ``(map, geometry)``: ``map`` ``(h, w)`` on the CPU (``h = (H' - k) + 1`` for a
        ``(C, H', W')`` feature map), and the receptive field, jump and start of its cells
        in pixels of ``x``: the feature map's, widened by the ``kxk`` fc6 window.
    """
    net = convolutionalize(lm)
    with torch.no_grad():
        feats = net.features(x)
        k = conv_kernel(lm)
        if feats.shape[-1] < k or feats.shape[-2] < k:
            raise ValueError(f"input {tuple(x.shape[-2:])} is too small for {lm.name}'s {k}x{k} fc6 window")
        out = feats
        for name, mod in list(net.named_children())[1:]:
            out = mod(out)
    g = layer_geometry(lm.spec, "features", min(int(x.shape[-2]), int(x.shape[-1])))
    geom = Geometry(g.rf + (k - 1) * g.jump, g.jump, g.start + (k - 1) / 2 * g.jump)
    return out[0, target].float().cpu(), geom


def fcn_scene_input(lm: LoadedModel, image, short_side: int = 448, max_side: int = 1344) -> torch.Tensor:
    """The whole image (no centre crop), short side ``short_side`` (long side at most ``max_side``),
    normalised as the model expects: ``(1, 3, H, W)``."""
    from torchvision.transforms import functional as TF

    from vizcore.data.images import to_rgb

    img = to_rgb(image)
    w, h = img.size
    s = short_side / min(w, h)
    s = min(s, max_side / max(w, h))
    size = (max(1, round(h * s)), max(1, round(w * s)))
    pp = lm.spec.preprocess
    t = TF.to_tensor(img.resize((size[1], size[0]), resample=3))  # bicubic
    return TF.normalize(t, pp.mean, pp.std).unsqueeze(0).to(lm.device)
