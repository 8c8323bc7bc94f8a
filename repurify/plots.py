"""The report's figures: long-format series (x, y, series) written as CSV for ``dvc plots`` and
drawn as PNG for the markdown report, plus image grids (clean / adversarial / purified).

:data:`PLOTS` is the one list of series plots; ``workflow/dag.py`` renders their ``dvc plots``
definitions (template ``.dvc/plots/series.json``: one line per ``series``) from it.
"""

from __future__ import annotations

import collections
import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from repurify.io import atomic_path

Rows = list[dict[str, Any]]
MARKERS = "os^vD<>pPX*h"  # one per line, hollow: lines over one another stay apart


@dataclass(frozen=True)
class Plot:
    """One series plot: the x field, title and axis labels (y is ``accuracy`` unless named)."""

    x: str
    title: str
    x_label: str
    y: str = "accuracy"
    y_label: str = "accuracy"


PLOTS: dict[str, Plot] = {
    "eps_sweep": Plot("eps", "White-box accuracy vs eps (EGC-FL Fig. 5 bottom; the last eps is "
                      "unbounded)", "eps (L-inf)"),
    "iterations": Plot("iteration", "White-box accuracy vs attack iterations (EGC-FL Fig. 5 top, "
                       "GCLN Fig. 3 right)", "iterations"),
    "gen_k": Plot("generations", "EGC-FL: accuracy vs feedback generations K (Table 6)",
                  "generations K"),
    "qs_sweep": Plot("q", "GCLN: accuracy vs quantization step q (Fig. 3 left; Qs = 255 q)",
                     "q"),
    "oag_steps": Plot("step", "OAG: accuracy vs network steps on Gaussian-noised images (Fig. 4)",
                      "network step"),
    "noise_energy": Plot("image", "EGC-FL: attack noise energy ||X - X*||_2 before / after the TDZ "
                         "(Fig. 4)", "image", y="energy", y_label="noise energy"),
}


def _series(row: dict[str, Any]) -> str:
    source = f" ({row['source']})" if row.get("source") == "autograd" else ""
    return f"{row['attack']} {row['threat_model']}{source}"


def eps_sweep_rows(checks: dict[str, dict[str, Any]]) -> Rows:
    return [{"eps": p["eps"], "accuracy": p["accuracy"], "series": d}
            for d, c in checks.items() for p in c["eps_sweep"]]


def iteration_rows(checks: dict[str, dict[str, Any]]) -> Rows:
    """Each defense's accuracy after k iterations at the attack's own eps (when swept)."""
    rows = []
    for d, c in checks.items():
        for p in c["eps_sweep"]:
            if math.isclose(p["eps"], c["attack_eps"], rel_tol=1e-9):
                rows += [{"iteration": k, "accuracy": a, "series": d} for k, a in enumerate(p["iterations"])]
    return rows


def gen_k_rows(ablation: dict[str, Any]) -> Rows:
    return [{"generations": r["generations"], "accuracy": r["accuracy"], "series": _series(r)}
            for r in ablation["rows"] if "generations" in r and r["attack"] != "clean"]


def key_sweep_rows(ablation: dict[str, Any], variants: dict[str, Any], key: str, slot_value: Any,
                   slot_rows: Rows) -> Rows:
    """Accuracy against one spec key: the ablation variants that set ``key`` (``variants``: name
    -> value) and the slot itself at ``slot_value`` (its evaluation rows)."""
    def same(r: dict[str, Any]) -> tuple:  # oblivious examples are the bare target's, named or not
        return (r["attack"], r["threat_model"], r.get("source") or
                ("target" if r["threat_model"] == "oblivious" else None), r["n"])

    kept = {same(r) for r in ablation["rows"] if r["variant"] in variants}
    rows = [{key: variants[r["variant"]], "accuracy": r["accuracy"], "series": _series(r)}
            for r in ablation["rows"] if r["variant"] in variants and r["attack"] != "clean"]
    rows += [{key: slot_value, "accuracy": r["accuracy"], "series": _series(r)} for r in slot_rows
             if same(r) in kept]  # the slot's own point, on the same images only
    return sorted(rows, key=lambda r: (r["series"], r[key]))


def oag_step_rows(calibration: dict[str, Any]) -> Rows:
    return [{"step": i + 1, "accuracy": a,
             "series": f"eps_g {c['eps_g']:g}, beta {c['beta']:g}, init_std {c['init_std']:g}"}
            for c in calibration["candidates"] for i, a in enumerate(c["curve"])]


def noise_energy_rows(ablation: dict[str, Any]) -> Rows:
    noise = ablation.get("noise_energy")
    if not noise:
        return []
    return [{"image": i, "energy": v, "series": f"{when} TDZ"}
            for when in ("before", "after") for i, v in enumerate(noise[when])]


def write_csv(path: str | Path, plot: Plot, rows: Rows) -> None:
    """``x, y, series`` rows (a header alone when the profile has no such data)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=[plot.x, plot.y, "series"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def coinciding(rows: Rows, plot: Plot) -> dict[tuple, list[str]]:
    """The series' points, series with identical points together (one line, labelled ``a = b``)."""
    lines: dict[tuple, list[str]] = {}
    for name in dict.fromkeys(r["series"] for r in rows):
        points = tuple((r[plot.x], r[plot.y]) for r in rows if r["series"] == name)
        lines.setdefault(points, []).append(name)
    return lines


def shared_points(lines: dict[tuple, list[str]]) -> int:
    """How many (x, y) points lie on more than one drawn line."""
    seen = collections.Counter(p for points in lines for p in set(points))
    return sum(1 for n in seen.values() if n > 1)


def draw(path: str | Path, plot: Plot, rows: Rows) -> None:
    """One line per series; a note instead of axes when there is no data."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    lines = coinciding(rows, plot)
    for i, (points, names) in enumerate(lines.items()):
        ax.plot([x for x, _ in points], [y for _, y in points], linewidth=1, label=" = ".join(names),
                marker="" if len(points) > 40 else MARKERS[i % len(MARKERS)], markersize=3, fillstyle="none")
    if rows and all(isinstance(r[plot.x], int) for r in rows):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if shared := shared_points(lines):
        fig.text(0.01, 0.01, f"{shared} points lie on more than one line (drawn over one another; the "
                 "markers tell the lines apart)", fontsize=6)
    if lines:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no data in this profile", ha="center", va="center", transform=ax.transAxes)
    ax.set(title=plot.title, xlabel=plot.x_label, ylabel=plot.y_label)
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)
    _save(fig, path)


def image_grid(path: str | Path, rows: dict[str, torch.Tensor], title: str) -> None:
    """Images in [0,1] (N, C, H, W), one row per entry of ``rows``."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    n = max(len(v) for v in rows.values())
    fig, axes = plt.subplots(len(rows), n, figsize=(1.2 * n, 1.3 * len(rows)), squeeze=False, dpi=100)
    for r, (label, images) in enumerate(rows.items()):
        for c in range(n):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(images):
                img = images[c].detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy()
                ax.imshow(img[..., 0] if img.shape[2] == 1 else img, cmap="gray", vmin=0, vmax=1)
        axes[r][0].set_ylabel(label, fontsize=8)
    fig.suptitle(title, fontsize=9)
    _save(fig, path)


def _save(fig: Any, path: str | Path) -> None:
    from matplotlib import pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
