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
    return scores_from_confusion(confusion.reshape(num_classes, num_classes))


def scores_from_confusion(confusion: torch.Tensor) -> Scores:
    """Scores of a (C, C) int64 confusion matrix (rows = true class)."""
    support = confusion.sum(1)
    per_class = confusion.diagonal().double() / support.double()
    per_class[support == 0] = float("nan")
    acc = float(confusion.diagonal().sum()) / max(1, int(support.sum()))
    return Scores(acc, per_class.float(), confusion)


def rescore(before: Scores, labels: torch.Tensor, old: torch.Tensor, new: torch.Tensor) -> Scores:
    """The Scores after some predictions changed, without a pass over every sample: labels, old, new:
    (M,) int64 true class, previous and new prediction of the changed samples. Equal to ``score`` of the
    full new predictions; costs O(M + C^2) instead of O(N)."""
    c = before.confusion.shape[0]
    if not (labels.shape == old.shape == new.shape):
        raise InvalidInputError(f"labels {tuple(labels.shape)}, old {tuple(old.shape)} and new {tuple(new.shape)} "
                                "predictions of the changed samples differ in shape")
    flat = before.confusion.reshape(-1).clone()
    ones = torch.ones_like(labels, dtype=flat.dtype)
    flat.index_add_(0, labels * c + old, -ones)
    flat.index_add_(0, labels * c + new, ones)
    return scores_from_confusion(flat.reshape(c, c))


def forget_retain(scores: Scores, forget: Iterable[int]) -> tuple[float | None, float]:
    """(forget, retain) accuracy of an edit's forget set, sample-weighted (docs/DEFINITIONS.md item 3).

    forget = correct / count over the images of the forget classes; retain = the same over all other
    images. Nothing forgotten -> (None, overall accuracy). A side without images is NaN.
    The browser's copy (``forgetRetain`` in app/components/live_editor.js) is held to this by a test.
    """
    forget = sorted(set(int(c) for c in forget))
    conf = scores.confusion
    c = conf.shape[0]
    if any(not 0 <= k < c for k in forget):
        raise InvalidInputError(f"forget classes {forget} out of range for {c} classes")
    correct, count = conf.diagonal().double(), conf.sum(1).double()
    mask = torch.zeros(c, dtype=torch.bool)
    mask[forget] = True

    def acc(m: torch.Tensor) -> float:
        n = float(count[m].sum())
        return float(correct[m].sum()) / n if n else float("nan")

    return (acc(mask) if forget else None), acc(~mask)
