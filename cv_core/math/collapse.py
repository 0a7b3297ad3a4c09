"""Neural collapse metrics (Papyan, Han & Donoho 2020) of a set of latents and a head.

All four go to 0 (NC4: to 1 for agreement) as the representation collapses to a simplex ETF.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..results import FeatureSet
from .class_vectors import class_means

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
    x = fs.features.double()
    y = fs.labels
    c = fs.num_classes
    if c < 2:  # nothing to separate: only NC4 has a meaning (it is 1); the others would divide by zero
        nan = float("nan")
        return CollapseMetrics(nan, nan, nan, nan, 1.0)
    means = class_means(x, y, c)                      # (C, D)
    global_mean = x.mean(0)
    centred = means - global_mean                     # (C, D)
    within = x - means[y]                             # (N, D)
    sigma_w = within.T @ within / x.shape[0]          # (D, D)
    sigma_b = centred.T @ centred / c                 # (D, D)
    nc1 = float(torch.trace(sigma_w @ torch.linalg.pinv(sigma_b, hermitian=True)) / c)

    norms = centred.norm(dim=1)
    equinorm = float(norms.std() / norms.mean())
    unit = centred / norms[:, None]
    cos = unit @ unit.T
    off = ~torch.eye(c, dtype=torch.bool)
    equiangular = float((cos[off] + 1.0 / (c - 1)).abs().mean())

    w = head_weights.double()
    nc3 = float((w / w.norm() - centred / centred.norm()).norm())

    unit_x = torch.nn.functional.normalize(x, dim=-1)
    head_pred = (unit_x @ torch.nn.functional.normalize(w, dim=-1).T).argmax(1)
    ncc_pred = torch.cdist(x, means).argmin(1)
    nc4 = float((head_pred == ncc_pred).double().mean())
    return CollapseMetrics(nc1, equinorm, equiangular, nc3, nc4)
