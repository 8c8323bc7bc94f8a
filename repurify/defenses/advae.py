"""AdvAE: an auto-encoder adversarially trained in front of frozen classifiers.

Objective (Eq. 7), with the classifier weights theta fixed and only the
auto-encoder weights phi trained:

    min_phi E[ max_{delta in S} L(theta; AE_phi(x + delta), y) + lambda * D(AE_phi(x), x) ]

D is the (pixel-wise binary) cross-entropy and the inner maximisation is PGD
through AE + classifier. Ensemble training (Eq. 8) sums the term over
classifiers F_1..F_k, each with its own PGD. Architectures (Sec. 4.1): a small
conv auto-encoder for MNIST-like data and a U-net for CIFAR-10, both with a
sigmoid output.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from repurify.defenses.base import DefendedModel, Purifier
from repurify.defenses.fitting import FitHistory, fit, pgd_inner, split_validation
from repurify.defenses.registry import PurifierDef
from repurify.schema import DefenseTraining, PgdBudget, Role, Strict


class AdvaeSpec(Strict):
    """Auto-encoder adversarially trained in front of frozen classifiers (AdvAE, Eq. 7/8)."""

    kind: Literal["advae"]
    architecture: Literal["conv_ae", "unet"]
    widths: list[Annotated[int, Field(gt=0)]] = Field(min_length=1)  # encoder channels
    lam: float = Field(ge=0)  # lambda of Eq. 7: weight of the clean reconstruction term
    classifiers: list[Role] = Field(default=["target"], min_length=1)  # Eq. 8 ensemble
    pgd: PgdBudget
    training: DefenseTraining


class ConvAE(Purifier):
    """Sec. 4.1 (MNIST): encoder 2 x [conv 3x3, BN, ReLU, max-pool 2]; decoder 2 x [conv 3x3,
    ReLU, upsample 2]; a last 3x3 conv to the image channels with a sigmoid."""

    def __init__(self, channels: int, widths: list[int]) -> None:
        super().__init__()
        enc: list[nn.Module] = []
        cin = channels
        for w in widths:
            enc += [nn.Conv2d(cin, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                    nn.MaxPool2d(2)]
            cin = w
        dec: list[nn.Module] = []
        for w in reversed(widths):
            dec += [nn.Conv2d(cin, w, 3, padding=1), nn.ReLU(inplace=True), nn.Upsample(scale_factor=2)]
            cin = w
        self.encoder, self.decoder = nn.Sequential(*enc), nn.Sequential(*dec)
        self.out = nn.Conv2d(cin, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.decoder(self.encoder(x))
        if h.shape[-2:] != x.shape[-2:]:  # odd sizes (MNIST 28 -> 7 is fine; 30 is not)
            h = F.interpolate(h, size=x.shape[-2:], mode="nearest")
        return torch.sigmoid(self.out(h))


class UNetAE(Purifier):
    """Sec. 4.1 (CIFAR-10): encoder convs 32..512, decoder convs 256..32 and one to the image
    channels, each decoder level stacked (concatenated) with its encoder level; sigmoid output.

    The paper gives channels and kernels only; as in U-net, levels are separated by 2x2
    max-pooling and bilinear upsampling, and each conv is followed by batch norm and ReLU.
    """

    def __init__(self, channels: int, widths: list[int]) -> None:
        super().__init__()

        def conv(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout),
                                 nn.ReLU(inplace=True))

        self.encoder = nn.ModuleList(conv(c, w) for c, w in zip([channels, *widths], widths, strict=False))
        self.decoder = nn.ModuleList(conv(widths[i + 1] + widths[i], widths[i])
                                     for i in reversed(range(len(widths) - 1)))
        self.out = nn.Conv2d(widths[0], channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips, h = [], x
        for i, block in enumerate(self.encoder):
            h = block(h if i == 0 else F.max_pool2d(h, 2, ceil_mode=True))
            skips.append(h)
        for block, skip in zip(self.decoder, reversed(skips[:-1]), strict=True):
            h = F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            h = block(torch.cat([h, skip], 1))
        return torch.sigmoid(self.out(h))


def build_autoencoder(spec: AdvaeSpec, channels: int) -> Purifier:
    return (ConvAE if spec.architecture == "conv_ae" else UNetAE)(channels, spec.widths)


@contextlib.contextmanager
def frozen_statistics(module: nn.Module) -> Iterator[None]:
    """Batch statistics, the running ones left untouched (the attack's passes): no tensor is
    written, so a graph built before (Eq. 8's earlier terms) stays valid."""
    norms = [m for m in module.modules() if isinstance(m, nn.BatchNorm2d) and m.track_running_stats]
    for m in norms:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in norms:
            m.track_running_stats = True


class AdvaeObjective:
    """Eq. 7 (one classifier) or Eq. 8 (a sum over classifiers), on one batch."""

    def __init__(self, ae: Purifier, classifiers: list[nn.Module], spec: AdvaeSpec,
                 gen: torch.Generator) -> None:
        self.ae, self.spec, self.gen = ae, spec, gen
        self.defended = [DefendedModel(ae, f) for f in classifiers]

    def __call__(self, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        x, y = batch
        loss = x.new_zeros(())
        for model in self.defended:
            # the inner max of Eq. 7 over the AE being minimised, in its training (batch-norm)
            # mode. Crafted against the inference-mode AE instead, the examples missed the
            # function being trained, and the AE collapsed to a constant image (loss ln 10) in
            # front of model X (digits' transfer grid, mnist5k)
            with frozen_statistics(self.ae):
                x_adv = pgd_inner(model, x, y, self.spec.pgd, self.gen)
            loss = loss + F.cross_entropy(model(x_adv), y)
        if self.spec.lam:
            loss = loss + self.spec.lam * len(self.defended) * F.binary_cross_entropy(self.ae(x), x)
        return loss


def train_advae(spec: AdvaeSpec, x: torch.Tensor, y: torch.Tensor, classifiers: dict[str, nn.Module],
                *, device: torch.device, gen: torch.Generator) -> tuple[Purifier, FitHistory, dict]:
    """Fit the auto-encoder on the first ``training.train_limit`` images of ``x`` ([0,1]) with a
    held-out validation split (Sec. 4.1); ``classifiers`` maps the names in ``spec``."""
    cfg = spec.training
    x, y = x[:cfg.train_limit], y[:cfg.train_limit]
    train_idx, val_idx = split_validation(len(y), cfg.val_fraction, gen)
    ae = build_autoencoder(spec, x.shape[1]).to(device)
    objective = AdvaeObjective(ae, [classifiers[r].to(device) for r in spec.classifiers], spec, gen)
    hist = fit(ae, (x[train_idx], y[train_idx]), (x[val_idx], y[val_idx]), objective, objective,
               cfg, device=device, gen=gen, desc=f"AdvAE ({spec.architecture})")
    return ae, hist, {"train_examples": len(train_idx), "val_examples": len(val_idx)}


PURIFIER = PurifierDef(
    kind="advae", spec=AdvaeSpec, purifier=Purifier, prepare="train", fit=train_advae,
    build=lambda spec, ctx: build_autoencoder(spec, ctx.image_shape[0]),
    example={"kind": "advae", "architecture": "conv_ae", "widths": [4, 4], "lam": 0.0,
             "pgd": {"eps": 0.1, "step_size": 0.05, "steps": 2},
             "training": {"epochs": 1, "batch_size": 16, "lr_decay": 0.5, "plateau_patience": 1,
                          "train_limit": 32}})
