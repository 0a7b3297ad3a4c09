"""Map coordinates of edited latents without reading the latents.

A class-vector edit moves a latent r to r + delta, delta = b @ kappa (b: (C,) weights of the terms that
passed the gate, kappa: (C, D) class vectors). The map places a point from its reduced coordinates
(``geometry.Reduction``): (x / |x| - mean) @ B for the cosine metric, (x - mean) @ B otherwise, with B
the map's (D, d) principal directions. Let Q = [B | E] be an orthonormal basis of span(B) plus the part
of the class vectors outside it (e <= C more columns). Then delta lies in span(Q), so with the per-row
table P = r @ Q (N, d + e) and |r|^2:

    (r + delta) @ B = P[:, :d] + (b @ kappa @ Q)[:, :d]
    |r + delta|^2   = |r|^2 + 2 P . (b @ kappa @ Q) + |b @ kappa @ Q|^2

so an edit of M rows costs O(M (d + e + C)) instead of reading M x D latents, adding the edit and
reducing them (measured on this project's 2-core VM, one thread, the 100,000 rows a one-class forget moves
in a 1M x 512 store: 33-50 ms from the table against 0.3 s to read the rows from the memory-mapped store,
0.05 s to edit them in float32 (1.7-4.8 s in float64) and 0.33 s to reduce them). The table is built once
per map, one block of latents at a time (11-13 s for 1M x 512 from the store, 300 MB); it is (d + e) / D
of the latents' size (74 / 512 at d = 64, C = 10). Above :data:`MAX_CLASSES` classes E would
be as wide as the latents, and :meth:`EditCoordinates.build` returns None: the caller reads the moved
latents (an edit of one class among many moves few rows).
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from ..errors import InvalidInputError
from .geometry import Reduction

#: Above this many class vectors the table is not built (its width would approach the latents').
MAX_CLASSES = 128


class EditCoordinates:
    """The (N, d + e) table P = r @ Q, |r|^2 (N,), and kappa @ Q (C, d + e) of one map's reduction."""

    def __init__(self, reduction: Reduction, basis: np.ndarray, table: np.ndarray, sq_norms: np.ndarray,
                 kappa_q: np.ndarray):
        self.reduction, self.basis = reduction, basis
        self.table, self.sq_norms, self.kappa_q = table, sq_norms, kappa_q
        self.d = reduction.basis.shape[1]
        self.shift = (reduction.mean @ reduction.basis).astype(np.float32)  # mean @ B, (d,)

    @classmethod
    def build(cls, reduction: Reduction, kappa, blocks: Iterable[tuple[int, object]], n: int
              ) -> EditCoordinates | None:
        """reduction: the fitted map's ``reduction_``; kappa: (C, D) class vectors; blocks: (start row,
        (b, D) latents) tiling rows 0..n-1 (a store's ``iter_blocks`` or slices of an array).
        None above :data:`MAX_CLASSES` classes."""
        k = torch.as_tensor(kappa).double()
        b = torch.from_numpy(reduction.basis).double()                       # (D, d), orthonormal columns
        if k.ndim != 2 or k.shape[1] != b.shape[0]:
            raise InvalidInputError(f"kappa must be (C, {b.shape[0]}), got {tuple(k.shape)}")
        if k.shape[0] > MAX_CLASSES:
            return None
        rest = k - (k @ b) @ b.T                                             # class vectors outside span(B)
        u, s, _ = torch.linalg.svd(rest.T, full_matrices=False)              # (D, C)
        keep = s > 1e-6 * max(float(s.max()) if s.numel() else 0.0, 1.0)
        q = torch.cat([b, u[:, keep]], 1).float()                            # (D, d + e)
        table = np.empty((n, q.shape[1]), np.float32)
        sq = np.empty(n, np.float32)
        seen = 0
        for start, block in blocks:
            x = torch.as_tensor(np.asarray(block, dtype=np.float32))
            table[start:start + x.shape[0]] = (x @ q).numpy()
            sq[start:start + x.shape[0]] = (x.double() * x.double()).sum(1).float().numpy()
            seen += x.shape[0]
        if seen != n:
            raise InvalidInputError(f"the blocks held {seen} rows, expected {n}")
        return cls(reduction, q.numpy(), table, sq, (k.float() @ q).numpy())

    @property
    def nbytes(self) -> int:
        return int(self.table.nbytes + self.sq_norms.nbytes)

    def reduce(self, rows, weights) -> np.ndarray:
        """Reduced coordinates (M, d) float32 of r[rows] + weights @ kappa. rows: (M,) row indices;
        weights: (M, C) term weights (``LiveResult.moved_weights``)."""
        rows = np.asarray(rows, dtype=np.int64)
        w = torch.as_tensor(weights).float()
        if rows.ndim != 1 or w.shape != (rows.size, self.kappa_q.shape[0]):
            raise InvalidInputError(f"rows must be (M,) and weights (M, {self.kappa_q.shape[0]}), got "
                                    f"{rows.shape} and {tuple(w.shape)}")
        if rows.size and (rows.min() < 0 or rows.max() >= self.table.shape[0]):
            raise InvalidInputError(f"rows must lie in [0, {self.table.shape[0]})")
        p = torch.from_numpy(self.table[rows])                               # (M, d + e)
        dq = w @ torch.from_numpy(self.kappa_q)                              # (M, d + e): delta @ Q
        x = p[:, :self.d] + dq[:, :self.d]                                   # (r + delta) @ B
        if self.reduction.metric == "cosine":
            sq = torch.from_numpy(self.sq_norms[rows]) + 2.0 * (p * dq).sum(1) + (dq * dq).sum(1)
            x = x / sq.clamp_min(1e-24).sqrt()[:, None]
        return (x - torch.from_numpy(self.shift)).numpy()
