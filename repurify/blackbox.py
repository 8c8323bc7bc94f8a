"""Papernot et al. (2017) substitute: trained only on a black-box model's labels.

Starting from a few held-out seed images S_0, each substitute epoch labels S_r
with the oracle, trains the substitute F on them, and grows the set by Jacobian
augmentation ``S_{r+1} = S_r + lam * sign(grad_x F(x)[O(x)])``.
"""

from __future__ import annotations

import torch
from torch import nn

from repurify.params import ClassifierParams
from repurify.training import train_classifier


@torch.no_grad()
def oracle_labels(oracle: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([oracle(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


def jacobian_augment(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, lam: float) -> torch.Tensor:
    """One Jacobian-based dataset augmentation step (Papernot et al. 2017, Alg. 1)."""
    x = x.detach().requires_grad_(True)
    logits = model(x)
    (grad,) = torch.autograd.grad(logits.gather(1, labels.view(-1, 1)).sum(), x)
    return (x + lam * grad.sign()).clamp(0, 1).detach()


def train_papernot_substitute(oracle: nn.Module, substitute: nn.Module, seeds: torch.Tensor, *,
                              rounds: int, epochs_per_round: int, lam: float, cfg: ClassifierParams,
                              device: torch.device, gen: torch.Generator) -> dict[str, int]:
    """Train ``substitute`` in place from ``seeds`` (float [0,1]); returns query statistics."""
    data = seeds.to(device)
    round_cfg = cfg.model_copy(update={"epochs": epochs_per_round, "augment": "none",
                                       "schedule": "constant"})
    queries = 0
    for r in range(rounds):
        labels = oracle_labels(oracle, data, cfg.batch_size)
        queries += len(data)
        train_classifier(substitute, data, labels, round_cfg, device, gen, desc=f"papernot {r + 1}")
        if r < rounds - 1:
            substitute.eval()
            data = torch.cat([data, jacobian_augment(substitute, data, labels, lam)])
    substitute.eval()
    return {"oracle_queries": queries, "substitute_train_size": len(data)}
