"""Layer-wise relevance propagation (Bach et al., PLoS ONE 2015,
https://doi.org/10.1371/journal.pone.0130140) through zennit (Anders et al. 2021,
https://github.com/chr5tphr/zennit; version 0.4.6, the newest on PyPI).

The class logit is handed back layer by layer under a *composite* of rules (Montavon et al.,
"Layer-wise relevance propagation: an overview", 2019):

- ``epsilon`` (the default): the epsilon rule everywhere (with ``epsilon`` near 0 and no biases,
  the input relevance sums to the logit: conservation);
- ``epsilon_gamma_box``: z-box for the first convolution (pixels bounded by the normalised
  [0, 1] range), gamma for the other convolutions, epsilon for linear layers (the overview's
  recommendation for VGG; on EfficientNet-Lite0 it is unstable, measured: input relevance
  ~1e20 for a logit of 9, as the folded depthwise convolutions make gamma's denominators cancel);
- ``epsilon_plus_flat``: flat first layer, z+ convolutions, epsilon linear layers;
- ``epsilon_alpha2_beta1_flat``: flat first layer, alpha=2/beta=1 convolutions, epsilon linear layers.

Rules need a *canonical* network: batch norms folded into the convolution before them, sums of
residual branches as modules (so relevance is split, not copied), activations passed through.
zennit has canonizers for torchvision VGG and ResNet; :func:`efficientnet_canonizer` is written
here for timm's EfficientNet/EfficientNet-Lite blocks (zennit has none): each batch norm folded
into the convolution that runs just before it (zennit's ``NamedMergeBatchNorm``, the pairs read
off the forward order), the skip sums of ``DepthwiseSeparableConv`` and ``InvertedResidual`` as
zennit ``Sum`` modules, and the global average pool as an ``nn.AdaptiveAvgPool2d`` (rule: Norm);
ReLU6 is an activation (rule: Pass). Other families are refused with what is missing.

Canonizers rewrite weights while they are attached, so LRP never runs on the shared model:
each loaded model gets one private copy, used under its own lock.
"""
from __future__ import annotations

import copy
import math
import threading
import weakref
import torch
import torch.nn as nn

from vizcore.evidence.registry import MethodNotApplicable, RawEvidence, method
from vizcore.models import LoadedModel
from vizcore.summary import Geometry

COMPOSITES = ("epsilon_gamma_box", "epsilon", "epsilon_plus_flat", "epsilon_alpha2_beta1_flat")
PIXEL = Geometry(1, 1, 0.0)
_COPIES: "weakref.WeakKeyDictionary[nn.Module, tuple[nn.Module, threading.Lock]]" = weakref.WeakKeyDictionary()
_COPIES_LOCK = threading.Lock()


# ------------------------------------------------------------------ canonizers
def _conv_bn_pairs(model: nn.Module, example: torch.Tensor) -> list[tuple[tuple[str], str]]:
    """``((conv,), bn)`` for every batch norm whose input is the output of the convolution called just before it."""
    order: list[str] = []
    names = {m: n for n, m in model.named_modules()}
    handles = [m.register_forward_hook(lambda mod, i, o: order.append(names[mod]))
               for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    mods = dict(model.named_modules())
    return [((a,), b) for a, b in zip(order, order[1:])
            if isinstance(mods[a], nn.Conv2d) and isinstance(mods[b], nn.BatchNorm2d)]


def _exact_merge():
    """zennit's ``NamedMergeBatchNorm`` that also sets the merged batch norm's ``eps`` to 0 while attached:
    zennit leaves it, so the identity batch norm divides by sqrt(1 + eps); with EfficientNet's eps of 1e-3
    over 49 layers the logits drift by about 2%."""
    from zennit.canonizers import NamedMergeBatchNorm

    class ExactNamedMergeBatchNorm(NamedMergeBatchNorm):
        def register(self, linears, batch_norm):
            super().register(linears, batch_norm)
            self.batch_norm_eps = batch_norm.eps
            batch_norm.eps = 0.0

        def remove(self):
            super().remove()
            self.batch_norm.eps = self.batch_norm_eps

    return ExactNamedMergeBatchNorm


def _skip_forward(self, x):
    """timm DepthwiseSeparableConv / InvertedResidual with the skip sum as a zennit Sum module."""
    shortcut = x
    if self._vizcore_kind == "ds":
        x = self.bn1(self.conv_dw(x))
        x = self.se(self.aa(x))
        x = self.bn2(self.conv_pw(x))
    else:
        x = self.bn1(self.conv_pw(x))
        x = self.bn2(self.conv_dw(x))
        x = self.se(self.aa(x))
        x = self.bn3(self.conv_pwl(x))
    if self.has_skip:
        x = self.canonizer_sum(torch.stack([shortcut, self.drop_path(x)], dim=-1))
    return x


def _pool_forward(self, x):
    return self.flatten(self.canonizer_pool(x))


def efficientnet_canonizer(model: nn.Module, example: torch.Tensor):
    """zennit canonizer for a timm EfficientNet(-Lite): batch norms folded into convolutions, skip sums
    and the global average pool as modules. Raises :class:`MethodNotApplicable` naming what is missing."""
    from timm.layers import SelectAdaptivePool2d
    from timm.models._efficientnet_blocks import DepthwiseSeparableConv, InvertedResidual
    from zennit.canonizers import AttributeCanonizer, CompositeCanonizer
    from zennit.layer import Sum

    problems = []
    for n, m in model.named_modules():
        if isinstance(m, (DepthwiseSeparableConv, InvertedResidual)):
            if getattr(m, "conv_s2d", None) is not None:
                problems.append(f"{n} has a space-to-depth stem")
            if not isinstance(m.se, nn.Identity):
                problems.append(f"{n} has squeeze-and-excitation (a multiplicative gate with no LRP rule here)")
        elif type(m).__name__ in ("UniversalInvertedResidual", "MobileAttention", "EdgeResidual", "CondConvResidual"):
            problems.append(f"{n} is a {type(m).__name__} block")
    pool = getattr(model, "global_pool", None)
    if not (isinstance(pool, SelectAdaptivePool2d) and pool.pool_type == "avg"):
        problems.append("the global pool is not an average")
    if problems:
        raise MethodNotApplicable("no LRP canonizer for this EfficientNet: " + "; ".join(problems[:3])
                                  + ". The canonizer here covers EfficientNet-Lite blocks (folded batch norms, "
                                    "ReLU6, skip sums) only; use gradcam or ig.")

    def attributes(name, module):
        if isinstance(module, DepthwiseSeparableConv):
            return {"forward": _skip_forward.__get__(module), "canonizer_sum": Sum(), "_vizcore_kind": "ds"}
        if isinstance(module, InvertedResidual):
            return {"forward": _skip_forward.__get__(module), "canonizer_sum": Sum(), "_vizcore_kind": "ir"}
        if isinstance(module, SelectAdaptivePool2d):
            return {"forward": _pool_forward.__get__(module), "canonizer_pool": nn.AdaptiveAvgPool2d(1)}
        return None

    merge = _exact_merge()(_conv_bn_pairs(model, example))
    return CompositeCanonizer((merge, AttributeCanonizer(attributes)))


def canonizers_for(lm: LoadedModel, model: nn.Module, example: torch.Tensor) -> list:
    """The zennit canonizers for ``lm``'s family, or :class:`MethodNotApplicable` naming what is missing."""
    fam = lm.spec.family
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if fam == "resnet" or fam == "resnext" or fam == "wide_resnet" or fam == "bagnet":
        from zennit.torchvision import ResNetCanonizer

        return [ResNetCanonizer()]
    if fam in ("vgg", "alexnet"):
        from zennit.torchvision import VGGCanonizer

        return [VGGCanonizer()] if has_bn else []
    if fam == "efficientnet":
        return [efficientnet_canonizer(model, example)]
    raise MethodNotApplicable(
        f"no LRP canonizer for {lm.name} (family {fam}): zennit has canonizers for VGG and ResNet, and one is "
        "written here for EfficientNet-Lite; this family's " + ("batch norms and " if has_bn else "")
        + "branch merges have none. Use gradcam or ig.")


# ------------------------------------------------------------------ relevance
def composite_of(name: str, *, epsilon: float = 1e-6, gamma: float = 0.25, low=None, high=None, canonizers=()):
    """The zennit composite called ``name`` (see :data:`COMPOSITES`)."""
    from zennit import composites as zc
    from zennit.rules import Epsilon, Gamma, Norm, Pass, ZBox
    from zennit.types import Activation, AvgPool, Convolution

    canonizers = list(canonizers)
    base = [(Activation, Pass()), (zc.Sum, Norm()), (AvgPool, Norm())]
    if name == "epsilon":
        return zc.LayerMapComposite(base + [(Convolution, Epsilon(epsilon)), (nn.Linear, Epsilon(epsilon))],
                                    canonizers=canonizers)
    if name == "epsilon_gamma_box":
        if low is None or high is None:
            raise ValueError("epsilon_gamma_box needs the pixel bounds low and high")
        return zc.SpecialFirstLayerMapComposite(
            base + [(Convolution, Gamma(gamma)), (nn.Linear, Epsilon(epsilon))],
            [(Convolution, ZBox(low, high))], canonizers=canonizers)
    if name == "epsilon_plus_flat":
        return zc.EpsilonPlusFlat(canonizers=canonizers)
    if name == "epsilon_alpha2_beta1_flat":
        return zc.EpsilonAlpha2Beta1Flat(canonizers=canonizers)
    raise ValueError(f"unknown LRP composite {name!r}; choose from {', '.join(COMPOSITES)}")


def relevance(model: nn.Module, x: torch.Tensor, target: int, composite) -> tuple[torch.Tensor, torch.Tensor]:
    """Input relevance ``(1, C, H, W)`` of logit ``target`` under ``composite``, and the logits.

    The output relevance is the target's logit (all other logits zero). ``model`` gets hooks
    (and canonizer changes) only while this runs; use a private copy for a shared model."""
    from zennit.attribution import Gradient

    def out_fn(out: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros_like(out)
        mask[:, target] = 1.0
        return out * mask

    with Gradient(model=model, composite=composite) as attributor:
        out, rel = attributor(x, out_fn)
    return rel.detach(), out.detach()


def private_copy(lm: LoadedModel) -> tuple[nn.Module, threading.Lock]:
    """``lm``'s private copy for LRP (one per loaded model) and the lock to hold while using it."""
    with _COPIES_LOCK:
        hit = _COPIES.get(lm.model)
        if hit is None:
            with lm.lock:
                hit = (copy.deepcopy(lm.model).eval(), threading.Lock())
            _COPIES[lm.model] = hit
        return hit


def forget_model(model: nn.Module) -> None:
    """Drop the private copy of ``model`` (call after changing ``model``'s weights in place, as the
    sanity checks do to their own copy; shared models never change)."""
    with _COPIES_LOCK:
        _COPIES.pop(model, None)


def lrp(lm: LoadedModel, x: torch.Tensor, target: int, composite: str = "epsilon", *,
        epsilon: float = 1e-6, gamma: float = 0.25) -> tuple[torch.Tensor, float, float]:
    """LRP of ``lm`` (on its private copy) for ``x`` ``(1, 3, H, W)``: ``(relevance (1, 3, H, W),
    sum of input relevance, logit)``."""
    model, lock = private_copy(lm)
    with lock:
        comp = model_composite(lm, model, x, composite, epsilon=epsilon, gamma=gamma)
        rel, out = relevance(model, x, target, comp)
    return rel, float(rel.sum()), float(out[0, target])


def model_composite(lm: LoadedModel, model: nn.Module, x: torch.Tensor, composite: str = "epsilon", *,
                    epsilon: float = 1e-6, gamma: float = 0.25):
    """The composite ``composite`` with ``lm``'s canonizers for ``model`` (a copy of ``lm.model``), the
    z-box bounds read from the preprocessing (pixels in [0, 1], normalised), for inputs shaped like ``x``."""
    pp = lm.spec.preprocess
    mean = torch.tensor(pp.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(pp.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    low, high = ((0 - mean) / std).expand_as(x), ((1 - mean) / std).expand_as(x)
    cans = canonizers_for(lm, model, x[:1])
    return composite_of(composite, epsilon=epsilon, gamma=gamma, low=low, high=high, canonizers=cans)


@method("lrp", title="Layer-wise relevance propagation", paper="https://doi.org/10.1371/journal.pone.0130140",
        description="The class logit handed back layer by layer under a zennit composite of rules (default: the "
                    "epsilon rule everywhere; also z-box/gamma/epsilon, flat/z+/epsilon and flat/alpha2-beta1/"
                    "epsilon), on a canonized copy of the model (batch norms folded, skip sums as modules). "
                    "Signed: relevance for the class is positive.",
        defaults={"composite": "epsilon", "epsilon": 1e-6, "gamma": 0.25})
def lrp_method(lm: LoadedModel, x: torch.Tensor, target: int, *, progress=None, should_stop=None,
               composite: str = "epsilon", epsilon: float = 1e-6, gamma: float = 0.25) -> RawEvidence:
    """LRP relevance summed over colour channels: an ``(H, W)`` signed map at pixel resolution."""
    if composite not in COMPOSITES:
        raise ValueError(f"unknown LRP composite {composite!r}; choose from {', '.join(COMPOSITES)}")
    rel, total, logit = lrp(lm, x, target, composite, epsilon=epsilon, gamma=gamma)
    caveats = []
    if not math.isfinite(total) or abs(total) > 100 * max(abs(logit), 1e-6):
        caveats.append(f"the {composite} rules are unstable on {lm.name}: the input relevance sums to {total:.3g} for "
                       f"a logit of {logit:.3g} (gamma and z-box divide by sums that nearly cancel after the batch "
                       "norms are folded); try composite epsilon")
    else:
        caveats.append("relevance is absorbed by biases (folded batch norms) and the rules' stabilisers, so the map "
                       f"sums to {total:.3g}, not to the logit {logit:.3g}")
    if not lm.weights.pretrained:
        caveats.append("random weights: the relevance shows the architecture, not ImageNet evidence")
    return RawEvidence(rel[0].sum(0).float().cpu(), PIXEL,
                       {"composite": composite, "epsilon": epsilon, "gamma": gamma}, tuple(caveats),
                       display="positive", extra={"relevance_sum": total, "logit": logit})


