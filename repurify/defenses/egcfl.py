"""EGC-FL: ensemble generative cleaning with feedback loops (Yuan & He, CVPR 2020).

The attacked image X* passes the pre-processing convolution P and the
transformed deadzone layer Phi (T, eta, T^-1; Sec. 3.2) to give X~. The
generative cleaning network G, with converters U, V, W, produces estimates

    X_bar_k = G{ W[ V(X~) (+) U(X_bar_{k-1}) ] }      (Eq. 1, X_bar_0 = X~)

which the accumulative fusion network Gamma merges, X_hat_k = Gamma(X_hat_{k-1},
X_bar_k) (Eq. 2, X_hat_1 = X_bar_1). Training minimises Eq. 6,
L = l1 L_P + l2 L_A + l3 L_C (all lambdas 1/3): the perceptual loss on F_beta
features of the fused image (Eq. 7), the L2 distance of G's estimate to the
clean image (Eq. 8) and the frozen classifier's cross-entropy on the fused
image (Eq. 9), each averaged over the K generations, on PGD examples (K = 3).

The paper specifies none of the networks beyond their roles: P is one 3x3
convolution, G a DUNET-style U-net (HGD's, with its residual output), U and V
a 3x3 convolution + ReLU each, W a 3x3 convolution back to image channels, and
Gamma three 3x3 convolutions adding a correction to the mean of its inputs.
Each starts as an identity (P and G pass the image, U and V copy it into their
first channels, W averages the two copies, Gamma's correction is zero), so
training starts from the TDZ output rather than from noise. Squared norms are
means over elements.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from repurify.defenses.base import Purifier
from repurify.defenses.dct import BlockDCT, deadzone
from repurify.defenses.fitting import FitHistory, fit, pgd_examples, split_validation
from repurify.defenses.hgd import DUNET
from repurify.defenses.perceptual import feature_network
from repurify.defenses.registry import PurifierDef
from repurify.models.classifier import Classifier
from repurify.schema import DefenseTraining, Perceptual, PgdBudget, PositiveRatio, Role


class EgcflSpec(Perceptual):
    """EGC-FL (Yuan & He 2020): TDZ layer, generator G with feedback loop, fusion network Gamma."""

    kind: Literal["egcfl"]
    block: int = Field(default=8, gt=0)  # M: the DCT's M x M blocks (ours: the paper states none)
    delta: PositiveRatio  # deadzone half-width on coefficients of [0,1] images (8/255 style)
    transform: bool = True  # False: deadzone on pixels (Table 7 "without transform")
    inverse: bool = True  # ours, unstated: TDZ ends with T^-1 (pixels); False: G and P see coefficients
    feedback: bool = True  # False: X_hat = G(X_tilde), no U, V, W, Gamma (Table 7)
    widths: list[Annotated[int, Field(gt=0)]] = Field(min_length=2)  # G: a DUNET-style U-net
    converter_width: int = Field(gt=0)  # channels U and V map to before the concatenation
    generations: int = Field(default=3, gt=0)  # K, trained and evaluated (Gen_k: the ablation stage)
    lambdas: list[Annotated[float, Field(ge=0)]] = Field(  # Eq. 6: lambda_1..3 of L_P, L_A, L_C
        default=[1 / 3] * 3, min_length=3, max_length=3)
    source: Role = "target"  # classifier the PGD training examples are crafted on
    attack: PgdBudget  # the PGD that makes the training set
    training: DefenseTraining


class TDZ(nn.Module):
    """Phi: orthonormal blockwise DCT T, deadzone eta, and (``inverse``) T^-1 back to pixels.

    ``transform=False`` applies eta to the pixels (Table 7, "without transform")."""

    def __init__(self, block: int, delta: float, transform: bool = True, inverse: bool = True) -> None:
        super().__init__()
        self.delta, self.inverse = delta, inverse
        self.T = BlockDCT(block) if transform else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.T is None:
            return deadzone(x, self.delta)
        size = x.shape[-2:]
        coeffs = deadzone(self.T(x), self.delta)  # Eq. 3: eta(T . X*)
        return self.T.inverse(coeffs, size) if self.inverse else coeffs[..., :size[0], :size[1]]


def _conv_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True))


def _copy_channels(conv: nn.Conv2d, sources: list[list[int]], scale: float = 1.0) -> nn.Conv2d:
    """Output channel o starts as ``scale`` times the sum of input channels ``sources[o]`` (centre
    tap only); the remaining output channels keep their random initialisation."""
    with torch.no_grad():
        for o, inputs in enumerate(sources):
            conv.weight[o].zero_()
            conv.bias[o] = 0
            for i in inputs:
                conv.weight[o, i, 1, 1] = scale
    return conv


class Fusion(nn.Module):
    """Gamma: X_hat_k = Gamma(X_hat_{k-1}, X_bar_k) (Eq. 2), a learned correction of their mean."""

    def __init__(self, channels: int, width: int) -> None:
        super().__init__()
        last = nn.Conv2d(width, channels, 3, padding=1)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(_conv_relu(2 * channels, width), _conv_relu(width, width), last)

    def forward(self, x_hat: torch.Tensor, x_bar: torch.Tensor) -> torch.Tensor:
        return ((x_hat + x_bar) / 2 + self.net(torch.cat([x_hat, x_bar], 1))).clamp(0, 1)


class EGCFL(Purifier):
    """P, Phi, G with the feedback loop U, V, W, and Gamma; ``generations`` = K at test time."""

    differentiable = False  # the deadzone switches to BPDA in adaptive attacks
    autograd_protocol = True  # the paper attacked it white-box through autograd's gradients

    def __init__(self, spec: EgcflSpec, channels: int) -> None:
        super().__init__()
        self.generations, self.feedback = spec.generations, spec.feedback
        cw = spec.converter_width
        if self.feedback and cw < channels:
            raise ValueError(f"converter_width ({cw}) must be at least the image channels ({channels})")
        copy = [[c] for c in range(channels)]  # every network starts as an identity (see above)
        self.P = _copy_channels(nn.Conv2d(channels, channels, 3, padding=1), copy)
        self.Phi = TDZ(spec.block, spec.delta, spec.transform, spec.inverse)
        self.G = DUNET(channels, spec.widths)
        nn.init.zeros_(self.G.head.weight)  # G starts as the identity: its noise estimate is 0
        nn.init.zeros_(self.G.head.bias)
        if self.feedback:
            self.U = nn.Sequential(_copy_channels(nn.Conv2d(channels, cw, 3, padding=1), copy), nn.ReLU())
            self.V = nn.Sequential(_copy_channels(nn.Conv2d(channels, cw, 3, padding=1), copy), nn.ReLU())
            self.W = nn.Conv2d(2 * cw, channels, 3, padding=1)
            nn.init.zeros_(self.W.weight)  # W[V(X~) (+) U(X_bar)] starts as (X~ + X_bar) / 2
            _copy_channels(self.W, [[c, cw + c] for c in range(channels)], scale=0.5)
            self.Gamma = Fusion(channels, spec.widths[0])

    def estimates(self, x: torch.Tensor, k: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(X_bar_1..k, X_hat_1..k); without feedback, one pass of G serves as both."""
        x_tilde = self.Phi(self.P(x))
        if not self.feedback:
            x_hat = self.G(x_tilde)
            return [x_hat], [x_hat]
        v = self.V(x_tilde)
        x_bar, bars, hats = x_tilde, [], []
        for _ in range(k):
            x_bar = self.G(self.W(torch.cat([v, self.U(x_bar)], 1)))  # Eq. 1
            hats.append(x_bar if not hats else self.Gamma(hats[-1], x_bar))  # Eq. 2
            bars.append(x_bar)
        return bars, hats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.estimates(x, self.generations)[1][-1]


class EgcflLoss(nn.Module):
    """Eq. 6: l1 L_P + l2 L_A + l3 L_C over the K generations; also returns the three terms."""

    def __init__(self, net: EGCFL, F_beta: nn.Module, C: Classifier, spec: EgcflSpec) -> None:
        super().__init__()
        self.net, self.F_beta, self.C = net, F_beta, C
        self.k, self.lambdas = spec.generations, spec.lambdas

    def terms(self, x_adv: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        bars, hats = self.net.estimates(x_adv, self.k)
        with torch.no_grad():
            f_x = self.F_beta(x)
        L_P = torch.stack([F.mse_loss(self.F_beta(h), f_x) for h in hats]).mean()  # Eq. 7
        L_A = torch.stack([F.mse_loss(b, x) for b in bars]).mean()  # Eq. 8
        L_C = torch.stack([F.cross_entropy(self.C(h), y) for h in hats]).mean()  # Eq. 9
        return torch.stack([L_P, L_A, L_C])

    def forward(self, x_adv: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (torch.tensor(self.lambdas, device=x.device) * self.terms(x_adv, x, y)).sum()


def build_egcfl(spec: EgcflSpec, channels: int) -> EGCFL:
    return EGCFL(spec, channels)


def train_egcfl(spec: EgcflSpec, x: torch.Tensor, y: torch.Tensor, classifiers: dict[str, Classifier],
                *, device: torch.device, gen: torch.Generator) -> tuple[EGCFL, FitHistory, dict]:
    """Fit on PGD examples of the first ``training.train_limit`` images of ``x`` ([0,1]), crafted
    on ``spec.source``; keep the weights with the lowest validation loss."""
    cfg = spec.training
    F_beta = feature_network(spec.perceptual, spec.vgg_layer, classifiers["target"]).to(device)
    x, y = x[:cfg.train_limit], y[:cfg.train_limit]
    x_adv = pgd_examples(classifiers[spec.source], x, y, spec.attack, gen, cfg.batch_size, device)
    train_idx, val_idx = split_validation(len(y), cfg.val_fraction, gen)
    net = build_egcfl(spec, x.shape[1])
    loss = EgcflLoss(net, F_beta, classifiers["target"].to(device), spec)

    def train_loss(batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return loss(*batch)

    def val_loss(batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        with torch.no_grad():
            return loss(*batch)

    data = (x_adv, x, y)
    hist = fit(net, tuple(t[train_idx] for t in data), tuple(t[val_idx] for t in data), train_loss,
               val_loss, cfg, device=device, gen=gen, desc="EGC-FL")
    net.eval()
    with torch.no_grad():  # the restored model's three terms, averaged over validation batches
        val = [t[val_idx] for t in data]
        terms = torch.stack([loss.terms(*(t[i:i + cfg.batch_size].to(device) for t in val))
                             for i in range(0, len(val_idx), cfg.batch_size)]).mean(0)
    return net, hist, {"train_examples": len(train_idx), "val_examples": len(val_idx),
                       "val_terms": dict(zip(("L_P", "L_A", "L_C"), terms.tolist(), strict=True)),
                       "effective_threshold": effective_threshold(net.P, spec.delta, x.shape[-2:])}


def effective_threshold(P: nn.Conv2d, delta: float, size: tuple[int, int]) -> dict[str, float]:
    """The deadzone acts on coefficients of P(X*): in the input's units its threshold is delta over
    P's gain, which training moves. P's gain at DC and at its strongest frequency (the largest
    singular value of its frequency response on the image grid)."""
    with torch.no_grad():
        response = torch.fft.fft2(P.weight.detach().cpu().double(), s=tuple(size))  # Cout, Cin, H, W
        gains = torch.linalg.matrix_norm(response.permute(2, 3, 0, 1), ord=2)
    dc, peak = gains[0, 0].item(), gains.max().item()
    return {"delta": delta, "P_gain_dc": dc, "P_gain_max": peak,
            "delta_over_dc_gain": delta / dc if dc else None,
            "delta_over_max_gain": delta / peak if peak else None}


PURIFIER = PurifierDef(
    kind="egcfl", spec=EgcflSpec, purifier=EGCFL, prepare="train", fit=train_egcfl,
    build=lambda spec, ctx: build_egcfl(spec, ctx.image_shape[0]),
    example={"kind": "egcfl", "delta": 0.1, "widths": [4, 8], "converter_width": 4, "generations": 2,
             "perceptual": "target_features", "attack": {"eps": 0.1, "step_size": 0.05, "steps": 2},
             "training": {"epochs": 1, "batch_size": 16, "lr_decay": 0.5, "plateau_patience": 1,
                          "train_limit": 32}})
