"""Model transfer of trained defenses.

AdvAE Table 3: an auto-encoder trained on model X (Eq. 7) or on the ensemble
{X, A, B} (Eq. 8), plugged in front of models A-D and attacked white-box.
HGD Table 4: an LGD guided by one classifier protecting another. Each grid
entry trains a variant of a defense slot (its ``classifiers`` or ``guide``
replaced by ``trained_on``), or takes the slot's trained defense where the
variant is the slot itself, and evaluates it on every ``evaluated_on`` model.
OAG Table III: OAG, which trains nothing, in front of other target networks.
An entry's ``threat_models`` choose its rows: white-box (through purifier and
classifier) and oblivious (crafted on the bare classifier, the rows also giving
the undefended accuracy): OAG Table III is gray-box; for HGD Table 4 it is ours
(the paper's fixed test sets are oblivious for IncV3, its footnote 2, and
transfers for Resnet, as it does not say they were regenerated).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from repurify.attacks import run_attack
from repurify.defenses import DefendedModel, Purifier, get, save_defense
from repurify.defenses.oag import OAG, settings
from repurify.evaluation import Scoring, agreement, attack_row, predict, whitebox_rows, without_scores
from repurify.models.classifier import Classifier
from repurify.params import ProfileParams, TransferEntry


def variant(slot: Any, entry: TransferEntry) -> Any:
    """The slot's spec trained on ``entry.trained_on`` (and its training override)."""
    update: dict[str, Any] = ({"classifiers": list(entry.trained_on)} if slot.kind == "advae"
                              else {"guide": entry.trained_on[0]})
    if entry.training is not None:
        update["training"] = entry.training
    return slot.model_copy(update=update)


def unchanged(profile: ProfileParams, entry: TransferEntry) -> bool:
    """The entry runs its slot as trained: the slot's own classifiers or guide, no training
    override. It then takes the slot's trained defense, as the papers' tables share one model
    (AdvAE Table 3's X/X column is Table 1's auto-encoder, HGD Table 4's IncV3-guided LGD Table 2's)."""
    slot = profile.defenses[entry.defense]
    return slot.kind != "oag" and variant(slot, entry) == slot


def reused(profile: ProfileParams) -> list[str]:
    """The slots whose trained defense some grid entry takes (:func:`unchanged`)."""
    return list(dict.fromkeys(e.defense for e in profile.transfer.grid if unchanged(profile, e)))


def trains(profile: ProfileParams) -> bool:
    """Some grid entry trains a variant here (needs the training split)."""
    return any(profile.defenses[e.defense].kind != "oag" and not unchanged(profile, e)
               for e in profile.transfer.grid)


def label(names: list[str]) -> str:
    """``X`` or ``{X,A,B}``, as in the papers' tables."""
    return names[0] if len(names) == 1 else "{" + ",".join(names) + "}"


def oblivious_rows(defended: DefendedModel, specs: list[tuple[str, Any]], x: torch.Tensor,
                   y: torch.Tensor, *, num_classes: int, batch_size: int,
                   seed: int) -> list[dict[str, Any]]:
    """Gray-box rows: each attack crafted on the bare classifier, then fed to the defense."""
    rows = []
    for name, spec in specs:
        n = min(len(y), spec.n or len(y))
        adv, targets = run_attack(spec, defended.classifier, x[:n], y[:n].to(x.device),
                                  num_classes=num_classes, batch_size=batch_size, seed=seed,
                                  early_stop=False)
        undefended = agreement(predict(defended.classifier, adv, batch_size), y[:n])
        rows.append(attack_row(name, spec, "oblivious", predict(defended, adv, batch_size), y[:n],
                               targets, undefended_accuracy=undefended))
    return rows


def run_grid(profile: ProfileParams, classifiers: dict[str, Classifier],
             train: tuple[torch.Tensor, ...] | None, test: tuple[torch.Tensor, ...], *,
             oag_chosen: dict[str, Any] | None, num_classes: int, seed: int, device: torch.device,
             out_dir: Path,
             slots: dict[str, Purifier] | None = None) -> list[dict[str, Any]]:
    """Train every grid entry's variant (OAG: use the calibrated slot; an :func:`unchanged` entry:
    its slot's trained defense from ``slots``), save trained ones under ``out_dir``, return one row per
    (entry, evaluated model, attack) plus a ``clean`` row per pair."""
    tr, ev = profile.transfer, profile.evaluation
    x_test, y_test = test[0][:tr.n].to(device), test[1][:tr.n]
    kw = {"num_classes": num_classes, "batch_size": ev.batch_size, "seed": seed}
    rows: list[dict[str, Any]] = []
    for i, entry in enumerate(tr.grid):
        base: dict[str, Any] = {"entry": i, "defense": entry.defense}
        if entry.defense == "oag":
            if oag_chosen is None:
                raise ValueError("an OAG grid entry needs the calibrate_oag values")
            spec = profile.defenses["oag"]
            purifier: Purifier = OAG(settings(spec, oag_chosen), seed, spec.batch_size)
            trained_on = "online"
        elif unchanged(profile, entry):
            if slots is None or entry.defense not in slots:
                raise ValueError(f"grid entry {i} runs the slot {entry.defense!r} unchanged: pass its "
                                 "trained defense")
            purifier, trained_on = slots[entry.defense], label(entry.trained_on)
            base["slot"] = f"train_defense_{entry.defense}"
        else:
            if train is None:
                raise ValueError(f"grid entry {i} trains a variant: pass the training split")
            spec = variant(profile.defenses[entry.defense], entry)
            gen = torch.Generator().manual_seed(seed + 1000 + i)
            purifier, hist, _ = get(spec.kind).fit(spec, *train, classifiers, device=device, gen=gen)
            trained_on = label(entry.trained_on)
            save_defense(out_dir / f"{i}_{entry.defense}.pt", purifier.cpu(), spec,
                         {"image_shape": list(x_test.shape[1:]), "trained_on": entry.trained_on})
            base["best_epoch"] = hist.best_epoch
        for name in entry.evaluated_on:
            defended = DefendedModel(purifier, classifiers[name]).to(device).eval()
            pair = {**base, "trained_on": trained_on, "evaluated_on": name,
                    "column": f"{trained_on}/{name}"}
            clean = agreement(predict(defended, x_test, ev.batch_size), y_test)
            rows.append({**pair, "attack": "clean", "threat_model": "none", "accuracy": clean,
                         "n": len(y_test)})
            specs = [(a, profile.attacks[a]) for a in entry.attacks.get(name, tr.attacks)]
            if "oblivious" in entry.threat_models:
                rows += [{**pair, **r} for r in oblivious_rows(defended, specs, x_test, y_test, **kw)]
            if "whitebox" in entry.threat_models:
                scoring = Scoring.of(defended, ev.batch_size, ev.eot_samples, ev.draws)
                rows += [{**pair, **without_scores(r)}
                         for r in whitebox_rows(defended, specs, x_test, y_test, scoring=scoring,
                                                num_classes=num_classes, seed=seed)]
    return rows
