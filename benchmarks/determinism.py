"""Which numeric kernels make the pipeline's bytes CPU-dependent: the profile's target and
substitute trained as ``train_classifier`` trains them, under each knob, with their final train
loss and the md5 of their weights. Run it on two machines (say an Intel and an AMD one): a knob
whose lines agree on both gives the same bytes on both. Needs ``data/<profile>/dataset.pt``
(``dvc repro fetch_data``); writes nothing.

    python -m benchmarks.determinism --profile digits [--knobs "committed pins" "oneDNN off"]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys

import stages  # noqa: F401  (first: the committed pins, before torch loads)
from workflow.imports import ROOT
from workflow.machine import cpu_name

# environment on top of stages/__init__'s pins; REPURIFY_NO_MKLDNN turns oneDNN off in the child
KNOBS: dict[str, dict[str, str]] = {
    "committed pins": {},
    "MKL_CBWR=COMPATIBLE": {"MKL_CBWR": "COMPATIBLE"},
    "oneDNN off": {"REPURIFY_NO_MKLDNN": "1"},
    "ATEN_CPU_CAPABILITY=default": {"ATEN_CPU_CAPABILITY": "default"},
    "oneDNN off, MKL_CBWR=COMPATIBLE": {"REPURIFY_NO_MKLDNN": "1", "MKL_CBWR": "COMPATIBLE"},
}


def _train(profile: str) -> dict[str, dict[str, object]]:
    """In the child: train both classifiers as the stage does; loss and weights' md5 per role."""
    import torch

    if os.environ.get("REPURIFY_NO_MKLDNN"):
        torch.backends.mkldnn.enabled = False
    from repurify import paths
    from repurify.data import load_dataset
    from repurify.params import load_params
    from repurify.training import fit_classifier

    params = load_params(ROOT / "params.yaml", profile)
    ds = load_dataset(paths.path(paths.DATASET, profile))
    out = {}
    for role in paths.ROLES:
        model, hist, _ = fit_classifier(getattr(params.active.classifiers, role), ds,
                                        torch.device("cpu"), params.seed, role)
        weights = b"".join(t.detach().cpu().numpy().tobytes() for t in model.state_dict().values())
        out[role] = {"train_loss": hist.loss[-1], "md5": hashlib.md5(weights).hexdigest()}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="digits")
    ap.add_argument("--knobs", nargs="+", choices=list(KNOBS), default=list(KNOBS))
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(_train(args.profile)))
        return 0
    print(f"{cpu_name()}, profile {args.profile}")
    for knob in args.knobs:
        env = {**os.environ, **KNOBS[knob]}
        res = subprocess.run([sys.executable, "-m", "benchmarks.determinism", "--profile", args.profile,
                              "--child"], cwd=ROOT, env=env, capture_output=True, text=True)
        if res.returncode:
            print(res.stderr, file=sys.stderr)
            return res.returncode
        roles = json.loads(res.stdout.splitlines()[-1])
        print(f"{knob:34s} " + "  ".join(f"{r}: loss {v['train_loss']:.6f} md5 {v['md5'][:8]}"
                                          for r, v in roles.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
