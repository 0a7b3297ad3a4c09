"""Neural collapse metrics (Papyan, Han & Donoho 2020) of a set of latents and a head.

All four go to 0 (NC4: to 1 for agreement) as the representation collapses to a simplex ETF.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import torch

from ..errors import InvalidInputError
from ..results import FeatureSet
from .class_vectors import class_counts

EXPLANATIONS = {
    "nc1": "Within-class spread relative to between-class spread, tr(Σ_W Σ_B⁺)/C: 0 means every image "
           "sits exactly on its class mean.",
    "nc2_equinorm": "Spread of the lengths of the centred class means (std/mean): 0 means all classes are "
                    "equally far from the global mean.",
    "nc2_equiangular": "How far the angles between centred class means are from the simplex value "
                       "cos = −1/(C−1) (mean absolute gap): 0 means maximally separated classes.",
    "nc3": "Distance between the normalised classifier rows and the normalised centred class means: 0 "
           "means the classifier is the class means (self-duality).",
    "nc4": "Share of images where the classifier agrees with the nearest class mean: 1 means the network "
           "behaves like a nearest-centroid rule.",
}


@dataclass(frozen=True)
class CollapseMetrics:
    nc1: float
    nc2_equinorm: float
    nc2_equiangular: float
    nc3: float
    nc4: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def collapse_metrics(fs: FeatureSet, head_weights: torch.Tensor) -> CollapseMetrics:
    """fs: latents (N, D) with labels; head_weights: (C, D) classifier rows (cosine classifier)."""
    return collapse_from_blocks(lambda: [(0, fs.features)], fs.labels, fs.num_classes, head_weights)


def collapse_from_blocks(blocks: Callable[[], Iterable[tuple[int, object]]], labels, num_classes: int,
                         head_weights: torch.Tensor) -> CollapseMetrics:
    """The metrics of latents given as (start row, (b, D) block) pieces that tile rows 0..N-1 (a feature
    store's ``iter_blocks``: a 1M x 512 split is never held whole). blocks() is called twice (class means,
    then the within-class scatter and NC4); labels: (N,) classes. Sums are float64, as for one block."""
    y = torch.as_tensor(labels).long()
    c = int(num_classes)
    if c < 2:  # nothing to separate: only NC4 has a meaning (it is 1); the others would divide by zero
        nan = float("nan")
        return CollapseMetrics(nan, nan, nan, nan, 1.0)
    counts = class_counts(y, c)
    sums, n = None, 0
    for start, block in blocks():
        x = torch.as_tensor(block).double()
        if sums is None:
            sums = torch.zeros(c, x.shape[1], dtype=torch.float64)
        sums.index_add_(0, y[start:start + x.shape[0]], x)
        n += x.shape[0]
    if n != y.shape[0]:
        raise InvalidInputError(f"the latents hold {n} rows but there are {y.shape[0]} labels")
    means = sums / counts.double()[:, None]           # (C, D)
    global_mean = sums.sum(0) / n
    centred = means - global_mean                     # (C, D)
    w = head_weights.double()
    unit_w = torch.nn.functional.normalize(w, dim=-1)
    sigma_w = torch.zeros(means.shape[1], means.shape[1], dtype=torch.float64)
    agree = 0
    for start, block in blocks():
        x = torch.as_tensor(block).double()
        yb = y[start:start + x.shape[0]]
        within = x - means[yb]                        # (b, D)
        sigma_w += within.T @ within
        head_pred = (torch.nn.functional.normalize(x, dim=-1) @ unit_w.T).argmax(1)
        agree += int((head_pred == torch.cdist(x, means).argmin(1)).sum())
    sigma_w /= n                                      # (D, D)
    sigma_b = centred.T @ centred / c                 # (D, D)
    nc1 = float(torch.trace(sigma_w @ torch.linalg.pinv(sigma_b, hermitian=True)) / c)

    norms = centred.norm(dim=1)
    equinorm = float(norms.std() / norms.mean())
    unit = centred / norms[:, None]
    cos = unit @ unit.T
    off = ~torch.eye(c, dtype=torch.bool)
    equiangular = float((cos[off] + 1.0 / (c - 1)).abs().mean())

    nc3 = float((w / w.norm() - centred / centred.norm()).norm())
    return CollapseMetrics(nc1, equinorm, equiangular, nc3, agree / n)
