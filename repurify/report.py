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


def render_markdown(profile: str, description: str, classifiers: dict[str, Any],
                    rows: list[dict[str, Any]], trained: dict[str, dict[str, Any]]) -> str:
    """Markdown: classifiers, trained defenses, then per defense a table attack x threat model."""
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
    return "\n".join(lines) + "\n"
