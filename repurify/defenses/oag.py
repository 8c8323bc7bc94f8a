"""OAG: online alternate generator (Li et al. 2020), batched across images.

Nothing is trained in advance. For every reference image I_z a fresh energy
network F(., theta) -- a k x k convolution with K filters, a ReLU and a fully
connected layer to a scalar (Fig. 2) -- is drawn at random, the synthesized
image starts at I_1 = 0, and Algorithm 1 alternates T_I Langevin updates of the
image (Eq. 3) with one update of theta (Eq. 5), T_N times.

Batched: image b has its own theta_b. The B convolutions are one grouped
convolution (groups = B) and the B fully connected layers one elementwise
product, and every image draws its initialisation and its Langevin noise from a
generator of its own, seeded per image: each image runs the one-at-a-time
algorithm, whatever batch it is in. Not bitwise equal to ``synthesize_loop`` (the
one-at-a-time run): the grouped convolution sums in another order and the
Langevin steps carry that rounding forward; ``tests/test_oag.py`` bounds the
difference at a realistic T_N (the README's ``oag`` row gives measurements).

Pixels live in [0, scale] during the synthesis: scale 255 is the paper's unit,
in which its attack budgets and Eq. 3's N(0, 1) prior are stated. The output is
divided by scale and clamped to [0, 1]. The paper gives no eps_g, beta or
initialisation; ``repurify.calibration`` picks them (and T_N) on Gaussian-noised
training images (Sec. III-D), never on adversarial ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator

from repurify.defenses.base import Purifier, nondifferentiable
from repurify.defenses.registry import PurifierDef
from repurify.schema import PositiveRatio, Strict, odd


class OagCalibration(Strict):
    """Sec. III-D / IV-E: T_N (and the values the paper does not give) from Gaussian-noised
    training images, never adversarial ones. Each list holds the candidates tried."""

    images: int = Field(gt=0)  # the first training images
    noise_sigma: PositiveRatio = 0.25  # on [0,1] pixels (Fig. 4: sigma 0.25)
    max_network_steps: int = Field(gt=0)  # length of the accuracy-vs-steps curve
    eps_g: list[PositiveRatio] = Field(min_length=1)
    beta: list[PositiveRatio] = Field(min_length=1)
    init_std: list[PositiveRatio] = Field(min_length=1)
    tolerance: float = Field(default=0.01, ge=0, lt=1)  # T_N: first step within this of the peak


class OagSpec(Strict):
    """OAG (Li et al. 2020): per-image online Langevin synthesis with a fresh energy network."""

    kind: Literal["oag"]
    generator: Literal["alternate", "autoencoder"] = "alternate"  # autoencoder: Sec. IV-H baseline
    kernel: int = Field(gt=0)  # k of the k x k convolution (15 at 224 px; Table V)
    filters: int = Field(gt=0)  # K (not in the paper)
    image_steps: int = Field(default=20, gt=0)  # T_I (Table IV)
    network_steps: int | None = Field(default=None, gt=0)  # T_N; None: chosen by calibrate_oag
    eps_g: PositiveRatio | None = None  # None: calibrated (likewise beta and init_std)
    beta: PositiveRatio | None = None
    init_std: PositiveRatio | None = None
    scale: PositiveRatio = 255.0  # pixels live in [0, scale] during the synthesis
    ae_lr: PositiveRatio = 1e-3  # Adam rate of the autoencoder baseline
    batch_size: int = Field(default=64, gt=0)  # images synthesized at once
    calibration: OagCalibration

    _kernel_odd = field_validator("kernel")(odd)


@dataclass(frozen=True)
class Settings:
    """Every value Algorithm 1 needs, calibrated ones filled in."""

    network_steps: int  # T_N
    image_steps: int  # T_I
    eps_g: float  # Eq. 3: noise strength; the image step is eps_g^2 / 2
    beta: float  # Eq. 5: the network's learning rate
    init_std: float  # theta_1 ~ N(0, init_std^2), biases 0
    kernel: int  # k
    filters: int  # K
    scale: float = 255.0
    generator: str = "alternate"  # "autoencoder": the one-step online auto-encoder of Sec. IV-H
    ae_lr: float = 1e-3  # its Adam learning rate


def settings(spec: OagSpec, chosen: dict[str, Any]) -> Settings:
    """Algorithm 1's values: the spec's, with those it leaves open taken from ``chosen``."""
    def pick(key: str) -> Any:
        value = getattr(spec, key)
        return chosen[key] if value is None else value

    return Settings(network_steps=pick("network_steps"), image_steps=spec.image_steps,
                    eps_g=pick("eps_g"), beta=pick("beta"), init_std=pick("init_std"),
                    kernel=spec.kernel, filters=spec.filters, scale=spec.scale,
                    generator=spec.generator, ae_lr=spec.ae_lr)


Callback = Callable[[int, torch.Tensor], None]  # (network step t, I_s / scale clamped to [0, 1])


def _generators(seeds: torch.Tensor, device: torch.device) -> list[torch.Generator]:
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]


def _draw(gens: list[torch.Generator], shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """One N(0, 1) tensor of ``shape`` per image from its own generator, stacked on dim 0."""
    out = torch.empty(len(gens), *shape, device=device)
    for g, row in zip(gens, out, strict=True):
        row.normal_(generator=g)
    return out


class EnergyNets:
    """theta_1..theta_B: F_b(I) = sum_{k,p} w_b[k,p] ReLU((W_b * I)[k,p] + c_b[k]) (Fig. 2).

    The fully connected layer's bias is left out: it cancels in both Eq. 3 and Eq. 5.
    The convolution is zero-padded to keep the image size, so every pixel is covered.
    """

    def __init__(self, gens: list[torch.Generator], shape: tuple[int, int, int], s: Settings,
                 device: torch.device) -> None:
        c, h, w = shape
        self.k = s.kernel
        self.W = (_draw(gens, (s.filters, c, s.kernel, s.kernel), device) * s.init_std).flatten(0, 1)
        self.c = torch.zeros(len(gens) * s.filters, device=device)
        self.w = _draw(gens, (s.filters, h, w), device) * s.init_std
        self.params = [p.requires_grad_(True) for p in (self.W, self.c, self.w)]

    def _responses(self, image: torch.Tensor) -> torch.Tensor:
        """z_b = W_b * I_b + c_b, all B convolutions as one grouped convolution: (B, K, H, W)."""
        b, c, h, w = image.shape
        z = F.conv2d(image.reshape(1, b * c, h, w), self.W, self.c, padding=self.k // 2, groups=b)
        return z.view_as(self.w)

    def energy(self, image: torch.Tensor) -> torch.Tensor:
        """F(I_b; theta_b) for each image b, shape (B,)."""
        return (F.relu(self._responses(image)) * self.w).flatten(1).sum(1)

    def image_step(self, I_s: torch.Tensor, noise: torch.Tensor, eps_g: float) -> torch.Tensor:
        """Eq. 3: I_{s+1} = I_s - (eps_g^2 / 2)(I_s - dF(I_s)/dI) + eps_g N(0, 1).

        dF/dI is backpropagation written out: dF/dz = w 1[z > 0], then the transposed grouped
        convolution. 1[z > 0] is sign(ReLU(z)): on CPU, boolean masks and ``where`` run
        unvectorised and cost more than the convolutions."""
        with torch.no_grad():
            z = self._responses(I_s)
            dF_dz = F.relu(z).sign_().mul_(self.w).view(1, -1, *z.shape[2:])
            dF_dI = F.conv_transpose2d(dF_dz, self.W, padding=self.k // 2,
                                       groups=len(I_s)).view_as(I_s)
            return torch.add(I_s, dF_dI - I_s, alpha=eps_g**2 / 2).add_(noise, alpha=eps_g)

    def network_step(self, I_z: torch.Tensor, I_s: torch.Tensor, beta: float) -> None:
        """Eq. 5: theta_{t+1} = theta_t + beta (dF(I_z)/dtheta - dF(I_s)/dtheta), per image."""
        grads = torch.autograd.grad(self.energy(I_z).sum() - self.energy(I_s).sum(), self.params)
        with torch.no_grad():
            for p, g in zip(self.params, grads, strict=True):
                p.add_(g, alpha=beta)


def _alternate(I_z: torch.Tensor, gens: list[torch.Generator], s: Settings,
               callback: Callback | None) -> torch.Tensor:
    """Algorithm 1 on a batch in [0, scale]."""
    nets = EnergyNets(gens, tuple(I_z.shape[1:]), s, I_z.device)
    I_s = torch.zeros_like(I_z)  # line 2: I_1 = 0
    for t in range(s.network_steps):
        noise = _draw(gens, (s.image_steps, *I_z.shape[1:]), I_z.device)  # (B, T_I, C, H, W)
        for i in range(s.image_steps):
            I_s = nets.image_step(I_s, noise[:, i], s.eps_g)
        nets.network_step(I_z, I_s, s.beta)
        if callback is not None:
            callback(t + 1, (I_s / s.scale).clamp(0, 1))
    return I_s


class OnlineAutoencoders:
    """Sec. IV-H's baseline, B at once: conv (OAG's encoder), FC to a scalar, ReLU, FC back to
    the feature map and a transposed conv to the image, fitted online to I_z alone."""

    def __init__(self, gens: list[torch.Generator], shape: tuple[int, int, int], s: Settings,
                 device: torch.device) -> None:
        c, h, w = shape
        k, f = s.kernel, s.filters
        self.k, self.f = k, f
        self.W = (_draw(gens, (f, c, k, k), device) * s.init_std).flatten(0, 1)
        self.w1 = _draw(gens, (f, h, w), device) * s.init_std
        self.w2 = _draw(gens, (f, h, w), device) * s.init_std
        self.W_t = (_draw(gens, (f, c, k, k), device) * s.init_std).flatten(0, 1)
        # the FC layers' biases; the encoder's starts at 1 so that the ReLU code starts alive
        self.b1 = torch.ones(len(gens), device=device)
        self.b2 = torch.zeros_like(self.w2)
        self.params = [p.requires_grad_(True)
                       for p in (self.W, self.w1, self.b1, self.w2, self.b2, self.W_t)]

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        b, c, h, w = image.shape
        e = F.conv2d(image.reshape(1, b * c, h, w), self.W, padding=self.k // 2, groups=b)
        code = F.relu((e.view_as(self.w1) * self.w1).flatten(1).sum(1) + self.b1)  # (B,)
        d = code.view(b, 1, 1, 1) * self.w2 + self.b2
        out = F.conv_transpose2d(d.reshape(1, b * self.f, h, w), self.W_t, padding=self.k // 2,
                                 groups=b)
        return out.view(b, c, h, w)


def _autoencode(I_z: torch.Tensor, gens: list[torch.Generator], s: Settings,
                callback: Callback | None) -> torch.Tensor:
    """T_N Adam steps on each image's own reconstruction loss, then one pass through the AE.

    The auto-encoders fit [0,1] pixels: Adam's steps are in weight units, and at the 0-255
    scale the decoder would need 255 times larger weights."""
    x = I_z / s.scale
    ae = OnlineAutoencoders(gens, tuple(x.shape[1:]), s, x.device)
    opt = torch.optim.Adam(ae.params, lr=s.ae_lr)
    for t in range(s.network_steps):
        opt.zero_grad()
        # per-image mean squared error, summed over images: each image's gradient is its own
        F.mse_loss(ae(x), x, reduction="none").flatten(1).mean(1).sum().backward()
        opt.step()
        if callback is not None:
            with torch.no_grad():
                callback(t + 1, ae(x).clamp(0, 1))
    with torch.no_grad():
        return ae(x) * s.scale


def synthesize(x: torch.Tensor, seeds: torch.Tensor, s: Settings,
               callback: Callback | None = None) -> torch.Tensor:
    """Images in [0, 1] -> synthesized images in [0, 1]; image b uses generator ``seeds[b]``."""
    with torch.enable_grad():
        gens = _generators(seeds, x.device)
        run = _alternate if s.generator == "alternate" else _autoencode
        out = run(x.detach() * s.scale, gens, s, callback)
    return (out.detach() / s.scale).clamp(0, 1)


def synthesize_loop(x: torch.Tensor, seeds: torch.Tensor, s: Settings) -> torch.Tensor:
    """The one-image-at-a-time reference of :func:`synthesize` (same seeds, same algorithm; equal
    up to rounding, see the module docstring)."""
    return torch.cat([synthesize(x[i:i + 1], seeds[i:i + 1], s) for i in range(len(x))])


class OAG(Purifier):
    """The defense: every call synthesizes each input anew with fresh random networks and noise,
    drawn from the purifier's own generator (so a stage's results repeat for a given seed).

    Randomized, and not differentiated through: under BPDA its gradient is the identity.
    """

    differentiable = False
    randomized = True
    independent_rows = True  # every image its own seed: its own networks and noise

    def __init__(self, settings: Settings, seed: int, batch_size: int) -> None:
        super().__init__()
        self.settings, self.batch_size = settings, batch_size
        self.gen = torch.Generator().manual_seed(seed)

    def _synthesize(self, x: torch.Tensor) -> torch.Tensor:
        seeds = torch.randint(0, 2**62, (len(x),), generator=self.gen)
        return torch.cat([synthesize(x[i:i + self.batch_size], seeds[i:i + self.batch_size],
                                     self.settings) for i in range(0, len(x), self.batch_size)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nondifferentiable(self._synthesize, x)


def _calibrate(spec: OagSpec, target: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, seed: int,
               device: torch.device) -> tuple[dict[str, Any], dict[str, list[float]]]:
    from repurify.calibration import calibrate  # it builds on this module

    return calibrate(spec, target, x, y, seed=seed, device=device)


PURIFIER = PurifierDef(
    kind="oag", spec=OagSpec, purifier=OAG, prepare="calibrate", fit=_calibrate,
    build=lambda spec, ctx: OAG(settings(spec, ctx.calibration), ctx.seed, spec.batch_size),
    example={"kind": "oag", "kernel": 3, "filters": 4, "image_steps": 2, "network_steps": 2,
             "eps_g": 1.0, "beta": 1e-4, "init_std": 0.01,
             "calibration": {"images": 8, "max_network_steps": 2, "eps_g": [1.0], "beta": [1e-4],
                             "init_std": [0.01]}})
