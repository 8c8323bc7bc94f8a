"""CIFAR-style ResNets (3x3 stem, no max-pool): 18 and 34 layers, and AdvAE's ResNetV2-29.

``resnetv2_29`` is AdvAE's CIFAR-10 target, a pre-activation (v2) bottleneck ResNet. AdvAE
Sec. 4.1 states only "a standard ResNetV2 with 29 convolutional layers"; the rest follows the
authors' code (``MyResNet29``: the Keras ``cifar10_resnet.py`` example's ``resnet_v2`` with
n = 3 and a linear head), not the paper:

* depth = 9n + 2 counts the stem convolution, the 9n convolutions of the 3n bottleneck units and
  the linear classifier, not the 1x1 projection shortcut of each stage's first unit: 28 + 1 = 29
  layers (31 convolutions in all);
* a 3x3 stem of 16 channels with BN-ReLU, then three stages of n units (1x1)-(3x3)-(1x1), each
  convolution after BN-ReLU; stage outputs 64/128/256 channels (32/16/8 px) from bottleneck
  widths 16/64/128, so the expansion is 4 in stage 0 and 2 after; stages 1 and 2 downsample in
  their first unit's first 1x1 convolution and its projection; the very first unit skips the
  pre-activation the stem has just applied;
* BN-ReLU, global average pooling and a linear layer; He-normal weights, zero biases.

Ours: PyTorch's BN defaults (Keras: momentum 0.99, eps 1e-3), He-normal without Keras's
truncation, and no per-layer L2 (``weight_decay`` in the profile stands for it if wanted).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from repurify.models.registry import register


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """He et al. ResNet with BasicBlocks, adapted to 32 px inputs."""

    def __init__(self, blocks: tuple[int, int, int, int], in_channels: int, num_classes: int):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(64), nn.ReLU(inplace=True))
        layers, cin = [], 64
        for i, n in enumerate(blocks):
            cout = 64 * 2**i
            for j in range(n):
                layers.append(BasicBlock(cin, cout, 2 if (j == 0 and i > 0) else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


@register("resnet18_cifar")
def resnet18_cifar(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    return CifarResNet((2, 2, 2, 2), in_channels, num_classes)


@register("resnet34_cifar")
def resnet34_cifar(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    return CifarResNet((3, 4, 6, 3), in_channels, num_classes)


def _preact(cin: int, cout: int, k: int, stride: int = 1, act: bool = True) -> nn.Sequential:
    """BN-ReLU-Conv (``act=False``: the bare convolution)."""
    conv = nn.Conv2d(cin, cout, k, stride, k // 2)
    return nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(), conv) if act else nn.Sequential(conv)


class Bottleneck(nn.Module):
    """Pre-activation (1x1)-(3x3)-(1x1) unit with an identity or 1x1 projection shortcut."""

    def __init__(self, cin: int, width: int, cout: int, stride: int, preact: bool) -> None:
        super().__init__()
        self.body = nn.Sequential(_preact(cin, width, 1, stride, act=preact), _preact(width, width, 3),
                                  _preact(width, cout, 1))
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride)  # Keras: linear, on the raw input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.body(x)


class ResNetV2(nn.Module):
    """Keras ``resnet_v2`` of depth 9n + 2 for 32 px inputs (any size pools globally)."""

    def __init__(self, n: int, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 16, 3, 1, 1), nn.BatchNorm2d(16),
                                  nn.ReLU(inplace=True))
        units, cin, width = [], 16, 16
        for stage in range(3):
            cout = width * (4 if stage == 0 else 2)
            for j in range(n):
                stride = 2 if stage > 0 and j == 0 else 1
                units.append(Bottleneck(cin, width, cout, stride, preact=(stage, j) != (0, 0)))
                cin = cout
            width = cout
        self.units = nn.Sequential(*units)
        self.head_bn = nn.BatchNorm2d(cin)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.head_bn(self.units(self.stem(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


@register("resnetv2_29")
def resnetv2_29(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    return ResNetV2(3, in_channels, num_classes)
