"""AutoAttack's ``rand`` version against a profile's OAG: the package's own loop versus
repurify's point-by-point path, scored alike on fresh draws (an instrument figure, not a speed one).

The package drops an image as soon as one noisy draw misclassifies it and keeps the clean image
wherever its last draw says "robust"; repurify runs APGD-CE and APGD-DLR with EOT on every image
and keeps, per image, the candidate of lowest multi-draw accuracy. Run after the profile's
``calibrate_oag`` stage: ``python -m benchmarks.autoattack_rand --profile digits``.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from pyautoattack import AutoAttack

from repurify.attacks.autoattack import autoattack
from repurify.attacks.base import Goal
from repurify.defenses import bpda
from repurify.params import load_params
from repurify.runtime import resolve_device
from repurify.scoring import correct
from repurify.stats import paired
from stages._defended import load_defended


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="digits")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = ap.parse_args(argv)
    params = load_params("params.yaml", args.profile)
    ev = params.active.evaluation
    adaptive = ev.adaptive_for("oag")
    device = resolve_device(args.device)
    defended, data = load_defended(params, "oag", device)
    x, y = data.x[:adaptive.n].to(device), data.y[:adaptive.n].to(device)
    aa = AutoAttack(defended, norm="Linf", eps=adaptive.eps, version="rand", seed=params.seed,
                    device=device)
    aa.verbose, aa.apgd.n_iter, aa.apgd.eot_iter = True, adaptive.apgd_iterations, ev.eot_samples
    out = {"n": len(y), "device": str(device), "eps": adaptive.eps,
           "apgd_iterations": adaptive.apgd_iterations, "eot_samples": ev.eot_samples, "draws": ev.draws,
           "seconds": {}}

    def score(name: str, adversarial: torch.Tensor, seconds: float) -> list[bool]:
        hits = correct(defended, adversarial, y, draws=ev.draws, batch_size=ev.batch_size).tolist()
        out[f"{name}_accuracy"], out["seconds"][name] = sum(hits) / len(y), round(seconds)
        print(json.dumps(out, indent=1), flush=True)  # ours first: a cut-off run still gives it
        return hits

    with bpda(True):  # both through OAG's identity gradient, as the evaluation attacks it
        started = time.perf_counter()
        ours = autoattack(defended, x, Goal(y), norm="linf", eps=adaptive.eps, version="rand",
                          attacks=None, seed=params.seed, n_iter=adaptive.apgd_iterations,
                          samples=ev.eot_samples)
        after = score("point_by_point", ours, time.perf_counter() - started)
        started = time.perf_counter()
        package, _ = aa.run_standard_evaluation(x, y, batch_size=len(x))
        before = score("package_loop", package, time.perf_counter() - started)
    out["paired"] = paired(before, after)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
