"""The reproduction report: one row per (defense, attack, threat model)."""

from __future__ import annotations

from typing import Any

THREATS = ("oblivious", "blackbox", "whitebox")


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
    return row["threat_model"]


def _pct(v: float | None) -> str:
    return "" if v is None else f"{100 * v:.1f}"


def _trained_lines(trained: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["", "## Trained defenses", "",
             "| defense | variant | training examples | epochs run | restored epoch | "
             "best validation loss | clean accuracy (all test images) |", "|---" * 7 + "|"]
    for name, t in trained.items():
        variant = ", ".join(f"{k}={t['spec'][k]}" for k in ("architecture", "loss", "guide",
                                                             "classifiers", "lam") if k in t["spec"])
        lines.append(f"| {name} | {variant} | {t['train_examples']} | {t['epochs_run']} | "
                     f"{t['best_epoch'] + 1} | {t['best_val_loss']:.4f} | {_pct(t['clean_accuracy'])} |")
    return lines


def _transfer_lines(transfer: dict[str, Any]) -> list[str]:
    """One table per defense: attacks x "trained on / evaluated on" (AdvAE Table 3 layout)."""
    lines = ["", "## Model transfer (white-box)", "",
             "*X/A*: trained with classifier X (an ensemble {X,A,B}: Eq. 8; HGD: guided by X), "
             "placed in front of classifier A and attacked through both."]
    if transfer["zoo"]:
        lines += ["", "| zoo classifier | architecture | clean accuracy |", "|---|---|---|"]
        lines += [f"| {k} | {z['arch']} | {_pct(z['clean_accuracy'])} |" for k, z in transfer["zoo"].items()]
    for defense in dict.fromkeys(r["defense"] for r in transfer["rows"]):
        mine = [r for r in transfer["rows"] if r["defense"] == defense]
        columns = list(dict.fromkeys(r["column"] for r in mine))
        lines += ["", f"### `{defense}`", "", "| attack | " + " | ".join(columns) + " |",
                  "|---" * (len(columns) + 1) + "|"]
        for attack in dict.fromkeys(r["attack"] for r in mine):
            cells = {r["column"]: r["accuracy"] for r in mine if r["attack"] == attack}
            lines.append(f"| {attack} | " + " | ".join(_pct(cells.get(c)) for c in columns) + " |")
    return lines


def render_markdown(profile: str, description: str, classifiers: dict[str, Any],
                    rows: list[dict[str, Any]], trained: dict[str, dict[str, Any]],
                    transfer: dict[str, Any] | None = None) -> str:
    """Markdown: classifiers, trained defenses, per defense a table attack x threat model, then
    the model-transfer grid."""
    columns = ["oblivious", "blackbox (transfer)", "blackbox (papernot)", "whitebox"]
    lines = [f"# repurify report: `{profile}`", "", description, "",
             "Accuracies in %, on the evaluated test images (n per row in summary.json). "
             "*oblivious*: crafted on the bare target; *blackbox (transfer)*: crafted on the "
             "substitute classifier; *blackbox (papernot)*: substitute trained on the defended "
             "model's labels; *whitebox*: adaptive attack on purifier + classifier (BPDA at "
             "non-differentiable layers, EOT for randomized purifiers).", "",
             "## Classifiers", "", "| role | architecture | clean accuracy |", "|---|---|---|"]
    for role, c in classifiers.items():
        lines.append(f"| {role} | {c['arch']} | {_pct(c['clean_accuracy'])} |")
    if trained:
        lines += _trained_lines(trained)
    for defense in dict.fromkeys(r["defense"] for r in rows):
        mine = [r for r in rows if r["defense"] == defense]
        clean = next(r["accuracy"] for r in mine if r["attack"] == "clean")
        lines += ["", f"## Defense `{defense}` (clean {_pct(clean)})", "",
                  "| attack | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
        for attack in dict.fromkeys(r["attack"] for r in mine if r["attack"] != "clean"):
            cells = {(_column(r)): r["accuracy"] for r in mine if r["attack"] == attack}
            lines.append(f"| {attack} | " + " | ".join(_pct(cells.get(c)) for c in columns) + " |")
    if transfer and transfer["rows"]:
        lines += _transfer_lines(transfer)
    return "\n".join(lines) + "\n"
