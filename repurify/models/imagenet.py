"""torchvision's ImageNet architectures, randomly initialised: the ResNet-18/50 targets of
OAG and HGD and the other targets of OAG's Table III (VGG-11, MobileNet-v2, DenseNet-121)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn
from torchvision import models as tvm

from repurify.models.registry import register


def _imagenet(fn: Callable[..., nn.Module], in_channels: int, num_classes: int) -> nn.Module:
    """``fn`` with ``num_classes`` outputs; its first convolution takes ``in_channels``."""
    net = fn(weights=None, num_classes=num_classes)
    if in_channels != 3:
        parent, name, conv = next((p, n, m) for p in net.modules() for n, m in p.named_children()
                                  if isinstance(m, nn.Conv2d))
        setattr(parent, name, nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size,
                                        conv.stride, conv.padding, bias=conv.bias is not None))
    return net


for _name, _fn in (("resnet18", tvm.resnet18), ("resnet50", tvm.resnet50), ("vgg11", tvm.vgg11),
                   ("mobilenet_v2", tvm.mobilenet_v2), ("densenet121", tvm.densenet121)):
    register(_name)(lambda c, k, _size, fn=_fn: _imagenet(fn, c, k))
