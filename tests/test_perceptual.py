"""F_beta: torchvision's VGG-19 weights from the hub cache (fixture file in its on-disk format),
a clear error where they are missing, and the named offline fallback."""

from __future__ import annotations

import pytest
import torch
from torchvision.models import vgg19

from repurify.defenses import perceptual
from repurify.defenses.perceptual import VGGFeatures, feature_network, vgg19_weights_path
from repurify.errors import DataUnavailableError
from repurify.models import build_classifier
from repurify.models.features import ConvFeatures


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(perceptual, "VGG19_URL", (tmp_path / "nowhere" / "vgg19-dcbb9e9d.pth").as_uri())


def test_missing_weights_name_the_path_and_the_fallback(torch_home) -> None:
    with pytest.raises(DataUnavailableError) as err:
        VGGFeatures("relu2_2")
    msg = str(err.value)
    assert str(vgg19_weights_path()) in msg and "perceptual: target_features" in msg
    assert not vgg19_weights_path().exists()


def test_vgg19_loads_torchvision_state_dict(torch_home) -> None:
    torch.manual_seed(0)
    state = {k: v for k, v in vgg19(weights=None).state_dict().items() if k.startswith("features.")}
    vgg19_weights_path().parent.mkdir(parents=True)
    torch.save(state, vgg19_weights_path())
    f = VGGFeatures("relu2_2")
    assert torch.equal(f.net[2].weight, state["features.2.weight"])
    assert f(torch.rand(2, 1, 32, 32)).shape == (2, 128, 16, 16)  # grey images are repeated
    assert not any(p.requires_grad for p in f.parameters())


def test_corrupt_weights_file_is_refused(torch_home) -> None:
    vgg19_weights_path().parent.mkdir(parents=True)
    vgg19_weights_path().write_bytes(b"not a checkpoint")
    with pytest.raises(DataUnavailableError, match="not a loadable VGG-19 weights file"):
        VGGFeatures("relu1_2")


def test_target_features_fallback() -> None:
    torch.manual_seed(0)
    C = build_classifier("small_cnn", (1, 16, 16), 10, (0.5,), (0.25,)).eval()
    f = feature_network("target_features", "relu3_4", C)
    x = torch.rand(2, 1, 16, 16)
    assert isinstance(f, ConvFeatures) and torch.equal(f(x), ConvFeatures(C)(x))
