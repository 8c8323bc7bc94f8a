"""HGD: high-level representation guided denoiser (Liao et al., CVPR 2018).

* DUNET (Sec. 3.1.2, Fig. 3): a feedforward path of one C2 and C3 blocks (the
  first convolution of each C3 has stride 2), a feedback path that upsamples
  bilinearly, concatenates the lateral input and applies C3 blocks and a final
  C2, then a 1x1 convolution to the negative noise -dx; output x* - dx (Eq. 4).
  DAE drops the lateral connections and reconstructs the image directly.
  ``C`` = 3x3 convolution + batch norm + ReLU; ``Ck`` = k of them.
* Losses: pixel-guided L1 (Eq. 3, the paper's "PGD" denoiser), FGD (Eq. 5 at
  l = -2, the topmost conv features), LGD (Eq. 5 at l = -1, the logits) and CGD
  (cross-entropy on the true label).
* Training set (Table 1): FGSM on each source classifier alone, and FGSM and
  IFGSM_k on their ensemble, every image with eps drawn uniformly from
  {1..L} * eps_max / L (the paper: integers in [1,16]/255). The attacks
  ascend the loss of the attacked model's predicted class y_x, not the true
  label, which would leak the label into the example (Sec. 2.1).
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from repurify.attacks.base import Goal
from repurify.attacks.gradient import iterative
from repurify.defenses.base import Purifier
from repurify.defenses.fitting import FitHistory, Repeated, disk_tensor, fit, split_validation
from repurify.defenses.registry import PurifierDef
from repurify.models.classifier import Classifier
from repurify.models.features import ConvFeatures
from repurify.progress import progress
from repurify.schema import DefenseTraining, PositiveRatio, Role, Strict


class HgdSpec(Strict):
    """High-level representation guided denoiser (Liao et al. 2018)."""

    kind: Literal["hgd"]
    architecture: Literal["dunet", "dae"] = "dunet"  # DAE: DUNET without lateral connections
    loss: Literal["pixel", "fgd", "lgd", "cgd"] = "lgd"  # Eq. 3 / Eq. 5 l=-2 / l=-1 / CE
    widths: list[Annotated[int, Field(gt=0)]] = Field(min_length=2)  # C2, then one C3 per entry
    guide: Role = "target"  # the classifier whose representation guides the loss (Table 4)
    sources: list[Role] = Field(min_length=1)  # classifiers attacked to build the training set
    eps_max: PositiveRatio  # eps ~ U{1..eps_levels} * eps_max / eps_levels (Table 1: [1,16]/255)
    eps_levels: int = Field(default=16, gt=0)
    ifgsm_steps: list[Annotated[int, Field(gt=1)]] = [2, 4, 8]
    training: DefenseTraining


def C(k: int, cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """``Ck``: k x (3x3 conv, batch norm, ReLU); the first conv has ``stride``."""
    layers: list[nn.Module] = []
    for i in range(k):
        layers += [nn.Conv2d(cin if i == 0 else cout, cout, 3, stride if i == 0 else 1, 1, bias=False),
                   nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class DUNET(Purifier):
    """Denoising U-net; ``lateral=False`` gives the paper's convolutional DAE.

    ``widths[0]`` is the C2's width, each further entry one strided C3 (ImageNet:
    64, 128, 256, 256, 256); the feedback path mirrors ``widths[:-1]``.
    """

    def __init__(self, channels: int, widths: list[int], lateral: bool = True) -> None:
        super().__init__()
        self.lateral = lateral
        self.forward_path = nn.ModuleList(
            [C(2, channels, widths[0])]
            + [C(3, widths[i - 1], widths[i], stride=2) for i in range(1, len(widths))])
        blocks, below = [], widths[-1]
        for i in reversed(range(len(widths) - 1)):  # three C3 then one C2 at the paper's depth
            cin = below + (widths[i] if lateral else 0)
            blocks.append(C(2 if i == 0 else 3, cin, widths[i]))
            below = widths[i]
        self.feedback_path = nn.ModuleList(blocks)
        self.head = nn.Conv2d(widths[0], channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips, h = [], x
        for block in self.forward_path:
            h = block(h)
            skips.append(h)
        for block, lateral in zip(self.feedback_path, reversed(skips[:-1]), strict=True):
            h = F.interpolate(h, size=lateral.shape[-2:], mode="bilinear", align_corners=False)
            h = block(torch.cat([h, lateral], 1) if self.lateral else h)
        if not self.lateral:  # DAE: reconstruct the image itself
            return self.head(h).clamp(0, 1)
        minus_dx = self.head(h)
        return (x + minus_dx).clamp(0, 1)  # Eq. 4: x_hat = x* - dx_hat


def build_denoiser(spec: HgdSpec, channels: int) -> DUNET:
    return DUNET(channels, spec.widths, lateral=spec.architecture == "dunet")


class GuidedLoss(nn.Module):
    """The denoiser's training loss, guided by the frozen classifier ``f``."""

    def __init__(self, kind: str, f: Classifier) -> None:
        super().__init__()
        self.kind, self.f = kind, f
        self.f_l = ConvFeatures(f) if kind == "fgd" else f  # l = -2 or l = -1

    def forward(self, x_hat: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.kind == "pixel":
            return (x_hat - x).abs().mean()  # Eq. 3
        if self.kind == "cgd":
            return F.cross_entropy(self.f(x_hat), y)
        with torch.no_grad():
            target = self.f_l(x)
        return (self.f_l(x_hat) - target).abs().mean()  # Eq. 5


class Ensemble(nn.Module):
    """Mean logits of several classifiers (the ensemble attacks of Table 1)."""

    def __init__(self, models: list[nn.Module]) -> None:
        super().__init__()
        self.models = nn.ModuleList(models)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.models]).mean(0)


def _attack(model: nn.Module, x: torch.Tensor, eps: torch.Tensor, steps: int,
            gen: torch.Generator) -> torch.Tensor:
    """FGSM (steps=1) or IFGSM_steps with step eps/steps, per-example ``eps``, away from the
    model's predicted class y_x (Sec. 2.1: y_true leaks the label)."""
    with torch.no_grad():
        y_x = model(x).argmax(1)
    return iterative(model, x, Goal(y_x), norm="linf", eps=eps, step_size=eps / steps, steps=steps,
                     rand_init=False, momentum=None, early_stop=False, gen=gen)


def training_set(x: torch.Tensor, y: torch.Tensor, sources: list[Classifier], spec: HgdSpec,
                 gen: torch.Generator, batch_size: int, device: torch.device
                 ) -> tuple[torch.Tensor, Repeated, torch.Tensor]:
    """Adversarial copies of ``x`` (Table 1): returns (x_adv, x_clean, y), one row per copy;
    x_adv on disk (:func:`disk_tensor`), x_clean the clean images repeated without copying."""
    ensemble = Ensemble(sources)
    recipes = [(m, 1) for m in sources] + [(ensemble, k) for k in (1, *spec.ifgsm_steps)]
    if len(sources) == 1:
        recipes = recipes[1:]  # FGSM on the lone source would appear twice
    n, copies = len(x), len(recipes)
    adv = disk_tensor((copies * n, *x.shape[1:]))
    for r, (model, steps) in enumerate(progress(recipes, "HGD training set", "attack")):
        eps = torch.randint(1, spec.eps_levels + 1, (n,), generator=gen).float()
        eps = (eps * spec.eps_max / spec.eps_levels).view(-1, 1, 1, 1)
        for i in range(0, n, batch_size):
            adv[r * n + i:r * n + min(i + batch_size, n)] = _attack(
                model, x[i:i + batch_size].to(device), eps[i:i + batch_size].to(device), steps, gen).cpu()
    return adv, Repeated(x, copies), y.repeat(copies)


def train_hgd(spec: HgdSpec, x: torch.Tensor, y: torch.Tensor, classifiers: dict[str, Classifier],
              *, device: torch.device, gen: torch.Generator) -> tuple[DUNET, FitHistory, dict]:
    """Build the Table 1 training/validation sets from the first ``training.train_limit`` images
    of ``x`` ([0,1]) and fit the denoiser; ``classifiers`` maps the names in ``spec``."""
    cfg = spec.training
    x, y = x[:cfg.train_limit], y[:cfg.train_limit]
    sources = [classifiers[r].to(device) for r in spec.sources]
    train_idx, val_idx = split_validation(len(y), cfg.val_fraction, gen)
    train = training_set(x[train_idx], y[train_idx], sources, spec, gen, cfg.batch_size, device)
    val = training_set(x[val_idx], y[val_idx], sources, spec, gen, cfg.batch_size, device)
    denoiser = build_denoiser(spec, x.shape[1])
    loss = GuidedLoss(spec.loss, classifiers[spec.guide].to(device))

    def train_loss(batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        x_adv, x_clean, label = batch
        return loss(denoiser(x_adv), x_clean, label)

    def val_loss(batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        with torch.no_grad():
            return train_loss(batch)

    hist = fit(denoiser, train, val, train_loss, val_loss, cfg, device=device, gen=gen,
               desc=f"HGD ({spec.architecture}, {spec.loss})")
    return denoiser, hist, {"train_examples": len(train[0]), "val_examples": len(val[0])}


PURIFIER = PurifierDef(
    kind="hgd", spec=HgdSpec, purifier=DUNET, prepare="train", fit=train_hgd,
    build=lambda spec, ctx: build_denoiser(spec, ctx.image_shape[0]),
    example={"kind": "hgd", "widths": [4, 8], "sources": ["target"], "eps_max": 0.1, "ifgsm_steps": [2],
             "training": {"epochs": 1, "batch_size": 16, "lr_decay": 0.5, "plateau_patience": 1,
                          "train_limit": 32}})
