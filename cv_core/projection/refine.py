"""The layout epochs of umap-learn's ``transform``, on a neighbour graph we already have.

``transform`` spends most of its time building the neighbour graph of the new points (an approximate
index query and Python overhead); the layout refinement itself is a short numba loop. Running that
loop on our exact k-NN graph gives ``transform``'s result at a fraction of its cost.
"""
from __future__ import annotations

import numpy as np


def refine_layout(init: np.ndarray, fitted: np.ndarray, idx: np.ndarray, weights: np.ndarray,
                  min_dist: float, n_epochs: int, seed: int | None) -> np.ndarray:
    """Move new points (M, 2) (initial positions) towards their neighbours in the fixed map (N, 2).

    idx: (M, k) neighbour indices into ``fitted``; weights: (M, k) un-normalised membership strengths;
    n_epochs: layout epochs (umap's transform uses a third of the fit's). Returns (M, 2) float32.
    """
    from .numba_cache import import_umap

    import_umap()  # umap's compiled code from the on-disk cache
    from umap.layouts import optimize_layout_euclidean
    from umap.umap_ import find_ab_params, make_epochs_per_sample

    if n_epochs < 1:
        return init
    m, k = idx.shape
    head = np.repeat(np.arange(m, dtype=np.int32), k)
    tail = idx.reshape(-1).astype(np.int32)
    w = weights.reshape(-1).astype(np.float32)
    keep = w >= w.max() / float(n_epochs)  # as transform: drop edges too weak to be sampled
    head, tail, w = head[keep], tail[keep], w[keep]
    a, b = find_ab_params(1.0, min_dist)
    rng = np.random.RandomState(seed)
    rng_state = rng.randint(np.iinfo(np.int32).min + 1, np.iinfo(np.int32).max - 1, 3).astype(np.int64)
    out = optimize_layout_euclidean(  # umap moves the head array in place: give it a copy, never the caller's
        np.array(init, dtype=np.float32, order="C", copy=True), np.ascontiguousarray(fitted, dtype=np.float32).copy(),
        head, tail, n_epochs, fitted.shape[0], make_epochs_per_sample(w, n_epochs), a, b, rng_state,
        1.0, 1.0 / 4.0, 5.0, False)
    return np.asarray(out, dtype=np.float32)
