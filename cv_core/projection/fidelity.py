"""How faithfully a re-projection places points, compared with a reference placement.

``neighbour_agreement``: for each point, the share of its k nearest fitted map points that are also
among the k nearest fitted map points of the reference position (1.0 = same neighbourhood).
``trustworthiness``: scikit-learn's score of how well 2-D neighbourhoods reflect latent ones.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import InvalidInputError
from .geometry import as_latents


def _map_neighbours(points: np.ndarray, fitted: np.ndarray, k: int) -> torch.Tensor:
    p, f = torch.from_numpy(points), torch.from_numpy(fitted)
    return torch.cdist(p, f).topk(k, dim=1, largest=False).indices  # (M, k)


def neighbour_agreement(positions, reference, fitted_embedding, k: int = 10) -> np.ndarray:
    """positions, reference: (M, 2) two placements of the same M points; fitted_embedding: (N, 2).

    Returns (M,) float32: |kNN(position) ∩ kNN(reference)| / k, neighbours taken among the N fitted
    map points. Its mean is the fidelity figure quoted in docs/benchmarks.md.
    """
    a, b = as_latents(positions, "positions"), as_latents(reference, "reference positions")
    f = as_latents(fitted_embedding, "fitted embedding")
    if a.shape != b.shape or a.shape[1] != 2 or f.shape[1] != 2:
        raise InvalidInputError(f"positions and reference must both be (M, 2), got {a.shape} and {b.shape}")
    if not 1 <= k <= f.shape[0]:
        raise InvalidInputError(f"k must be in [1, {f.shape[0]}], got {k}")
    na, nb = _map_neighbours(a, f, k), _map_neighbours(b, f, k)
    hits = (na[:, :, None] == nb[:, None, :]).any(2).sum(1)
    return (hits.float() / k).numpy()


def trustworthiness(latents, positions, k: int = 10, metric: str = "cosine") -> float:
    """scikit-learn's trustworthiness of positions (M, 2) for latents (M, D), in [0, 1]."""
    from sklearn.manifold import trustworthiness as sk_trust

    x, p = as_latents(latents), as_latents(positions, "positions")
    if x.shape[0] != p.shape[0]:
        raise InvalidInputError(f"latents ({x.shape[0]}) and positions ({p.shape[0]}) differ in number")
    if not 1 <= k < x.shape[0] / 2:
        raise InvalidInputError(f"k must be in [1, {x.shape[0] / 2}), got {k}")
    return float(sk_trust(x, p, n_neighbors=k, metric=metric))
