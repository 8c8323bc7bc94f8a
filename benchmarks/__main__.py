"""``python -m benchmarks``: run the benchmarks, write benchmarks/results.json and results.md."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from benchmarks.attacks import attack_overhead, pgd_vs_reference
from benchmarks.machine import machine
from benchmarks.oag import oag_batching
from repurify import paths
from repurify.data import load_dataset
from repurify.errors import RepurifyError
from repurify.io import write_json, write_text
from repurify.models import load_classifier
from repurify.params import load_params
from repurify.runtime import resolve_device
from repurify.training import to_unit

HERE = Path(__file__).resolve().parent


def markdown(results: dict[str, Any]) -> str:
    m, o = results["machine"], results["oag_batching"]
    a, r = results["attack_overhead"], results["pgd_vs_reference"]
    return "\n".join([
        "# repurify benchmarks", "",
        f"Machine: {m['cpu_cores']} cores, {m['torch_threads']} torch threads, torch {m['torch']}, "
        f"device {m['device']}{' (' + m['gpu'] + ')' if m['gpu'] else ''}.", "",
        "| figure | value | goal |", "|---|---|---|",
        f"| PGD-{a['steps']} / ({a['steps']} x forward+backward), batch {a['batch']} | {a['ratio']:.3f} "
        f"({a['seconds_pgd']:.3f} s vs {a['seconds_forward_backward'] * 1e3:.2f} ms per pass) | "
        f"<= {a['goal_ratio']:g} |",
        f"| PGD-{r['steps']} time, repurify / ART, batch {r['batch']} | {r['time_ratio']:.3f} "
        f"({r['seconds_repurify']:.3f} s vs {r['seconds_reference']:.3f} s; robust accuracy "
        f"{100 * r['robust_accuracy_repurify']:.1f} vs {100 * r['robust_accuracy_reference']:.1f}, clean "
        f"{100 * r['clean_accuracy']:.1f}) | <= {r['goal_time_ratio']:g}, accuracy <= ART's |",
        f"| OAG batched / one-at-a-time speed-up (batch {o['batch']}, {o['image_shape']}, "
        f"T_I {o['image_steps']}, k {o['kernel']}, K {o['filters']}) | {o['speedup']:.1f}x "
        f"({o['images_per_second_batched']:.2f} vs {o['images_per_second_loop']:.2f} images/s at "
        f"T_N {o['network_steps']}) | >= {o['goal_speedup']:g}x |", ""])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    ap.add_argument("--profile", default="digits", help="params profile whose settings are timed")
    ap.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--batch", type=int, default=64, help="OAG images synthesized at once")
    ap.add_argument("--network-steps", type=int, default=3, help="OAG T_N timed (cost is linear)")
    ap.add_argument("--attack-batch", type=int, help="images attacked (default evaluation.batch_size)")
    ap.add_argument("--out", default=str(HERE / "results.json"))
    args = ap.parse_args(argv)
    params = load_params("params.yaml", args.profile)
    prof, device = params.active, resolve_device(args.device)
    shape = (prof.data.channels, prof.data.image_size, prof.data.image_size)
    try:  # the profile's trained target and its test images (`dvc repro train_classifier`)
        target = load_classifier(paths.path(paths.CLASSIFIER, args.profile, role="target"),
                                 expect={"arch": prof.classifiers.target.arch})
        split = load_dataset(paths.path(paths.DATASET, args.profile)).split
    except RepurifyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    target = target.to(device).eval().requires_grad_(False)
    n = args.attack_batch or prof.evaluation.batch_size
    x, y = to_unit(split.x_test[:n]).to(device), split.y_test[:n].to(device)
    spec = prof.attacks[prof.evaluation.checks.attack]
    budget = {"eps": spec.eps, "step_size": spec.step_size, "steps": spec.steps}
    results = {"profile": args.profile, "machine": machine(device),
               "attack_overhead": attack_overhead(target, x, y, **budget),
               "pgd_vs_reference": pgd_vs_reference(target, x, y, **budget),
               "oag_batching": oag_batching(prof.defenses["oag"], shape, batch=args.batch,
                                            network_steps=args.network_steps, device=device)}
    write_json(args.out, results)
    text = markdown(results)
    write_text(Path(args.out).with_suffix(".md"), text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
