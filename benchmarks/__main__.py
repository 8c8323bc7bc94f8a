"""``python -m benchmarks``: run the benchmarks, write benchmarks/results.json and results.md."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from benchmarks.attacks import attack_overhead, pgd_vs_reference
from benchmarks.eot import eot_stacking
from benchmarks.oag import oag_batching
from benchmarks.pipeline import install, pipeline, recorded
from repurify import paths
from repurify.data import load_dataset
from repurify.errors import RepurifyError
from repurify.io import write_json, write_text
from repurify.models import load_classifier
from repurify.params import load_params
from repurify.runtime import resolve_device
from repurify.training import to_unit
from workflow.dag import stages, stale
from workflow.machine import machine

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
GPU = HERE / "gpu.json"  # the last GPU run (benchmarks/device.sh), rendered as the "GPU" section
MISSES = HERE / "misses.md"  # the goals missed and their profiles (written by hand from the figures)
# mnist5k's partial CPU run (``python -m benchmarks.claims_table``), rendered after the GPU section
MNIST5K_CPU = HERE / "mnist5k_cpu.json"
EDITED = ("repurify/defenses/oag.py",)  # files whose edit the rerun figure follows
EOT_IMAGES = 10  # ours: digits' OAG adaptive set (evaluation.limits.oag.n)


def markdown(results: dict[str, Any]) -> str:
    m, o = results["machine"], results["oag_batching"]
    a, r = results["attack_overhead"], results["pgd_vs_reference"]
    return "\n".join([
        "# repurify benchmarks", "",
        f"Machine: {m['cpu_cores']} cores, {m['torch_threads']} torch threads, torch {m['torch']}, "
        f"device {m['device']}{' (' + m['gpu'] + ')' if m['gpu'] else ''}.", "",
        "| figure | value | goal |", "|---|---|---|",
        *_suite_rows(a, r, o), *_eot_rows(results.get("eot_stacking")),
        *(f"| stages an edit of `{f}` reruns (the stage table's code dependencies) | "
          f"{', '.join(names)} | that defense's stages, its variants' experiments and the report |"
          for f, names in results.get("edit_reruns", {}).items()),
        *_pipeline_lines(results["pipeline"]), *_install_lines(results["install"]), "",
        *([MISSES.read_text(encoding="utf-8").rstrip(), ""] if MISSES.exists() else []),
        *gpu_lines(GPU),
        *(_claims_lines(json.loads(MNIST5K_CPU.read_text(encoding="utf-8")), "mnist5k on the 2-core CPU")
          if MNIST5K_CPU.exists() else [])])


def _suite_rows(a: dict[str, Any], r: dict[str, Any], o: dict[str, Any]) -> list[str]:
    """The timed figures, each beside its goal: attack overhead, PGD against ART, OAG batching."""
    se = r["robust_accuracy_standard_error"]
    return [
        f"| PGD-{a['steps']} / ({a['steps']} x forward+backward), batch {a['batch']} | {a['ratio']:.3f} "
        f"({a['seconds_pgd']:.3f} s vs {a['seconds_forward_backward'] * 1e3:.2f} ms per pass) | "
        f"<= {a['goal_ratio']:g} |",
        f"| PGD-{r['steps']} time, repurify / ART, batch {r['batch']} | {r['time_ratio']:.3f} "
        f"({r['seconds_repurify']:.3f} s vs {r['seconds_reference']:.3f} s; robust accuracy "
        f"{100 * r['robust_accuracy_repurify']:.2f} vs {100 * r['robust_accuracy_reference']:.2f} "
        f"(standard errors {100 * se['ours']:.2f}, {100 * se['theirs']:.2f}) over "
        f"{len(r['robust_accuracy_draws']['ours'])} random starts, clean "
        f"{100 * r['clean_accuracy']:.1f}) | <= {r['goal_time_ratio']:g}, accuracy <= ART's |",
        f"| OAG batched / one-at-a-time speed-up (batch {o['batch']}, {o['image_shape']}, "
        f"T_I {o['image_steps']}, k {o['kernel']}, K {o['filters']}) | {o['speedup']:.1f}x "
        f"({o['images_per_second_batched']:.2f} vs {o['images_per_second_loop']:.2f} images/s at "
        f"T_N {o['network_steps']}; max difference {o['max_abs_difference']:.1e}) | "
        f">= {o['goal_speedup']:g}x |"]


def _eot_rows(e: dict[str, Any] | None) -> list[str]:
    if e is None:
        return []
    return [f"| EOT-{e['samples']} gradient through OAG + target, draws stacked / one draw a call "
            f"({e['images']} images, T_N {e['network_steps']}) | {e['speedup']:.2f}x "
            f"({e['seconds_stacked']:.3f} vs {e['seconds_looped']:.3f} s) | > 1x (ours) |"]


def _pipeline_lines(p: dict[str, Any]) -> list[str]:
    if "skipped" in p:
        return [f"| pipeline | not run: {p['skipped']} | |"]
    c = p["change"]
    total = (f"{p['seconds_from_scratch'] / 60:.1f} min" if not p.get("unrecorded") else
             f"not measured: {', '.join(p['unrecorded'])} never ran in this checkout (the "
             f"{len(p['stages'])} that did: {p['seconds_from_scratch'] / 60:.1f} min)")
    lines = [f"| full `dvc repro` from scratch ({p['source']}) | {total} | "
             f"<= {p['goal_seconds_from_scratch'] / 60:g} min |",
             f"| repeated `dvc repro`, nothing changed | {p['seconds_noop']:.1f} s (the first in the "
             f"copied tree {p['seconds_noop_first']:.1f} s; reran {p['noop_reran'] or 'nothing'}) | "
             f"<= {p['goal_seconds_noop']:g} s |",
             *([f"| `snakemake -n` in the finished tree | {p['seconds_snakemake_dry_run']:.1f} s "
                f"(jobs listed: {p['snakemake_dry_run_jobs'] or 'none'}) | "
                f"<= {p['goal_seconds_snakemake_dry_run']:g} s |"]
               if "seconds_snakemake_dry_run" in p else []),
             f"| `dvc repro` after {c['key']}: {c['from']} -> {c['to']} | reran {', '.join(c['reran'])} "
             f"({c['seconds'] / 60:.1f} min) | that defense's stages and the report |",
             f"| peak resident memory, largest stage | {p['peak_rss_mib_max']:.0f} MiB | "
             f"<= {p['goal_peak_rss_mib']} MiB each |"]
    lines += [f"| &nbsp; all `{g['kind']}` stages ({g['stages']}) | {g['seconds'] / 60:.1f} min "
              f"({100 * g['share']:.0f}% of the run){_bound(g)} | |" for g in p["groups"]]
    return lines + [f"| &nbsp; `{name}` | {s['seconds']:.1f} s, {s['peak_rss_mib']:.0f} MiB{_bound(s)} | |"
                    for name, s in p["stages"].items()]


def _bound(fig: dict[str, Any]) -> str:
    """The compute bound beside a measured time (``repurify.passes``), where one was timed."""
    if "bound_seconds" not in fig:
        return ""
    b = fig["bound_seconds"]
    return (f"; compute bound {b:.1f} s, {fig['seconds'] / b:.1f}x" if b > 0 else
            "; no network pass counted")


def gpu_lines(path: Path) -> list[str]:
    """The "GPU" section: the figures of the last ``benchmarks/device.sh`` run, if committed."""
    if not path.exists():
        return ["## GPU", "", "No GPU run recorded: `bash benchmarks/device.sh OUTDIR` on a GPU machine.", ""]
    g = json.loads(path.read_text())
    m, s, t, u = g["machine"], g["suite"], g["throughput"], g["gpu_samples"]
    a, r, o = s["attack_overhead"], s["pgd_vs_reference"], s["oag_batching"]
    aa_gpu, aa_cpu = g["autoattack_rand"]["cuda"], g["autoattack_rand"]["cpu"]
    lines = ["## GPU", "", f"{m['gpu']}, torch {m['torch']}, {m['cpu_cores']} CPU cores; {g['source']}. "
             f"GPU busy {u['utilisation_mean_percent']:.0f}% of the {u['seconds']} s sampled, at most "
             f"{u['memory_max_mib']:.0f} MiB.",
             "", "| figure | GPU | goal, or the CPU's |", "|---|---|---|",
             *_suite_rows(a, r, o),
             f"| PGD-{t['steps']} through {t['purifier']} + {t['classifier']}, random {t['image_shape']} "
             f"batches of {t['batch']} | {t['images_per_second_pgd']:.0f} images/s (forward+backward "
             f"{t['images_per_second_forward_backward']:.0f} images/s; ratio {t['ratio']:.3f}; "
             f"{t['peak_gpu_memory_mib']:.0f} MiB) | |",
             f"| OAG, AutoAttack rand point by point (digits, n {aa_gpu['n']}, EOT {aa_gpu['eot_samples']}, "
             f"APGD {aa_gpu['apgd_iterations']} iterations) | {aa_gpu['seconds']['point_by_point']} s, "
             f"accuracy {100 * aa_gpu['point_by_point_accuracy']:.1f} | CPU (2 cores): "
             f"{aa_cpu['seconds']['point_by_point']} s, accuracy "
             f"{100 * aa_cpu['point_by_point_accuracy']:.1f} |"]
    for name, st in g["studies"].items():
        done = ", ".join(f"{k} {v['seconds']:.0f} s" for k, v in st["stages"].items() if v.get("rc") == 0)
        cut = [k for k, v in st["stages"].items() if v.get("rc") not in (0, None)]
        lines.append(f"| `{name}` stages on `--device {st['device']}`, {st['jobs']} at a time, "
                     f"{st['budget_s']:.0f} s budget | {done} | not finished: {', '.join(cut) or 'none'} |")
    lines += ["", *(f"- {n}" for n in g.get("notes", [])), ""]
    return lines + _claims_lines(g["mnist5k_claims"], "mnist5k") if "mnist5k_claims" in g else lines


def _claims_lines(c: dict, where: str) -> list[str]:
    """A run's claimed-vs-reproduced rows (benchmarks.claims_table); the difference in standard
    errors where the row has one."""
    lines = [f"### {where}: claimed vs reproduced", "", c["source"] + ".", "",
             "| claim | method | attack | threat model | claimed | reproduced (n) | difference |",
             "|---|---|---|---|---|---|---|"]
    for r in c["rows"]:
        d = r["difference"]
        in_se = f" ({abs(d) / r['se']:.1f} SE)" if r["se"] > 0 else ""
        lines.append(f"| {r['id']} | {r['method']} | {r['attack']} | {r['threat_model']} | "
                     f"{100 * r['claimed']:.1f} | {100 * r['reproduced']:.1f} ± {100 * r['se']:.1f} "
                     f"({r['n']}) | {100 * d:+.1f}{in_se} |")
    return [*lines, ""]


def _install_lines(i: dict[str, Any]) -> list[str]:
    if "skipped" in i:
        return [f"| fresh install (`--install`) | not run: {i['skipped']} | |"]
    goal = f"<= {i['goal_seconds'] / 60:g} min" if "goal_seconds" in i else ""
    return [f"| fresh virtual environment from {i['lock']} | {i['seconds'] / 60:.1f} min | {goal} |"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    ap.add_argument("--profile", default="digits", help="params profile whose settings are timed")
    ap.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--batch", type=int, default=64, help="OAG images synthesized at once")
    ap.add_argument("--network-steps", type=int, default=3, help="OAG T_N timed (cost is linear)")
    ap.add_argument("--attack-batch", type=int, help="images attacked (default evaluation.batch_size)")
    ap.add_argument("--pipeline", action="store_true",
                    help="also run the profile's pipeline from scratch in a scratch clone (hours on "
                         "digits with 2 cores), then a no-op and a one-param-change `dvc repro`")
    ap.add_argument("--records", action="store_true",
                    help="the pipeline figures from the stages' MLflow records of this checkout's last "
                         "`dvc repro` (no rerun from scratch), the reruns timed in a copy of the tree")
    ap.add_argument("--change", default="defenses.jpeg.quality=50",
                    help="the param (relative to profiles.<profile>) changed for the rerun figure")
    ap.add_argument("--install", action="store_true",
                    help="also time a fresh virtual environment from requirements.lock (minutes)")
    ap.add_argument("--out", default=str(HERE / "results.json"))
    ap.add_argument("--render", action="store_true",
                    help="only rewrite results.md from results.json and gpu.json (nothing timed)")
    args = ap.parse_args(argv)
    if args.render:
        write_text(Path(args.out).with_suffix(".md"), markdown(json.loads(Path(args.out).read_text())))
        return 0
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
                                            network_steps=args.network_steps, device=device),
               "eot_stacking": eot_stacking(prof.defenses["oag"], target, x[:EOT_IMAGES], y[:EOT_IMAGES],
                                            samples=prof.evaluation.eot_samples,
                                            network_steps=args.network_steps),
               "edit_reruns": {f: stale(stages(prof), files=(f,)) for f in EDITED}}
    key, value = args.change.split("=", 1)
    change = (key, yaml.safe_load(value))
    if args.pipeline:
        results["pipeline"] = pipeline(args.profile, change)
    elif args.records:
        results["pipeline"] = recorded(args.profile, change)
    else:
        results["pipeline"] = {"skipped": "pass --pipeline or --records"}
    results["install"] = (install(ROOT / "requirements.lock") if args.install
                          else {"skipped": "pass --install"})
    write_json(args.out, results)
    text = markdown(results)
    write_text(Path(args.out).with_suffix(".md"), text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
