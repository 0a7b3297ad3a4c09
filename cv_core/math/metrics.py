"""Accuracy per class and confusion matrices, from predictions."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from ..errors import InvalidInputError


@dataclass(frozen=True)
class Scores:
    """accuracy: overall; per_class: (C,) float (NaN for a class with no sample);
    confusion: (C, C) int64, rows = true class, columns = predicted class."""

    accuracy: float
    per_class: torch.Tensor
    confusion: torch.Tensor


def score(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> Scores:
    """preds, labels: (N,) int64 -> Scores. One bincount, no Python loop over samples."""
    if preds.shape != labels.shape:
        raise InvalidInputError(f"predictions {tuple(preds.shape)} and labels {tuple(labels.shape)} differ")
    confusion = torch.bincount(labels * num_classes + preds, minlength=num_classes * num_classes)
    confusion = confusion.reshape(num_classes, num_classes)
    support = confusion.sum(1)
    per_class = confusion.diagonal().double() / support.double()
    per_class[support == 0] = float("nan")
    acc = float(confusion.diagonal().sum()) / max(1, int(labels.numel()))
    return Scores(acc, per_class.float(), confusion)


def forget_retain(per_class: torch.Tensor, forget: Iterable[int]) -> tuple[float, float]:
    """Mean accuracy of the forgotten classes and of the others (classes without samples ignored)."""
    forget = sorted(set(int(c) for c in forget))
    mask = torch.zeros(per_class.numel(), dtype=torch.bool)
    mask[forget] = True
    f, r = per_class[mask], per_class[~mask]
    f, r = f[~torch.isnan(f)], r[~torch.isnan(r)]
    return (float(f.mean()) if f.numel() else float("nan"), float(r.mean()) if r.numel() else float("nan"))
