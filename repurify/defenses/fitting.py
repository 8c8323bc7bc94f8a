"""The training loop the trained defenses share.

Adam; the learning rate is multiplied by ``lr_decay`` when the validation loss
has not improved for ``plateau_patience`` epochs (HGD: 1e-3 -> 1e-4 "when the
loss converges"; AdvAE: halve after 4 epochs); optional early stopping; the
weights with the lowest validation loss are restored at the end.
"""

from __future__ import annotations

import copy
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from repurify.attacks.base import Goal
from repurify.attacks.gradient import iterative
from repurify.progress import note, progress
from repurify.schema import DefenseTraining, PgdBudget

Batch = tuple["torch.Tensor | Repeated", ...]
LossFn = Callable[[Batch], torch.Tensor]  # mean loss of one batch (with a graph when training)


@dataclass
class FitHistory:
    """Per-epoch losses and learning rates, and the restored (best) epoch."""

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    best_epoch: int = -1
    stopped_early: bool = False

    @property
    def best_val_loss(self) -> float:
        return self.val_loss[self.best_epoch]


def disk_tensor(shape: tuple[int, ...]) -> torch.Tensor:
    """A float32 tensor in an unlinked temporary file (``numpy.memmap``; under ``$TMPDIR``): its
    pages are written back to disk and reclaimable, so a training set larger than the node's
    memory fits (HGD's ImageNet copies: ~130 GB); the file goes with the tensor, even if the
    process is killed."""
    with tempfile.TemporaryFile() as fh:  # the map keeps its own descriptor
        fh.truncate(math.prod(shape) * 4)
        return torch.from_numpy(np.memmap(fh, dtype=np.float32, mode="r+", shape=shape))


@dataclass(frozen=True)
class Repeated:
    """``x.repeat(copies, 1, 1, 1)`` without the copies: row ``i`` is ``x[i % len(x)]``."""

    x: torch.Tensor
    copies: int

    def __len__(self) -> int:
        return self.copies * len(self.x)

    def __getitem__(self, idx: torch.Tensor) -> torch.Tensor:
        return self.x[idx % len(self.x)]


def split_validation(n: int, fraction: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random (train, validation) index split holding out ``ceil(fraction * n)`` items."""
    order = torch.randperm(n, generator=gen)
    n_val = min(n - 1, max(1, math.ceil(fraction * n)))
    return order[n_val:], order[:n_val]


def pgd_inner(model: nn.Module, x: torch.Tensor, y: torch.Tensor, budget: PgdBudget,
              gen: torch.Generator) -> torch.Tensor:
    """L-inf PGD with random start through ``model`` (AdvAE's inner max, the PGD training sets)."""
    return iterative(model, x, Goal(y), norm="linf", eps=budget.eps, step_size=budget.step_size,
                     steps=budget.steps, rand_init=True, momentum=None, early_stop=False, gen=gen)


def pgd_examples(model: nn.Module, x: torch.Tensor, y: torch.Tensor, budget: PgdBudget,
                 gen: torch.Generator, batch_size: int, device: torch.device) -> torch.Tensor:
    """:func:`pgd_inner` over a whole image set, batch by batch; returned on the CPU."""
    model.to(device)
    return torch.cat([pgd_inner(model, x[i:i + batch_size].to(device), y[i:i + batch_size].to(device),
                                budget, gen).cpu()
                      for i in progress(range(0, len(x), batch_size), "PGD training set", "batch")])


def batches(data: Batch, batch_size: int, order: torch.Tensor, device: torch.device):
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        yield tuple(t[idx].to(device) for t in data)


def fit(model: nn.Module, train: Batch, val: Batch, train_loss: LossFn, val_loss: LossFn,
        cfg: DefenseTraining, *, device: torch.device, gen: torch.Generator,
        desc: str) -> FitHistory:
    """Minimise ``train_loss`` over ``train`` (tensors indexed together); select on ``val_loss``."""
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode="min", factor=cfg.lr_decay, patience=cfg.plateau_patience, min_lr=cfg.min_lr)
    hist, best_state, since_best = FitHistory(), copy.deepcopy(model.state_dict()), 0
    bar = progress(range(cfg.epochs), desc, "epoch")
    for epoch in bar:
        model.train()
        total, count = 0.0, 0
        for batch in batches(train, cfg.batch_size, torch.randperm(len(train[0]), generator=gen),
                              device):
            loss = train_loss(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(batch[0])
            count += len(batch[0])
        model.eval()
        v_total = sum(val_loss(b).item() * len(b[0])
                      for b in batches(val, cfg.batch_size, torch.arange(len(val[0])), device))
        hist.train_loss.append(total / count)
        hist.val_loss.append(v_total / len(val[0]))
        hist.lr.append(opt.param_groups[0]["lr"])
        sched.step(hist.val_loss[-1])
        if hist.best_epoch < 0 or hist.val_loss[-1] < hist.best_val_loss:
            hist.best_epoch, since_best = epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            since_best += 1
        best = " (best)" if since_best == 0 else ""
        note(f"{desc}: epoch {epoch + 1}/{cfg.epochs} train loss {hist.train_loss[-1]:.4f} "
             f"val loss {hist.val_loss[-1]:.4f} lr {hist.lr[-1]:.0e}{best}")
        if cfg.early_stop_patience is not None and since_best >= cfg.early_stop_patience:
            hist.stopped_early = True
            break
    model.load_state_dict(best_state)
    return hist
