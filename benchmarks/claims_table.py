"""A partial run's claimed-vs-reproduced rows, outside the report stage (which needs every slot):
``python -m benchmarks.claims_table --profile mnist5k --root RUN --note TEXT --out FILE``.

``RUN`` is a tree that ran some evaluate stages of ``profile`` (``RUN/params.yaml``,
``RUN/metrics/<profile>/eval/<slot>.json``). Each claim the present slots reproduce with no
setting difference becomes a row: the paper's number, the number under its protocol with the
row's image count and standard error, and the difference. ``benchmarks`` renders the file into
results.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from repurify.claims import compare, load_claims, matching_attack, paper_row, pooled_parts
from repurify.io import load_json, write_json
from repurify.params import load_params
from repurify.stats import row_standard_error, standard_error

ROOT = Path(__file__).resolve().parent.parent


def _measured(claim: Any, paper: Any, profile: Any, evaluation: dict[str, Any]) -> dict[str, Any] | None:
    """The image count and standard error behind the claim's reproduced accuracy: its row's, or a
    pooled test set's, whose equal parts attack the same images: the SE of the per-image mean over
    the parts (where the rows keep their per-image scores; else the parts' mean SE, an upper bound)."""
    if claim.threat_model == "none":
        return {"n": evaluation["clean"]["n"], "se": row_standard_error(evaluation["clean"])}
    parts = []
    for part in pooled_parts(claim):
        attack = matching_attack(part, profile)
        row = None if attack is None else paper_row(part, paper, evaluation["results"], attack)
        if row is None:
            return None
        parts.append(row)
    if len(parts) > 1 and all("correct" in r for r in parts):
        se = standard_error([sum(c) / len(c) for c in zip(*(r["correct"] for r in parts), strict=True)])
    else:
        se = sum(row_standard_error(r) for r in parts) / len(parts)
    return {"n": parts[0]["n"], "se": se}


def rows(profile_name: str, run: Path) -> list[dict[str, Any]]:
    profile = load_params(run / "params.yaml", profile_name).active
    evaluations = {slot: load_json(path, produced_by=f"evaluate_{slot}") for slot in profile.defenses
                   if (path := run / "metrics" / profile_name / "eval" / f"{slot}.json").exists()}
    claims = load_claims(ROOT / "reference/claims.yaml")
    out = []
    for name, compared in compare(claims, profile, evaluations).items():
        paper = claims.papers[name]
        by_id = {c.id: c for c in paper.claims}
        for r in compared:
            measured = _measured(by_id[r["id"]], paper, profile, evaluations[r["defense"]])
            if r["setting_differs"] or measured is None or r["paper_protocol"] is None:
                continue
            p = r["paper_protocol"]
            out.append({"id": r["id"], "method": r["method"], "attack": r["attack"],
                        "threat_model": r["threat_model"], "claimed": r["claimed"], "reproduced": p,
                        **measured, "difference": p - r["claimed"]})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.claims_table", description=__doc__)
    ap.add_argument("--profile", required=True)
    ap.add_argument("--root", required=True, help="the tree whose params and metrics ran")
    ap.add_argument("--note", required=True, help="what ran where (the table's caption)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    found = rows(args.profile, Path(args.root))
    if not found:
        print(f"error: no claim compares in {args.root} for profile {args.profile}", file=sys.stderr)
        return 2
    write_json(args.out, {"source": args.note, "rows": found})
    print(f"{len(found)} claims compared -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
