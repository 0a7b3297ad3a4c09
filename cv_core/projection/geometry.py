"""Latent geometry shared by the map fit and the fast re-projection: pure array functions.

The map works on a reduced copy of the latents: for the cosine metric each latent is scaled to unit
length (so squared Euclidean distance = 2 (1 - cos)), then projected on its top principal directions.
Fit and re-projection use the same reduction, so the k nearest neighbours the fast path finds are the
ones the map was built from.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InvalidInputError, NumericalError

METRICS = ("cosine", "euclidean")


def as_latents(x, what: str = "latents", dim: int | None = None) -> np.ndarray:
    """Validate an (N, D) array or tensor of finite numbers -> (N, D) float32 C-contiguous numpy."""
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float32).numpy()
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise InvalidInputError(f"{what} must be a non-empty (N, D) array, got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise InvalidInputError(f"{what} have dimension {x.shape[1]} but the map was fitted on dimension {dim}: "
                                "re-project latents of the same backbone, or fit a new map")
    if not np.isfinite(x).all():
        raise NumericalError(f"{what} contain {int((~np.isfinite(x)).sum())} NaN or infinite values; "
                             "recompute the latents")
    return x


@dataclass(frozen=True)
class Reduction:
    """x (N, D) -> ((normalise(x) if cosine) - mean) @ basis, shape (N, d).

    mean: (D,) float32; basis: (D, d) float32 orthonormal columns (identity when not reduced).
    """

    metric: str
    mean: np.ndarray
    basis: np.ndarray

    def __call__(self, x: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(x)
        if self.metric == "cosine":
            t = torch.nn.functional.normalize(t, dim=1)
        return ((t - torch.from_numpy(self.mean)) @ torch.from_numpy(self.basis)).numpy()


def fit_reduction(x: np.ndarray, metric: str, dim: int | None) -> Reduction:
    """Principal directions of x (N, D), exact and deterministic (eigh of the D x D covariance)."""
    t = torch.from_numpy(x).double()
    if metric == "cosine":
        t = torch.nn.functional.normalize(t, dim=1)
    mean = t.mean(0)
    d = x.shape[1] if dim is None else min(dim, x.shape[1])
    if d == x.shape[1]:
        basis = torch.eye(x.shape[1], dtype=torch.float64)
    else:
        centred = t - mean
        _, vecs = torch.linalg.eigh(centred.T @ centred)  # ascending eigenvalues
        basis = vecs[:, -d:].flip(1)
    return Reduction(metric, mean.float().numpy(), np.ascontiguousarray(basis.float().numpy()))


def knn(queries: np.ndarray, points: np.ndarray, k: int, metric: str, chunk: int = 2048,
        exclude_self: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours of reduced queries (M, d) among reduced points (N, d).

    Returns indices (M, k) int32 and distances (M, k) float32, ascending. Distances are in the
    metric's scale: 1 - cos for cosine (reduced unit vectors), Euclidean otherwise.
    exclude_self: the queries are the points themselves; drop each one's own entry.
    """
    q, p = torch.from_numpy(queries), torch.from_numpy(points)
    p_sq = (p * p).sum(1)
    extra = 1 if exclude_self else 0
    idx, dist = [], []
    for s in range(0, q.shape[0], chunk):
        qs = q[s:s + chunk]
        sq = torch.addmm(p_sq[None, :], qs, p.T, alpha=-2.0).add_((qs * qs).sum(1, keepdim=True))
        if exclude_self:
            sq[torch.arange(qs.shape[0]), torch.arange(s, s + qs.shape[0])] = float("inf")
        v, i = torch.topk(sq, k + extra, dim=1, largest=False, sorted=True)
        idx.append(i[:, :k])
        dist.append(v[:, :k].clamp_min_(0.0))
    sq = torch.cat(dist)
    d = sq / 2.0 if metric == "cosine" else sq.sqrt()
    return torch.cat(idx).numpy().astype(np.int32), d.numpy().astype(np.float32)


def membership_weights(dists: np.ndarray, iterations: int = 64, normalise: bool = True) -> np.ndarray:
    """UMAP's transform weights for neighbour distances (M, k): exp(-d / sigma_i) with sigma_i chosen
    (safeguarded Newton steps, vectorised over rows) so that each row sums to log2(k); with ``normalise``, rows are
    scaled to sum 1 (the initial position is then the weighted mean of the neighbours' positions).

    This is what umap-learn's ``transform`` uses (local connectivity 0) to initialise new points.
    """
    raw, normalised = membership_weight_pair(dists, iterations)
    return normalised if normalise else raw


def membership_weight_pair(dists: np.ndarray, iterations: int = 64, tolerance: float = 1e-5
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Both forms of :func:`membership_weights` (raw, normalised), from one search for sigma.

    sigma_i solves sum_j exp(-d_ij / sigma_i) = log2(k) to ``tolerance`` (umap-learn's own tolerance):
    Newton steps on the row sum (increasing in sigma), kept inside a bisection bracket and replaced by a
    bisection step whenever they leave it. Rows stop as they converge: 3-4 passes over (M, k) instead of
    a fixed 48 bisection passes (measured on 100,000 placed points, k = 15: 0.06-0.11 s against 0.73 s,
    weights equal to 1e-7).
    """
    target = np.log2(dists.shape[1])
    d = dists.astype(np.float64)
    m = d.shape[0]
    lo, hi = np.zeros(m), np.full(m, np.inf)
    sigma = np.maximum(d.mean(1), 1e-12)
    todo = np.arange(m)
    for _ in range(iterations):
        s, dd = sigma[todo], d[todo]
        e = np.exp(-dd / s[:, None])
        excess = e.sum(1) - target
        done = np.abs(excess) < tolerance
        over = excess > 0  # sigma too large
        h = np.where(over, s, hi[todo])
        lo_ = np.where(over, lo[todo], s)
        hi[todo], lo[todo] = h, lo_
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            newton = s - excess * (s * s) / (dd * e).sum(1)
        inside = np.isfinite(newton) & (newton > lo_) & (newton < h)
        halved = np.where(np.isinf(h), s * 2.0, (lo_ + h) / 2.0)
        sigma[todo] = np.where(done, s, np.where(inside, newton, halved))
        todo = todo[~done]
        if todo.size == 0:
            break
    scale = np.maximum(sigma, 1e-12)[:, None]
    raw = np.exp(-d / scale).astype(np.float32)
    # Shifting by the row minimum leaves the normalised weights unchanged and avoids underflow.
    w = np.exp(-(d - d.min(1, keepdims=True)) / scale)
    w /= w.sum(1, keepdims=True)
    return raw, w.astype(np.float32)
