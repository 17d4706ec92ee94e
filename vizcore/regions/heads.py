"""The rest of a classifier from a tap: what Fast R-CNN runs on every pooled region.

Supported families (the ones whose forward is a plain chain of stages):

- timm EfficientNet / MobileNet (``conv_stem``, ``bn1``, ``blocks``, ``forward_head``): taps
  ``blocks.I`` (after stage I) and ``blocks.I.J`` (after block J of stage I); the rest is the
  remaining blocks, then timm's own ``forward_head`` (conv_head, bn2, global_pool, classifier).
- torchvision ResNet / ResNeXt / Wide ResNet (and the HighwayNets, same layout): taps ``layerN``
  and ``layerN.K``; the rest is the remaining blocks, ``avgpool``, flatten, ``fc``.

Other architectures and taps are refused with one line naming the taps that work. Written here
because neither timm nor torchvision can split a network at an arbitrary module and run the
second half (``torchvision.models.feature_extraction`` builds only the first half).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

from vizcore.models import LoadedModel


class HeadError(ValueError):
    """A tap that the rest of the network cannot start from; the message names the taps that work."""


@dataclass(frozen=True)
class SplitNetwork:
    """A classifier cut at ``tap`` (a module path): ``trunk(x)`` gives the tap's map, ``head(map)`` the logits."""

    tap: str
    trunk: Callable[[torch.Tensor], torch.Tensor]
    head: Callable[[torch.Tensor], torch.Tensor]
    family: str


def _timm_blocks(model: nn.Module) -> bool:
    return type(model).__name__ in ("EfficientNet", "MobileNetV3") and all(hasattr(model, a) for a in ("conv_stem", "bn1", "blocks", "forward_head"))


def _resnet(model: nn.Module) -> bool:
    return all(hasattr(model, a) for a in ("conv1", "bn1", "maxpool", "layer1", "layer4", "avgpool", "fc"))


def head_taps(model: nn.Module) -> list[str]:
    """The module paths a head can start from, in network order (empty for other architectures)."""
    if _timm_blocks(model):
        out = []
        for i, stage in enumerate(model.blocks):
            out += [f"blocks.{i}.{j}" for j in range(len(stage))]
            out.append(f"blocks.{i}")
        return out
    if _resnet(model):
        out = []
        for n in ("layer1", "layer2", "layer3", "layer4"):
            out += [f"{n}.{k}" for k in range(len(getattr(model, n)))]
            out.append(n)
        return out
    return []


def _refuse(lm: LoadedModel, tap: str) -> HeadError:
    taps = head_taps(lm.model)
    if not taps:
        return HeadError(f"Fast R-CNN cannot run the rest of {lm.name} from a tap: only timm EfficientNet/"
                         f"MobileNet and torchvision ResNet layouts are supported (e.g. efficientnet_lite0, "
                         f"resnet50)")
    stages = [t for t in taps if t.count(".") == (1 if t.startswith("blocks") else 0)]
    return HeadError(f"the rest of {lm.name} cannot start from {tap!r}: use a stage or block output "
                     f"({', '.join(stages)}, or their blocks such as {taps[0]})")


def split(lm: LoadedModel, tap: str) -> SplitNetwork:
    """Cut ``lm``'s network at ``tap`` (a tap name like ``blocks.6`` or a module path).

    The two halves share the loaded modules (nothing is copied or changed): ``head(trunk(x))``
    equals ``model(x)``.

    Raises:
        HeadError: an architecture or tap this helper does not support.
    """
    m = lm.model
    try:
        path = lm.resolve(tap)
    except KeyError:
        path = tap
    if path not in head_taps(m):
        raise _refuse(lm, tap)
    if _timm_blocks(m):
        i, j = (int(x) for x in (re.fullmatch(r"blocks\.(\d+)(?:\.(\d+))?", path).groups("-1")))
        j = len(m.blocks[i]) - 1 if j < 0 else j

        def trunk(x):
            x = m.bn1(m.conv_stem(x))
            for a in range(i):
                x = m.blocks[a](x)
            for b in range(j + 1):
                x = m.blocks[i][b](x)
            return x

        def head(x):
            for b in range(j + 1, len(m.blocks[i])):
                x = m.blocks[i][b](x)
            for a in range(i + 1, len(m.blocks)):
                x = m.blocks[a](x)
            if type(m).__name__ == "EfficientNet":  # its forward_features ends with conv_head, bn2
                x = m.bn2(m.conv_head(x))
            return m.forward_head(x)  # (MobileNetV3's forward_head holds its conv_head itself)

        return SplitNetwork(path, trunk, head, "timm-blocks")
    layers = ["layer1", "layer2", "layer3", "layer4"]
    name, _, k = path.partition(".")
    s = layers.index(name)
    stage = getattr(m, name)
    k = len(stage) - 1 if not k else int(k)

    def trunk(x):
        x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        for a in range(s):
            x = getattr(m, layers[a])(x)
        for b in range(k + 1):
            x = stage[b](x)
        return x

    def head(x):
        for b in range(k + 1, len(stage)):
            x = stage[b](x)
        for a in range(s + 1, 4):
            x = getattr(m, layers[a])(x)
        return m.fc(torch.flatten(m.avgpool(x), 1))

    return SplitNetwork(path, trunk, head, "resnet")
