"""Trigger umap-learn's numba compilation on a tiny input, so the first real map does not pay for it.

The app calls ``warm_up`` in a background thread at start-up; the CLI may call it before a long run.
"""
from __future__ import annotations

import time

import numpy as np

from ..progress import Progress, ProgressFn
from .latent_map import LatentMap


def warm_up(progress: ProgressFn = None, seed: int = 0) -> float:
    """Fit a map on 64 latents (64, 8) in six far-apart groups with the default settings. Returns the
    seconds it took.

    Compiles the numba functions that a full-size fit uses: graph, layout, and, because the groups form
    more than four connected components as a dataset's well-separated classes do, the metric that umap's
    spectral initialisation uses to place components (without them a 10-class map compiled it itself).
    The compiled code lives for the rest of the process and in the on-disk numba cache (``numba_cache``).
    """
    start = time.perf_counter()
    if progress is not None:
        progress(Progress("projection:warm-up", 0, 1, "compiling UMAP (one time per process)"))
    x = np.random.default_rng(seed).normal(size=(64, 8)).astype(np.float32)
    group = np.arange(64) % 6  # centres +-20 along three axes: six groups, no neighbour links between them
    x[np.arange(64), group // 2] += np.where(group % 2 == 0, 20.0, -20.0).astype(np.float32)
    LatentMap(n_neighbors=5, n_epochs=5, random_state=seed).fit(x)
    if progress is not None:
        progress(Progress("projection:warm-up", 1, 1, "UMAP compiled"))
    return time.perf_counter() - start
