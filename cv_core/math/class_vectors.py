"""Class Vectors (Kim & Do, NeurIPS 2025): kappa_c = mean f_ft(S_c) - mean f_pre(S_c)."""
from __future__ import annotations

import torch

from ..errors import DatasetError, InvalidInputError
from ..results import ClassVectors, FeatureSet


def class_counts(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C,) samples per class of labels (N,). Raises if a class has no sample (its mean is undefined)."""
    counts = torch.bincount(labels, minlength=num_classes)
    if (counts == 0).any():
        empty = torch.nonzero(counts == 0).flatten().tolist()
        raise DatasetError(f"classes {empty} have no samples, so their mean latent is undefined; "
                           "use more images per class")
    return counts


def class_means(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """features (N, D), labels (N,) -> class means (C, D). Raises if a class has no sample."""
    counts = class_counts(labels, num_classes)
    sums = torch.zeros(num_classes, features.shape[1], dtype=features.dtype, device=features.device)
    sums.index_add_(0, labels.to(features.device), features)
    return sums / counts.to(features.device, features.dtype).unsqueeze(1)


def reference_index(labels: torch.Tensor, num_classes: int, per_class: int | None, seed: int = 0) -> torch.Tensor:
    """Indices of up to ``per_class`` references per class (all when None), chosen by ``seed``."""
    if per_class is None:
        return torch.arange(labels.shape[0])
    if per_class < 1:
        raise InvalidInputError(f"references per class must be at least 1, got {per_class}")
    g = torch.Generator().manual_seed(seed)
    picks = []
    for c in range(num_classes):
        idx = torch.nonzero(labels == c).flatten()
        picks.append(idx[torch.randperm(idx.numel(), generator=g)[:per_class]])
    return torch.sort(torch.cat(picks)).values


def compute_class_vectors(pre: FeatureSet, ft: FeatureSet, per_class: int | None = None,
                          seed: int = 0) -> ClassVectors:
    """Class vectors from the same images encoded by the pretrained and the fine-tuned encoder.

    pre, ft: FeatureSets of identical samples (same labels, same order).
    per_class: use only this many references per class (the paper: often fewer than 5 suffice).
    """
    if pre.class_names != ft.class_names:
        raise InvalidInputError("pretrained and fine-tuned latents have different class lists: "
                                f"{pre.class_names[:5]}... vs {ft.class_names[:5]}...")
    if pre.features.shape != ft.features.shape or not torch.equal(pre.labels, ft.labels):
        raise InvalidInputError("pretrained and fine-tuned latents must come from the same images in the "
                                f"same order (shapes {tuple(pre.features.shape)} vs {tuple(ft.features.shape)})")
    idx = reference_index(pre.labels, pre.num_classes, per_class, seed)
    labels = pre.labels[idx]
    mu_pre = class_means(pre.features[idx], labels, pre.num_classes)
    mu_ft = class_means(ft.features[idx], labels, ft.num_classes)
    counts = torch.bincount(labels, minlength=pre.num_classes)
    return ClassVectors(mu_ft - mu_pre, mu_pre, mu_ft, pre.class_names, counts)


def cosine_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every row of a (M, D) with every row of b (K, D) -> (M, K)."""
    a = torch.nn.functional.normalize(a, dim=-1)
    b = torch.nn.functional.normalize(b, dim=-1)
    return a @ b.T
