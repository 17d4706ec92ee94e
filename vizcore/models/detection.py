"""Detection and segmentation models of torchvision, registered like every other model.

Faster R-CNN and Mask R-CNN (COCO, 91 category slots with ``__background__`` and ``N/A``) and
FCN / DeepLabv3 (COCO images with the 21 Pascal VOC labels) go through the same weight chain as
the classifiers: the hub cache, a download of torchvision's own checkpoint, else seeded random
initialisation with the usual warning. Their taps are the backbone's stages (ordinary module
outputs). Specs carry ``task`` so classification pages and commands never list them.
"""
from __future__ import annotations

import functools
import os
from typing import Sequence

import torch.nn as nn

from vizcore.models.registry import ModelSpec, Preprocess, Tap, WeightSource, register

FASTER = "https://arxiv.org/abs/1506.01497"
MASK = "https://arxiv.org/abs/1703.06870"
FCN = "https://arxiv.org/abs/1411.4038"
DEEPLAB3 = "https://arxiv.org/abs/1706.05587"


def _weights(name: str):
    import torchvision.models as tvm

    return tvm.get_model_weights(name).DEFAULT


@functools.lru_cache(maxsize=None)
def categories_of(name: str) -> tuple[str, ...]:
    """The category names of torchvision's weights for ``name`` (index = the model's label)."""
    return tuple(_weights(name).meta["categories"])


def _builder(name: str):
    def build() -> nn.Module:
        import torchvision.models as tvm

        return tvm.get_model(name, weights=None, weights_backbone=None)

    return build


def body_taps(prefix: str):
    """The children of the backbone's body (``backbone.body`` for detectors, ``backbone`` for segmenters)."""

    def taps(m: nn.Module) -> list[Tap]:
        body = m.get_submodule(prefix)
        out = [Tap(f"{prefix}.{n}", f"{prefix}.{n}", "block") for n, _ in body.named_children()]
        if hasattr(m, "classifier"):  # segmentation head: per-class scores at the backbone's stride
            out.append(Tap("classifier", "classifier", "logits"))
        return out

    return taps


def _source(name: str) -> WeightSource:
    w = _weights(name)
    return WeightSource(kind="url", description=f"torchvision {name} {w.name} weights", url=w.url,
                        filename=os.path.basename(w.url), check_hash=True)


def _register(name: str, family: str, task: str, taps, paper: str, preprocess: Preprocess,
              ignore: Sequence[str] = (), what: str = "") -> None:
    register(ModelSpec(
        name=name, family=family, builder=_builder(name), taps=taps, preprocess=preprocess,
        weights=(_source(name),), categories=functools.partial(categories_of, name), ignore_keys=tuple(ignore),
        paper=paper, description=what, imagenet_head=False, task=task,
    ))


# Detectors normalise inside (GeneralizedRCNNTransform): the preprocess record is the identity on [0, 1].
_DET = Preprocess(resize=800, crop=800, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
_register("fasterrcnn_resnet50_fpn_v2", "faster_rcnn", "detection", body_taps("backbone.body"), FASTER, _DET,
          what="Faster R-CNN, ResNet-50 FPN v2 (COCO)")
_register("fasterrcnn_mobilenet_v3_large_fpn", "faster_rcnn", "detection", body_taps("backbone.body"), FASTER, _DET,
          what="Faster R-CNN, MobileNetV3-Large FPN (COCO); the fast one")
_register("maskrcnn_resnet50_fpn_v2", "mask_rcnn", "detection", body_taps("backbone.body"), MASK, _DET,
          what="Mask R-CNN, ResNet-50 FPN v2 (COCO)")
_SEG = Preprocess(resize=520, crop=520)
# Their checkpoints hold an auxiliary head (training only) that the weight-free build leaves out.
_register("fcn_resnet50", "fcn", "segmentation", body_taps("backbone"), FCN, _SEG, ignore=("aux_classifier.",),
          what="FCN-32s-style ResNet-50 (COCO images, VOC labels)")
_register("deeplabv3_resnet50", "deeplab", "segmentation", body_taps("backbone"), DEEPLAB3, _SEG,
          ignore=("aux_classifier.",), what="DeepLabv3 ResNet-50 (COCO images, VOC labels)")
