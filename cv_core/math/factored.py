"""Gated class-vector edits scored without the latents.

A slider edit only ever adds class vectors: r' = r + sum_c b_c(r) kappa_c, where the weight
b_c(r) collects every term that passed its gate (slider a_c gated on class c; a move
(s, t, alpha) gated on s adds +alpha to b_t and -alpha to b_s). The zero-shot prediction is
argmax_j normalize(r') . w_j, and normalisation is a positive factor per row, so

    argmax_j r' . w_j = argmax_j (r . w_j + sum_c b_c (kappa_c . w_j)).

Everything a prediction needs is therefore an (N, C) table of r . w_j, the (N, C) gate cosines
and a (C, C) table kappa_c . w_j: C x C numbers per image instead of D. That is what lets the
browser re-score 10,000 images on every slider movement (``app/components/live_editor.js`` runs
this same arithmetic), and what the server's live loop uses too. Equal to steering the latents
with :func:`cv_core.math.steering.steer` and predicting, up to float rounding on exact ties.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import InvalidInputError
from ..results import ClassVectors
from .steering import gamma_vector, centroid_cosines

#: (source, target, alpha): move class ``source`` towards ``target``, gated on ``source``.
Move = tuple[int, int, float]


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
    def from_latents(cls, latents: torch.Tensor, head_weights: torch.Tensor, cv: ClassVectors) -> FactoredScores:
        """latents: (N, D); head_weights: (C, D) zero-shot head rows; cv: the run's class vectors."""
        lat = latents.float()
        w = head_weights.float().to(lat.device)
        if w.shape != (cv.num_classes, lat.shape[1]):
            raise InvalidInputError(f"head weights {tuple(w.shape)} do not match {cv.num_classes} classes "
                                    f"of {lat.shape[1]}-dimensional latents")
        return cls(lat @ w.T, centroid_cosines(lat, cv), cv.kappa.float().to(lat.device) @ w.T)

    @property
    def num_classes(self) -> int:
        return self.kappa_head.shape[0]

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
            mask = self.cosines[:, gate_cls] > g[gate_cls]                       # (N, K): term k applies
            rows = torch.nonzero(mask.any(1)).flatten()
            inside = mask[rows].double()                                           # (M, K)
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
        logits = self.base.double()
        if weights is not None:
            logits = logits + weights @ self.kappa_head.double()
        return logits.argmax(dim=-1)

    def predict_rows(self, rows: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """(M,) int64 predictions of ``rows`` after the edit with their (M, C) weights."""
        return (self.base[rows].double() + weights @ self.kappa_head.double()).argmax(dim=-1)

    def changed_rows(self, weights: torch.Tensor) -> torch.Tensor:
        """(M,) int64 rows the edit moves (a non-zero weight), in order."""
        return torch.nonzero((weights != 0).any(1)).flatten()
