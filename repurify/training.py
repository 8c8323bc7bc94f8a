"""Supervised training and evaluation of classifiers on uint8 tensors."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from repurify.params import ClassifierParams
from repurify.progress import progress


@dataclass
class History:
    """Per-epoch training loss and accuracy."""

    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [0,1]; float images are assumed to be in [0,1] already."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def augment(x: torch.Tensor, gen: torch.Generator, flip: bool) -> torch.Tensor:
    """Random crop after reflect-padding by size/8 (4 px at 32), optionally a random h-flip."""
    n, _, h, w = x.shape
    pad = max(1, h // 8)
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    rows = (dy.view(n, 1) + torch.arange(h).view(1, h)).to(x.device)
    cols = (dx.view(n, 1) + torch.arange(w).view(1, w)).to(x.device)
    idx = torch.arange(n, device=x.device).view(n, 1, 1)
    out = padded.permute(0, 2, 3, 1)[idx, rows.view(n, h, 1), cols.view(n, 1, w)].permute(0, 3, 1, 2)
    if not flip:
        return out
    mask = (torch.rand(n, generator=gen) < 0.5).to(x.device)
    return torch.where(mask.view(n, 1, 1, 1), out.flip(-1), out)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device,
             batch_size: int = 512) -> float:
    """Top-1 accuracy of ``model`` on uint8 images ``x`` as a fraction in [0,1]."""
    model.eval()
    correct = 0
    for i in range(0, len(y), batch_size):
        xb = to_unit(x[i:i + batch_size].to(device))
        correct += int((model(xb).argmax(1).cpu() == y[i:i + batch_size]).sum())
    return correct / max(1, len(y))


def _optimizer(model: nn.Module, cfg: ClassifierParams) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay, nesterov=cfg.momentum > 0)
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def train_classifier(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: ClassifierParams,
                     device: torch.device, gen: torch.Generator, desc: str = "train") -> History:
    """Minimise cross-entropy with ``cfg``'s optimiser and schedule; returns the history."""
    model.to(device)
    opt = _optimizer(model, cfg)
    steps_per_epoch = math.ceil(len(y) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, (lambda s: 0.5 * (1 + math.cos(math.pi * s / total))) if cfg.schedule == "cosine"
        else (lambda s: 1.0))
    hist = History()
    bar = progress(range(cfg.epochs), desc, "epoch")
    for _ in bar:
        model.train()
        order = torch.randperm(len(y), generator=gen)
        loss_sum, correct = 0.0, 0
        for i in range(0, len(y), cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            xb, yb = to_unit(x[idx]).to(device), y[idx].to(device)
            if cfg.augment != "none":
                xb = augment(xb, gen, flip=cfg.augment == "crop_flip")
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(idx)
            correct += int((logits.argmax(1) == yb).sum())
        hist.loss.append(loss_sum / len(y))
        hist.accuracy.append(correct / len(y))
        bar.set_postfix(loss=f"{hist.loss[-1]:.3f}", acc=f"{hist.accuracy[-1]:.3f}")
    model.eval()
    return hist


def fit_classifier(cfg: ClassifierParams, ds, device: torch.device, seed: int,
                   name: str) -> tuple[nn.Module, History, dict[str, Any]]:
    """Build ``cfg.arch`` for dataset ``ds``, train it (seed + ``cfg.seed_offset``), test it.

    Returns the model, its history and the checkpoint metadata (with ``clean_accuracy``)."""
    from repurify.models import build_classifier
    from repurify.runtime import seed_everything

    gen = seed_everything(seed + cfg.seed_offset)
    model = build_classifier(cfg.arch, ds.image_shape, ds.num_classes, ds.mean, ds.std)
    s = ds.split
    hist = train_classifier(model, s.x_train, s.y_train, cfg, device, gen, desc=f"{name} ({cfg.arch})")
    meta = {"arch": cfg.arch, "image_shape": list(ds.image_shape), "num_classes": ds.num_classes,
            "mean": list(ds.mean), "std": list(ds.std), "role": name,
            "params": cfg.model_dump(mode="json")}
    return model, hist, {**meta, "clean_accuracy": accuracy(model, s.x_test, s.y_test, device)}
