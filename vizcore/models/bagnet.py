"""BagNet: a ResNet-50 whose units see only small patches.

Brendel & Bethge, "Approximating CNNs with Bag-of-local-Features models works
surprisingly well on ImageNet", ICLR 2019 (https://openreview.net/forum?id=SkfMWhAqYQ).
Written here from the paper's description. Module names follow the authors'
PyTorch release, so their published checkpoints load unchanged. Bottleneck
convolutions are unpadded ("valid"), and only the first ``kernel3[i]`` blocks
of stage ``i`` use 3x3 kernels: that is what caps the receptive field at
9, 17 or 33 pixels.
"""
from __future__ import annotations

import torch
import torch.nn as nn

_RELEASE = (
    "https://bitbucket.org/wielandbrendel/bag-of-feature-pretrained-models/raw/"
    "249e8fa82c0913623a807d9d35eeab9da7dcc2a8/"
)
BAGNET_URLS = {
    "bagnet9": _RELEASE + "bagnet8-34f4ccd2.pth.tar",
    "bagnet17": _RELEASE + "bagnet16-105524de.pth.tar",
    "bagnet33": _RELEASE + "bagnet32-2ddd53ed.pth.tar",
}
# Number of leading 3x3 blocks per stage for each variant.
BAGNET_KERNEL3 = {"bagnet9": (1, 1, 0, 0), "bagnet17": (1, 1, 1, 0), "bagnet33": (1, 1, 1, 1)}


class BagNetBottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int = 1, kernel_size: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        out_ch = width * self.expansion
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, kernel_size, stride=stride, padding=0, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        # Valid 3x3 convs shrink the map; crop the shortcut from the bottom-right to match.
        dh, dw = shortcut.shape[-2] - out.shape[-2], shortcut.shape[-1] - out.shape[-1]
        if dh or dw:
            shortcut = shortcut[..., : shortcut.shape[-2] - dh, : shortcut.shape[-1] - dw]
        return self.relu(out + shortcut)


class BagNet(nn.Module):
    """BagNet-9/17/33: ``(N, 3, H, W) -> (N, num_classes)`` logits averaged over patches."""

    def __init__(self, kernel3: tuple[int, int, int, int], blocks=(3, 4, 6, 3),
                 strides=(2, 2, 2, 1), num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 1, bias=False)
        self.conv2 = nn.Conv2d(64, 64, 3, padding=0, bias=False)
        self.bn1 = nn.BatchNorm2d(64, momentum=0.001)
        self.relu = nn.ReLU()
        in_ch = 64
        for i, (n, width, stride, k3) in enumerate(zip(blocks, (64, 128, 256, 512), strides, kernel3)):
            layers = []
            for j in range(n):
                s = stride if j == 0 else 1
                down = None
                if j == 0 and (s != 1 or in_ch != width * 4):
                    down = nn.Sequential(nn.Conv2d(in_ch, width * 4, 1, stride=s, bias=False),
                                         nn.BatchNorm2d(width * 4))
                layers.append(BagNetBottleneck(in_ch, width, s, 3 if j < k3 else 1, down))
                in_ch = width * 4
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv2(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def bagnet(name: str) -> BagNet:
    return BagNet(BAGNET_KERNEL3[name])
