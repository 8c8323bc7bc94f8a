"""Attack cost: PGD-k against k forward+backward passes, and against a reference library's PGD.

Both time the same model, batch and settings. The reference is IBM's Adversarial Robustness
Toolbox (ART), which the attack tests already cross-check against; it runs every step on every
image, while repurify's evaluation stops attacking an image once it is broken.
"""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmarks.timing import median_seconds
from repurify.attacks import Goal
from repurify.attacks.base import input_gradient
from repurify.attacks.gradient import pgd
from repurify.evaluation import agreement, predict


def attack_overhead(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
                    step_size: float, steps: int, repeats: int = 5) -> dict[str, Any]:
    """Time of PGD-k (every step on every image) / (k x one forward+backward on the batch)."""
    goal = Goal(y)
    gen = torch.Generator().manual_seed(0)
    t_grad, t_pgd = median_seconds(
        lambda: input_gradient(model, x, goal),
        lambda: pgd(model, x, goal, norm="linf", eps=eps, step_size=step_size, steps=steps, restarts=1,
                    early_stop=False, gen=gen), repeats=repeats)
    return {"batch": len(x), "steps": steps, "seconds_forward_backward": t_grad, "seconds_pgd": t_pgd,
            "ratio": t_pgd / (steps * t_grad), "goal_ratio": 1.10}


def pgd_vs_reference(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
                     step_size: float, steps: int, repeats: int = 20) -> dict[str, Any]:
    """repurify's evaluation PGD (early stopping) against ART's PGD: median time, and robust
    accuracy averaged over ``repeats`` random starts (one start moves it by about a point; 20
    draws bring the standard error of the mean to about 0.2 points on 256 images)."""
    from art.attacks.evasion import ProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier

    num_classes = int(model(x[:1]).shape[1])
    clf = PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                            nb_classes=num_classes, clip_values=(0.0, 1.0),
                            device_type="gpu" if x.is_cuda else "cpu")
    art = ProjectedGradientDescent(clf, norm=np.inf, eps=eps, eps_step=step_size, max_iter=steps,
                                   num_random_init=1, batch_size=len(x), verbose=False)
    x_np, y_np = x.cpu().numpy(), y.cpu().numpy()
    accuracy: dict[str, list[float]] = {"ours": [], "theirs": []}

    def ours() -> None:
        adv = pgd(model, x, Goal(y), norm="linf", eps=eps, step_size=step_size, steps=steps, restarts=1,
                  early_stop=True, gen=torch.Generator().manual_seed(len(accuracy["ours"])))
        accuracy["ours"].append(agreement(predict(model, adv, len(x)), y.cpu()))

    def theirs() -> None:
        np.random.seed(len(accuracy["theirs"]))  # ART draws its random start from NumPy's generator
        adv = torch.from_numpy(art.generate(x_np, y=y_np)).to(x.device)
        accuracy["theirs"].append(agreement(predict(model, adv, len(x)), y.cpu()))

    t_ours, t_theirs = median_seconds(ours, theirs, repeats=repeats)
    return {"reference": "adversarial-robustness-toolbox ProjectedGradientDescent", "batch": len(x),
            "steps": steps, "eps": eps, "seconds_repurify": t_ours, "seconds_reference": t_theirs,
            "time_ratio": t_ours / t_theirs, "goal_time_ratio": 0.5,
            "robust_accuracy_repurify": statistics.mean(accuracy["ours"]),
            "robust_accuracy_reference": statistics.mean(accuracy["theirs"]),
            "robust_accuracy_standard_error": {k: statistics.stdev(v) / len(v) ** 0.5
                                               for k, v in accuracy.items()},
            "robust_accuracy_draws": accuracy,
            "clean_accuracy": agreement(predict(model, x, len(x)), y.cpu())}
