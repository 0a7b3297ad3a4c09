"""Gated class-vector edits scored without the latents.

A slider edit only ever adds class vectors: r' = r + sum_c b_c(r) kappa_c, where the weight
b_c(r) collects every term that passed its gate (slider a_c gated on class c; a move
(s, t, alpha) gated on s adds +alpha to b_t and -alpha to b_s). The zero-shot prediction is
argmax_j normalize(r') . w_j, and normalisation is a positive factor per row, so

    argmax_j r' . w_j = argmax_j (r . w_j + sum_c b_c (kappa_c . w_j)).

Everything a prediction needs is therefore an (N, C) table of r . w_j, the (N, C) gate cosines
and a (C, C) table kappa_c . w_j: C x C numbers per image instead of D. The gate's prediction term
(a term for class c also applies where the unedited model predicts c, ``cv_core.math.steering``) reads
the argmax of the first table. That is what lets the
browser re-score 10,000 images on every slider movement (``app/components/live_editor.js`` runs
this same arithmetic), and what the server's live loop uses too. Equal to steering the latents
with :func:`cv_core.math.steering.steer` and predicting, up to float rounding on exact ties.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from ..errors import InvalidInputError
from ..results import ClassVectors
from .steering import gamma_vector

#: (source, target, alpha): move class ``source`` towards ``target``, gated on ``source``.
Move = tuple[int, int, float]
#: Rows of latents converted at a time when the tables are built (64k x 512 float32 = 128 MB).
BLOCK_ROWS = 65_536


@dataclass(frozen=True)
class FactoredScores:
    """The factored live loop of one set of latents.

    base: (N, C) float32, r_n . w_j (unnormalised logits of the unedited latents);
    cosines: (N, C) float32, cos(r_n, mu_ft^c), what every gate reads;
    kappa_head: (C, C) float32, kappa_c . w_j.
    """

    base: torch.Tensor
    cosines: torch.Tensor
    kappa_head: torch.Tensor

    @classmethod
    def from_latents(cls, latents, head_weights: torch.Tensor, cv: ClassVectors,
                     block_rows: int = BLOCK_ROWS) -> FactoredScores:
        """latents: (N, D) tensor or array (a memory map too); head_weights: (C, D) zero-shot head rows;
        cv: the run's class vectors. Read ``block_rows`` rows at a time: besides the (N, C) tables, at
        most one block of latents is held in float32 (a 1M x 512 split is never converted whole)."""
        n = int(latents.shape[0])
        return cls.from_blocks(((s, latents[s:s + block_rows]) for s in range(0, n, block_rows)), n,
                               head_weights, cv)

    @classmethod
    def from_store(cls, store, split: str, encoder: str, head_weights: torch.Tensor, cv: ClassVectors,
                   block_rows: int = BLOCK_ROWS) -> FactoredScores:
        """The tables of one split of a feature store (``cv_core.features.store.FeatureStore``), read one
        memory-mapped block at a time."""
        return cls.from_blocks(store.iter_blocks(split, encoder, block_rows), store.num_rows(split), head_weights, cv)

    @classmethod
    def from_blocks(cls, blocks: Iterable[tuple[int, object]], n: int, head_weights: torch.Tensor,
                    cv: ClassVectors) -> FactoredScores:
        """The tables from (start row, (b, D) latents) blocks that tile rows 0..n-1.

        The cosines are laid out class-major ((C, N) in memory, seen as (N, C)): a gate reads one
        contiguous column per edited class instead of a strided pass over all N x C entries."""
        c = cv.num_classes
        w = head_weights.float()
        g = torch.nn.functional.normalize(cv.mu_ft.float(), dim=-1)                 # (C, D)
        base = torch.empty(n, c, dtype=torch.float32, device=w.device)
        cos_t = torch.empty(c, n, dtype=torch.float32, device=w.device)             # class-major
        filled = 0
        for start, block in blocks:
            lat = torch.as_tensor(np.asarray(block) if not isinstance(block, torch.Tensor) else block)
            lat = lat.to(w.device, torch.float32)
            if lat.ndim != 2 or w.shape != (c, lat.shape[1]):
                raise InvalidInputError(f"head weights {tuple(w.shape)} do not match {c} classes "
                                        f"of {lat.shape[-1]}-dimensional latents")
            stop = start + lat.shape[0]
            base[start:stop] = lat @ w.T
            cos_t[:, start:stop] = (torch.nn.functional.normalize(lat, dim=-1) @ g.to(lat.device).T).T
            filled += lat.shape[0]
        if filled != n:
            raise InvalidInputError(f"the latent blocks hold {filled} rows, expected {n}")
        return cls(base, cos_t.T, cv.kappa.float().to(w.device) @ w.T)

    @property
    def num_classes(self) -> int:
        return self.kappa_head.shape[0]

    @cached_property
    def base_predictions(self) -> torch.Tensor:
        """(N,) int64 unedited predictions (argmax of ``base``), computed once: the gates read them."""
        return self.base.argmax(dim=-1)

    def edit_rows(self, coefs: Sequence[float], gamma=None, moves: Sequence[Move] = ()
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """The rows an edit moves, (M,) int64 ascending, and their weights (M, C) float64; every other
        row's weights are zero. The live loop's path: only the gates of the edited classes are read
        and only the M gated rows are touched (M is one class's share of N for a forget edit).

        coefs: (C,) slider coefficients; gamma: None (no gate), one cosine, or (C,) thresholds;
        moves: (source, target, alpha) terms, each gated on its source class.
        """
        c, n = self.num_classes, self.base.shape[0]
        a = torch.as_tensor(list(coefs), dtype=torch.float64).flatten()
        if a.numel() != c or not torch.isfinite(a).all():
            raise InvalidInputError(f"expected {c} finite coefficients, got {list(coefs)!r}")
        g = gamma_vector(gamma, c)
        # one term per (gate class, class whose kappa it adds, amount)
        terms = [(k, k, float(a[k])) for k in torch.nonzero(a).flatten().tolist()]
        for s, t, alpha in moves:
            if not (0 <= s < c and 0 <= t < c):
                raise InvalidInputError(f"move {s}->{t} names a class outside 0..{c - 1}")
            if alpha:
                terms += [(s, t, float(alpha)), (s, s, -float(alpha))]
        if not terms:
            return torch.zeros(0, dtype=torch.long), torch.zeros(0, c, dtype=torch.float64)
        gate_cls, target, amount = (torch.tensor(x) for x in zip(*terms))
        if g is None:
            rows, inside = torch.arange(n), torch.ones(n, len(terms), dtype=torch.float64)
        else:
            # one cosine column per gated class (contiguous in the class-major layout of from_blocks)
            classes, which = torch.unique(gate_cls, return_inverse=True)
            cols = self.cosines.T[classes]                                         # (G, N)
            gated = (cols > g[classes][:, None]) | (self.base_predictions[None] == classes[:, None])  # (G, N)
            rows = torch.nonzero(gated.any(0) if len(classes) > 1 else gated[0]).flatten()
            inside = gated.index_select(1, rows)[which].T.double()                 # (M, K): term k applies
        weights = torch.zeros(rows.numel(), c, dtype=torch.float64)
        weights.index_add_(1, target, inside * amount.double())
        return rows, weights

    def edit_weights(self, coefs: Sequence[float], gamma=None, moves: Sequence[Move] = ()) -> torch.Tensor:
        """(N, C) float64 weights b: the edited latent of row n is r_n + b[n] @ kappa (see :meth:`edit_rows`)."""
        rows, w = self.edit_rows(coefs, gamma, moves)
        full = torch.zeros(self.base.shape[0], self.num_classes, dtype=torch.float64)
        full[rows] = w
        return full

    def predict(self, weights: torch.Tensor | None = None) -> torch.Tensor:
        """(N,) int64 predictions after the edit with these (N, C) weights (None: unedited)."""
        if weights is None:  # float32 -> float64 is exact and keeps the order: no (N, C) float64 copy
            return self.base_predictions.clone()
        return (self.base.double() + weights @ self.kappa_head.double()).argmax(dim=-1)

    def predict_rows(self, rows: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """(M,) int64 predictions of ``rows`` after the edit with their (M, C) weights. Only the classes
        whose kappa the edit adds (non-zero weight columns) enter the product: (M, K) x (K, C)."""
        cols = torch.nonzero((weights != 0).any(0)).flatten()
        logits = torch.index_select(self.base, 0, rows).double()                  # (M, C), rows contiguous
        if cols.numel():
            logits += weights[:, cols] @ self.kappa_head[cols].double()
        return logits.argmax(dim=-1)

    def changed_rows(self, weights: torch.Tensor) -> torch.Tensor:
        """(M,) int64 rows the edit moves (a non-zero weight), in order."""
        return torch.nonzero((weights != 0).any(1)).flatten()
