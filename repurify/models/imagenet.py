"""torchvision's ImageNet architectures, randomly initialised: the ResNet-18/50 targets of
OAG and HGD, HGD's Inception-v3 target and the other targets of OAG's Table III (VGG-11,
MobileNet-v2, DenseNet-121)."""

from __future__ import annotations

from typing import Any

from torch import nn

from repurify.models.registry import register

# name -> torchvision's constructor keywords; Inception-v3 without its auxiliary head: training
# here uses the main logits only (ours)
ARCHS: dict[str, dict[str, Any]] = {
    "resnet18": {}, "resnet50": {}, "vgg11": {}, "mobilenet_v2": {}, "densenet121": {},
    "inception_v3": {"aux_logits": False, "init_weights": True}}


def _imagenet(name: str, in_channels: int, num_classes: int) -> nn.Module:
    """torchvision's ``name`` with ``num_classes`` outputs; its first convolution takes
    ``in_channels``."""
    from torchvision import models as tvm  # here, not at import: 1.4 s that params loading skips

    net = getattr(tvm, name)(weights=None, num_classes=num_classes, **ARCHS[name])
    if in_channels != 3:
        parent, attr, conv = next((p, n, m) for p in net.modules() for n, m in p.named_children()
                                  if isinstance(m, nn.Conv2d))
        setattr(parent, attr, nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size,
                                        conv.stride, conv.padding, bias=conv.bias is not None))
    return net


for _name in ARCHS:
    register(_name)(lambda c, k, _size, name=_name: _imagenet(name, c, k))
