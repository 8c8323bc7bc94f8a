"""GCLN: generative cleaning network with a quantized nonlinear transform (ICLR 2020 submission).

G_theta first destroys the attack pattern with the quantized nonlinear
transform T^-1(RQ(T x*)) (Sec. 3.2: blockwise DCT, Eq. 1; RQ(c) = Round(c/q) q,
Eq. 2) and then recovers the image content with a cleaning network. The
detector D_phi (clean vs attacked) is first trained on clean images and
attacked versions, then plays the min-max game of Eq. 6 against G, whose loss
is Eq. 3, L_G = lambda L_P + (1 - lambda) L_A, with the perceptual distance
L_P = ||F_beta(x^o) - F_beta(G(x*))||_2 (Eq. 4) and L_A the cross-entropy of
D(G(x*)) against the label "clean" (Eq. 5). Recovered images that the target
classifier C_alpha classifies correctly join the clean set Omega^o on the fly.

The paper gives no architectures: the cleaning network is a DUNET-style U-net
(HGD's, residual output, its noise estimate initialised to 0 so G starts as the
quantized transform) and D a stack of strided 4x4 convolutions with leaky
ReLUs and a linear logit (a DCGAN discriminator). L_P's norm is divided by the
square root of the feature count, so lambda weighs it like a per-pixel loss.
The weights with the lowest validation L_P are kept.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from repurify.defenses.base import Purifier
from repurify.defenses.dct import BlockDCT, quantize
from repurify.defenses.fitting import FitHistory, batches, fit, pgd_examples, split_validation
from repurify.defenses.hgd import DUNET
from repurify.defenses.perceptual import feature_network
from repurify.defenses.registry import PurifierDef
from repurify.models.classifier import Classifier
from repurify.passes import Counted
from repurify.progress import progress
from repurify.schema import DefenseTraining, Perceptual, PgdBudget, PositiveRatio, Role


class GclnSpec(Perceptual):
    """GCLN: generator with a quantized DCT layer, trained against a clean/attacked detector."""

    kind: Literal["gcln"]
    block: int = Field(default=8, gt=0)  # M
    q: PositiveRatio  # quantization step of Eq. 2 on [0,1] images: Qs/255 (Tables 1-4: 5, 10)
    widths: list[Annotated[int, Field(gt=0)]] = Field(min_length=2)  # G's recovery U-net
    detector_widths: list[Annotated[int, Field(gt=0)]] = Field(min_length=1)  # D: strided convs
    lam: float = Field(default=0.5, ge=0, le=1)  # Eq. 3: lambda L_P + (1 - lambda) L_A
    detector_epochs: int = Field(gt=0)  # D's initial training on clean vs attacked images
    grow_clean_set: bool = True  # recovered images C classifies correctly join Omega^o
    # classifier the attacked training images are crafted on. Sec. 3: "when training D_phi, we do
    # not need to know the model inside the target network C_alpha"; the target is an ablation
    source: Role = "substitute"
    attack: PgdBudget
    training: DefenseTraining


class QuantizedTransform(nn.Module):
    """T^-1(RQ(T x)): the quantized nonlinear transform layer (Eq. 1-2)."""

    def __init__(self, block: int, q: float) -> None:
        super().__init__()
        self.T, self.q = BlockDCT(block), q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.T.inverse(quantize(self.T(x), self.q), x.shape[-2:])


class Generator(Purifier):
    """G_theta: the quantized transform, then the cleaning network."""

    differentiable = False  # rounding switches to BPDA in adaptive attacks
    autograd_protocol = True  # the paper attacked it white-box through autograd's gradients

    def __init__(self, spec: GclnSpec, channels: int) -> None:
        super().__init__()
        self.quantized_transform = QuantizedTransform(spec.block, spec.q)
        self.cleaner = DUNET(channels, spec.widths)
        nn.init.zeros_(self.cleaner.head.weight)  # starts as the quantized transform alone
        nn.init.zeros_(self.cleaner.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cleaner(self.quantized_transform(x))


class Detector(Counted):
    """D_phi: the logit of "x is clean"."""

    def __init__(self, channels: int, widths: list[int], image_size: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for cin, cout in zip([channels, *widths], widths, strict=False):
            layers += [nn.Conv2d(cin, cout, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
        self.features = nn.Sequential(*layers)
        with torch.no_grad():
            size = self.features(torch.zeros(1, channels, image_size, image_size)).numel()
        self.logit = nn.Linear(size, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logit(self.features(x).flatten(1)).squeeze(1)


def build_generator(spec: GclnSpec, channels: int) -> Generator:
    return Generator(spec, channels)


def detector_loss(D: Detector, clean: torch.Tensor, recovered: torch.Tensor) -> torch.Tensor:
    """The negated inner max of Eq. 6: -(log D(x^o) + log(1 - D(G(x*))))."""
    real, fake = D(clean), D(recovered)
    return (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
            + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))


def perceptual_distance(F_beta: nn.Module, x_o: torch.Tensor, x_bar: torch.Tensor) -> torch.Tensor:
    """Eq. 4 per image, divided by sqrt(feature count); batch mean."""
    with torch.no_grad():
        target = F_beta(x_o).flatten(1)
    diff = F_beta(x_bar).flatten(1) - target
    return (diff.norm(dim=1) / diff.shape[1] ** 0.5).mean()


class CleanSet:
    """Omega^o's additions: recovered images C classifies correctly, newest ``capacity`` kept."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.added = capacity, 0
        self.images: torch.Tensor | None = None

    def __len__(self) -> int:
        return 0 if self.images is None else len(self.images)

    def add(self, images: torch.Tensor) -> None:
        self.added += len(images)
        kept = images.detach() if self.images is None else torch.cat([self.images, images.detach()])
        self.images = kept[-self.capacity:]

    def sample(self, n: int, gen: torch.Generator) -> torch.Tensor:
        assert self.images is not None, "sample() of an empty clean set"
        idx = torch.randint(len(self.images), (min(n, len(self.images)),), generator=gen)
        return self.images[idx.to(self.images.device)]


class GclnTraining:
    """One alternating step of Eq. 6 per batch: update D, then return L_G (Eq. 3) for G."""

    def __init__(self, G: Generator, D: Detector, F_beta: nn.Module, C: Classifier, spec: GclnSpec,
                 capacity: int, gen: torch.Generator) -> None:
        self.G, self.D, self.F_beta, self.C, self.spec, self.gen = G, D, F_beta, C, spec, gen
        self.opt_D = torch.optim.Adam(D.parameters(), lr=spec.training.lr, betas=(0.5, 0.999))
        self.clean_set = CleanSet(capacity)
        self.d_losses: list[float] = []

    def __call__(self, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        x_adv, x_o, y = batch
        x_bar = self.G(x_adv)
        clean = x_o
        if len(self.clean_set):
            clean = torch.cat([x_o, self.clean_set.sample(len(x_o), self.gen)])
        d_loss = detector_loss(self.D, clean, x_bar.detach())
        self.opt_D.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt_D.step()
        self.d_losses.append(d_loss.item())
        if self.spec.grow_clean_set:
            with torch.no_grad():
                self.clean_set.add(x_bar[self.C(x_bar).argmax(1) == y])
        logit = self.D(x_bar)
        L_A = F.binary_cross_entropy_with_logits(logit, torch.ones_like(logit))  # Eq. 5
        L_P = perceptual_distance(self.F_beta, x_o, x_bar)  # Eq. 4
        return self.spec.lam * L_P + (1 - self.spec.lam) * L_A  # Eq. 3


def pretrain_detector(D: Detector, clean: torch.Tensor, attacked: torch.Tensor, spec: GclnSpec,
                      *, device: torch.device, gen: torch.Generator) -> list[float]:
    """D's initial phase: clean images against their attacked versions; loss per epoch."""
    opt = torch.optim.Adam(D.parameters(), lr=spec.training.lr, betas=(0.5, 0.999))
    losses = []
    for _ in progress(range(spec.detector_epochs), "GCLN detector", "epoch"):
        total = 0.0
        order = torch.randperm(len(clean), generator=gen)
        for x_o, x_adv in batches((clean, attacked), spec.training.batch_size, order, device):
            loss = detector_loss(D, x_o, x_adv)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(x_o)
        losses.append(total / len(clean))
    return losses


def train_gcln(spec: GclnSpec, x: torch.Tensor, y: torch.Tensor, classifiers: dict[str, Classifier],
               *, device: torch.device, gen: torch.Generator) -> tuple[Generator, FitHistory, dict]:
    """Train D, then G against it, on the first ``training.train_limit`` images of ``x`` ([0,1])
    and their PGD versions crafted on ``spec.source``."""
    cfg = spec.training
    C = classifiers["target"].to(device)
    F_beta = feature_network(spec.perceptual, spec.vgg_layer, C).to(device)
    x, y = x[:cfg.train_limit], y[:cfg.train_limit]
    x_adv = pgd_examples(classifiers[spec.source], x, y, spec.attack, gen, cfg.batch_size, device)
    train_idx, val_idx = split_validation(len(y), cfg.val_fraction, gen)
    G = build_generator(spec, x.shape[1])
    D = Detector(x.shape[1], spec.detector_widths, x.shape[-1]).to(device)
    d_pretrain = pretrain_detector(D, x[train_idx], x_adv[train_idx], spec, device=device, gen=gen)
    step = GclnTraining(G.to(device), D, F_beta, C, spec, capacity=len(train_idx), gen=gen)

    def val_loss(batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        with torch.no_grad():
            return perceptual_distance(F_beta, batch[1], G(batch[0]))

    data = (x_adv, x, y)
    hist = fit(G, tuple(t[train_idx] for t in data), tuple(t[val_idx] for t in data), step, val_loss,
               cfg, device=device, gen=gen, desc=f"GCLN (q={spec.q:.4f})")
    per_epoch = len(step.d_losses) // len(hist.train_loss)  # D steps per epoch (Fig. 4 left)
    d_loss = torch.tensor(step.d_losses).view(-1, per_epoch).mean(1).tolist()
    return G, hist, {"train_examples": len(train_idx), "val_examples": len(val_idx),
                     "detector_pretrain_loss": d_pretrain, "detector_loss": d_loss,
                     "clean_set_added": step.clean_set.added}


PURIFIER = PurifierDef(
    kind="gcln", spec=GclnSpec, purifier=Generator, prepare="train", fit=train_gcln,
    build=lambda spec, ctx: build_generator(spec, ctx.image_shape[0]),
    example={"kind": "gcln", "q": 0.125, "widths": [4, 8], "detector_widths": [4], "detector_epochs": 1,
             "perceptual": "target_features", "attack": {"eps": 0.1, "step_size": 0.05, "steps": 2},
             "training": {"epochs": 1, "batch_size": 16, "lr_decay": 0.5, "plateau_patience": 1,
                          "train_limit": 32}})
