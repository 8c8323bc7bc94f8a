"""A classifier's topmost convolutional feature map (HGD's layer l = -2)."""

from __future__ import annotations

import torch
from torch import nn

from repurify.models.classifier import Classifier
from repurify.passes import Counted


def _feature_module(net: nn.Module) -> tuple[nn.Module, bool]:
    """The module whose output (True) or input (False) is the topmost conv feature map."""
    # CIFAR ResNets / torchvision ResNets / VGG, MobileNet, DenseNet: the last stage's output
    for name in ("layers", "layer4", "features"):
        if isinstance(getattr(net, name, None), nn.Module):
            return getattr(net, name), True
    has_conv = False
    for module in net.modules():
        has_conv |= isinstance(module, nn.Conv2d)
        if isinstance(module, nn.Flatten):  # Sequential nets: what is flattened for the head
            if not has_conv:
                break
            return module, False
    raise ValueError(f"{type(net).__name__} has no convolutional feature map before its "
                     "classification head; feature guidance (HGD's FGD) needs one")


class ConvFeatures(Counted):
    """``f_{-2}(x)``: the activations the classifier pools or flattens for its linear head."""

    def __init__(self, classifier: Classifier) -> None:
        super().__init__()
        self.classifier = classifier
        self._module, self._output = _feature_module(classifier.net)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        captured: list[torch.Tensor] = []

        def hook(_m: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            captured.append(output if self._output else inputs[0])

        handle = self._module.register_forward_hook(hook)
        try:
            self.classifier(x)
        finally:
            handle.remove()
        return captured[-1]
