"""A small convolutional HighwayNet with ResNet-18's stage layout, and its two ablations.

Highway networks (Srivastava, Greff & Schmidhuber, "Training Very Deep Networks", NeurIPS 2015,
https://arxiv.org/abs/1507.06228) let a learned *transform gate* ``T(x)`` weigh each layer's
transformation ``H(x)`` against its input: ``y = H(x) T(x) + x (1 - T(x))``. Residual networks
(He et al. 2016, https://arxiv.org/abs/1512.03385) fix the gate open, ``y = H(x) + x``.

Three networks that differ only in the skip of each basic block share everything else
(ResNet-18's stem, four stages of two basic blocks of 64, 128, 256, 512 channels, global
average pooling, a 1000-way classifier):

- ``gated``: ``y = relu(H(x) T(x) + s(x) (1 - T(x)))``, ``T(x) = sigmoid(conv1x1(x))`` per channel
  and position, its bias set to -1 at initialisation so blocks start close to carrying their input
  (Srivastava et al. suggest a negative gate bias, -1 to -3);
- ``plain``: ``y = relu(H(x) + s(x))``, the residual block of ResNet-18;
- ``none``: ``y = relu(H(x))``, a plain 18-layer convolutional stack.

``H`` is conv3x3-BN-ReLU-conv3x3-BN; ``s(x)`` is the identity, or a strided 1x1 convolution with
BN where a block changes resolution or width (ResNet's projection shortcut, option B). The
final ReLU sits after the combination in all three, so they differ in the skip alone. Module
names follow torchvision's ResNet (``conv1``, ``layer1.0``, ``avgpool``, ``fc``), so ResNet's
curated taps apply unchanged. No trained weights are published: random initialisation (seeded)
or a user's checkpoint (``--weights PATH``).
"""
from __future__ import annotations

import torch
import torch.nn as nn

SKIPS = ("gated", "plain", "none")
GATE_BIAS = -1.0


class HighwayBlock(nn.Module):
    """A basic block whose skip is gated, plain or absent.

    Args:
        in_ch, out_ch: channels in and out. stride: of the first convolution (and the shortcut).
        skip: ``gated``, ``plain`` or ``none``.

    Shapes: ``(N, in_ch, H, W) -> (N, out_ch, H / stride, W / stride)``.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, skip: str = "gated"):
        super().__init__()
        if skip not in SKIPS:
            raise ValueError(f"unknown skip {skip!r}; choose from {', '.join(SKIPS)}")
        self.skip = skip
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample: nn.Module | None = None
        if skip != "none" and (stride != 1 or in_ch != out_ch):
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))
        self.gate: nn.Conv2d | None = None
        if skip == "gated":
            self.gate = nn.Conv2d(in_ch, out_ch, 1, stride, bias=True)
            nn.init.constant_(self.gate.bias, GATE_BIAS)
        self.act = nn.ReLU()  # the block's output, after the skip is combined

    def transform_gate(self, x: torch.Tensor) -> torch.Tensor:
        """``T(x)`` in (0, 1), shape of the block's output (gated blocks only)."""
        if self.gate is None:
            raise ValueError("only gated blocks have a transform gate")
        return torch.sigmoid(self.gate(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        if self.skip == "none":
            return self.act(h)
        s = x if self.downsample is None else self.downsample(x)
        if self.skip == "plain":
            return self.act(h + s)
        t = self.transform_gate(x)
        return self.act(h * t + s * (1 - t))


class HighwayNet(nn.Module):
    """ResNet-18's layout (stem, 4 stages x 2 blocks, pooling, classifier) with a choice of skip.

    Args:
        skip: ``gated`` (HighwayNet), ``plain`` (ResNet-18-style residual) or ``none``.
        num_classes: classifier outputs. widths: channels of the four stages.

    Shapes: ``(N, 3, H, W) -> (N, num_classes)``.
    """

    def __init__(self, skip: str = "gated", num_classes: int = 1000, widths: tuple[int, ...] = (64, 128, 256, 512)):
        super().__init__()
        self.skip = skip
        self.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        in_ch = widths[0]
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            setattr(self, f"layer{i + 1}", nn.Sequential(HighwayBlock(in_ch, w, stride, skip), HighwayBlock(w, w, 1, skip)))
            in_ch = w
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        for m in self.modules():  # ResNet's initialisation (He et al. 2015); the gate bias stays at -1
            if isinstance(m, nn.Conv2d) and m.bias is None:  # the gates keep PyTorch's default
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def highwaynet18(skip: str = "gated", **kwargs) -> HighwayNet:
    """The 18-layer HighwayNet (``gated``), or its ``plain``-skip / ``none`` twin."""
    return HighwayNet(skip, **kwargs)
