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
CALIBRATION = "metrics/{profile}/{defense}_calibration.json"  # what a calibrator chose (OAG: T_N)
CHECKS = "metrics/{profile}/checks/{defense}.json"  # gradient-masking probes
GRID = "reports/{profile}/figures/grid_{defense}.png"  # clean / adversarial / purified images
FIGURE = "reports/{profile}/figures/{name}.png"  # the report's series plots
PLOT_DATA = "reports/{profile}/plots/{name}.csv"  # their data, for `dvc plots`
REPORT = "reports/{profile}/report.md"
SUMMARY = "reports/{profile}/summary.json"
HEADLINE = "metrics/{profile}/headline.json"  # per defense: clean, worst case, paper's protocol, verdict

ROLES = ("target", "substitute")
ARTIFACTS = {"train": DEFENSE, "calibrate": CALIBRATION}  # what a defense's preparing stage writes


def artifact(defense: str, prepare: str) -> str | None:
    """The template of what the stage that prepares slot ``defense`` (``train`` or
    ``calibrate``, the registry's ``prepare``) writes; None if nothing prepares it."""
    template = ARTIFACTS.get(prepare)
    return template and template.replace("{defense}", defense)


def path(template: str, profile: str, **fields: str) -> str:
    """Fill a template for one profile, e.g. ``path(CLASSIFIER, "digits", role="target")``."""
    return template.format(profile=profile, **fields)
