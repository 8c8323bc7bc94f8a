"""``python -m benchmarks``: run the benchmarks, write benchmarks/results.json and results.md."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from benchmarks.machine import machine
from benchmarks.oag import oag_batching
from repurify.io import write_json, write_text
from repurify.params import load_params
from repurify.runtime import resolve_device

HERE = Path(__file__).resolve().parent


def markdown(results: dict[str, Any]) -> str:
    m, o = results["machine"], results["oag_batching"]
    return "\n".join([
        "# repurify benchmarks", "",
        f"Machine: {m['cpu_cores']} cores, {m['torch_threads']} torch threads, torch {m['torch']}, "
        f"device {m['device']}{' (' + m['gpu'] + ')' if m['gpu'] else ''}.", "",
        "| figure | value | goal |", "|---|---|---|",
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
    ap.add_argument("--out", default=str(HERE / "results.json"))
    args = ap.parse_args(argv)
    prof = load_params("params.yaml", args.profile).active
    device = resolve_device(args.device)
    shape = (prof.data.channels, prof.data.image_size, prof.data.image_size)
    results = {"profile": args.profile, "machine": machine(device),
               "oag_batching": oag_batching(prof.defenses["oag"], shape, batch=args.batch,
                                            network_steps=args.network_steps, device=device)}
    write_json(args.out, results)
    text = markdown(results)
    write_text(Path(args.out).with_suffix(".md"), text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
