"""Output locations, as ``{profile}`` templates shared by the stages and the DAG table.

Every output lives under a profile's own folder, so profiles never overwrite
each other.
"""

from __future__ import annotations

DATASET = "data/{profile}/dataset.pt"
MANIFEST = "data/{profile}/manifest.json"
CLASSIFIER = "data/{profile}/models/{role}.pt"
CLASSIFIER_METRICS = "metrics/{profile}/classifier.json"
ADVERSARIAL = "data/{profile}/attacks/{role}.pt"  # cached examples crafted on one classifier
ATTACK_METRICS = "metrics/{profile}/attacks.json"
DEFENSE = "data/{profile}/defenses/{defense}.pt"  # a trained purifier
DEFENSE_METRICS = "metrics/{profile}/defenses/{defense}.json"
EVALUATION = "metrics/{profile}/eval/{defense}.json"
TRANSFER = "data/{profile}/transfer"  # folder: zoo classifiers and the grid's defense variants
TRANSFER_METRICS = "metrics/{profile}/transfer.json"
ABLATION = "data/{profile}/ablation"  # folder: the retrained ablation variants
ABLATION_METRICS = "metrics/{profile}/ablation.json"
OAG_CALIBRATION = "metrics/{profile}/oag_calibration.json"  # OAG's T_N, eps_g, beta (Fig. 4)
CHECKS = "metrics/{profile}/checks/{defense}.json"  # gradient-masking probes
GRID = "reports/{profile}/figures/grid_{defense}.png"  # clean / adversarial / purified images
FIGURE = "reports/{profile}/figures/{name}.png"  # the report's series plots
PLOT_DATA = "reports/{profile}/plots/{name}.csv"  # their data, for `dvc plots`
REPORT = "reports/{profile}/report.md"
SUMMARY = "reports/{profile}/summary.json"

ROLES = ("target", "substitute")
DEFENSES = ("none", "jpeg", "bit_depth", "median_filter", "hgd", "advae", "egcfl", "gcln", "oag")
TRAINED_DEFENSES = {d: d for d in ("hgd", "advae", "egcfl", "gcln")}  # slot -> the kind it must hold
SLOT_KINDS = {**TRAINED_DEFENSES, "oag": "oag"}  # slots prepared by a stage of their own


def artifact(defense: str) -> str | None:
    """The template of what a slot's preparing stage writes (checkpoint, calibration), if any."""
    if defense in TRAINED_DEFENSES:
        return DEFENSE.replace("{defense}", defense)
    return OAG_CALIBRATION if defense == "oag" else None


def path(template: str, profile: str, **fields: str) -> str:
    """Fill a template for one profile, e.g. ``path(CLASSIFIER, "digits", role="target")``."""
    return template.format(profile=profile, **fields)
