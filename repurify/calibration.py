"""OAG's stopping criterion without adversarial data (Sec. III-D, Sec. IV-E a, Fig. 4).

Training images get Gaussian noise (sigma ``noise_sigma`` on [0,1] pixels); the
synthesis runs for ``max_network_steps`` network steps, and the target
classifier's accuracy on the synthesized images is recorded after each one.
The paper gives no eps_g, beta or initialisation scale, so every combination
of the candidates is run: the one with the highest peak accuracy is kept, and
T_N is the first step whose accuracy is within ``tolerance`` of that peak, i.e.
where the curve stops rising (it flattens, or turns down as the generator
starts to reproduce the noise). Values pinned in the spec are not searched, but
a pinned T_N neither shortens the curve nor replaces the calibrated T_N in
``chosen``: the slot runs at the pinned one (``settings`` prefers the spec's
values), an ablation variant with ``network_steps: null`` at the calibrated one.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from repurify.defenses.oag import Callback, OagSpec, Settings, settings, synthesize
from repurify.evaluation import agreement, predict
from repurify.passes import Counted
from repurify.progress import progress


class Synthesis(Counted):
    """OAG's synthesis as one counted network call, so that the calibration's passes enter the
    stage's compute bound. One instance serves every candidate: a call may pass its own settings,
    and the bound times the instance's ``s`` (the candidates differ in eps_g, beta and init_std,
    which cost nothing). Without ``seeds`` (the bound's timing) each image draws one from a fixed
    generator. The classifier calls of a ``callback`` are nested in the synthesis call, so neither
    counted nor timed (one classifier pass per network step, against T_I + 1 energy passes)."""

    def __init__(self, s: Settings) -> None:
        super().__init__()
        self.s = s

    def forward(self, x: torch.Tensor, seeds: torch.Tensor | None = None,
                callback: Callback | None = None, s: Settings | None = None) -> torch.Tensor:
        if seeds is None:
            seeds = torch.randint(0, 2**62, (len(x),), generator=torch.Generator().manual_seed(0))
        return synthesize(x, seeds, s or self.s, callback)


def steps_curve(classifier: nn.Module, x: torch.Tensor, y: torch.Tensor, s: Settings,
                seeds: torch.Tensor, batch_size: int, synthesis: Synthesis | None = None) -> list[float]:
    """Accuracy of ``classifier`` on the synthesized images after each network step (through
    ``synthesis``, the calibration's counted call, at ``s``)."""
    correct = torch.zeros(s.network_steps, dtype=torch.float64)
    if synthesis is None:
        synthesis = Synthesis(s)
    for i in range(0, len(x), batch_size):
        yb = y[i:i + batch_size].to(x.device)

        def record(t: int, img: torch.Tensor, yb: torch.Tensor = yb) -> None:
            with torch.no_grad():
                correct[t - 1] += (classifier(img).argmax(1) == yb).sum().item()

        synthesis(x[i:i + batch_size], seeds[i:i + batch_size], record, s)
    return (correct / len(x)).tolist()


def stop_step(curve: list[float], tolerance: float) -> int:
    """The first (1-based) step whose accuracy is within ``tolerance`` of the curve's peak."""
    peak = max(curve)
    return next(t for t, acc in enumerate(curve, 1) if acc >= peak - tolerance)


def calibrate(spec: OagSpec, classifier: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
              seed: int, device: torch.device) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """Run every candidate on noised copies of ``x`` ([0,1]); return curves and the choice, and
    the chosen candidate's accuracy after each network step."""
    cal = spec.calibration
    gen = torch.Generator().manual_seed(seed)
    x, y = x[:cal.images], y[:cal.images]
    noisy = (x + cal.noise_sigma * torch.randn(x.shape, generator=gen)).clamp(0, 1).to(device)
    seeds = torch.randint(0, 2**62, (len(x),), generator=gen)
    classifier = classifier.to(device).eval()
    noisy_acc = agreement(predict(classifier, noisy, spec.batch_size), y)
    grid = [(e,) if e is not None else tuple(c) for e, c in
            ((spec.eps_g, cal.eps_g), (spec.beta, cal.beta), (spec.init_std, cal.init_std))]
    steps = cal.max_network_steps
    candidates, synthesis = [], None
    for eps_g, beta, init_std in progress(list(itertools.product(*grid)), "calibrate oag", "setting"):
        chosen = {"eps_g": eps_g, "beta": beta, "init_std": init_std, "network_steps": steps}
        s = replace(settings(spec, chosen), network_steps=steps)  # the whole curve, T_N pinned or not
        if synthesis is None:
            synthesis = Synthesis(s)
        curve = steps_curve(classifier, noisy, y, s, seeds, spec.batch_size, synthesis)
        candidates.append({**chosen, "curve": curve, "peak": max(curve),
                           "stop_step": stop_step(curve, cal.tolerance)})
    best = max(candidates, key=lambda c: c["peak"])  # the first of equal peaks
    chosen = {k: best[k] for k in ("eps_g", "beta", "init_std")}
    chosen["network_steps"] = best["stop_step"]
    pinned = f"; the slot runs at its pinned T_N {spec.network_steps}" if spec.network_steps else ""
    print(f"calibrate: OAG: {len(candidates)} candidates on {len(x)} noised training images (accuracy "
          f"without OAG {noisy_acc:.4f}); chose eps_g {chosen['eps_g']:g}, beta {chosen['beta']:g}, "
          f"init_std {chosen['init_std']:g}, T_N {chosen['network_steps']} (accuracy "
          f"{best['curve'][chosen['network_steps'] - 1]:.4f}){pinned}")
    return ({"spec": spec.model_dump(mode="json"), "images": len(x), "noisy_accuracy": noisy_acc,
             "candidates": candidates, "chosen": chosen}, {"noisy_synthesis_accuracy": best["curve"]})

