"""Model registry, the normalising classifier wrapper and checkpoint round trips."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from repurify.errors import CheckpointError
from repurify.models import (
    MODELS,
    Classifier,
    build_classifier,
    build_model,
    load_classifier,
    save_classifier,
)
from tests.checks import assert_refuses_bad_files

# (arch, in_channels, image_size, num_classes): the shapes the profiles use
CASES = [
    ("small_cnn", 1, 16, 10),
    *((arch, 1, size, 10) for arch in ("mnist_x", "mnist_a", "mnist_b", "mnist_c", "mnist_d")
      for size in (16, 28)),
    ("resnet18_cifar", 3, 32, 10),
    ("resnet34_cifar", 3, 32, 10),
    ("resnetv2_29", 3, 32, 10),  # AdvAE Sec. 4.1 CIFAR-10 target
    ("resnet18", 3, 64, 17),
    ("resnet50", 3, 64, 17),
    ("resnet18", 1, 64, 5),  # ImageNet stem swapped for one input channel
    ("vgg11", 3, 64, 17),  # OAG Table III targets
    ("mobilenet_v2", 3, 64, 17),
    ("densenet121", 1, 64, 17),
    ("inception_v3", 3, 299, 17),  # HGD's ImageNet target
]


def test_every_registered_architecture_is_covered() -> None:
    assert set(MODELS) == {arch for arch, *_ in CASES}


@pytest.mark.parametrize(("arch", "channels", "size", "num_classes"), CASES,
                         ids=[f"{a}-{c}x{s}" for a, c, s, _ in CASES])
def test_builds_and_gives_logits(arch: str, channels: int, size: int, num_classes: int) -> None:
    torch.manual_seed(0)
    net = build_model(arch, channels, num_classes, size).eval()
    x = torch.rand(2, channels, size, size)
    with torch.no_grad():
        out = net(x)
    assert out.shape == (2, num_classes)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    # atol 0: MobileNet-v2 starts with logits of ~1e-10
    assert not torch.allclose(out[0], out[1], atol=0), "logits should depend on the input"


def test_resnetv2_29_has_the_keras_depth() -> None:
    """Keras's depth 9n + 2 counts the main-path convolutions and the linear head, not the three
    1x1 projection shortcuts: 28 + 1 = 29 layers, 31 convolutions in all."""
    net = build_model("resnetv2_29", 3, 10, 32)
    shortcuts = {id(u.shortcut) for u in net.units if isinstance(u.shortcut, nn.Conv2d)}
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    main = [m for m in convs if id(m) not in shortcuts]
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert (len(main) + len(linears), len(shortcuts), len(convs)) == (29, 3, 31)
    assert [u.body[-1][-1].out_channels for u in net.units] == [64] * 3 + [128] * 3 + [256] * 3
    assert [u.body[1][-1].out_channels for u in net.units] == [16] * 3 + [64] * 3 + [128] * 3


def test_mnist_models_reject_too_small_images() -> None:
    with pytest.raises(ValueError, match="mnist_x: image size 6 is too small"):
        build_model("mnist_x", 1, 10, 6)


def test_unknown_arch_lists_choices() -> None:
    with pytest.raises(KeyError) as err:
        build_model("vgg_nope", 3, 10, 32)
    msg = err.value.args[0]
    assert "'vgg_nope'" in msg
    for arch in MODELS:
        assert repr(arch) in msg
    with pytest.raises(KeyError, match="vgg_nope"):
        build_classifier("vgg_nope", (3, 32, 32), 10, (0.5,) * 3, (0.5,) * 3)


# --------------------------------------------------------------------------- Classifier


def test_classifier_normalises_inside() -> None:
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.5)
    x = torch.rand(3, 3, 4, 4)
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    ident = Classifier(nn.Identity(), mean, std)
    torch.testing.assert_close(ident(x), (x - m) / s)
    assert ident(x)[1, 2, 0, 0] == pytest.approx((float(x[1, 2, 0, 0]) - 0.3) / 0.5, rel=1e-5)

    torch.manual_seed(0)
    net = build_model("resnet18_cifar", 3, 10, 32).eval()
    clf = Classifier(net, mean, std).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(clf(x), net((x - m) / s))
        assert not torch.allclose(clf(x), net(x), atol=1e-3)
    assert {"mean", "std"} <= set(clf.state_dict())
    assert clf.mean.shape == (1, 3, 1, 1) and clf.std.shape == (1, 3, 1, 1)


def test_build_classifier_uses_shape() -> None:
    clf = build_classifier("small_cnn", (1, 16, 16), 7, (0.1,), (0.3,))
    assert isinstance(clf.net, nn.Sequential)
    assert clf.mean.flatten().tolist() == pytest.approx([0.1])
    with torch.no_grad():
        assert clf.eval()(torch.rand(4, 1, 16, 16)).shape == (4, 7)


# --------------------------------------------------------------------------- checkpoints


def _trained_small_cnn() -> tuple[Classifier, dict[str, Any]]:
    """A small_cnn whose weights and batch-norm statistics differ from a fresh build."""
    torch.manual_seed(0)
    meta = {"arch": "small_cnn", "image_shape": [1, 16, 16], "num_classes": 10,
            "mean": [0.2], "std": [0.3]}
    clf = build_classifier("small_cnn", (1, 16, 16), 10, (0.2,), (0.3,))
    clf.train()
    with torch.no_grad():
        clf(torch.rand(8, 1, 16, 16))  # moves the running stats away from 0 / 1
        for prm in clf.parameters():
            prm.add_(0.01 * torch.randn_like(prm))
    return clf.eval(), meta


def test_save_load_round_trip(tmp_path: Path) -> None:
    clf, meta = _trained_small_cnn()
    path = tmp_path / "models" / "target.pt"
    save_classifier(path, clf, meta)
    loaded = load_classifier(path, expect={"arch": "small_cnn", "num_classes": 10})
    assert not loaded.training
    x = torch.rand(5, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded(x), clf(x))
    ref, got = clf.state_dict(), loaded.state_dict()
    assert ref.keys() == got.keys()
    for k in ref:
        assert torch.equal(ref[k], got[k]), k
    fresh = build_classifier("small_cnn", (1, 16, 16), 10, (0.2,), (0.3,)).eval()
    with torch.no_grad():
        assert not torch.allclose(fresh(x), loaded(x)), "weights really came from the file"


def test_corrupt_checkpoint_names_file(tmp_path: Path) -> None:
    clf, meta = _trained_small_cnn()
    path = tmp_path / "target.pt"
    save_classifier(path, clf, meta)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert_refuses_bad_files(load_classifier, path, "train_classifier")


def test_not_a_classifier_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="not a repurify classifier checkpoint") as err:
        load_classifier(path)
    assert str(path) in str(err.value)


def test_expect_mismatch(tmp_path: Path) -> None:
    clf, meta = _trained_small_cnn()
    path = tmp_path / "target.pt"
    save_classifier(path, clf, meta)
    with pytest.raises(CheckpointError) as err:
        load_classifier(path, expect={"arch": "other"})
    msg = str(err.value)
    assert str(path) in msg
    assert "arch='small_cnn'" in msg and "'other'" in msg
    with pytest.raises(CheckpointError, match=r"epochs=None but the params ask for 3"):
        load_classifier(path, expect={"epochs": 3})


def test_weights_that_do_not_fit(tmp_path: Path) -> None:
    clf, meta = _trained_small_cnn()
    path = tmp_path / "target.pt"
    save_classifier(path, clf, {**meta, "num_classes": 5})
    with pytest.raises(CheckpointError, match="weights do not fit small_cnn") as err:
        load_classifier(path)
    assert str(path) in str(err.value)
