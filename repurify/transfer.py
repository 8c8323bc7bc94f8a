"""Model transfer of trained defenses.

AdvAE Table 3: an auto-encoder trained on model X (Eq. 7) or on the ensemble
{X, A, B} (Eq. 8), plugged in front of models A-D and attacked white-box.
HGD Table 4: an LGD guided by one classifier protecting another. Each grid
entry trains a variant of a defense slot (its ``classifiers`` or ``guide``
replaced by ``trained_on``) and evaluates it on every ``evaluated_on`` model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from repurify.defenses import TRAINERS, DefendedModel, save_defense
from repurify.evaluation import agreement, predict, whitebox_rows
from repurify.models.classifier import Classifier
from repurify.params import ProfileParams, TransferEntry


def variant(slot: Any, entry: TransferEntry) -> Any:
    """The slot's spec trained on ``entry.trained_on`` (and its training override)."""
    update: dict[str, Any] = ({"classifiers": list(entry.trained_on)} if slot.kind == "advae"
                              else {"guide": entry.trained_on[0]})
    if entry.training is not None:
        update["training"] = entry.training
    return slot.model_copy(update=update)


def label(names: list[str]) -> str:
    """``X`` or ``{X,A,B}``, as in the papers' tables."""
    return names[0] if len(names) == 1 else "{" + ",".join(names) + "}"


def run_grid(profile: ProfileParams, classifiers: dict[str, Classifier], train: tuple[torch.Tensor, ...],
             test: tuple[torch.Tensor, ...], *, num_classes: int, seed: int, device: torch.device,
             out_dir: Path) -> list[dict[str, Any]]:
    """Train every grid entry's variant, save it under ``out_dir``, return one row per
    (entry, evaluated model, attack) plus a ``clean`` row per pair."""
    tr, ev = profile.transfer, profile.evaluation
    specs = [(a, profile.attacks[a]) for a in tr.attacks]
    x_test, y_test = test[0][:tr.n].to(device), test[1][:tr.n]
    rows: list[dict[str, Any]] = []
    for i, entry in enumerate(tr.grid):
        spec = variant(profile.defenses[entry.defense], entry)
        gen = torch.Generator().manual_seed(seed + 1000 + i)
        purifier, hist, _ = TRAINERS[spec.kind](spec, *train, classifiers, device=device, gen=gen)
        trained_on = label(entry.trained_on)
        save_defense(out_dir / f"{i}_{entry.defense}.pt", purifier.cpu(), spec,
                     {"image_shape": list(x_test.shape[1:]), "trained_on": entry.trained_on})
        for name in entry.evaluated_on:
            defended = DefendedModel(purifier, classifiers[name]).to(device).eval()
            base = {"entry": i, "defense": entry.defense, "trained_on": trained_on,
                    "evaluated_on": name, "column": f"{trained_on}/{name}",
                    "best_epoch": hist.best_epoch}
            clean = agreement(predict(defended, x_test, ev.batch_size), y_test)
            rows.append({**base, "attack": "clean", "threat_model": "none", "accuracy": clean,
                         "n": len(y_test)})
            rows += [{**base, **r} for r in whitebox_rows(
                defended, specs, x_test, y_test, num_classes=num_classes, batch_size=ev.batch_size,
                eot_samples=ev.eot_samples, seed=seed)]
    return rows
