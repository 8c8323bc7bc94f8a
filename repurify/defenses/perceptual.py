"""F_beta, the feature network of the perceptual losses (EGC-FL Eq. 7, GCLN Eq. 4).

Both papers use an ImageNet-trained VGG-19. ``vgg19`` loads torchvision's
weights file from the torch hub cache (``$TORCH_HOME/hub/checkpoints``),
downloading it when the network allows and otherwise failing with the path to
fill. ``target_features`` is the named offline fallback: the frozen target
classifier's topmost convolutional feature map (the choice is a defense param,
so it is recorded in the run's params and the checkpoint).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from repurify.errors import DataUnavailableError
from repurify.models.classifier import Classifier
from repurify.models.features import ConvFeatures
from repurify.passes import Counted

VGG19_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
# end index (exclusive) in torchvision's vgg19().features of each named activation
VGG19_LAYERS = {"relu1_2": 4, "relu2_2": 9, "relu3_4": 18, "relu4_4": 27, "relu5_4": 36}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def vgg19_weights_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG19_URL.rsplit("/", 1)[1]


def _vgg19_state() -> dict[str, torch.Tensor]:
    path = vgg19_weights_path()
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(VGG19_URL, str(path), progress=False)
        except Exception as exc:  # any network failure: say where the file goes
            path.unlink(missing_ok=True)
            raise DataUnavailableError(
                f"VGG-19 ImageNet weights not found at {path} and the download from {VGG19_URL} "
                f"failed ({type(exc).__name__}: {str(exc)[:120]}). Put the file there (or set "
                "TORCH_HOME), or set the defense's `perceptual: target_features`") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataUnavailableError(f"{path}: not a loadable VGG-19 weights file ({exc}); "
                                   "delete it and download it again") from None


class VGGFeatures(Counted):
    """ImageNet VGG-19 activations at ``layer`` of [0,1] images (grey images are repeated)."""

    def __init__(self, layer: str) -> None:
        super().__init__()
        from torchvision.models import vgg19  # here, not at import: 1.4 s that params loading skips

        net = vgg19(weights=None).features[:VGG19_LAYERS[layer]]
        state = {k.removeprefix("features."): v for k, v in _vgg19_state().items()
                 if k.startswith("features.") and int(k.split(".")[1]) < VGG19_LAYERS[layer]}
        net.load_state_dict(state)
        self.net = net.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x.expand(-1, 3, -1, -1) - self.mean) / self.std)


def feature_network(name: str, layer: str, target: Classifier) -> nn.Module:
    """F_beta for a defense's ``perceptual`` param; frozen."""
    if name == "vgg19":
        return VGGFeatures(layer)
    return ConvFeatures(target).requires_grad_(False)
