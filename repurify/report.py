"""The reproduction report: one row per (defense, attack, threat model)."""

from __future__ import annotations

from typing import Any

from repurify.stats import row_standard_error

THREATS = ("oblivious", "blackbox", "whitebox")
# the threat model under which each paper reported its defense (HGD, OAG: gray-box examples of the
# bare target; EGC-FL: white-box through autograd's gradients; AdvAE: white-box). GCLN's paper does
# not state how its white-box attack differentiates the quantization (None): its Table 1 has
# FGS < PGD < clean, so the attack had gradients, and autograd's zero gradient cannot be it.
PAPER_PROTOCOL: dict[str, tuple[str, str | None] | None] = {
    "hgd": ("oblivious", None), "oag": ("oblivious", None), "advae": ("whitebox", None),
    "egcfl": ("whitebox", "autograd"), "gcln": None}
AUTOGRAD_DEMO = "autograd (zero gradient): a masking demonstration"  # where no paper used autograd


def summary_rows(evaluations: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Flatten ``{defense: eval.json}`` into rows with the defense name attached."""
    rows = []
    for defense, ev in evaluations.items():
        rows.append({"defense": defense, "attack": "clean", "threat_model": "none",
                     "accuracy": ev["clean_accuracy"], "n": ev["n"]})
        rows += [{"defense": defense, **r} for r in ev["results"]]
    return rows


def _column(row: dict[str, Any]) -> str:
    if row["threat_model"] == "blackbox":
        return f"blackbox ({row.get('source', 'transfer')})"
    if row["threat_model"] == "whitebox" and row.get("source") == "autograd":
        return "whitebox (autograd)"
    return row["threat_model"]


def _pct(v: float | None) -> str:
    return "" if v is None else f"{100 * v:.1f}"


def _pm(v: float, se: float) -> str:
    return f"{100 * v:.1f} ± {100 * se:.1f}"


def _cell(row: dict[str, Any] | None) -> str:
    """Accuracy ± its standard error, in %."""
    return "" if row is None else _pm(row["accuracy"], row_standard_error(row))


def _sizes(rows: list[dict[str, Any]]) -> str:
    """The image counts behind a table row: ``300``, or ``300/100`` where its cells differ."""
    return "/".join(str(n) for n in dict.fromkeys(r["n"] for r in rows))


def paper_protocol_row(defense: str, ev: dict[str, Any], attack: str) -> dict[str, Any] | None:
    """``attack``'s row under the threat model the defense's paper used (None: no paper)."""
    if (protocol := PAPER_PROTOCOL.get(defense)) is None:
        return None
    threat, source = protocol
    source = source or ("target" if threat == "oblivious" else None)  # cached rows' source
    return next((r for r in ev["results"] if r["attack"] == attack and r["threat_model"] == threat
                 and r.get("source") == source), None)


def headline(evaluations: dict[str, dict[str, Any]], masking: dict[str, dict[str, Any]],
             attack: str) -> dict[str, dict[str, Any]]:
    """Per defense: clean accuracy, ``attack`` under its paper's protocol (None: no paper, or not
    stated) and white-box, the worst case with its standard error and image count, the strongest
    attack and the verdict (``metrics/<profile>/headline.json``, what ``dvc metrics`` shows)."""
    out = {}
    for defense, ev in evaluations.items():
        wc, m = ev.get("worst_case"), masking.get(defense, {})
        paper = paper_protocol_row(defense, ev, attack)
        wb = next((r for r in ev["results"] if r["attack"] == attack and r["threat_model"] == "whitebox"
                   and r.get("source") is None), None)
        out[defense] = {
            "clean": ev["clean_accuracy"],
            "paper_protocol": paper["accuracy"] if paper else None,
            "paper_protocol_threat": _column(paper) if paper else None,
            "whitebox": wb["accuracy"] if wb else None,
            "worst_case": wc["accuracy"] if wc else None, "worst_case_se": wc["se"] if wc else None,
            "worst_case_n": wc["n"] if wc else None,
            "worst_case_all_draws": wc["accuracy_all_draws"] if wc and ev.get("randomized") else None,
            "strongest": wc["strongest"] if wc else None,
            "verdict": m.get("verdict", ""), "not_run": m.get("not_run", []), "weak": m.get("weak", [])}
    return out


def _headline_lines(evaluations: dict[str, dict[str, Any]], masking: dict[str, dict[str, Any]],
                    attack: str) -> list[str]:
    """The first table: per defense clean, the paper's protocol, the attack white-box, the worst
    case over every attack with its standard error, and the verdict."""
    lines = ["", "## Worst case and verdict", "",
             "*worst case*: the share of the adaptive images (the first *n*) that survive every attack "
             "run against the defense at the adaptive budget: every white-box attack, both gradient "
             "protocols, every restart, AutoAttack and the adaptive set (PGD with the most steps and "
             "restarts, APGD), and the oblivious and transferred examples; ± one standard error. "
             "Randomized defenses: each image scored on fresh draws, the mean over draws (in brackets: "
             "correct in every draw). *paper's protocol*: the attack under the threat model the "
             "defense's paper used. *verdict*: the gradient-masking checks below; *inconclusive* names "
             "the checks that did not run.", "",
             f"| defense | clean | paper's protocol ({attack}) | white-box {attack} | worst case (n) | "
             "strongest attack | verdict |", "|---" * 7 + "|"]
    for defense, h in headline(evaluations, masking, attack).items():
        paper_cell = ("no paper" if defense not in PAPER_PROTOCOL else "not stated"
                      if PAPER_PROTOCOL[defense] is None else "not run" if h["paper_protocol"] is None
                      else f"{_pct(h['paper_protocol'])} ({h['paper_protocol_threat']})")
        worst = ("not run" if h["worst_case"] is None
                 else f"{_pm(h['worst_case'], h['worst_case_se'])} ({h['worst_case_n']})")
        if h["worst_case_all_draws"] is not None:
            worst += f" [{_pct(h['worst_case_all_draws'])}]"
        verdict = h["verdict"]
        if h["not_run"]:
            verdict += f" (not run: {', '.join(h['not_run'])})"
        if h["weak"]:
            verdict += f" (weak: {', '.join(h['weak'])})"
        lines.append(f"| {defense} | {_pct(h['clean'])} | {paper_cell} | "
                     f"{'not run' if h['whitebox'] is None else _pct(h['whitebox'])} | {worst} | "
                     f"{h['strongest'] or ''} | **{verdict}** |")
    return lines


def _convergence_lines(evaluations: dict[str, dict[str, Any]]) -> list[str]:
    """The adaptive PGD's accuracy at each probed step and restart count, per defense."""
    conv = {d: ev["convergence"] for d, ev in evaluations.items() if "convergence" in ev}
    if not conv:
        return []
    # the union of probed counts: a profile may probe one defense (OAG) on a shorter ladder
    steps = sorted({p["steps"] for c in conv.values() for p in c["steps"]})
    restarts = sorted({p["restarts"] for c in conv.values() for p in c["restarts"]})
    lines = ["", "## Convergence of the adaptive attack", "",
             "Accuracy of the adaptive PGD after each number of steps (first restart) and of restarts "
             "(all steps), on the adaptive images; `attack converged` fails when the last doubling "
             "still lowers accuracy beyond noise (paired sign test). A blank cell: not probed for "
             "that defense.", "",
             "| defense | n | " + " | ".join(f"{s} steps" for s in steps) + " | "
             + " | ".join(f"{r} restarts" for r in restarts) + " |",
             "|---" * (2 + len(steps) + len(restarts)) + "|"]
    for d, c in conv.items():
        at_steps = {p["steps"]: _pct(p["accuracy"]) for p in c["steps"]}
        at_restarts = {p["restarts"]: _pct(p["accuracy"]) for p in c["restarts"]}
        cells = [at_steps.get(s, "") for s in steps] + [at_restarts.get(r, "") for r in restarts]
        lines.append(f"| {d} | {c['n']} | " + " | ".join(cells) + " |")
    return lines


def _trained_lines(trained: dict[str, dict[str, Any]], substitute: str) -> list[str]:
    lines = ["", "## Trained defenses", "",
             "| defense | variant | training examples | epochs run | restored epoch | "
             "best validation loss | clean accuracy (all test images) |", "|---" * 7 + "|"]
    for name, t in trained.items():
        variant = ", ".join(f"{k}={t['spec'][k]}" for k in (
            "architecture", "loss", "guide", "sources", "source", "classifiers", "lam", "delta", "q",
            "generations", "perceptual") if k in t["spec"])
        lines.append(f"| {name} | {variant} | {t['train_examples']} | {t['epochs_run']} | "
                     f"{t['best_epoch'] + 1} | {t['best_val_loss']:.4f} | {_pct(t['clean_accuracy'])} |")
    return lines + _held_out_lines(trained, substitute)


def _held_out_lines(trained: dict[str, dict[str, Any]], substitute: str) -> list[str]:
    """Whether the substitute, the model the *blackbox (transfer)* rows are crafted on, made the
    training examples of a defense trained on crafted examples (HGD ``sources``, GCLN ``source``)."""
    lines = []
    for name, t in trained.items():
        spec = t["spec"]
        sources = spec.get("sources") or ([spec["source"]] if "source" in spec else [])
        if not sources:
            continue
        held = "substitute" not in sources
        lines.append(f"- `{name}`: training examples crafted on {' and '.join(sources)}; the substitute "
                     f"({substitute}) " + ("is held out, so its *blackbox (transfer)* rows come from a "
                                           "model unseen in training" if held else
                                           "made them, so its *blackbox (transfer)* rows are not "
                                           "from a held-out model"))
    return ["", *lines] if lines else []


def _calibration_lines(cal: dict[str, Any]) -> list[str]:
    """OAG's stopping criterion: each candidate's accuracy-vs-network-steps curve, summarised."""
    chosen = cal["chosen"]
    lines = ["", "## OAG calibration (Gaussian noise, Sec. III-D)", "",
             f"{cal['images']} training images with Gaussian noise (sigma "
             f"{cal['spec']['calibration']['noise_sigma']:g}); accuracy without OAG "
             f"{_pct(cal['noisy_accuracy'])}. T_N: the first network step within "
             f"{_pct(cal['spec']['calibration']['tolerance'])} points of the curve's peak.", "",
             "| eps_g | beta | init_std | peak accuracy | peak step | T_N | accuracy at T_N | last step |",
             "|---" * 8 + "|"]
    for c in cal["candidates"]:
        curve = c["curve"]
        lines.append(f"| {c['eps_g']:g} | {c['beta']:g} | {c['init_std']:g} | {_pct(c['peak'])} | "
                     f"{curve.index(c['peak']) + 1} | {c['stop_step']} | "
                     f"{_pct(curve[c['stop_step'] - 1])} | {_pct(curve[-1])} |")
    lines += ["", "Chosen: " + ", ".join(f"{k} {v:g}" for k, v in chosen.items()) + "."]
    if pinned := cal["spec"]["network_steps"]:
        lines += ["", f"The slot runs at its pinned T_N {pinned}, not at the calibrated "
                      f"{chosen['network_steps']}; an ablation variant with `network_steps: null` "
                      "runs at the calibrated one."]
    return lines


def collapsed(rows: list[dict[str, Any]], num_classes: int, bare: dict[str, float]) -> list[dict[str, Any]]:
    """Transfer columns whose purifier leaves clean images at chance, within 2 standard errors of
    1/num_classes, in front of a classifier (``bare``: name -> clean accuracy) that is not: a
    degenerate min-max solution that discards the image."""
    chance = 1 / num_classes

    def at_chance(accuracy: float, n: int) -> bool:
        return accuracy <= chance + 2 * (chance * (1 - chance) / n) ** 0.5

    return [{"defense": r["defense"], "column": r["column"], "clean_accuracy": r["accuracy"]}
            for r in rows if r["attack"] == "clean" and at_chance(r["accuracy"], r["n"])
            and r["evaluated_on"] in bare and not at_chance(bare[r["evaluated_on"]], r["n"])]


def _transfer_lines(transfer: dict[str, Any]) -> list[str]:
    """One table per defense: attacks x "trained on / evaluated on" (AdvAE Table 3 layout)."""
    lines = ["", "## Model transfer", "",
             "*X/A*: trained with classifier X (an ensemble {X,A,B}: Eq. 8; HGD: guided by X; "
             "*online*: OAG, which trains nothing), placed in front of classifier A and attacked "
             "through both (white-box) or crafted on A alone (oblivious: HGD Table 4's fixed test "
             "sets, OAG Table III's gray-box)."]
    if transfer["zoo"]:
        lines += ["", "| zoo classifier | architecture | clean accuracy |", "|---|---|---|"]
        lines += [f"| {k} | {z['arch']} | {_pct(z['clean_accuracy'])} |" for k, z in transfer["zoo"].items()]
    for defense in dict.fromkeys(r["defense"] for r in transfer["rows"]):
        mine = [r for r in transfer["rows"] if r["defense"] == defense]
        columns = list(dict.fromkeys(r["column"] for r in mine))
        threats = sorted({r["threat_model"] for r in mine} - {"none"})
        lines += ["", f"### `{defense}` ({', '.join(threats)})", "",
                  "| attack | n | " + " | ".join(columns) + " |", "|---" * (len(columns) + 2) + "|"]
        for attack, threat in dict.fromkeys((r["attack"], r["threat_model"]) for r in mine):
            of_attack = [r for r in mine if r["attack"] == attack and r["threat_model"] == threat]
            cells = {r["column"]: r for r in of_attack}
            if len(threats) > 1 and threat != "none":
                attack = f"{attack} ({threat})"
            lines.append(f"| {attack} | {_sizes(of_attack)} | "
                         + " | ".join(_cell(cells.get(c)) for c in columns) + " |")
            bare = {r["column"]: {"accuracy": r["undefended_accuracy"], "n": r["n"]}
                    for r in of_attack if "undefended_accuracy" in r}
            if bare:
                lines.append(f"| {attack}, no defense | {_sizes(list(bare.values()))} | "
                             + " | ".join(_cell(bare.get(c)) for c in columns) + " |")
        if dead := [c["column"] for c in transfer.get("collapsed", []) if c["defense"] == defense]:
            lines += ["", f"**Collapsed: {', '.join(dead)}.** Clean accuracy is at chance (within 2 "
                          "standard errors): the trained purifier discards the image, so these "
                          "columns' attack rows measure nothing about robustness."]
    return lines


def _ablation_lines(ablation: dict[str, Any]) -> list[str]:
    """One row per variant: clean accuracy and each (attack, threat model) column."""
    rows = ablation["rows"]
    columns = list(dict.fromkeys(f"{r['attack']} {_column(r)}" for r in rows if r["attack"] != "clean"))
    lines = ["", "## Ablations", "",
             "EGC-FL `egcfl_gen<k>`: the trained slot with K = k feedback generations at test time "
             "(Table 6); other variants are retrained with the listed keys replaced (Table 7, the "
             "GCLN Qs sweep); OAG variants (T_I, kernel, online auto-encoder: Tables IV-V, Sec. "
             "IV-H) use the slot's calibrated eps_g, beta and init_std and the T_N in parentheses: "
             "the slot's, or calibrate_oag's where the variant sets `network_steps: null` "
             "(*calibrated*).", "",
             "| variant | n | clean | " + " | ".join(columns) + " |",
             "|---" * (len(columns) + 3) + "|"]
    for variant in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == variant]
        cells = {("clean" if r["attack"] == "clean" else f"{r['attack']} {_column(r)}"): r for r in mine}
        label, first = variant, mine[0]
        if "network_steps" in first:  # an OAG variant: the T_N it ran at
            calibrated = "network_steps" in first["set"] and first["set"]["network_steps"] is None
            label += f" (T_N {first['network_steps']}{', *calibrated*' if calibrated else ''})"
        lines.append(f"| {label} | {_sizes(mine)} | {_cell(cells.get('clean'))} | "
                     + " | ".join(_cell(cells.get(c)) for c in columns) + " |")
    if noise := ablation.get("noise_energy"):
        lines += ["", f"EGC-FL Fig. 4, attack noise energy on {len(noise['before'])} `{noise['attack']}` "
                  f"examples: mean ||X - X*||_2 = {noise['mean_before']:.3f} before the TDZ, "
                  f"{noise['mean_after']:.3f} after it (ratio {noise['ratio']:.3f})."]
    return lines


def _diff(v: float | None, claimed: float, same: bool) -> str:
    """Reproduced minus claimed, in points; no difference across different settings."""
    if not same:
        return "setting differs"
    return "" if v is None else f"{100 * (v - claimed):+.1f}"


def _claims_lines(comparison: dict[str, list[dict[str, Any]]], titles: dict[str, str],
                  data_note: str | None = None) -> list[str]:
    """Per paper: claimed, reproduced under its protocol and under the adaptive attack."""
    lines = ["", "## Claimed vs reproduced", "",
             "Each paper's accuracy claims about a configuration a slot reproduces "
             "(reference/claims.yaml; its other numbers concern methods repurify does not implement "
             "or ablation variants). *Paper's protocol*: the same threat model as the paper (white-box "
             "through autograd's gradients where the paper did so; *not stated* where the paper does "
             "not say how its white-box attack got gradients); *adaptive*: the white-box attack "
             "with BPDA/EOT. Where this profile's setting differs from the paper's, the differences "
             "are not computed: the numbers beside the claim are this profile's analogue."]
    if data_note:
        lines += ["", f"**Data.** {data_note}"]
    for paper, rows in comparison.items():
        lines += ["", f"### {paper}: {titles[paper]}", ""]
        if not rows:
            lines.append("No claim about a reproduced configuration.")
            continue
        lines += ["| claim | source | method (slot) | dataset | classifier | threat model (paper: repurify) "
                  "| attack | eps | claimed | paper's protocol | diff. | adaptive | diff. | setting |",
                  "|---" * 14 + "|"]
        for r in rows:
            same = not r["setting_differs"]
            paper_name = r["threat_model_paper"] or "not stated"
            protocol = ("not stated" if r["gradient"] == "unknown" and r["paper_protocol"] is None
                        else _pct(r["paper_protocol"]))
            lines.append(
                f"| {r['id']} | {r['source']} | {r['method']} ({r['defense']}) | {r['dataset'] or ''} | "
                f"{r['classifier'] or ''} | "
                f"{paper_name}: {r['threat_model']} | {r['attack']}"
                f"{' (' + r['profile_attack'] + ')' if r['profile_attack'] else ''} | {r['eps'] or ''} | "
                f"{_pct(r['claimed'])} | {protocol} | "
                f"{_diff(r['paper_protocol'], r['claimed'], same)} | {_pct(r['adaptive'])} | "
                f"{_diff(r['adaptive'], r['claimed'], same)} | "
                f"{'same' if same else 'differs: ' + '; '.join(r['setting_differs'])} |")
    return lines


def _masking_lines(masking: dict[str, dict[str, Any]]) -> list[str]:
    """One row of check statuses per defense, then each defense's evidence."""
    names = list(dict.fromkeys(c["name"] for m in masking.values() for c in m["checks"]))
    lines = ["", "## Gradient-masking checks", "",
             "Carlini et al. (2019) checklist and AutoAttack's checks (repurify/masking.py), on the "
             "adaptive images, each comparison paired image by image (sign test, p < 0.05; "
             "*a vs b (+h/-l images of n, p)*: a is higher on h images and lower on l): "
             "*suspected* when a check of the defense fails, *inconclusive* when one did not run, "
             "*weak* where a check ran below its telling budget; the last column judges the paper's "
             "own white-box protocol. Evidence below each table.", "",
             "| defense | verdict | " + " | ".join(names) + " |", "|---" * (len(names) + 2) + "|"]
    for defense, m in masking.items():
        status = {c["name"]: c["status"] for c in m["checks"]}
        lines.append(f"| {defense} | **{m['verdict']}** | "
                     + " | ".join(status.get(n, "") for n in names) + " |")
    for defense, m in masking.items():
        lines += ["", f"- `{defense}`:"]
        lines += [f"  - {c['name']} ({c['status']}): {c['evidence']}" for c in m["checks"]]
    return lines


def _figure_lines(figures: dict[str, str]) -> list[str]:
    lines = ["", "## Figures", ""]
    return lines + [f"![{title}]({path})\n" for title, path in figures.items()]


def render_markdown(profile: str, description: str, classifiers: dict[str, Any],
                    rows: list[dict[str, Any]], trained: dict[str, dict[str, Any]],
                    transfer: dict[str, Any] | None = None,
                    ablation: dict[str, Any] | None = None,
                    calibration: dict[str, Any] | None = None,
                    masking: dict[str, dict[str, Any]] | None = None,
                    claims: tuple[dict[str, list[dict[str, Any]]], dict[str, str]] | None = None,
                    figures: dict[str, str] | None = None,
                    evaluations: dict[str, dict[str, Any]] | None = None, attack: str = "pgd",
                    data_note: str | None = None) -> str:
    """Markdown: classifiers, trained defenses, OAG's calibration, per defense a table attack x
    threat model, the gradient-masking verdicts, each paper's claims beside the reproduced
    numbers, the model-transfer grid, the ablations and the figures (title -> relative path)."""
    columns = ["oblivious", "blackbox (transfer)", "blackbox (papernot)", "whitebox"]
    if any(_column(r) == "whitebox (autograd)" for r in rows):
        columns.append("whitebox (autograd)")
    lines = [f"# repurify report: `{profile}`", "", description]
    if evaluations:
        lines += _headline_lines(evaluations, masking or {}, attack) + _convergence_lines(evaluations)
    lines += ["",
             "Accuracies in % ± one standard error (over images; for a randomized defense over "
             "images of per-image draw means), on the *n* evaluated test images of each row. "
             "*oblivious*: crafted on the bare target; *blackbox (transfer)*: crafted on the "
             "substitute classifier; *blackbox (papernot)*: substitute trained on the defended "
             "model's labels; *whitebox*: adaptive attack on purifier + classifier (BPDA at "
             "non-differentiable layers, EOT for randomized purifiers); *whitebox (autograd)*: the "
             "same attacks through autograd's own gradients at those layers: the EGC-FL paper's "
             f"protocol; for GCLN, whose paper does not state its gradients, {AUTOGRAD_DEMO}. "
             "AutoAttack runs as its `rand` version against randomized "
             "purifiers (OAG); their rows are means over fresh draws per image.", "",
             "## Classifiers", "",
             "Clean accuracy on every test image; the defense tables below evaluate the first "
             "`evaluation.n` of them (their clean row, e.g. `none`'s, is on those).", "",
             "| role | architecture | test images | clean accuracy |", "|---|---|---|---|"]
    for role, c in classifiers.items():
        n = c.get("n_test")
        acc = _pct(c["clean_accuracy"]) if n is None else _cell({"accuracy": c["clean_accuracy"], "n": n})
        lines.append(f"| {role} | {c['arch']} | {n or ''} | {acc} |")
    if trained:
        lines += _trained_lines(trained, classifiers.get("substitute", {}).get("arch", "none"))
    if calibration:
        lines += _calibration_lines(calibration)
    for defense in dict.fromkeys(r["defense"] for r in rows):
        mine = [r for r in rows if r["defense"] == defense]
        clean = next(r for r in mine if r["attack"] == "clean")
        lines += ["", f"## Defense `{defense}` (clean {_cell(clean)}, n {clean['n']})", ""]
        if PAPER_PROTOCOL.get(defense) != ("whitebox", "autograd") and any(
                _column(r) == "whitebox (autograd)" for r in mine):
            lines += [f"*whitebox (autograd)*: {AUTOGRAD_DEMO}, not the paper's protocol.", ""]
        lines += ["| attack | n | " + " | ".join(columns) + " |", "|---" * (len(columns) + 2) + "|"]
        for attack in dict.fromkeys(r["attack"] for r in mine if r["attack"] != "clean"):
            of_attack = [r for r in mine if r["attack"] == attack]
            cells = {_column(r): r for r in of_attack}
            lines.append(f"| {attack} | {_sizes(of_attack)} | "
                         + " | ".join(_cell(cells.get(c)) for c in columns) + " |")
    if masking:
        lines += _masking_lines(masking)
    if claims:
        lines += _claims_lines(*claims, data_note=data_note)
    if transfer and transfer["rows"]:
        lines += _transfer_lines(transfer)
    if ablation and ablation["rows"]:
        lines += _ablation_lines(ablation)
    if figures:
        lines += _figure_lines(figures)
    return "\n".join(lines) + "\n"
