"""Scale on paper: ESTIMATED GPU-hours and host memory of each stage of a profile, and the SLURM
resources the stage table asks for them (``python -m benchmarks.scale [--markdown]``).

Nothing here is measured; every figure is an estimate from counting (ours throughout):

* Work, counted from the profile's params in image-passes (one image through the networks once):
  classifier and defense training (epochs x training images; AdvAE's inner PGD, HGD's
  FGSM/IFGSM training copies, EGC-FL's and GCLN's PGD examples, GCLN's detector), every attack
  step x restart x image (C&W: steps x binary searches; AutoAttack: each sub-attack on every
  image, Square's queries as forwards), EOT draws per gradient and the scoring draws of a
  randomized defense, Papernot's substitute, and OAG's T_N network steps per purified image
  (T_N: the pinned one, else ``calibration.max_network_steps``). No early stopping and no
  AutoAttack cascade: upper bounds wherever a defense falls early. Left out: forwards that only
  pick labels or targets, CPU purifiers (JPEG), data loading and start-up.
* FLOPs of one forward pass at batch 1, counted by torch's FlopCounterMode (convolutions and
  matrix products) on the real modules on the meta device; OAG's network step on the CPU at
  16 px, scaled by pixels (its FLOPs per pixel are constant). A gradient pass counts 2 forwards,
  a training step 3.
* Cost of an image-pass: max(FLOPs / R, floor). R: the FLOP rate of the one measured figure
  (``gpu.json`` throughput: HGD's DUNET before a ResNet-18, 32x32x3, forward+backward at batch
  512 on one H200). The floor, for launch-bound small networks: L / batch, L the measured time of
  one forward+backward batch of digits' target (batch 256), and where OAG purifies, T_N x (T_I +
  1) times the measured time of one batched energy-network pass (digits, batch 64) over OAG's
  batch. OAG's grouped convolutions may run below R at 224 px, which nothing here measured.
* Host memory: interpreter, torch and CUDA runtime (2 GiB), and the float32 copies the stage
  makes (``to_unit`` of the training images; EGC-FL's and GCLN's PGD examples; the cached
  attacks). HGD's adversarial training copies go to a disk-backed map under ``$TMPDIR`` (its
  pages reclaimable): scratch disk, not memory (the tables' "scratch disk"). ``dataset.pt`` is
  memory-mapped (its pages are the file's, read on demand and reclaimable), so only
  ``fetch_data``, which builds it, holds it (uint8 N x C x H x W plus int64 labels), with one
  float64 chunk of ``channel_stats``.
* Resources: run time 2x the estimate rounded up to 10 minutes, at least 10; memory 1.5x the
  estimate rounded up to a GiB, at least 4 GiB.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from repurify.data.store import STATS_CHUNK
from repurify.defenses import get
from repurify.defenses.hgd import DUNET
from repurify.defenses.oag import OagSpec, settings, synthesize
from repurify.defenses.registry import BuildContext
from repurify.evaluation import apgd_covered_by, limited
from repurify.models.classifier import build_classifier
from repurify.params import AutoAttackSpec, EvaluationLimit, ProfileParams, load_params
from repurify.transfer import trains, unchanged, variant
from workflow.dag import REQUESTS, Stage, stages

HERE = Path(__file__).parent
PARAMS = HERE.parent / "params.yaml"
GPU = json.loads((HERE / "gpu.json").read_text(encoding="utf-8"))
GIB = 2 ** 30
BASE_BYTES = 2 * GIB  # ours: 0.8 GiB measured for the lightest CPU stage, 1 GiB more for CUDA
NODE_GIB = 128  # ours: a node like the H200 machine of gpu.json (one GPU, 128 GiB)
PROFILES = ("digits", "digits_full", "cifar10", "svhn", "flowers17", "imagenet_subset", "imagenet_hgd")
# (images, test images or None: a pool split by data.test_fraction, classes); ImageFolder
# datasets by paper_dataset, in the layout assumed (ours): Flowers-17's 80 per class with the
# 340 test images of OAG's tables, ImageNet at HGD Sec. 4.1's 30 per class for training and 10
# per class for testing
SPLITS = {"digits": (1797, None, 10), "mnist5k": (5000, None, 10), "mnist": (60000, 10000, 10),
          "cifar10": (50000, 10000, 10), "svhn": (73257, 26032, 10), "flowers17": (1020, 340, 17),
          "imagenet": (30000, 10000, 1000)}
# AutoAttack's sub-attacks per version (pyautoattack's _set_version) and their default iterations
AUTOATTACK = {"standard": ["apgd-ce", "apgd-t", "fab-t", "square"], "rand": ["apgd-ce", "apgd-dlr"]}
SUB_ITERATIONS, SQUARE_QUERIES, TARGET_CLASSES = 100, 5000, 9


def forward_flops(model: torch.nn.Module, shape: tuple[int, ...]) -> float:
    """FLOPs of one forward pass of ``model`` (on the meta device) at batch 1."""
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, *shape, device="meta"))
    return float(counter.get_total_flops())


@cache
def classifier_flops(arch: str, shape: tuple[int, int, int], classes: int) -> float:
    with torch.device("meta"):
        model = build_classifier(arch, shape, classes, (0.5,) * shape[0], (0.5,) * shape[0])
    return forward_flops(model, shape)


_purifiers: dict[tuple[str, tuple[int, ...]], float] = {}  # counted FLOPs by spec and shape


def purifier_flops(spec: Any, shape: tuple[int, int, int]) -> float:
    """A purifier's forward FLOPs; 0 for one without parameters (none, JPEG, bit depth...)."""
    key = (spec.model_dump_json(), shape)
    if key not in _purifiers:
        with torch.device("meta"):
            purifier = get(spec.kind).build(spec, BuildContext(shape))
        _purifiers[key] = (0.0 if next(purifier.parameters(), None) is None
                           else forward_flops(purifier, shape))
    return _purifiers[key]


@cache
def _oag_flops(kernel: int, filters: int, generator: str, channels: int, image_steps: int,
               size: int = 16) -> float:
    spec = OagSpec(kind="oag", kernel=kernel, filters=filters, generator=generator, image_steps=image_steps,
                   network_steps=1, eps_g=1.0, beta=1e-4, init_std=0.01,  # no FLOPs depend on these
                   calibration={"images": 1, "max_network_steps": 1, "eps_g": [1.0], "beta": [1.0],
                                "init_std": [1.0]})
    with FlopCounterMode(display=False) as counter:
        synthesize(torch.rand(1, channels, size, size), torch.zeros(1, dtype=torch.long), settings(spec, {}))
    return counter.get_total_flops() / size ** 2


def oag_step_flops(spec: OagSpec, channels: int) -> float:
    """FLOPs per pixel of one OAG network step (T_I Langevin image steps and the network update),
    from counts at T_I 1 and 2 (linear in T_I)."""
    one, two = (_oag_flops(spec.kernel, spec.filters, spec.generator, channels, t) for t in (1, 2))
    return one + (spec.image_steps - 1) * (two - one)


@cache
def vgg_flops(layer: str, size: int) -> float:
    from torchvision.models import vgg19

    from repurify.defenses.perceptual import VGG19_LAYERS

    with torch.device("meta"):
        net = vgg19().features[:VGG19_LAYERS[layer]]
    return forward_flops(net, (3, size, size))


@cache
def rate() -> float:
    """R: FLOPs per second of the measured figure (a gradient pass counted as 2 forwards)."""
    t = GPU["throughput"]
    _, architecture, widths = t["purifier"].split(" ", 2)  # e.g. "hgd dunet [64, 128, 256, 256]"
    shape = tuple(t["image_shape"])
    with torch.device("meta"):
        dunet = DUNET(shape[0], json.loads(widths), lateral=architecture == "dunet")
    flops = forward_flops(dunet, shape) + classifier_flops(t["classifier"], shape, 10)
    return 2 * flops * t["images_per_second_forward_backward"]


LATENCY = GPU["suite"]["attack_overhead"]["seconds_forward_backward"]  # L: one small batch
_oag = GPU["suite"]["oag_batching"]
# the measured batched OAG run (digits, batch 64) per energy-network pass: T_N x (T_I + 1) of them
OAG_PASS = _oag["seconds_batched"] / (_oag["network_steps"] * (_oag["image_steps"] + 1))


@dataclass(frozen=True)
class Term:
    """``images`` image-passes of ``flops`` each, in batches of ``batch`` (a batch at least L
    seconds), plus ``oag`` seconds an image at least where OAG purifies it."""

    what: str
    images: float
    flops: float
    batch: int
    oag: float = 0.0

    @property
    def seconds(self) -> float:
        return self.images * max(self.flops / rate(), LATENCY / self.batch + self.oag)


def gradient_passes(spec: Any, classes: int) -> float:
    """Gradient passes per image of one attack, every step on every image (a forward: half)."""
    if spec.kind == "fgsm":
        return 1
    if spec.kind in ("bim", "mifgsm"):
        return spec.steps
    if spec.kind == "pgd":
        return spec.steps * spec.restarts
    if spec.kind == "cw_l2":
        return spec.steps * spec.binary_search_steps
    iterations, targets = spec.n_iter or SUB_ITERATIONS, min(TARGET_CLASSES, classes - 1)
    per_sub = {"apgd-ce": iterations, "apgd-dlr": iterations, "apgd-t": targets * iterations,
               "fab": SUB_ITERATIONS, "fab-t": targets * SUB_ITERATIONS,
               "square": (spec.n_queries or SQUARE_QUERIES) / 2}
    return sum(per_sub[a] for a in spec.attacks or AUTOATTACK[spec.version])


def hgd_recipes(spec: Any) -> list[int]:
    """Steps of each attack of HGD's training set (``repurify.defenses.hgd.training_set``): FGSM on
    each source when there are several, then FGSM and each IFGSM_k on their ensemble."""
    return [1] * len(spec.sources) * (len(spec.sources) > 1) + [1, *spec.ifgsm_steps]


def split_sizes(prof: ProfileParams) -> tuple[int, int, int]:
    """(training images, test images, classes) of the profile's dataset."""
    d = prof.data
    total, test, classes = SPLITS[d.paper_dataset or d.name]
    if test is None:  # sklearn's stratified split rounds the test share up
        test = math.ceil(d.test_fraction * total)
        total -= test
    return min(total, d.train_limit or total), min(test, d.test_limit or test), classes


class Scale:
    """The counting for one profile."""

    def __init__(self, prof: ProfileParams) -> None:
        self.prof, self.ev = prof, prof.evaluation
        self.shape = (prof.data.channels, prof.data.image_size, prof.data.image_size)
        self.n_train, self.n_test, self.classes = split_sizes(prof)
        self.archs = {"target": prof.classifiers.target, "substitute": prof.classifiers.substitute,
                      **prof.transfer.zoo}

    @property
    def pixels(self) -> int:
        return math.prod(self.shape)

    def dataset_bytes(self) -> int:
        """``dataset.pt``: uint8 images and int64 labels (the archive's few KB left out)."""
        return (self.n_train + self.n_test) * (self.pixels + 8)

    def clf(self, name: str) -> float:
        return classifier_flops(self.archs[name].arch, self.shape, self.classes)

    def pur(self, spec: Any) -> float:
        """Forward FLOPs of a purifier; OAG's whole synthesis."""
        if spec.kind == "oag":
            c, h, w = self.shape
            return self.tn(spec) * oag_step_flops(spec, c) * h * w
        return purifier_flops(spec, self.shape)

    @staticmethod
    def tn(spec: Any) -> int:
        """OAG's T_N: the pinned one, else the calibration's longest (an upper bound)."""
        return spec.network_steps or spec.calibration.max_network_steps

    def passes(self, spec: Any, clf: str, gradient: bool) -> dict[str, float]:
        """FLOPs of one pass through the defended model (BPDA: no backward through OAG) and OAG's
        floor per image (its own batches)."""
        oag = spec.kind == "oag"
        purifier = self.pur(spec) * (1 if oag or not gradient else 2)
        return {"flops": purifier + self.clf(clf) * (2 if gradient else 1),
                "oag": self.tn(spec) * (spec.image_steps + 1) * OAG_PASS / spec.batch_size if oag else 0}

    def attacks(self, threat: str) -> list[tuple[str, Any]]:
        return [(n, s) for n, s in self.prof.attacks.items() if threat in s.threat_models]

    def images(self, spec: Any, n: int) -> int:
        return min(n, spec.n or n)

    # the stages
    def train_classifier(self) -> list[Term]:
        return [self.training(role) for role in ("target", "substitute")]

    def training(self, name: str) -> Term:
        cfg = self.archs[name]
        return Term(f"train {name} {cfg.arch}, {cfg.epochs} epochs", cfg.epochs * self.n_train,
                    3 * self.clf(name), cfg.batch_size)

    def generate_attacks(self) -> list[Term]:
        return [Term(f"{name} on {role}", self.images(a, self.ev.n) * gradient_passes(a, self.classes),
                     2 * self.clf(role), self.ev.batch_size)
                for role, threat in (("target", "oblivious"), ("substitute", "blackbox"))
                for name, a in self.attacks(threat)]

    def whitebox(self, spec: Any, clf: str, attacks: list[tuple[str, Any]], n: int,
                 autograd_attacks: list[str] | None) -> list[Term]:
        """White-box rows (repurify.evaluation.whitebox_rows): attack and scoring passes."""
        entry, bs = get(spec.kind), self.ev.batch_size
        eot, draws = (self.ev.eot_samples, self.ev.draws) if entry.randomized else (1, 1)
        terms = []
        for name, a in attacks:
            if entry.randomized and a.kind == "autoattack" and a.version == "standard":
                a = a.model_copy(update={"version": "rand"})
            runs = 2 if entry.purifier.autograd_protocol and (
                autograd_attacks is None or name in autograd_attacks) else 1
            m = runs * self.images(a, n)
            terms += [Term(f"white-box {name}", m * gradient_passes(a, self.classes) * eot,
                           batch=bs, **self.passes(spec, clf, True)),
                      Term(f"white-box {name}, scored", m * draws, batch=bs, **self.passes(spec, clf, False))]
        return terms

    def evaluate(self, slot: str) -> list[Term]:
        ev, spec = self.ev, self.prof.defenses[slot]
        limit, rand = ev.limits.get(slot) or EvaluationLimit(), get(spec.kind).randomized
        eot, draws = (ev.eot_samples, ev.draws) if rand else (1, 1)
        cached = sum(min(self.images(a, ev.n), limit.cached_n or ev.n)
                     for threat in ("oblivious", "blackbox") for _, a in self.attacks(threat))
        fwd, grad = self.passes(spec, "target", False), self.passes(spec, "target", True)
        terms = [Term("clean and cached rows, scored", (ev.n + cached) * draws, batch=ev.batch_size, **fwd)]
        if limit.papernot:
            terms += self.papernot(spec)
        whitebox = limited(self.attacks("whitebox"), limit)
        terms += self.whitebox(spec, "target", whitebox, ev.n, ev.autograd_attacks)
        ad = ev.adaptive_for(slot)
        pgd, bs = ad.steps[-1] * ad.restarts[-1], ev.batch_size
        terms += [Term(f"adaptive PGD-{ad.steps[-1]} x {ad.restarts[-1]}", ad.n * pgd * eot, batch=bs,
                       **grad),
                  Term("adaptive rows, scored", ad.n * draws, batch=bs, **fwd)]
        if apgd_covered_by(whitebox, ad, randomized=rand) is not None:
            return terms
        apgd = AutoAttackSpec(kind="autoattack", eps=ad.eps, version="custom", n_iter=ad.apgd_iterations,
                              attacks=["apgd-ce", "apgd-dlr"] if rand else ad.autoattack)
        return [*terms,
                Term("adaptive APGD", ad.n * gradient_passes(apgd, self.classes) * eot, batch=bs, **grad),
                Term("adaptive APGD, scored", ad.n * draws, batch=bs, **fwd)]

    def papernot(self, spec: Any) -> list[Term]:
        """Papernot's substitute (the target's architecture): S_0 doubles every round."""
        pn, cfg = self.ev.papernot, self.prof.classifiers.target
        sizes = [pn.seed_images * 2 ** r for r in range(pn.rounds)]
        specs = [a for name, a in self.attacks("blackbox") if name in pn.attacks]
        n = sum(self.images(a, self.ev.n) for a in specs)
        return [Term("Papernot substitute", pn.epochs_per_round * sum(sizes), 3 * self.clf("target"),
                     cfg.batch_size),
                Term("Papernot labels", sum(sizes) + n * self.ev.draws, batch=cfg.batch_size,
                     **self.passes(spec, "target", False)),
                Term("Papernot Jacobian and attacks",
                     sum(sizes[:-1]) + sum(self.images(a, self.ev.n) * gradient_passes(a, self.classes)
                                           for a in specs), 2 * self.clf("target"), self.ev.batch_size)]

    def check(self, slot: str) -> list[Term]:
        ev, spec = self.ev, self.prof.defenses[slot]
        entry, checks, n = get(spec.kind), ev.checks_for(slot), ev.adaptive_for(slot).n
        eot, draws = (ev.eot_samples, ev.draws) if entry.randomized else (1, 1)
        fwd, grad = self.passes(spec, "target", False), self.passes(spec, "target", True)
        probe = checks.eot_probe if entry.randomized else []  # the attack at each EOT draw count
        sweeps = len(checks.eps) + len(probe)
        attacked = n * checks.steps * (len(checks.eps) * eot + sum(probe))
        # zero-gradient shares (and through autograd where not differentiable), EOT's SNR on a batch
        gradients = n * (1 + (not entry.differentiable)) + eot * min(n, ev.batch_size) * entry.randomized
        return [Term(f"eps sweep and EOT probe, {checks.steps} steps", attacked + gradients,
                     batch=ev.batch_size, **grad),
                Term(f"Square, {checks.square_queries} queries", n * checks.square_queries * eot,
                     batch=ev.batch_size, **fwd),
                Term("checks, scored", (sweeps + 1) * n * draws, batch=ev.batch_size, **fwd)]

    def fit(self, spec: Any) -> list[Term]:
        """A trained defense's training (its kind's ``fit``)."""
        t, pur, k = spec.training, self.pur(spec), spec.kind
        n, e, bs = min(self.n_train, t.train_limit or self.n_train), t.epochs, t.batch_size
        if k == "hgd":
            ks = hgd_recipes(spec)
            ensemble = sum(self.clf(r) for r in spec.sources)
            guide = 0 if spec.loss == "pixel" else 3 * self.clf(spec.guide)
            return [Term(f"HGD training set: {len(ks)} attacks", n * sum(ks), 2 * ensemble, bs),
                    Term(f"HGD: {e} epochs x {len(ks)} copies", e * len(ks) * n, 3 * pur + guide, bs)]
        if k == "advae":  # per classifier: the inner PGD (Eq. 7's max) and the training step
            terms = [Term(f"AdvAE: {e} epochs, {what} on {c}", e * n * passes, flops + 2 * self.clf(c), bs)
                     for c in spec.classifiers
                     for what, passes, flops in ((f"inner PGD-{spec.pgd.steps}", spec.pgd.steps, 2 * pur),
                                                 ("step", 1, 3 * pur))]
            return terms + ([Term("AdvAE reconstruction", e * n, 3 * pur, bs)] if spec.lam else [])
        if k in ("egcfl", "gcln"):
            f, c = self.features(spec), self.clf("target")
            terms = [Term(f"PGD-{spec.attack.steps} training examples on {spec.source}",
                          n * spec.attack.steps, 2 * self.clf(spec.source), bs)]
            if k == "egcfl":  # K generations: F_beta and C on each estimate, F_beta on the clean image
                return [*terms, Term(f"EGC-FL: {e} epochs", e * n,
                                     3 * pur + spec.generations * (2 * f + 2 * c) + f, bs)]
            d = self.detector(spec)  # D: trained on 3 images a step, and L_A through it
            return [*terms, Term(f"GCLN detector: {spec.detector_epochs} epochs",
                                 spec.detector_epochs * 2 * n, 3 * d, bs),
                    Term(f"GCLN: {e} epochs", e * n, 3 * pur + 11 * d + 3 * f + c, bs)]
        return [Term(f"{k}: {e} epochs (a training step through the target)", e * n,
                     3 * pur + 2 * self.clf("target"), bs)]

    def features(self, spec: Any) -> float:
        """F_beta of the perceptual losses: VGG-19 up to ``vgg_layer``, or the target's features."""
        if spec.perceptual != "vgg19":
            return self.clf("target")
        return vgg_flops(spec.vgg_layer, self.shape[-1])

    def detector(self, spec: Any) -> float:
        from repurify.defenses.gcln import Detector

        with torch.device("meta"):
            return forward_flops(Detector(self.shape[0], spec.detector_widths, self.shape[-1]), self.shape)

    def calibrate(self, slot: str) -> list[Term]:
        spec = self.prof.defenses[slot]
        if spec.kind != "oag":
            return []
        cal = spec.calibration
        lists = [getattr(cal, k) for k in ("eps_g", "beta", "init_std") if getattr(spec, k) is None]
        full = spec.model_copy(update={"network_steps": cal.max_network_steps})
        step = self.passes(full, "target", False)
        step["flops"] += (cal.max_network_steps - 1) * self.clf("target")  # accuracy after every step
        candidates = math.prod(map(len, lists))
        return [Term(f"OAG calibration: {candidates} candidates, T_N {cal.max_network_steps}",
                     candidates * min(cal.images, self.n_train), batch=spec.batch_size, **step)]

    def rows(self, spec: Any, clf: str, oblivious: list[Any], whitebox: list[tuple[str, Any]], n: int,
             crafted: bool, autograd_attacks: list[str] | None) -> list[Term]:
        """A variant's clean, oblivious and white-box rows (transfer, ablation); ``crafted``: its
        oblivious examples are made here on the bare classifier (transfer), not cached."""
        terms = [Term("clean and oblivious rows", n + sum(self.images(a, n) for a in oblivious),
                      batch=self.ev.batch_size, **self.passes(spec, clf, False))]
        if crafted:
            passes = sum(self.images(a, n) * gradient_passes(a, self.classes) for a in oblivious)
            terms.append(Term("oblivious attacks", passes, 2 * self.clf(clf), self.ev.batch_size))
        return terms + self.whitebox(spec, clf, whitebox, n, autograd_attacks)

    def transfer(self) -> list[Term]:
        tr, prof = self.prof.transfer, self.prof
        terms = [self.training(name) for name in tr.zoo]
        n = min(tr.n, self.n_test)
        for entry in tr.grid:
            slot = prof.defenses[entry.defense]
            spec = slot if slot.kind == "oag" else variant(slot, entry)
            # an unchanged entry takes its slot's trained defense: nothing trained here
            terms += [] if slot.kind == "oag" or unchanged(prof, entry) else self.fit(spec)
            threats = entry.threat_models
            for name in entry.evaluated_on:  # every listed attack in each threat model of the entry
                attacks = [(a, prof.attacks[a]) for a in entry.attacks.get(name, tr.attacks)]
                terms += self.rows(spec, name, [a for _, a in attacks] if "oblivious" in threats else [],
                                   attacks if "whitebox" in threats else [], n, True, None)
        return terms

    def ablation(self) -> list[Term]:
        ab, prof = self.prof.ablation, self.prof
        n = ab.n or self.ev.n
        attacks = [(a, prof.attacks[a]) for a in ab.attacks]

        def rows(spec: Any, slot: str, threats: list[str]) -> list[Term]:
            oblivious = [a for _, a in attacks if "oblivious" in threats and "oblivious" in a.threat_models]
            whitebox = limited([(m, a) for m, a in attacks if "whitebox" in threats and "whitebox" in
                                a.threat_models], self.ev.limits.get(slot))
            return self.rows(spec, "target", oblivious, whitebox, n, False, self.ev.autograd_attacks)

        terms = [t for k in ab.generations for t in rows(
            prof.defenses["egcfl"].model_copy(update={"generations": k}), "egcfl", ["oblivious", "whitebox"])]
        for v in ab.variants:
            spec = v.spec(prof.defenses[v.defense])
            terms += ([] if spec.kind == "oag" else self.fit(spec)) + rows(spec, v.defense, v.threat_models)
        return terms

    def terms(self, stage: Stage) -> list[Term]:
        """The counted work of one stage of :func:`workflow.dag.stages`."""
        kind, slot = stage.module or stage.name, stage.args[1] if stage.args else ""
        if kind == "train_defense":
            return self.fit(self.prof.defenses[slot])
        if kind in ("evaluate", "check", "calibrate"):
            return getattr(self, kind)(slot)
        if kind in ("train_classifier", "generate_attacks", "transfer", "ablation"):
            return getattr(self, kind)()
        return []  # fetch_data, report: nothing on the GPU

    def host_bytes(self, stage: Stage) -> float:
        """Peak host memory (see the module docstring)."""
        kind, slot = stage.module or stage.name, stage.args[1] if stage.args else ""
        if kind == "report":
            return BASE_BYTES
        floats, ev = 4 * self.pixels, self.ev
        train = self.n_train * floats
        evaluated = (ev.n + ev.papernot.seed_images) * floats
        cache = {role: sum(self.images(a, ev.n) for _, a in self.attacks(t)) * floats
                 for role, t in (("target", "oblivious"), ("substitute", "blackbox"))}
        extra = max(map(self.fit_bytes, self.trained(kind, slot)), default=0)
        stage_bytes = {"fetch_data": self.dataset_bytes() + STATS_CHUNK * 8 * self.pixels,
                       "generate_attacks": evaluated + max(cache.values()),
                       "evaluate": evaluated + sum(cache.values()),
                       "check": evaluated + cache["target"],
                       "train_defense": train, "calibrate": train,
                       "transfer": (train if trains(self.prof) or self.prof.transfer.zoo else 0)
                       + min(self.prof.transfer.n, self.n_test) * floats,
                       "ablation": train + evaluated + cache["target"]}.get(kind, 0)
        return BASE_BYTES + stage_bytes + extra

    def trained(self, kind: str, slot: str) -> list[Any]:
        """The specs of the defenses a stage trains."""
        prof = self.prof
        if kind == "train_defense":
            return [prof.defenses[slot]]
        if kind == "transfer":
            return [variant(prof.defenses[e.defense], e) for e in prof.transfer.grid
                    if prof.defenses[e.defense].kind != "oag" and not unchanged(prof, e)]
        if kind == "ablation":
            specs = [v.spec(prof.defenses[v.defense]) for v in prof.ablation.variants]
            return [s for s in specs if s.kind != "oag"]
        return []

    def scratch_bytes(self, stage: Stage) -> float:
        """The disk-backed HGD training copies (training and validation) a stage writes."""
        kind, slot = stage.module or stage.name, stage.args[1] if stage.args else ""
        return max((len(hgd_recipes(sp)) * min(self.n_train, sp.training.train_limit or self.n_train)
                    * 4 * self.pixels for sp in self.trained(kind, slot) if sp.kind == "hgd"), default=0)

    def fit_bytes(self, spec: Any) -> float:
        """The float32 sets a defense's training holds beside the training images."""
        t = spec.training
        n = min(self.n_train, t.train_limit or self.n_train) * 4 * self.pixels
        # HGD's copies live in a disk-backed map (fitting.disk_tensor), the clean twins are views
        return n if spec.kind in ("egcfl", "gcln") else 0


@dataclass(frozen=True)
class Estimate:
    """One stage's estimated work and peak host memory."""

    terms: tuple[Term, ...]
    host_bytes: float
    scratch_bytes: float = 0.0

    @property
    def hours(self) -> float:
        return sum(t.seconds for t in self.terms) / 3600

    def request(self) -> tuple[int, int | None]:
        """(mem_mb, runtime_min or None where nothing runs on the GPU) the stage table asks for."""
        mem = max(4, math.ceil(1.5 * self.host_bytes / GIB)) * 1024
        runtime = max(10, math.ceil(2 * self.hours * 6) * 10) if self.terms else None
        return mem, runtime


def estimate(prof: ProfileParams, stage: Stage) -> Estimate:
    s = Scale(prof)
    return Estimate(tuple(s.terms(stage)), s.host_bytes(stage), s.scratch_bytes(stage))


def request(prof: ProfileParams, stage: Stage) -> dict[str, int]:
    """What the stage asks SLURM for (``workflow/requests.yaml``): its estimate's memory, and its
    run time where it has GPU work (else the stage table's)."""
    mem_mb, runtime = estimate(prof, stage).request()
    return {"mem_mb": mem_mb, "runtime_min": runtime or stage.resources.runtime_min}


def write_requests(path: Path = REQUESTS) -> None:
    """``workflow/requests.yaml``: per profile of params.yaml and stage, :func:`request` (read by
    the stage table)."""
    names = yaml.safe_load(PARAMS.read_text(encoding="utf-8"))["profiles"]
    out = {name: {st.name: request(prof, st) for st in stages(prof)}
           for name in names for prof in [load_params(PARAMS, name).active]}
    path.write_text("# Generated by `python -m benchmarks.scale --write`: do not edit by hand.\n"
                    + yaml.safe_dump(out, sort_keys=False), encoding="utf-8")


def cpu_check(path: Path = HERE / "results_xeon_digits_full.json") -> dict[str, tuple[float, float]]:
    """The counting against a measured CPU run (default: the Intel Xeon run of ``digits_full``
    that the counting was first checked on; on an AMD EPYC, ``results.json``, OAG's stages
    count 0.41x (evaluate) and 0.48x (check) of their measured time: its grouped convolutions
    run below the dense rate there, so the count does not transfer across CPU vendors): the counted FLOPs
    over the rate of that profile's own target forward+backward on those cores (no floor), and
    the stage's measured seconds."""
    run = json.loads(path.read_text(encoding="utf-8"))
    prof, a = load_params(PARAMS, run["profile"]).active, run["attack_overhead"]
    s = Scale(prof)
    cpu_rate = 2 * s.clf("target") * a["batch"] / a["seconds_forward_backward"]
    measured = run["pipeline"]["stages"]
    return {st.name: (sum(t.images * t.flops for t in terms) / cpu_rate, measured[st.name]["seconds"])
            for st in stages(prof) if st.name in measured and (terms := s.terms(st))}


def table(profiles: tuple[str, ...]) -> list[dict[str, Any]]:
    """Per profile: its dataset and, per stage kind (the report left out), the summed GPU-hours,
    the largest stage's, and the largest request and peak host memory of its stages."""
    out = []
    for name in profiles:
        prof = load_params(PARAMS, name).active
        s, kinds = Scale(prof), {}
        for st in stages(prof):
            if (kind := st.module or st.name) != "report":
                kinds.setdefault(kind, []).append((estimate(prof, st), request(prof, st)))
        out.append({"profile": name, "images": [s.n_train, s.n_test], "shape": list(s.shape),
                    "dataset_gb": s.dataset_bytes() / 1e9, "kinds": {k: {
                        "stages": len(v), "hours": sum(e.hours for e, _ in v),
                        "largest_hours": max(e.hours for e, _ in v),
                        "mem_gib": max(r["mem_mb"] for _, r in v) / 1024,
                        "runtime_min": max(r["runtime_min"] for _, r in v),
                        "peak_gib": max(e.host_bytes for e, _ in v) / GIB,
                        "scratch_gib": max(e.scratch_bytes for e, _ in v) / GIB} for k, v in kinds.items()}})
    return out


def _hours(h: float) -> str:
    return f"{h:.2g}" if h < 10 else f"{h:,.0f}"


def markdown(rows: list[dict[str, Any]]) -> str:
    """The README's Scale tables: per profile, then per stage kind."""
    out = ["| profile | images (train / test) | `dataset.pt` | GPU-hours, all stages | largest peak host "
           "memory |", "|---|---|---|---|---|"]
    for r in rows:
        peak = max(k["peak_gib"] for k in r["kinds"].values())
        over = f" (over a {NODE_GIB} GiB node)" if peak > NODE_GIB else ""
        out.append(f"| `{r['profile']}` | {r['images'][0]:,} / {r['images'][1]:,} at "
                   f"{'x'.join(map(str, r['shape']))} | {r['dataset_gb']:.3g} GB | "
                   f"{_hours(sum(k['hours'] for k in r['kinds'].values()))} | {peak:.1f} GiB{over} |")
    out += ["", "| profile | stage kind (stages) | GPU-hours (largest stage) | SLURM mem, time (largest) "
                "| peak host memory |", "|---|---|---|---|---|"]
    for r in rows:
        for kind, k in r["kinds"].items():
            t = k["runtime_min"]
            out.append(f"| `{r['profile']}` | {kind} ({k['stages']}) | {_hours(k['hours'])} "
                       f"({_hours(k['largest_hours'])}) | {k['mem_gib']:.0f} GiB, "
                       f"{f'{t / 60:,.0f} h' if t >= 120 else f'{t} min'} | {k['peak_gib']:.1f} GiB"
                       f"{f' (+ {g:.0f} GiB scratch disk)' if (g := k['scratch_gib']) >= 0.5 else ''} |")
    checked = cpu_check()
    counted, measured = map(sum, zip(*checked.values(), strict=True))
    ratios = [c / m for c, m in checked.values()]
    out += ["", f"Check: counted at the CPU's measured rate, the {len(checked)} GPU-work stages of the CPU "
                f"run in `benchmarks/results_xeon_digits_full.json` come to {counted:,.0f} s against "
                f"{measured:,.0f} s "
                f"measured ({counted / measured:.2f}x; per stage {min(ratios):.2f}x to {max(ratios):.2f}x)."]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.split("\n\n")[0])
    ap.add_argument("profiles", nargs="*", default=list(PROFILES))
    ap.add_argument("--markdown", action="store_true", help="the README's tables")
    ap.add_argument("--write", action="store_true", help="write workflow/requests.yaml (SLURM sizes)")
    ap.add_argument("--terms", metavar="STAGE", help="the counted terms of one stage (first profile)")
    ap.add_argument("--cpu-check", action="store_true",
                    help="the counting against the measured Intel CPU run, per stage")
    args = ap.parse_args(argv)
    if args.cpu_check:
        checked = cpu_check()
        checked["all"] = tuple(map(sum, zip(*checked.values(), strict=True)))
        for name, (counted, measured) in checked.items():
            print(f"{name:24s} counted {counted:6.0f} s, measured {measured:6.0f} s "
                  f"({counted / measured:.2f}x)")
        return 0
    if args.terms:
        prof = load_params(PARAMS, args.profiles[0]).active
        stage = next(st for st in stages(prof) if st.name == args.terms)
        for t in estimate(prof, stage).terms:
            print(f"{t.seconds / 3600:10.3g} h  {t.images:12.4g} x {t.flops / 1e9:9.3g} GFLOP  {t.what}")
        return 0
    if args.write:
        write_requests()
        return 0
    rows = table(tuple(args.profiles))
    print(markdown(rows) if args.markdown else json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
