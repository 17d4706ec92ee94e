"""Evidence by gradients and perturbations, through captum: occlusion, guided
backpropagation, deconvolution, integrated gradients and Grad-CAM.

captum attaches hooks to the shared model, so every call holds ``lm.lock``
throughout. Gradients are taken with respect to the input only (the loaded
model's parameters have ``requires_grad=False``).

Occlusion and integrated gradients are the slow methods: they are generators that yield a
:class:`vizcore.jobs.Tick` after each forward batch and hold ``lm.lock`` one batch at a time,
so the job layer shows their progress, stops them between batches and resumes them where
they stopped. Why their loops are written here: captum's ``Occlusion`` and
``IntegratedGradients`` run every batch inside one ``attribute`` call, which can be neither
paused nor resumed; the loops below compute the same sums (captum's sliding windows averaged
per pixel; captum's Gauss-Legendre path integral, its nodes and weights taken from captum).
"""
from __future__ import annotations

import math
import warnings

import torch
import torch.nn as nn

from vizcore.evidence.registry import MethodNotApplicable, RawEvidence, method
from vizcore.jobs import Tick
from vizcore.models import LoadedModel
from vizcore.summary import Geometry, layer_geometry

PIXEL = Geometry(1, 1, 0.0)
_OTHER_ACTS = (nn.ReLU6, nn.SiLU, nn.Hardswish, nn.GELU, nn.ELU, nn.LeakyReLU, nn.Mish, nn.Hardtanh, nn.Sigmoid)


def _logits_fn(lm: LoadedModel):
    """``x -> logits`` through the shared model."""

    def fwd(inp: torch.Tensor) -> torch.Tensor:
        out = lm.model(inp)
        if not torch.is_tensor(out):
            out = getattr(out, "logits", out[0] if isinstance(out, (tuple, list)) else out)
        return out

    return fwd


def _reduce(attr: torch.Tensor, how: str) -> torch.Tensor:
    """``(1, 3, H, W)`` pixel attributions to one ``(H, W)`` map."""
    a = attr.detach()[0].float()
    if how == "abs-max":  # Simonyan et al. 2014: the largest magnitude over colour channels
        return a.abs().amax(0).cpu()
    if how == "abs-sum":
        return a.abs().sum(0).cpu()
    if how == "sum":  # signed: positive evidence for the class, negative against
        return a.sum(0).cpu()
    raise ValueError(f"reduce must be abs-max, abs-sum or sum, not {how!r}")


def relu_census(model: nn.Module) -> dict[str, int]:
    """How many ``nn.ReLU`` modules and other activation modules the model holds."""
    relu = sum(1 for m in model.modules() if type(m) is nn.ReLU)
    other: dict[str, int] = {}
    for m in model.modules():
        if isinstance(m, _OTHER_ACTS) and type(m) is not nn.ReLU:
            other[type(m).__name__] = other.get(type(m).__name__, 0) + 1
    return {"ReLU": relu, **other}


def _relu_caveats(lm: LoadedModel, name: str) -> tuple[str, ...]:
    c = relu_census(lm.model)
    others = {k: v for k, v in c.items() if k != "ReLU"}
    out = []
    if c["ReLU"] == 0:
        kinds = ", ".join(f"{v} {k}" for k, v in others.items()) or "no activation modules"
        out.append(f"{name} rewrites the backward pass of nn.ReLU modules only, and {lm.name} has none "
                   f"({kinds}): this map is the plain input gradient.")
    elif others:
        kinds = ", ".join(f"{v} {k}" for k, v in others.items())
        out.append(f"only the {c['ReLU']} nn.ReLU modules are rewritten; {kinds} pass the plain gradient, "
                   "so the map is partly the plain gradient.")
    fn_relu = lm.spec.family == "densenet"
    if fn_relu:
        out.append("torchvision DenseNet applies one ReLU as a function (after norm5), which is not rewritten.")
    return tuple(out)


def _input(x: torch.Tensor) -> torch.Tensor:
    return x.detach().clone().requires_grad_(True)


# ----------------------------------------------------------------- occlusion
@method("occlusion", title="Occlusion", paper="https://arxiv.org/abs/1311.2901", slow=True,
        description="Grey out a window at every position and record how much the class logit drops "
                    "(Zeiler & Fergus 2014; captum Occlusion).",
        defaults={"window": 16, "stride": 8, "batch": 32})
def occlusion_method(lm: LoadedModel, x: torch.Tensor, target: int, *, window: int = 16, stride: int = 8,
                     batch: int = 32):
    """Occlusion sensitivity: logit drop when a ``window`` square (the mean colour) covers each position.

    As captum's ``Occlusion``: the window slides with ``stride`` and each pixel averages the
    drops of every window covering it. ``batch`` perturbed images go through the network per
    forward pass; a :class:`vizcore.jobs.Tick` follows each forward pass (the plain one first).
    """
    h, w = int(x.shape[-2]), int(x.shape[-1])
    if not (1 <= window <= min(h, w)) or not (1 <= stride <= window) or batch < 1:
        raise ValueError(f"need 1 <= stride <= window <= {min(h, w)} and batch >= 1 "
                         f"(got window {window}, stride {stride}, batch {batch})")
    boxes = [(y, x0) for y in range(0, h - window + 1, stride) for x0 in range(0, w - window + 1, stride)]
    n = len(boxes)
    total = 1 + math.ceil(n / batch)
    fwd = _logits_fn(lm)
    x = x.detach()
    yield Tick(0, total)
    with lm.lock, torch.no_grad():
        plain = fwd(x)[:, int(target)].float()
    yield Tick(1, total)
    drops = torch.zeros(h, w, dtype=torch.float32, device=x.device)
    counts = torch.zeros(h, w, dtype=torch.float32, device=x.device)
    for k, s0 in enumerate(range(0, n, batch)):
        chunk = boxes[s0:s0 + batch]
        xb = x.repeat(len(chunk), 1, 1, 1)
        for j, (y, x0) in enumerate(chunk):
            xb[j, :, y:y + window, x0:x0 + window] = 0.0  # the baseline: 0 after normalising, the mean colour
        with lm.lock, torch.no_grad():
            d = plain - fwd(xb)[:, int(target)].float()
        for j, (y, x0) in enumerate(chunk):
            drops[y:y + window, x0:x0 + window] += d[j]
            counts[y:y + window, x0:x0 + window] += 1
        yield Tick(2 + k, total)
    raw = torch.where(counts > 0, drops / counts.clamp(min=1), torch.zeros_like(drops)).cpu()
    return RawEvidence(raw, Geometry(window, stride, (window - 1) / 2),
                       {"window": window, "stride": stride, "batch": batch, "baseline": "mean colour"},
                       ("each pixel averages the logit drops of the windows that cover it; the raw map "
                        "is at pixel resolution, its detail is set by window and stride",),
                       display="positive", extra={"windows": n, "forward_passes": total})


# ----------------------------------------------------- guided backprop, deconv
@method("guided", title="Guided backpropagation", paper="https://arxiv.org/abs/1412.6806",
        description="The input gradient with negative gradients stopped at every ReLU "
                    "(Springenberg et al. 2015; captum GuidedBackprop).", defaults={"reduce": "abs-max"})
def guided_method(lm: LoadedModel, x: torch.Tensor, target: int, *, progress=None, should_stop=None,
                  reduce: str = "abs-max") -> RawEvidence:
    from captum.attr import GuidedBackprop

    with lm.lock, torch.enable_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # captum's notice that it hooks the ReLUs (removed afterwards)
        attr = GuidedBackprop(lm.model).attribute(_input(x), target=int(target))
    caveats = _relu_caveats(lm, "guided backpropagation") + (
        "guided backpropagation largely reconstructs the image and changes little with the class "
        "(Nie et al., ICML 2018, https://arxiv.org/abs/1805.07039)",)
    return RawEvidence(_reduce(attr, reduce), PIXEL, {"reduce": reduce}, caveats, display="positive")


@method("deconv", title="Deconvolution", paper="https://arxiv.org/abs/1311.2901",
        description="Zeiler & Fergus's deconvnet: gradients through each ReLU rectified on their own "
                    "sign (captum Deconvolution).", defaults={"reduce": "abs-max"})
def deconv_method(lm: LoadedModel, x: torch.Tensor, target: int, *, progress=None, should_stop=None,
                  reduce: str = "abs-max") -> RawEvidence:
    from captum.attr import Deconvolution

    with lm.lock, torch.enable_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        attr = Deconvolution(lm.model).attribute(_input(x), target=int(target))
    caveats = _relu_caveats(lm, "deconvolution") + (
        "deconvolution maps are nearly independent of the class (Nie et al., ICML 2018)",)
    return RawEvidence(_reduce(attr, reduce), PIXEL, {"reduce": reduce}, caveats, display="positive")


# ---------------------------------------------------------- integrated gradients
@method("ig", title="Integrated gradients", paper="https://arxiv.org/abs/1703.01365", slow=True,
        description="Gradients averaged along the straight path from a mean-colour image to the input, "
                    "times the difference (Sundararajan et al. 2017; captum IntegratedGradients).",
        defaults={"n_steps": 32, "internal_batch_size": 16, "reduce": "sum"})
def ig_method(lm: LoadedModel, x: torch.Tensor, target: int, *, n_steps: int = 32, internal_batch_size: int = 16,
              reduce: str = "sum"):
    """Integrated gradients from the mean-colour image (0 after normalising), as captum's
    ``IntegratedGradients`` with its default Gauss-Legendre nodes: ``internal_batch_size`` path
    points per backward pass, a :class:`vizcore.jobs.Tick` after each."""
    from captum.attr._utils.approximation_methods import approximation_parameters

    if n_steps < 2 or internal_batch_size < 1:
        raise ValueError("n_steps must be >= 2 and internal_batch_size >= 1")
    total = math.ceil(n_steps / internal_batch_size)
    step_sizes_fn, alphas_fn = approximation_parameters("gausslegendre")
    step_sizes, alphas = step_sizes_fn(int(n_steps)), alphas_fn(int(n_steps))
    fwd = _logits_fn(lm)
    x = x.detach()
    baseline = torch.zeros_like(x)
    grads = torch.zeros_like(x)
    yield Tick(0, total)
    for k, s0 in enumerate(range(0, n_steps, internal_batch_size)):
        a = torch.tensor(alphas[s0:s0 + internal_batch_size], dtype=x.dtype, device=x.device).view(-1, 1, 1, 1)
        wts = torch.tensor(step_sizes[s0:s0 + internal_batch_size], dtype=x.dtype, device=x.device).view(-1, 1, 1, 1)
        pts = (baseline + a * (x - baseline)).requires_grad_(True)
        with lm.lock, torch.enable_grad():
            out = fwd(pts)[:, int(target)].sum()
            (g,) = torch.autograd.grad(out, pts)
        grads += (g * wts).sum(dim=0, keepdim=True)
        yield Tick(k + 1, total)
    attr = grads * (x - baseline)
    with lm.lock, torch.no_grad():
        ends = fwd(torch.cat([x, baseline]))[:, int(target)].float()
    total_attr = float(attr.detach().sum())
    gap = abs(total_attr - float(ends[0] - ends[1]))
    caveats = []
    if abs(gap) > 0.05 * max(1.0, abs(total_attr)):
        caveats.append(f"the attributions miss the logit difference by {gap:.3g} (completeness); "
                       "more n_steps make the path integral more exact")
    return RawEvidence(_reduce(attr, reduce), PIXEL,
                       {"n_steps": n_steps, "internal_batch_size": internal_batch_size, "reduce": reduce,
                        "baseline": "mean colour"}, tuple(caveats), display="positive",
                       extra={"convergence_delta": gap, "attribution_sum": total_attr})


# -------------------------------------------------------------------- Grad-CAM
def default_layer(lm: LoadedModel) -> str:
    """The layer Grad-CAM explains by default: the last feature map before the head."""
    from vizcore.evidence.cam import FCN_FAMILIES, cam_head

    if lm.spec.family in FCN_FAMILIES:
        return "features"
    try:
        head = cam_head(lm)
    except MethodNotApplicable:
        head = None
    if head is not None and head.features is not None:
        return head.features
    spatial = [t for t in lm.taps() if t.kind not in ("logits", "fc", "pool")]
    if not spatial:
        raise MethodNotApplicable(f"{lm.name} has no spatial layer for Grad-CAM; give layer=")
    return spatial[-1].module


def gradcam_raw(lm: LoadedModel, x: torch.Tensor, target: int, module_path: str) -> torch.Tensor:
    """Grad-CAM of one layer before any ReLU: ``(h, w)`` on the CPU (captum ``LayerGradCam``).

    The layer's channels are weighted by their spatially averaged gradient of the
    class score and summed (Selvaraju et al., 2017, https://arxiv.org/abs/1610.02391).
    Layers whose output is not a ``(C, h, w)`` map raise :class:`MethodNotApplicable`.
    """
    from captum.attr import LayerGradCam

    layer = dict(lm.model.named_modules())[module_path]
    # captum attaches hooks to the shared model: hold the lock throughout.
    with lm.lock, torch.enable_grad():
        attr = LayerGradCam(lm.model, layer).attribute(_input(x), target=int(target),
                                                      relu_attributions=False)
    a = attr.detach().float()
    if a.dim() != 4:
        raise MethodNotApplicable(f"{module_path} of {lm.name} outputs no spatial map")
    return a[0].sum(0).cpu()


@method("gradcam", title="Grad-CAM", paper="https://arxiv.org/abs/1610.02391",
        description="A layer's feature maps weighted by the pooled gradient of the class score "
                    "(Selvaraju et al. 2017; captum LayerGradCam).", defaults={"layer": None})
def gradcam_method(lm: LoadedModel, x: torch.Tensor, target: int, *, progress=None, should_stop=None,
                   layer: str | None = None) -> RawEvidence:
    name = layer or default_layer(lm)
    path = lm.resolve(name)
    raw = gradcam_raw(lm, x, target, path)
    try:
        geom = layer_geometry(lm.spec, path, int(x.shape[-1]))
    except Exception:  # noqa: BLE001 - the tracer cannot follow this model: cells spread evenly
        geom = None
    caveats = []
    if raw.numel() <= 1:
        caveats.append(f"{name} has no spatial extent at this input size: the map is one number")
    return RawEvidence(raw, geom, {"layer": name}, tuple(caveats), display="positive")
