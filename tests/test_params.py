"""params.yaml validation: every bad value fails before work, naming the key path."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from repurify.errors import ParamsError
from repurify.params import load_params, read_yaml, validate_params

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return read_yaml(ROOT / "params.yaml")


def _set(raw: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(raw)
    node = out
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node[key]
    node[leaf] = value
    return out


def test_repository_params_validate_for_every_profile(raw: dict[str, Any]) -> None:
    expected = {"digits", "smoke", "mnist", "mnist5k", "cifar10", "cifar10_advae", "svhn", "flowers17",
                "imagenet_subset", "imagenet_hgd"}
    assert expected <= set(raw["profiles"])
    for name in raw["profiles"]:
        p = load_params(ROOT / "params.yaml", profile=name)
        assert p.profile == name
        pgd = p.active.attacks["pgd"]
        assert 0 < pgd.step_size <= pgd.eps


def test_default_profile_is_digits_with_issue_budget() -> None:
    p = load_params(ROOT / "params.yaml")
    assert p.profile == "digits"
    assert p.active.data.image_size == 16
    pgd = p.active.attacks["pgd"]
    assert (pgd.eps, pgd.step_size, pgd.steps) == (0.1, 0.01, 20)


def _attack(profile: str, name: str):
    return load_params(ROOT / "params.yaml", profile=profile).active.attacks[name]


def test_paper_budgets_parse_from_ratio_notation() -> None:
    cifar = _attack("cifar10", "pgd")
    assert (cifar.eps, cifar.step_size, cifar.steps) == (pytest.approx(8 / 255),
                                                         pytest.approx(1 / 255), 10)
    svhn = _attack("svhn", "pgd")
    assert (svhn.eps, svhn.step_size) == (pytest.approx(12 / 255), pytest.approx(3 / 255))
    mnist = _attack("mnist", "pgd")
    assert (mnist.eps, mnist.step_size, mnist.steps) == (0.3, 0.01, 40)
    # OAG: MI-FGSM eps 2/255 on ImageNet, 4/255 on Flowers-17; min(eps+4, ceil(1.25 eps)) = 8
    assert _attack("imagenet_subset", "mifgsm").eps == pytest.approx(2 / 255)
    assert _attack("flowers17", "mifgsm").eps == pytest.approx(4 / 255)
    assert _attack("flowers17", "bim").steps == 8
    assert _attack("flowers17", "mifgsm").steps == 5
    assert _attack("imagenet_subset", "mifgsm").steps == 3


def test_cifar10_advae_is_cifar10_with_advaes_target() -> None:
    """AdvAE Sec. 4.1: a ResNetV2-29 trained with Adam at 1e-3; the rest merged from cifar10."""
    own, cifar = (load_params(ROOT / "params.yaml", profile=p).active for p in ("cifar10_advae", "cifar10"))
    assert own.data == cifar.data and own.attacks == cifar.attacks
    target = own.classifiers.target
    assert (target.arch, target.optimizer, target.lr) == ("resnetv2_29", "adam", 0.001)
    assert own.classifiers.substitute == cifar.classifiers.substitute
    assert set(own.defenses) == {"none", "advae"} and own.defenses["advae"] == cifar.defenses["advae"]
    assert not own.ablation.runs and not own.transfer.grid


def test_yaml_exponent_floats_are_numbers(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text("a: 1e-3\nb: 5e4\nc: '1e-3'\n")
    assert read_yaml(f) == {"a": 0.001, "b": 50000.0, "c": "1e-3"}


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("profiles.digits.data.image_size", -3, "greater than 0"),
        ("profiles.digits.data.image_size", "16", "valid integer"),
        ("profiles.digits.attacks.pgd.eps", -0.1, "greater than 0"),
        ("profiles.digits.attacks.pgd.eps", "8/0", "division by zero"),
        ("profiles.digits.attacks.pgd.step_size", 0.5, "exceeds eps"),
        ("profiles.digits.attacks.pgd.kind", "deepfool", "does not match any of the expected tags"),
        ("profiles.digits.defenses.median_filter.kernel", 4, "kernel must be odd"),
        ("profiles.digits.defenses.jpeg.quality", 0, "greater than or equal to 1"),
        ("profiles.digits.evaluation.papernot.attacks", ["fgsm", "nope"], "not keys of attacks"),
        ("profiles.digits.data.name", "imagenet21k", "unknown dataset"),
        ("profiles.digits.defenses.hgd.loss", "mse", "'pixel', 'fgd', 'lgd' or 'cgd'"),
        ("profiles.digits.defenses.hgd.guide", "resnet", "'target' or 'substitute'"),
        ("profiles.digits.defenses.hgd.widths", [32], "at least 2 items"),
        ("profiles.digits.defenses.advae.architecture", "vae", "'conv_ae' or 'unet'"),
        ("profiles.digits.defenses.advae.lam", -1.0, "greater than or equal to 0"),
        ("profiles.digits.defenses.advae.pgd.step_size", 0.5, "exceeds eps"),
        ("profiles.digits.defenses.advae.training.lr_decay", 1.5, "less than 1"),
        ("profiles.digits.defenses.egcfl.delta", -0.1, "greater than 0"),
        ("profiles.digits.defenses.egcfl.lambdas", [0.5, 0.5], "at least 3 items"),
        ("profiles.digits.defenses.egcfl.perceptual", "vgg16", "'vgg19' or 'target_features'"),
        ("profiles.digits.defenses.egcfl.generations", 0, "greater than 0"),
        ("profiles.cifar10.defenses.egcfl.converter_width", 2, "below the 3 image channels"),
        ("profiles.digits.defenses.gcln.q", "10/0", "division by zero"),
        ("profiles.digits.defenses.gcln.lam", 1.5, "less than or equal to 1"),
        ("profiles.digits.defenses.gcln.vgg_layer", "relu9_9", "'relu1_2'"),
        ("profiles.digits_full.ablation.attacks", ["pgd", "nope"], "not keys of attacks"),
        ("profiles.digits.defenses.oag.kernel", 4, "kernel must be odd"),
        ("profiles.digits.defenses.oag.generator", "gan", "'alternate' or 'autoencoder'"),
        ("profiles.digits.defenses.oag.calibration.eps_g", [], "at least 1 item"),
        ("profiles.digits.defenses.oag.calibration.tolerance", 1.0, "less than 1"),
        ("profiles.digits.evaluation.limits", {"oga": {"n": 3}}, "not a defense slot"),
        ("profiles.digits.evaluation.limits", {"oag": {"whitebox_attacks": ["nope"]}},
         "not keys of attacks"),
        ("profiles.digits_full.ablation.n", 5000, "exceeds evaluation.n"),
        ("profiles.digits.evaluation.checks.attack", "fgsm", "must name a pgd or bim entry"),
        ("profiles.digits.evaluation.checks.eps", [0.1, 0.05], "must increase strictly"),
        ("profiles.digits.evaluation.adaptive.n", 5000, "evaluation.adaptive.n: 5000 exceeds evaluation.n"),
        ("profiles.digits.evaluation.adaptive.n", 200,
         "evaluation.adaptive.n: 200 images, but attacks.cw_l2 runs white-box against the 'none' "
         "defense on only 100"),
        ("profiles.digits.evaluation.limits", {"oag": {"adaptive": {"n": 301}}},
         "evaluation.limits.oag.adaptive.n: 301 exceeds evaluation.n"),
        ("profiles.digits.evaluation.limits", {"oag": {"n": 10, "adaptive": {"n": 20}}},
         "evaluation.limits.oag.adaptive.n: 20 images, but attacks.fgsm runs white-box against the "
         "'oag' defense on only 10"),
        ("profiles.digits.evaluation.adaptive.steps", [100, 50], "must increase strictly"),
        ("profiles.digits.evaluation.adaptive.step_size", 0.5, "step_size 0.5 exceeds eps 0.1"),
        ("profiles.digits.evaluation.limits", {"oag": {"adaptive": {"restarts": [0, 2]}}},
         "evaluation.limits.oag.adaptive.restarts: Value error, counts start at 1"),
        ("profiles.digits.evaluation.checks.eot_probe", [4, 1], "must increase strictly"),
        ("profiles.digits.evaluation.limits", {"oag": {"checks": {"stepz": 3}}},
         "evaluation.limits.oag.checks.stepz"),
        ("profiles.digits.evaluation.limits", {"oag": {"checks": {"steps": 0}}},
         "evaluation.limits.oag.checks.steps: Input should be greater than 0"),
        ("profiles.digits.attacks.pgd.eps", 1.5, "1.5 exceeds 1, the largest linf distance"),
        ("profiles.digits.attacks.fgsm.eps", 1e9, "exceeds 1, the largest linf distance"),
        ("profiles.digits.attacks.autoattack.eps", 2, "2 exceeds 1"),
        ("profiles.digits.evaluation.checks.eps", [0.1, 0.5, 1.5], "checks.eps: 1.5 exceeds 1"),
        ("profiles.digits.evaluation.adaptive.eps", 3, "3 exceeds 1"),
        ("profiles.digits.defenses.hgd.eps_max", 1.2, "1.2 exceeds 1"),
        ("profiles.digits.defenses.advae.pgd.eps", 1.2, "1.2 exceeds 1"),
        ("profiles.digits.attacks.pgd", {"kind": "pgd", "norm": "l2", "eps": 17, "step_size": 1, "steps": 5},
         "17 exceeds 16, the largest l2 distance between images in [0, 1] (sqrt(256)"),
        ("profiles.digits_full.ablation.noise_attack", "pgdd", "'pgdd' is not a key of attacks"),
        ("profiles.digits.classifiers.target.arch", "vit_h14", "unknown architecture"),
        ("profiles.digits.classifiers.target.optimizer", "lion", "'sgd' or 'adam'"),
        ("seed", -1, "greater than or equal to 0"),
        ("device", "tpu", "'auto', 'cpu' or 'cuda'"),
    ],
)
def test_bad_values_name_the_key(raw: dict[str, Any], key: str, value: Any, message: str) -> None:
    with pytest.raises(ParamsError) as err:
        validate_params(_set(raw, key, value))
    text = str(err.value)
    assert key in text
    assert message in text


def test_unknown_key_is_rejected(raw: dict[str, Any]) -> None:
    bad = _set(raw, "profiles.digits.data.imag_size", 16)
    with pytest.raises(ParamsError, match=r"profiles\.digits\.data\.imag_size: Extra inputs"):
        validate_params(bad)


def test_a_profile_runs_any_subset_of_the_registry(raw: dict[str, Any]) -> None:
    few = copy.deepcopy(raw)
    prof = few["profiles"]["smoke"]
    prof["defenses"] = {"none": prof["defenses"]["none"], "blur": {"kind": "median_filter", "kernel": 3}}
    prof["transfer"], prof["ablation"], prof["evaluation"]["limits"] = {}, {}, {}
    assert list(validate_params(few, profile="smoke").active.defenses) == ["none", "blur"]
    prof["defenses"] = {}
    with pytest.raises(ParamsError, match=r"profiles\.smoke\.defenses: none given; name at least one "
                                          r"of the registered kinds \['advae'"):
        validate_params(few)
    bad = _set(raw, "profiles.smoke.defenses.jpeg", {"kind": "pixeldefend"})
    with pytest.raises(ParamsError, match=r"profiles\.smoke\.defenses\.jpeg\.kind: .*'pixeldefend'"):
        validate_params(bad)


def test_experiments_name_slots_of_the_kind_they_run(raw: dict[str, Any]) -> None:
    bad = _set(raw, "profiles.smoke.defenses.hgd", {"kind": "jpeg", "quality": 50})
    with pytest.raises(ParamsError, match=r"profiles\.smoke\.transfer\.grid\.1\.defense: slot 'hgd' "
                                          r"holds a 'jpeg' defense; this runs \['hgd', 'advae', 'oag'\]"):
        validate_params(bad)
    bad = copy.deepcopy(raw)
    del bad["profiles"]["smoke"]["defenses"]["egcfl"]
    with pytest.raises(ParamsError, match=r"profiles\.smoke\.ablation\.generations: 'egcfl' is not a "
                                          r"defense slot"):
        validate_params(bad)


def test_ablation_variants_are_validated_as_their_slot(raw: dict[str, Any]) -> None:
    good = load_params(ROOT / "params.yaml", profile="digits_full").active
    assert good.ablation.variants
    for v in good.ablation.variants:
        assert v.spec(good.defenses[v.defense]).kind == v.defense
    bad = _set(raw, "profiles.digits_full.ablation.variants",
               [{"name": "a", "defense": "gcln", "set": {"q": -1.0}}])
    with pytest.raises(ParamsError, match=r"profiles\.digits_full\.ablation\.variants\.0\.set: q: Input "
                                          r"should be greater than 0"):
        validate_params(bad)
    typo = _set(raw, "profiles.digits_full.ablation.variants",
                [{"name": "a", "defense": "egcfl", "set": {"feedbak": False}}])
    with pytest.raises(ParamsError, match=r"ablation\.variants\.0\.set: feedbak: Extra inputs"):
        validate_params(typo)
    twice = _set(raw, "profiles.digits_full.ablation.variants",
                 [{"name": "a", "defense": "gcln", "set": {"q": 0.1}}] * 2)
    with pytest.raises(ParamsError, match=r"names \['a'\] are used twice"):
        validate_params(twice)


def test_missing_key_is_reported(raw: dict[str, Any]) -> None:
    bad = copy.deepcopy(raw)
    del bad["seed"]
    with pytest.raises(ParamsError, match=r"seed: Field required"):
        validate_params(bad)


def test_unknown_profile_lists_choices(raw: dict[str, Any]) -> None:
    with pytest.raises(ParamsError, match=r"profile 'cifar100' is not defined.*digits"):
        validate_params(raw, profile="cifar100")


def test_missing_or_broken_file(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    broken = tmp_path / "params.yaml"
    broken.write_text("profile: [digits\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(broken)
    broken.write_text(yaml.safe_dump(["a", "list"]))
    with pytest.raises(ParamsError, match="expected a mapping"):
        load_params(broken)


def test_dvc_resolves_params_yaml_as_the_validator_does() -> None:
    """Merge keys (svhn extends cifar10) and YAML 1.2 floats: DVC's view equals ours, key by key."""
    import dvc.api

    ours = read_yaml(ROOT / "params.yaml")
    assert dvc.api.params_show(repo=str(ROOT)) == ours
    svhn, cifar = ours["profiles"]["svhn"], ours["profiles"]["cifar10"]
    assert svhn["data"] == {**cifar["data"], "name": "svhn"}
    assert svhn["defenses"]["hgd"] == cifar["defenses"]["hgd"]
    assert svhn["defenses"]["egcfl"]["delta"] == "12/255" != cifar["defenses"]["egcfl"]["delta"]


def test_hgd_sources_hold_the_black_box_model_out() -> None:
    """HGD Sec. 4.1: the black-box test set comes from a model held out of the training set."""
    raw = read_yaml(ROOT / "params.yaml")
    raw["profiles"]["digits"]["defenses"]["hgd"]["sources"] = ["target", "substitute"]
    with pytest.raises(ParamsError, match=r"defenses\.hgd\.sources: the substitute"):
        validate_params(raw, profile="digits")
