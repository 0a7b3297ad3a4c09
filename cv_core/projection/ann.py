"""Approximate k nearest neighbours for placing many points at once (faiss's inverted-file index).

Placing a point on the map needs its k nearest fitted latents. The exact search (``index.indexed_knn``)
costs M x N distance products; at dataset scale (a 1M-point split placed on a 20k-point sample, or a
release that moves 100k points) that is the whole wait: measured on this project's 2-core VM, one
thread, 64 reduced dimensions, 20,000 fitted points, 100,000 queries: exact 10-17 s. faiss's
``IndexIVFFlat`` groups the fitted points into ``lists`` k-means cells and compares a query only with the
members of its ``probes`` nearest cells: 1.1 s at recall@15 0.996 (128 cells, 8 probed) on the same data.

The search is approximate, so it is used only above :data:`APPROX_MIN_ROWS` queries and every search
measures its own recall against the exact search on a seeded subset of its queries
(:attr:`ApproxSearch.recall`): the page and the benchmark quote that number, not a figure from elsewhere.
Distances are returned in :func:`geometry.knn`'s scale (squared Euclidean of the reduced vectors / 2 for
cosine, Euclidean otherwise), so the placement weights are computed as for the exact search.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InvalidInputError
from .geometry import knn

#: From this many points to place in one call, the placement searches approximately ("auto").
APPROX_MIN_ROWS = 20_000
#: Cells probed per query (8 of ~sqrt(N) cells: recall@15 0.996 in the measurement of the module docstring).
PROBES = 8
#: Queries checked against the exact search to measure each search's recall.
RECALL_CHECK = 256


SEARCHES = ("auto", "exact", "approximate")


def check_search(search) -> str:
    """A placement's neighbour search setting (``LatentMap.reproject``), or InvalidInputError."""
    if search not in SEARCHES:
        raise InvalidInputError(f"search must be 'auto', 'exact' or 'approximate', got {search!r}")
    return search


def available() -> bool:
    """Whether faiss (the ``faiss-cpu`` package, a requirement) can be imported."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass
class ApproxSearch:
    """What one approximate search did: rows searched, index cells and cells probed, and the recall@k
    measured on ``checked`` of its queries (share of the exact k nearest neighbours it found)."""

    rows: int
    lists: int
    probes: int
    recall: float
    checked: int

    def describe(self) -> str:
        return (f"approximate neighbours (faiss IVF, {self.probes} of {self.lists} cells probed; recall "
                f"{self.recall:.3f} measured on {self.checked} of the {self.rows:,} points)")


class IVFIndex:
    """faiss ``IndexIVFFlat`` over reduced points (N, d), built once per fitted map."""

    def __init__(self, points: np.ndarray, seed: int = 0):
        import faiss

        self.points = np.ascontiguousarray(points, dtype=np.float32)
        n, d = self.points.shape
        if n < 2:
            raise InvalidInputError("an approximate index needs at least 2 points")
        self.lists = int(min(4096, max(1, round(math.sqrt(n)))))
        quantizer = faiss.IndexFlatL2(d)
        self.index = faiss.IndexIVFFlat(quantizer, d, self.lists)
        self.index.cp.seed = int(seed)  # the k-means of the cells: seeded, so a map's index is reproducible
        with _threads():
            self.index.train(self.points)
            self.index.add(self.points)
        self._quantizer = quantizer  # faiss does not own it from Python: keep it alive

    def search(self, queries: np.ndarray, k: int, metric: str, probes: int = PROBES, seed: int = 0
               ) -> tuple[np.ndarray, np.ndarray, ApproxSearch]:
        """-> indices (M, k) int32, distances (M, k) float32 ascending (``geometry.knn``'s scale), and the
        search's :class:`ApproxSearch` with its measured recall."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(k, self.points.shape[0])
        self.index.nprobe = int(min(probes, self.lists))
        with _threads(q.shape[0]):
            sq, idx = self.index.search(q, k)
        # a query whose probed cells hold fewer than k points gets -1: search those few exactly
        short = np.flatnonzero((idx < 0).any(1))
        if short.size:
            e_idx, e_d = knn(q[short], self.points, k, "euclidean")
            idx[short], sq[short] = e_idx, e_d * e_d
        sq = np.maximum(sq, 0.0)
        dist = sq / 2.0 if metric == "cosine" else np.sqrt(sq)
        rng = np.random.default_rng(seed)
        check = np.sort(rng.choice(q.shape[0], size=min(RECALL_CHECK, q.shape[0]), replace=False))
        exact, _ = knn(q[check], self.points, k, metric)
        found = np.mean([np.intersect1d(exact[i], idx[c]).size / k for i, c in enumerate(check)]) if check.size else 1.0
        info = ApproxSearch(int(q.shape[0]), self.lists, int(self.index.nprobe), float(found), int(check.size))
        return idx.astype(np.int32), dist.astype(np.float32), info


class _threads:
    """faiss's OpenMP threads: torch's current thread count (the app's live loop runs on one), or every
    core for a search of at least ``APPROX_MIN_ROWS`` queries (a release that moves 100,000 points: one
    long search, not the many small products that one thread is for; 1.10 s -> 0.59 s on 2 cores)."""

    def __init__(self, rows: int = 0):
        self.rows = rows

    def __enter__(self):
        import faiss

        self._before = faiss.omp_get_max_threads()
        many = self.rows >= APPROX_MIN_ROWS
        faiss.omp_set_num_threads(max(1, os.cpu_count() or 1) if many else max(1, torch.get_num_threads()))

    def __exit__(self, *exc):
        import faiss

        faiss.omp_set_num_threads(self._before)
