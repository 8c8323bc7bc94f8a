"""OAG batched across images versus one image at a time (same seeds, same images).

The synthesis cost grows linearly with T_N, so a few network steps give the
ratio of a full run; the images are random, since the cost does not depend on
their content.
"""

from __future__ import annotations

from typing import Any

import torch

from benchmarks.timing import median_seconds
from repurify.defenses.oag import OagSpec, Settings, synthesize, synthesize_loop

# the paper gives no eps_g / beta; any value costs the same, these are digits' calibrated ones
TIMING_VALUES = {"eps_g": 0.5, "beta": 1e-4, "init_std": 0.01}


def oag_batching(spec: OagSpec, shape: tuple[int, int, int], *, batch: int, network_steps: int,
                 device: torch.device, seed: int = 0, repeats: int = 5) -> dict[str, Any]:
    """Images per second of :func:`synthesize` on ``batch`` images and of the loop over them
    (median of ``repeats`` alternating runs)."""
    s = Settings(network_steps=network_steps, image_steps=spec.image_steps, kernel=spec.kernel,
                 filters=spec.filters, scale=spec.scale, **TIMING_VALUES)
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, *shape, generator=gen).to(device)
    seeds = torch.randint(0, 2**62, (batch,), generator=gen)
    t_batch, t_loop = median_seconds(lambda: synthesize(x, seeds, s), lambda: synthesize_loop(x, seeds, s),
                                     repeats=repeats)
    batched, looped = synthesize(x, seeds, s), synthesize_loop(x, seeds, s)
    return {"batch": batch, "image_shape": list(shape), "network_steps": network_steps,
            "image_steps": s.image_steps, "kernel": s.kernel, "filters": s.filters,
            "repeats": repeats, "seconds_batched": t_batch, "seconds_loop": t_loop,
            "images_per_second_batched": batch / t_batch, "images_per_second_loop": batch / t_loop,
            "speedup": t_loop / t_batch, "goal_speedup": 20.0,
            "max_abs_difference": (batched - looped).abs().max().item()}
