"""CIFAR-shaped attack throughput: PGD-10 through HGD (the ``cifar10`` profile's DUNET) before a
ResNet-18, on random 32x32x3 batches, against the bare forward+backward of the same model.

It needs no download: the weights are random, which costs the same as trained ones. The figure
is for sizing the paper-scale profiles on a GPU: ``python -m benchmarks.throughput --device cuda``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch

from benchmarks.attacks import attack_overhead
from repurify.defenses import DefendedModel
from repurify.defenses.hgd import build_denoiser
from repurify.models.classifier import build_classifier
from repurify.params import load_params
from repurify.runtime import resolve_device

HALF = ((0.5,) * 3, (0.5,) * 3)  # the normalisation: any mean and std cost the same


def hgd_resnet18(device: torch.device) -> tuple[DefendedModel, dict[str, Any]]:
    """The cifar10 profile's HGD slot before its target architecture, randomly initialised."""
    prof = load_params("params.yaml", "cifar10").active
    spec, arch = prof.defenses["hgd"], prof.classifiers.target.arch
    shape = (prof.data.channels, prof.data.image_size, prof.data.image_size)
    model = DefendedModel(build_denoiser(spec, shape[0]), build_classifier(arch, shape, 10, *HALF))
    return model.to(device).eval().requires_grad_(False), {"purifier": f"hgd {spec.architecture} "
                                                           f"{spec.widths}", "classifier": arch,
                                                           "image_shape": list(shape)}


def throughput(device: torch.device, *, batch: int = 512, steps: int = 10, repeats: int = 5,
               eps: float = 8 / 255, step_size: float = 1 / 255) -> dict[str, Any]:
    """:func:`benchmarks.attacks.attack_overhead` on that model, in images per second."""
    model, what = hgd_resnet18(device)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, *what["image_shape"], generator=gen).to(device)
    y = torch.randint(0, 10, (batch,), generator=gen).to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t = attack_overhead(model, x, y, eps=eps, step_size=step_size, steps=steps, repeats=repeats)
    return {**what, **t, "device": str(device), "repeats": repeats,
            "images_per_second_forward_backward": batch / t["seconds_forward_backward"],
            "images_per_second_pgd": batch / t["seconds_pgd"],
            "peak_gpu_memory_mib": (torch.cuda.max_memory_allocated(device) / 2**20
                                    if device.type == "cuda" else None)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.throughput", description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    print(json.dumps(throughput(resolve_device(args.device), batch=args.batch, repeats=args.repeats),
                     indent=1))


if __name__ == "__main__":
    main()
