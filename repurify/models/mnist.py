"""Small CNNs: ``small_cnn`` for digits, and the AdvAE paper's MNIST models X, A-D (Table 2).

Convolutions follow Table 2 (ReLU after each). On images smaller than 28 px,
model B pads its convolutions so its three strided layers still fit (the
paper's setting, 28 px, is unpadded after the first layer, as in DefenseGAN).
"""

from __future__ import annotations

import torch
from torch import nn

from repurify.models.registry import register


def _conv(cin: int, cout: int, k: int, stride: int = 1, pad: int = 0) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, stride, pad), nn.ReLU(inplace=True)]


def _flat_dim(features: nn.Module, in_channels: int, image_size: int, arch: str) -> int:
    with torch.no_grad():
        try:
            out = features(torch.zeros(1, in_channels, image_size, image_size))
        except RuntimeError as exc:
            raise ValueError(f"{arch}: image size {image_size} is too small ({exc})") from None
    return int(out.numel())


def _head(features: nn.Sequential, dims: list[int], dropouts: list[float], num_classes: int,
          in_dim: int) -> nn.Sequential:
    layers: list[nn.Module] = [*features, nn.Flatten()]
    for width, p in zip(dims, dropouts, strict=True):
        layers += [nn.Linear(in_dim, width), nn.ReLU(inplace=True)]
        if p:
            layers.append(nn.Dropout(p))
        in_dim = width
    layers.append(nn.Linear(in_dim, num_classes))
    return nn.Sequential(*layers)


@register("small_cnn")
def small_cnn(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """Two padded conv blocks with batch norm and a 128-unit head: the digits target."""

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True)]

    features = nn.Sequential(*block(in_channels, 32), *block(32, 32), nn.MaxPool2d(2),
                             *block(32, 64), *block(64, 64), nn.MaxPool2d(2))
    return _head(features, [128], [0.3], num_classes,
                 _flat_dim(features, in_channels, image_size, "small_cnn"))


@register("mnist_x")
def mnist_x(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """Model X: Conv32-Conv32-Pool-Conv64-Conv64-Pool-FC200-Dropout0.5-FC200-FC10."""
    features = nn.Sequential(*_conv(in_channels, 32, 3), *_conv(32, 32, 3), nn.MaxPool2d(2),
                             *_conv(32, 64, 3), *_conv(64, 64, 3), nn.MaxPool2d(2))
    return _head(features, [200, 200], [0.5, 0.0], num_classes,
                 _flat_dim(features, in_channels, image_size, "mnist_x"))


@register("mnist_a")
def mnist_a(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """Model A: Conv64(5)-Conv64(5,s2)-Dropout0.25-FC128-Dropout0.5-FC10."""
    features = nn.Sequential(*_conv(in_channels, 64, 5), *_conv(64, 64, 5, 2), nn.Dropout(0.25))
    return _head(features, [128], [0.5], num_classes,
                 _flat_dim(features, in_channels, image_size, "mnist_a"))


@register("mnist_b")
def mnist_b(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """Model B: Dropout0.2-Conv64(8,s2)-Conv128(6,s2)-Conv128(5)-Dropout0.5-FC10."""
    small = image_size < 28
    features = nn.Sequential(nn.Dropout(0.2), *_conv(in_channels, 64, 8, 2, 3),
                             *_conv(64, 128, 6, 2, 2 if small else 0),
                             *_conv(128, 128, 5, 1, 2 if small else 0), nn.Dropout(0.5))
    return _head(features, [], [], num_classes,
                 _flat_dim(features, in_channels, image_size, "mnist_b"))


@register("mnist_c")
def mnist_c(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """Model C: Conv128(3)-Conv64(3,s2)-Dropout0.25-FC128-Dropout0.5-FC10."""
    features = nn.Sequential(*_conv(in_channels, 128, 3), *_conv(128, 64, 3, 2), nn.Dropout(0.25))
    return _head(features, [128], [0.5], num_classes,
                 _flat_dim(features, in_channels, image_size, "mnist_c"))


@register("mnist_d")
def mnist_d(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """Model D: FC200-Dropout0.5-FC200-Dropout0.5-FC10 (no convolutions)."""
    return _head(nn.Sequential(), [200, 200], [0.5, 0.5], num_classes,
                 in_channels * image_size * image_size)
