"""OAG: Eq. 3 and Eq. 5 term by term, batch == one-at-a-time loop, the purifier's randomness and
BPDA gradient, the autoencoder baseline, and the Gaussian-noise calibration of T_N."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from repurify.calibration import calibrate, stop_step
from repurify.defenses import DefendedModel, bpda, build_purifier
from repurify.defenses.oag import (
    OAG,
    EnergyNets,
    OagSpec,
    Settings,
    _generators,
    settings,
    synthesize,
    synthesize_loop,
)
from repurify.errors import CheckpointError
from repurify.models import build_classifier
from repurify.params import AblationVariant

S = Settings(network_steps=6, image_steps=4, eps_g=1.0, beta=1e-4, init_std=0.01, kernel=3, filters=4)


def _images(n: int = 5, c: int = 1, size: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(seed))


def _reference_energy(nets: EnergyNets, b: int, image: torch.Tensor, s: Settings) -> torch.Tensor:
    """F of image b written out for one network: plain conv, ReLU, fully connected (Fig. 2)."""
    k = s.filters
    W, c, w = nets.W[b * k:(b + 1) * k], nets.c[b * k:(b + 1) * k], nets.w[b]
    return (F.relu(F.conv2d(image, W, c, padding=s.kernel // 2)) * w).sum()


@pytest.mark.parametrize("channels", [1, 3])
def test_batched_energy_is_each_images_own_network(channels: int) -> None:
    x = _images(3, channels) * 255
    nets = EnergyNets(_generators(torch.arange(3), x.device), tuple(x.shape[1:]), S, x.device)
    ref = torch.stack([_reference_energy(nets, b, x[b:b + 1], S) for b in range(3)])
    assert torch.allclose(nets.energy(x), ref, rtol=1e-5, atol=1e-6)


def test_image_step_is_eq3() -> None:
    x = _images(2) * 255
    nets = EnergyNets(_generators(torch.arange(2), x.device), tuple(x.shape[1:]), S, x.device)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    eps = 0.7
    grads = []
    for b in range(2):
        img = x[b:b + 1].clone().requires_grad_(True)
        grads.append(torch.autograd.grad(_reference_energy(nets, b, img, S), img)[0])
    expected = x - eps**2 / 2 * (x - torch.cat(grads)) + eps * noise
    assert torch.allclose(nets.image_step(x, noise, eps), expected, atol=1e-4)


def test_network_step_is_eq5_per_image() -> None:
    """theta_b moves by beta (dF(I_z)/dtheta - dF(I_s)/dtheta) of its own images only."""
    I_z, I_s = _images(2) * 255, _images(2, seed=1) * 255
    nets = EnergyNets(_generators(torch.arange(2), I_z.device), tuple(I_z.shape[1:]), S, I_z.device)
    before = [p.detach().clone() for p in nets.params]
    diff = _reference_energy(nets, 0, I_z[:1], S) - _reference_energy(nets, 0, I_s[:1], S)
    expected_w = torch.autograd.grad(diff, nets.w)[0][0]
    nets.network_step(I_z, I_s, beta=0.5)
    assert torch.allclose(nets.w[0] - before[2][0], 0.5 * expected_w, atol=1e-5)
    # image 1's network ignores image 0: changing image 0 leaves theta_1's update unchanged
    nets2 = EnergyNets(_generators(torch.arange(2), I_z.device), tuple(I_z.shape[1:]), S, I_z.device)
    I_z2 = I_z.clone()
    I_z2[0] = 0
    nets2.network_step(I_z2, I_s, beta=0.5)
    assert torch.equal(nets2.w[1], nets.w[1]) and not torch.equal(nets2.w[0], nets.w[0])


@pytest.mark.parametrize("generator", ["alternate", "autoencoder"])
def test_batch_matches_one_at_a_time_loop(generator: str) -> None:
    s = replace(S, generator=generator, ae_lr=1e-2)
    x, seeds = _images(6), torch.arange(100, 106)
    batched = synthesize(x, seeds, s)
    assert torch.allclose(batched, synthesize_loop(x, seeds, s), atol=1e-5)
    # and an image's result does not depend on its neighbours
    assert torch.allclose(synthesize(x[2:4], seeds[2:4], s), batched[2:4], atol=1e-5)
    assert not torch.allclose(batched[0], batched[1])


def test_batch_stays_within_rounding_of_the_loop_at_a_realistic_t_n() -> None:
    """Not bitwise: the grouped convolution sums in another order, and Langevin steps carry the
    rounding forward. At digits' calibrated T_N 78 (measured: 1e-7 gray levels at T_N 6, up to
    1.3e-4 at 150 with these eps_g, beta) the two stay within a hundredth of a gray level."""
    s = replace(S, network_steps=78, image_steps=5, eps_g=0.5, beta=3e-5, filters=8)
    x, seeds = _images(2), torch.arange(7, 9)
    gap = (synthesize(x, seeds, s) - synthesize_loop(x, seeds, s)).abs().max() * 255
    assert gap < 0.01, f"batched and loop differ by {gap:.3g} gray levels"


def test_synthesis_approaches_the_reference() -> None:
    """Sec. III-C: from I_1 = 0 the synthesized image moves towards I_z (smooth blobs)."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 10), torch.linspace(-1, 1, 10), indexing="ij")
    x = torch.stack([torch.exp(-3 * ((xx - c) ** 2 + yy**2)) for c in (-0.4, 0.0, 0.5)]).unsqueeze(1)
    # 8 filters: with 4, one seed's filters all respond negatively to its blob, the ReLUs at I_z
    # stay dead and Eq. 5 never learns that image
    s = replace(S, network_steps=80, image_steps=10, filters=8)
    err: list[float] = []
    out = synthesize(x, torch.arange(3), s,
                     callback=lambda t, img: err.append((img - x).pow(2).mean().item()))
    assert len(err) == 80
    assert (out - x).pow(2).mean() < 0.05 * x.pow(2).mean()  # the start, I_1 = 0, is x.pow(2)
    assert err[-1] < 0.1 * err[0]


def test_autoencoder_baseline_reconstructs() -> None:
    x = _images(3, size=10)
    s = replace(S, generator="autoencoder", network_steps=100, ae_lr=1e-2)
    # it memorises its one image, noise included
    assert (synthesize(x, torch.arange(3), s) - x).pow(2).mean() < 0.01 * (x - x.mean()).pow(2).mean()


def _classifier():
    torch.manual_seed(0)
    return build_classifier("small_cnn", (1, 8, 8), 10, (0.5,), (0.25,)).eval().requires_grad_(False)


def test_purifier_randomness_seed_and_bpda_gradient() -> None:
    x = _images(3)
    a, b = OAG(S, seed=3, batch_size=2), OAG(S, seed=3, batch_size=2)
    first = a(x)
    assert torch.equal(first, b(x))  # same seed, same draws
    assert not torch.equal(first, a(x))  # every call is a fresh synthesis
    assert a.randomized and not a.differentiable
    clf = _classifier()
    defended = DefendedModel(OAG(S, seed=3, batch_size=8), clf)

    def grad() -> torch.Tensor:
        xx = x.clone().requires_grad_(True)
        defended(xx)[:, 0].sum().backward()
        return xx.grad

    assert torch.count_nonzero(grad()) == 0  # not differentiated through
    with bpda():
        g = grad()
    purified = OAG(S, seed=3, batch_size=8)
    purified(x)  # the second draw of that generator is the one the BPDA call above used
    p = purified(x).requires_grad_(True)
    clf(p)[:, 0].sum().backward()
    assert torch.allclose(g, p.grad)  # identity through the synthesis


def test_stop_step_is_where_the_curve_stops_rising() -> None:
    assert stop_step([0.1, 0.5, 0.79, 0.8, 0.8], 0.01) == 3
    assert stop_step([0.1, 0.9, 0.6, 0.5], 0.0) == 2  # rises, then fits the noise
    assert stop_step([0.3, 0.3], 0.0) == 1


def _spec(**kw) -> OagSpec:
    base = {"kind": "oag", "kernel": 3, "filters": 4, "image_steps": 3,
            "calibration": {"images": 12, "max_network_steps": 5, "eps_g": [0.5, 1.0],
                            "beta": [1e-4], "init_std": [0.01]}}
    return OagSpec.model_validate({**base, **kw})


def test_calibration_picks_the_best_peak_and_its_stop_step() -> None:
    x, y = _images(12), torch.arange(12) % 10
    result, series = calibrate(_spec(), _classifier(), x, y, seed=0, device=torch.device("cpu"))
    cands = result["candidates"]
    assert len(cands) == 2 and all(len(c["curve"]) == 5 for c in cands)
    best = max(cands, key=lambda c: c["peak"])
    assert result["chosen"] == {"eps_g": best["eps_g"], "beta": 1e-4, "init_std": 0.01,
                                "network_steps": best["stop_step"]}
    assert series == {"noisy_synthesis_accuracy": best["curve"]}
    pinned, _ = calibrate(_spec(eps_g=0.5), _classifier(), x, y, seed=0, device=torch.device("cpu"))
    assert [c["eps_g"] for c in pinned["candidates"]] == [0.5]
    assert (result, series) == calibrate(_spec(), _classifier(), x, y, seed=0, device=torch.device("cpu"))


def test_calibration_synthesizes_each_candidate_at_its_settings_through_one_counted_call(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import repurify.calibration as cal
    from repurify import passes

    seen, real = [], cal.synthesize

    def spy(x, seeds, s, callback=None):
        seen.append(s.eps_g)
        return real(x, seeds, s, callback)

    monkeypatch.setattr(cal, "synthesize", spy)
    x, y = _images(12), torch.arange(12) % 10
    with passes.counting() as p:
        result, _ = calibrate(_spec(), _classifier(), x, y, seed=0, device=torch.device("cpu"))
    eps = [c["eps_g"] for c in result["candidates"]]
    assert len(set(eps)) == 2 and sorted(set(seen)) == sorted(eps)  # each candidate its own eps_g
    # one Synthesis for every candidate: the bound times the synthesis once
    assert sum(isinstance(m, cal.Synthesis) for m in p.modules.values()) == 1


def test_a_network_steps_null_variant_runs_at_the_calibrated_t_n() -> None:
    """A slot pinned at the paper's T_N still gets the whole curve and its calibrated T_N, which
    the slot ignores and an ablation variant with ``network_steps: null`` runs at."""
    x, y = _images(12), torch.arange(12) % 10
    slot = _spec(network_steps=2)
    result, series = calibrate(slot, _classifier(), x, y, seed=0, device=torch.device("cpu"))
    best = max(result["candidates"], key=lambda c: c["peak"])
    assert len(series["noisy_synthesis_accuracy"]) == 5  # max_network_steps, not the pinned 2
    assert result["chosen"]["network_steps"] == best["stop_step"] == stop_step(best["curve"], 0.01)
    variant = AblationVariant(name="oag_calibrated_tn", defense="oag", set={"network_steps": None})
    assert settings(slot, result["chosen"]).network_steps == 2
    assert settings(variant.spec(slot), result["chosen"]).network_steps == best["stop_step"]


def test_purifier_needs_a_matching_calibration(tmp_path) -> None:
    spec = _spec()
    f = tmp_path / "oag_calibration.json"
    chosen = {"eps_g": 1.0, "beta": 1e-4, "init_std": 0.01, "network_steps": 3}
    f.write_text(json.dumps({"spec": spec.model_dump(mode="json"), "chosen": chosen}))
    oag = build_purifier(spec, f, "oag", (1, 8, 8), seed=1)
    assert oag.settings.network_steps == 3 and oag.settings.image_steps == 3
    with pytest.raises(CheckpointError, match=r"(?s)defenses\.oag:.*kernel: calibrated with 3, params say 5"):
        build_purifier(_spec(kernel=5), f, "oag", (1, 8, 8))
    f.write_text("{not json")
    with pytest.raises(CheckpointError, match=r"not valid JSON.*calibrate_oag"):
        build_purifier(spec, f, "oag", (1, 8, 8))
    with pytest.raises(CheckpointError, match=r"not found.*calibrate_oag"):
        build_purifier(spec, tmp_path / "missing.json", "oag", (1, 8, 8))
