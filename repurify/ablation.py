"""Ablations of the trained defenses, each variant attacked like the main evaluation.

* EGC-FL Gen_k (Table 6): the trained ``egcfl`` slot evaluated with K = k
  feedback generations at test time (no retraining: K is free at test time).
* Retrained variants (``ablation.variants``): a slot's spec with some keys
  replaced, e.g. EGC-FL without the transform or without feedback (Table 7)
  and GCLN's quantization-step sweep (Tables 1-4, Fig. 3 left).
* OAG variants (nothing to train): image steps T_I (Table IV), kernel sizes
  (Table V) and the one-step online auto-encoder (Sec. IV-H), with the slot's
  calibrated eps_g, beta and initialisation and the slot's T_N; a variant that
  sets ``network_steps: null`` runs at ``calibrate_oag``'s T_N instead (beside
  a slot pinned at the paper's). Their rows record the T_N they ran at.
* EGC-FL Fig. 4: the attack noise energy before and after the TDZ layer,
  ``||X - X*||_2`` against ``||Phi(X) - Phi(X*)||_2``, per image.

Every variant gets a clean row, the cached oblivious examples of the listed
attacks and the white-box rows (BPDA, and autograd where the paper used it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from repurify.defenses import DefendedModel, Purifier, get, save_defense
from repurify.defenses.egcfl import EGCFL, TDZ
from repurify.defenses.oag import OAG, settings
from repurify.evaluation import Scoring, agreement, limited, predict, whitebox_rows, without_scores
from repurify.models.classifier import Classifier
from repurify.params import ProfileParams


def variant_rows(variant: str, purifier: Purifier, target: Classifier, profile: ProfileParams,
                 test: tuple[torch.Tensor, torch.Tensor], oblivious: dict[str, torch.Tensor], *,
                 slot: str, num_classes: int, seed: int, device: torch.device,
                 threat_models: tuple[str, ...] = ("oblivious", "whitebox")) -> list[dict[str, Any]]:
    """Clean, oblivious and white-box rows for one purifier of ``slot`` in front of ``target``."""
    ab, ev = profile.ablation, profile.evaluation
    n = ab.n or ev.n
    defended = DefendedModel(purifier, target).to(device).eval()
    x, y = test[0][:n].to(device), test[1][:n]
    rows = [{"attack": "clean", "threat_model": "none",
             "accuracy": agreement(predict(defended, x, ev.batch_size), y), "n": len(y)}]
    specs = [(a, profile.attacks[a]) for a in ab.attacks]
    for name, spec in specs:
        if "oblivious" in spec.threat_models and "oblivious" in threat_models:
            adv = oblivious[name][:n].to(device)
            rows.append({"attack": name, "threat_model": "oblivious", "n": len(adv),
                         "accuracy": agreement(predict(defended, adv, ev.batch_size), y[:len(adv)])})
    whitebox = limited([(a, s) for a, s in specs
                        if "whitebox" in s.threat_models and "whitebox" in threat_models],
                       ev.limits.get(slot))
    rows += [without_scores(r) for r in whitebox_rows(
        defended, whitebox, x, y, num_classes=num_classes, seed=seed,
        scoring=Scoring.of(defended, ev.batch_size, ev.eot_samples, ev.draws),
        autograd_attacks=ev.autograd_attacks)]
    return [{"variant": variant, **r} for r in rows]


def noise_energy(tdz: TDZ, x: torch.Tensor, x_adv: torch.Tensor) -> dict[str, Any]:
    """EGC-FL Fig. 4: per-image L2 energy of the attack noise before and after the TDZ."""
    with torch.no_grad():
        before = (x - x_adv).flatten(1).norm(dim=1)
        after = (tdz(x) - tdz(x_adv)).flatten(1).norm(dim=1)
    return {"before": before.tolist(), "after": after.tolist(),
            "mean_before": before.mean().item(), "mean_after": after.mean().item(),
            "ratio": (after.sum() / before.sum()).item()}


def run_ablation(profile: ProfileParams, classifiers: dict[str, Classifier], egcfl: EGCFL | None,
                 oag_chosen: dict[str, Any], train: tuple[torch.Tensor, torch.Tensor],
                 test: tuple[torch.Tensor, torch.Tensor], oblivious: dict[str, torch.Tensor], *,
                 num_classes: int, seed: int, device: torch.device, out_dir: Path) -> dict[str, Any]:
    """Gen_k rows, retrained variants (saved under ``out_dir``), OAG variants (with the values
    ``calibrate_oag`` chose for the slot) and the noise energy."""
    ab = profile.ablation
    kw = {"num_classes": num_classes, "seed": seed, "device": device}
    target = classifiers["target"]
    rows: list[dict[str, Any]] = []
    for k in ab.generations:
        egcfl.generations = k
        rows += [{"generations": k, **r} for r in variant_rows(
            f"egcfl_gen{k}", egcfl, target, profile, test, oblivious, slot="egcfl", **kw)]
    for i, v in enumerate(ab.variants):
        spec = v.spec(profile.defenses[v.defense])
        extra: dict[str, Any] = {"defense": v.defense, "set": v.set}
        if spec.kind == "oag":
            s = settings(spec, oag_chosen)
            purifier: Purifier = OAG(s, seed, spec.batch_size)
            extra["network_steps"] = s.network_steps  # T_N: the slot's pinned or the calibrated one
        else:
            gen = torch.Generator().manual_seed(seed + 2000 + i)
            purifier, hist, _ = get(spec.kind).fit(spec, *train, classifiers, device=device, gen=gen)
            save_defense(out_dir / f"{v.name}.pt", purifier.cpu(), spec,
                         {"image_shape": list(test[0].shape[1:]), "variant": v.name})
            extra["best_epoch"] = hist.best_epoch
        rows += [{**extra, **r} for r in variant_rows(v.name, purifier, target, profile, test,
                                                      oblivious, slot=v.defense,
                                                      threat_models=tuple(v.threat_models), **kw)]
    result: dict[str, Any] = {"rows": rows}
    if ab.noise_attack:
        spec = profile.defenses["egcfl"]
        tdz = TDZ(spec.block, spec.delta, spec.transform, spec.inverse)
        adv = oblivious[ab.noise_attack][:ab.n or profile.evaluation.n]
        result["noise_energy"] = {"attack": ab.noise_attack,
                                  **noise_energy(tdz, test[0][:len(adv)], adv)}
    return result
